"""``train``: train a learned-codec model on your own images (needs the ``train`` extra)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..codecs.learned import train

    p = sub.add_parser(
        "train",
        help="train a learned-codec model (.svdm) on a folder of images (needs torch)",
        description=(
            "Train the learned codec on your own images (e.g. a microscopy domain) and "
            "export a .svdm model file to select with '--method learned --model FILE'. "
            "Needs the optional extra: pip install 'napari-svd-compress[train]'. "
            "See docs/learned-codec.md."
        ),
    )
    train.add_arguments(p)
    p.set_defaults(run=train.run)
