"""``gui``: open napari with the Compress widget docked on an image (or the sample RAW).

``napari-svd-compress gui photo.nef`` opens the file (camera RAW, .svdz bundle, legacy
.pkl through this plugin; anything else through napari's readers) and docks the widget;
without IMAGE the bundled sample RAW (a DNG made from scikit-image's astronaut) is used.
"""

from __future__ import annotations

import argparse
import sys
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import ImageError

PLUGIN = "napari-svd-compress"
_OWN_SUFFIXES = (".svdz", ".pkl")


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


def _uses_this_plugin(path: Path) -> bool:
    from ..raw import is_raw_path

    return is_raw_path(path) or path.suffix.lower() in _OWN_SUFFIXES


def build_viewer(path: str | PathLike[str] | None = None, *, show: bool = True) -> tuple[Any, Any]:
    """A napari viewer with ``path`` (or the sample RAW) open and the widget docked.

    Returns
    -------
    viewer : napari.Viewer
    widget : CompressWidget
    """
    import napari

    viewer = napari.Viewer(title="napari-svd-compress", show=show)
    if path is None:
        viewer.open_sample(PLUGIN, "raw")
    else:
        p = Path(path)
        if not p.is_file():
            viewer.close()
            raise ImageError(f"{p}: no such file")
        plugin = PLUGIN if _uses_this_plugin(p) else None
        viewer.open(str(p), plugin=plugin)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compress")
    return viewer, widget


def open_viewer(path: str | PathLike[str] | None = None) -> int:
    """Open napari on ``path`` (or the sample RAW) with the widget docked; block until closed.

    Returns
    -------
    int
        The exit status: 0, or 2 when no display is available.
    """
    from ..images import display_available

    if not display_available():
        print(
            "napari-svd-compress gui: no display (set DISPLAY, or run under xvfb-run)",
            file=sys.stderr,
        )
        return 2
    import napari

    build_viewer(path)
    napari.run()
    return 0
