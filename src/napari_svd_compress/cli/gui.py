"""``gui``: open napari with the Compress widget docked on an image (or the sample RAW).

``napari-svd-compress gui photo.nef`` opens the file (camera RAW, .svdz bundle, legacy
.pkl through this plugin; anything else through napari's readers) and docks the widget;
without IMAGE the bundled sample RAW (a DNG made from scikit-image's astronaut) is used.
"""

from __future__ import annotations

import argparse
import sys
from os import PathLike


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``gui`` subcommand."""
    p = sub.add_parser(
        "gui",
        help="open napari with the Compress widget on IMAGE (default: the sample RAW)",
        description=__doc__,
    )
    p.add_argument("image", nargs="?", help="image to open (RAW, .svdz, .pkl, PNG, TIFF, ...)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the ``gui`` subcommand; returns the exit status."""
    return open_viewer(args.image)


def open_viewer(path: str | PathLike[str] | None = None) -> int:
    """Open napari on ``path`` (or the sample RAW) with the widget docked; block until closed.

    Returns
    -------
    int
        The exit status: 0, or 2 when no display is available.
    """
    from ..fileio.images import display_available

    if not display_available():
        print(
            "napari-svd-compress gui: no display (set DISPLAY, or run under xvfb-run)",
            file=sys.stderr,
        )
        return 2
    from .._napari.viewer import run_viewer

    run_viewer(path)
    return 0
