"""``train``: train a learned-codec model on your own images (needs the ``train`` extra).

The parser is built without torch; :func:`run` imports :mod:`napari_svd_compress.training`
(which imports torch) only when the command runs, and prints a one-line hint with the
install command when torch is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from ..codecs.learned import LEVELS


def parse_levels(text: str) -> list[int] | None:
    """The ``--quality`` value: ``"all"`` (None), ``"3"`` or a list like ``"1-3,5"``.

    Raises
    ------
    argparse.ArgumentTypeError
        For malformed text or levels outside ``1..LEVELS``.
    """
    if text.strip() in ("", "all"):
        return None
    out: set[int] = set()
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a quality level or range: {part!r}") from None
        if not 1 <= lo <= hi <= LEVELS:
            raise argparse.ArgumentTypeError(
                f"quality levels must lie in 1..{LEVELS}, got {part.strip()!r}"
            )
        out.update(range(lo, hi + 1))
    return sorted(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser``."""
    parser.add_argument("--images", help="folder of training images (JPEG, PNG, TIFF)")
    parser.add_argument(
        "--quality",
        type=parse_levels,
        default=None,
        metavar="LEVELS",
        help="quality level(s) to train: 'all' (default), 3, or a list like 1-3,5",
    )
    parser.add_argument("--steps", type=int, default=20000, help="training steps")
    parser.add_argument(
        "--minutes", type=float, default=None, help="wall-time budget (ends before --steps)"
    )
    parser.add_argument("--out", default="model.svdm", help="output model file (.svdm)")
    parser.add_argument("--name", default="custom", help="model name stored in the file")
    parser.add_argument("--model-version", default="1", help="model version string")
    parser.add_argument("--workdir", default=None, help="checkpoints and log (default: OUT.d)")
    parser.add_argument("--batch", type=int, default=8, help="crops per step")
    parser.add_argument("--crop", type=int, default=128, help="crop size in pixels (x16)")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--threads", type=int, default=2, help="max torch threads (CPU)")
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda"
    )
    parser.add_argument("--init", default=None, help="start from this checkpoint (.pt)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument(
        "--no-skimage", action="store_true", help="do not add scikit-image's photographs"
    )
    parser.add_argument(
        "--export-only", action="store_true", help="export the last checkpoint, do not train"
    )
    parser.add_argument("--log-every", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt-every", type=int, default=250, help=argparse.SUPPRESS)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``train`` subcommand."""
    p = sub.add_parser(
        "train",
        help="train a learned-codec model (.svdm) on a folder of images (needs torch)",
        description=(
            "Train the learned codec on your own images (e.g. a microscopy domain) and "
            "export a .svdm model file to select with '--method learned --model FILE'. "
            "Training resumes from OUT.d/ when run again. "
            "Needs the optional extra: pip install 'napari-svd-compress[train]'. "
            "See docs/learned-codec.md."
        ),
    )
    add_arguments(p)
    p.set_defaults(run=run)


def _say(text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    """Train (resuming from the work folder when possible) and export a ``.svdm`` model.

    Returns 0, or 2 with a hint on standard error when torch is not installed.
    """
    from ..training import INSTALL_HINT

    if importlib.util.find_spec("torch") is None:
        print(f"napari-svd-compress train: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from ..training.export import export_model
    from ..training.loop import CHECKPOINT, train

    workdir = Path(args.workdir if args.workdir is not None else f"{args.out}.d")
    if args.export_only:
        ckpt = workdir / CHECKPOINT
    else:
        ckpt = train(
            workdir,
            images=args.images,
            levels=args.quality,
            steps=args.steps,
            minutes=args.minutes,
            batch=args.batch,
            crop=args.crop,
            lr=args.lr,
            seed=args.seed,
            threads=args.threads,
            device=args.device,
            init=args.init,
            restart=args.restart,
            use_skimage=not args.no_skimage,
            log_every=args.log_every,
            ckpt_every=args.ckpt_every,
            log=_say,
        )
    path = export_model(ckpt, args.out, name=args.name, version=args.model_version)
    print(json.dumps({"model": str(path), "size": path.stat().st_size}))
    return 0
