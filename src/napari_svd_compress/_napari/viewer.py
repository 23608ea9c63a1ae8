"""A napari viewer with the plugin's Compress widget docked (what ``make demo`` opens)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import napari

from ..errors import ImageError
from ..fileio.raw import is_raw_path

PLUGIN = "napari-svd-compress"
_OWN_SUFFIXES = (".svdz", ".pkl")


def _uses_this_plugin(path: Path) -> bool:
    return is_raw_path(path) or path.suffix.lower() in _OWN_SUFFIXES


def build_viewer(path: str | PathLike[str] | None = None, *, show: bool = True) -> tuple[Any, Any]:
    """A napari viewer with ``path`` (or the sample RAW) open and the widget docked.

    Returns
    -------
    viewer : napari.Viewer
    widget : CompressWidget
    """
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


def run_viewer(path: str | PathLike[str] | None = None) -> None:
    """Open napari on ``path`` (or the sample RAW) with the widget docked; block until closed."""
    build_viewer(path)
    napari.run()
