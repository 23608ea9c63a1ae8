"""Comparing a source layer with its compression results in the viewer.

Two ways of looking, as image-codec viewers offer them:

- **side by side**: napari's grid mode with only the source and the results visible,
  the source first (top left), each in its own view box under the one camera, so zoom
  and pan move them together;
- **flip**: the source and one result in the same place, one visible at a time; each
  flip swaps them, so the eye sees what changed.

Either way the viewer's state is saved first (grid settings, which layers are visible,
their name overlays, the active layer) and :meth:`Comparison.leave` puts it back; the
camera is left where the user moved it, so the place they zoomed into stays in view.
The module knows napari's models only (no Qt): the Compress widget drives it.  Layers are
compared with ``==`` and keyed by ``unique_id``, never by identity: napari hands plugin
widgets proxies of its objects, a new one at each access.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["Comparison", "ViewState"]

Mode = Literal["side by side", "flip"]

#: Up to this many layers side by side sit in one row; more fill a near-square grid.
ONE_ROW = 3


@dataclass
class ViewState:
    """What a comparison changes in a viewer, to put back afterwards."""

    grid: dict[str, Any]
    visible: dict[Any, bool] = field(default_factory=dict)
    names: dict[Any, bool] = field(default_factory=dict)

    @classmethod
    def capture(cls, viewer: napari.viewer.Viewer) -> ViewState:
        """The viewer's grid settings, and each layer's visibility and name overlay."""
        g = viewer.canvas.grid
        state = cls(
            grid={"enabled": g.enabled, "stride": g.stride, "shape": g.shape, "spacing": g.spacing}
        )
        for layer in viewer.layers:
            state.visible[layer.unique_id] = bool(layer.visible)
            state.names[layer.unique_id] = bool(layer.name_overlay.visible)
        return state

    def restore(self, viewer: napari.viewer.Viewer) -> None:
        """Put the saved state back (on the layers still in the viewer; layers added since
        keep their own visibility)."""
        for layer in viewer.layers:
            key = layer.unique_id
            if key in self.visible:
                layer.visible = self.visible[key]
                layer.name_overlay.visible = self.names[key]
        viewer.canvas.grid.update(self.grid)


class Comparison:
    """The comparison view of one viewer: side by side or flip, and the way back.

    Parameters
    ----------
    viewer : napari.viewer.Viewer

    Attributes
    ----------
    mode : {"side by side", "flip"} or None
        The comparison shown; None when the viewer shows the user's own view.
    layers : list of Layer
        The layers compared (the source first).
    shown : Layer or None
        In flip mode, the one of the pair that is visible.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.mode: Mode | None = None
        self.layers: list[Layer] = []
        self.shown: Layer | None = None
        self._saved: ViewState | None = None

    @property
    def active(self) -> bool:
        """Whether a comparison is shown (and the user's view saved)."""
        return self.mode is not None

    def _present(self, layers: list[Layer | None]) -> list[Layer]:
        return [ly for ly in layers if ly is not None and ly in self.viewer.layers]

    @staticmethod
    def _among(layer: Layer, layers: list[Layer]) -> bool:
        return any(layer == other for other in layers)

    def _enter(self) -> None:
        if self._saved is None:
            self._saved = ViewState.capture(self.viewer)

    def side_by_side(self, source: Layer, results: list[Layer]) -> bool:
        """Show ``source`` and ``results`` side by side, nothing else; one camera.

        Returns
        -------
        bool
            False (and nothing changed) when the source or every result is missing.
        """
        layers = self._present([source, *results])
        if len(layers) < 2 or layers[0] != source:
            return False
        self._enter()
        order = []
        for layer in self.viewer.layers:
            wanted = self._among(layer, layers)
            layer.visible = wanted
            layer.name_overlay.visible = wanted
            if wanted:
                order.append(layer)
        n = len(layers)
        # View boxes follow the layer list from the bottom (stride 1) or from the top
        # (stride -1): the source comes first either way.
        stride = 1 if order[0] == source else -1
        shape = (1, n) if n <= ONE_ROW else (-1, -1)
        self.viewer.canvas.grid.update(
            {"enabled": True, "stride": stride, "shape": shape, "spacing": 0.02}
        )
        self.mode, self.layers, self.shown = "side by side", layers, None
        return True

    def flip(self, source: Layer | None, result: Layer | None) -> Layer | None:
        """Show one of ``source`` and ``result`` in the same place, the other next time.

        The first flip saves the user's view, leaves grid mode and hides every other
        layer; it shows the one of the two the eye does not see now (from side by side,
        the result).  Flipping another pair switches to it.  Harmless when either layer
        is missing: nothing changes and None is returned.

        Returns
        -------
        Layer or None
            The layer now visible.
        """
        pair = self._present([source, result])
        if len(pair) != 2 or source == result:
            return None
        same_pair = self.mode == "flip" and self.layers == pair and self.shown is not None
        if same_pair:
            show = result if self.shown == source else source
        elif self.mode == "side by side":
            show = result
        else:
            # The one the eye does not see now: the other of the upper visible one.
            seen = [ly for ly in self.viewer.layers if self._among(ly, pair) and ly.visible]
            show = source if seen and seen[-1] == result else result
        self._enter()
        self.viewer.canvas.grid.enabled = False
        for layer in self.viewer.layers:
            layer.visible = layer == show
            layer.name_overlay.visible = layer == show
        self.mode, self.layers, self.shown = "flip", pair, show
        return show

    def leave(self) -> bool:
        """Put the user's view back (grid, visibility, name overlays).

        Returns
        -------
        bool
            Whether a comparison was shown.
        """
        if self._saved is None:
            return False
        saved, self._saved = self._saved, None
        self.mode, self.layers, self.shown = None, [], None
        saved.restore(self.viewer)
        return True
