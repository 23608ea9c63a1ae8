"""The commands behind the plugin's menu items (``menus`` in napari.yaml).

Each opens one of the plugin's dock widgets (or brings it forward) on the active image
layer: napari lists them, for an image layer only, in its Layers menu's submenus, the
places napari opens to plugins for actions on the selected layer (``Layers > Filter``:
Compress with SVD; ``Layers > Measure``: the spectrum and the rate-distortion curves;
``Layers > Visualize``: compare a layer with its compression results).  The widgets stay in
the Plugins menu as well.  ``File > IO Utilities`` opens a camera RAW file as a half-size
preview.

napari passes the viewer in (app-model injection, from the type annotation).
"""

from __future__ import annotations

from typing import Any

import napari
from napari.layers import Image
from napari.utils.notifications import show_info

from .widgets.layer_picker import is_preview, is_result

__all__ = [
    "compare_results",
    "compress_with_svd",
    "open_raw_preview",
    "rate_distortion",
    "show_spectrum",
]

PLUGIN = "napari-svd-compress"


def _open(viewer: napari.viewer.Viewer, name: str) -> tuple[Any, Image | None]:
    """Dock widget ``name`` (or bring it forward) and pick the active image layer in it."""
    layer = viewer.layers.selection.active
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    if not isinstance(layer, Image) or is_preview(layer):
        return widget, None
    if layer in widget.layer_combo.layers:
        widget.set_layer(layer)
    return widget, layer


def compress_with_svd(viewer: napari.viewer.Viewer) -> None:
    """Open the Compress widget on the active image layer, with the SVD method chosen."""
    widget, _ = _open(viewer, "Compress")
    widget.set_method("svd")


def show_spectrum(viewer: napari.viewer.Viewer) -> None:
    """Open the SVD spectrum widget on the active image layer."""
    _open(viewer, "SVD spectrum")


def rate_distortion(viewer: napari.viewer.Viewer) -> None:
    """Open the rate-distortion widget on the active image layer."""
    _open(viewer, "Rate-distortion")


def compare_results(viewer: napari.viewer.Viewer) -> None:
    """Show the active layer beside its compression results of this session.

    The active layer may be a source (all its results are shown) or a result (it is shown
    beside its source).  The Compress widget's Compare button returns to the previous view.
    """
    active = viewer.layers.selection.active
    widget, _ = _open(viewer, "Compress")
    if is_result(active):
        runs = [r for r in widget.runs if r.layer == active]
    else:
        runs = [r for r in widget.runs if widget.source_of(r) == active]
    if not runs:
        show_info("SVD Compress: this layer has no compression results to compare with")
        return
    widget.select_runs(runs)
    widget.compare(True)


def open_raw_preview(viewer: napari.viewer.Viewer, path: str | None = None) -> list[Image]:
    """Open a camera RAW file as a half-size preview layer (asks for the file when
    ``path`` is None); returns the layers added (none when cancelled or unreadable: a
    broken file gives an error notification, as the readers do)."""
    from .reader import read_raw_preview_layers

    if path is None:
        from qtpy.QtWidgets import QFileDialog

        from ..fileio.raw import RAW_EXTENSIONS

        patterns = " ".join(f"*{ext}" for ext in sorted(RAW_EXTENSIONS))
        path, _ = QFileDialog.getOpenFileName(
            None, "Open camera RAW as half-size preview", "", f"Camera RAW ({patterns})"
        )
        if not path:
            return []
    added = []
    for layer_data in read_raw_preview_layers(path):
        if layer_data[0] is not None:  # not napari's "no layers" sentinel
            data, kwargs, _ = layer_data
            added.append(viewer.add_image(data, **kwargs))
    return added
