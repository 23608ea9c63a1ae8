"""A combo box of a viewer's image layers that follows the active layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.layers import Image
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QWidget

from ..writer import META_KEY

if TYPE_CHECKING:
    import napari

__all__ = ["PREVIEW_KEY", "LayerPicker", "is_preview", "is_result"]

#: Metadata key of a live preview layer (its value: the previewed layer's name).
PREVIEW_KEY = "svd_preview_of"


def is_result(layer: Any) -> bool:
    """Whether ``layer`` is a compression result added by one of the plugin's widgets."""
    entry = getattr(layer, "metadata", {}).get(META_KEY)
    return isinstance(entry, dict) and "source_layer" in entry


class LayerPicker(QComboBox):
    """The image layers of a viewer, by name; the pick follows the active layer.

    Live preview layers (:func:`is_preview`) are not listed: they change with a slider.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are listed (kept up to date).
    follow_results : bool
        Whether activating a compression result picks it.  The Compress widget says no:
        the picker stays on the source, so that the next run with other parameters
        compresses the original again.
    tooltip : str
        The combo box's tooltip.
    parent : QWidget, optional

    Signals
    -------
    layers_changed
        The list of layers changed (added, removed, moved or renamed); the pick may have.
    renamed
        A listed layer was renamed.
    """

    layers_changed = Signal()
    renamed = Signal()

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        *,
        follow_results: bool = False,
        tooltip: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.follow_results = follow_results
        self._layers: list[Image] = []
        self.setToolTip(tooltip)
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._refresh)
        viewer.layers.selection.events.active.connect(self._on_active)
        self._refresh()
        self._on_active()

    @property
    def layers(self) -> list[Image]:
        """The image layers listed, in the viewer's order."""
        return list(self._layers)

    def current_layer(self) -> Image | None:
        """The picked image layer (None when the viewer has none)."""
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer: Image) -> None:
        """Pick ``layer`` (an image layer of the viewer)."""
        self.setCurrentIndex(self._layers.index(layer))

    def _refresh(self, event: Any = None) -> None:
        current = self.current_layer()
        for layer in self._layers:
            layer.events.name.disconnect(self._refresh)
        self._layers = [
            ly for ly in self.viewer.layers if isinstance(ly, Image) and not is_preview(ly)
        ]
        # Rebuilding fires no currentIndexChanged per item: listeners get layers_changed.
        self.blockSignals(True)
        try:
            self.clear()
            for layer in self._layers:
                self.addItem(layer.name)
                layer.events.name.connect(self._refresh)
            if current in self._layers:
                self.setCurrentIndex(self._layers.index(current))
        finally:
            self.blockSignals(False)
        if event is not None and getattr(event, "type", None) == "name":
            self.renamed.emit()
        self.layers_changed.emit()

    def _on_active(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if not isinstance(active, Image) or active not in self._layers:
            return
        if self.follow_results or not is_result(active):
            self.set_layer(active)


def is_preview(layer: Any) -> bool:
    """Whether ``layer`` is a live preview (the SVD spectrum widget's): never offered."""
    return PREVIEW_KEY in getattr(layer, "metadata", {})
