"""The "SVD spectrum" dock widget: the singular values of an image layer's channels and the
rank that an SVD rank rule would keep.

For the picked layer (for a stack, the plane the viewer shows) each channel, in the chosen
colour space, is mapped into ``[0, 1]`` exactly as the codecs see it and its singular values
are computed with :func:`napari_svd_compress._linalg.spectrum` in a worker thread.  The plot
shows them on a log scale, with the cumulative energy (the ``energy`` rule) and the
cumulative sum (the seed scripts' ``percent`` rule), and marks the rank per channel that the
rule and value in the form pick, computed with the SVD codec's own functions.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QVBoxLayout, QWidget

from . import _linalg, registry
from ._image import ImageSpec, inspect, to_unit
from ._widget import _Editor, _LayerPicker, _RuleEditor
from .codecs import svd
from .color import COLOR_SPACES, to_space
from .errors import SVDCompressError

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

__all__ = ["SpectrumWidget", "channel_spectra"]

log = logging.getLogger(__name__)

#: The rank rules shown: those that need only the spectrum (not a trial compression).
RULES = ("rank", "percent", "energy")
_COLOURS = {
    "rgb": ("tab:red", "tab:green", "tab:blue"),
    "ycbcr": ("0.25", "tab:blue", "tab:red"),
}
_NAMES = {"rgb": ("R", "G", "B"), "ycbcr": ("Y", "Cb", "Cr")}


def channel_spectra(
    image: Any,
    rgb: bool,
    space: str,
    index: tuple[int, ...] = (),
    *,
    spec: ImageSpec | None = None,
) -> tuple[list[str], list[np.ndarray]]:
    """Channel names and singular values (descending) of one image plane.

    Parameters
    ----------
    image : array_like
        ``(..., H, W)`` grayscale or ``(..., H, W, 3|4)`` colour (alpha is ignored): one
        plane or a stack of them.
    rgb : bool
        Whether the last axis holds colour channels.
    space : {"rgb", "ycbcr"}
        Colour space of colour planes (grayscale ignores it).
    index : tuple of int
        The plane of a stack (``()`` for a single plane).
    spec : ImageSpec, optional
        ``_image.inspect(image, rgb=rgb)`` if already known: for floating-point data it
        scans the whole stack for its value range.

    Returns
    -------
    names : list of str
    spectra : list of ndarray
        One float64 array of ``min(H, W)`` values per channel, of the plane scaled into
        ``[0, 1]`` as the codecs see it (with the whole stack's value range, as when the
        stack is compressed).
    """
    spec = spec or inspect(image, rgb=rgb)
    if len(index) != len(spec.stack_shape):
        raise SVDCompressError(f"plane index {index} does not fit a stack of {spec.stack_shape}")
    unit, _ = to_unit(spec.plane(image, index), spec)
    if unit.shape[-1] == 3:
        x = to_space(unit, space)
        names = list(_NAMES[space])
    else:
        x, names = unit, ["gray"]
    return names, [_linalg.spectrum(np.ascontiguousarray(x[..., i])) for i in range(x.shape[-1])]


def _spectra_job(
    image: Any, rgb: bool, space: str, index: tuple[int, ...], spec: ImageSpec | None
) -> tuple[str, Any]:
    """:func:`channel_spectra` with errors as results: ``("ok", (names, spectra, spec))``
    or ``("error", message)``."""
    try:
        spec = spec or inspect(image, rgb=rgb)
        return "ok", (*channel_spectra(image, rgb, space, index, spec=spec), spec)
    except SVDCompressError as exc:
        return "error", str(exc)
    except MemoryError:
        return "error", "not enough memory"
    except Exception as exc:  # a bug: reported, and logged with its traceback
        log.exception("spectrum failed")
        return "error", f"{type(exc).__name__}: {exc}"


class SpectrumWidget(_LayerPicker, QWidget):
    """Singular-value spectrum of an image layer, with the rank a rule keeps marked.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose image layers are offered (napari passes it in).

    Attributes
    ----------
    names : list of str
        Channel names of the shown spectra (``gray``, ``R G B`` or ``Y Cb Cr``).
    spectra : list of ndarray
        Their singular values, descending.
    marked_ranks : list of int
        The rank per channel that the current rule and value pick (as the SVD codec would).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: FunctionWorker | None = None
        self.names: list[str] = []
        self.spectra: list[np.ndarray] = []
        self.marked_ranks: list[int] = []
        self._layers: list[Image] = []
        self._shown: tuple[Any, ...] | None = None  # (layer, plane index, space) shown
        self._dirty = False
        # (data, spec) of the last layer data inspected: a float stack's value range costs
        # a pass over the whole stack, so it is not recomputed for every plane.
        self._spec: tuple[Any, ImageSpec] | None = None
        self._request: tuple[tuple[Any, ...], Any] | None = None  # (key, data) computing

        codec = registry.get("svd")
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.layer_combo = QComboBox(self)
        self.layer_combo.setToolTip("The image layer (for a stack, the plane shown)")
        form.addRow("layer", self.layer_combo)
        self.space_combo = QComboBox(self)
        for space in COLOR_SPACES:
            self.space_combo.addItem(space, space)
        self.space_combo.setCurrentIndex(COLOR_SPACES.index(codec.param("color").default))
        self.space_combo.setToolTip(codec.param("color").help)
        form.addRow("colour space", self.space_combo)
        # The Compress widget's editors, so ranges, defaults and tooltips are the codec's.
        self.rule = _RuleEditor("rule", [codec.param(n) for n in RULES], self)
        form.addRow("rule", self.rule.combo)
        form.addRow("value", self.rule.stack)
        self.chroma = _Editor(codec.param("chroma"), self)
        form.addRow("chroma", self.chroma.widget)
        layout.addLayout(form)

        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.figure = Figure(figsize=(6, 3.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setParent(self)
        self.canvas.setMinimumHeight(260)
        layout.addWidget(self.canvas, stretch=1)

        self.layer_combo.currentIndexChanged.connect(self.refresh)
        self.space_combo.currentIndexChanged.connect(self.refresh)
        self.rule.combo.currentIndexChanged.connect(self.draw)
        for editor in self.rule.editors.values():
            editor.widget.valueChanged.connect(self.draw)
        self.chroma.widget.valueChanged.connect(self.draw)

        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._on_layers_changed)
        self.viewer.layers.selection.events.active.connect(self._on_active)
        self.viewer.dims.events.current_step.connect(self._on_step)

        self._refresh_layers()
        self._on_active()
        self.refresh()

    # -- hooks of the shared mixins --------------------------------------------------------

    def _refresh_table_names(self) -> None:
        """Nothing to rename: the plot's title is redrawn with the next spectrum."""

    def _update_buttons(self) -> None:
        self.chroma.widget.setEnabled(self.space() == "ycbcr")

    # -- settings -------------------------------------------------------------------------

    def space(self) -> str:
        """The colour space in which colour planes are factored."""
        return self.space_combo.currentData()

    def set_space(self, space: str) -> None:
        """Select colour space ``space`` (``"rgb"`` or ``"ycbcr"``)."""
        self.space_combo.setCurrentIndex(COLOR_SPACES.index(space))

    def rule_value(self) -> tuple[str, Any]:
        """The selected rank rule and its value."""
        name = self.rule.rule
        return name, self.rule.editors[name].value()

    def set_rule(self, name: str, value: Any) -> None:
        """Select rank rule ``name`` (rank, percent or energy) with ``value``."""
        self.rule.select(name)
        self.rule.editors[name].set_value(value)
        self.draw()

    # -- following the viewer -------------------------------------------------------------

    def _on_layers_changed(self, event: Any = None) -> None:
        self._refresh_layers(event)
        self.refresh()

    def _on_active(self, event: Any = None) -> None:
        # Unlike the Compress widget this follows results too: a result's spectrum shows
        # what the compression kept.
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and active in self._layers:
            self.set_layer(active)

    def _on_step(self, event: Any = None) -> None:
        # Only stacks change plane; refresh() itself skips what is shown already.
        layer = self.current_layer()
        if layer is not None and layer.ndim > 2 and layer in self.viewer.layers:
            self.refresh()

    def _plane_index(self, layer: Image) -> tuple[int, ...]:
        """Index of the plane of ``layer`` that the viewer shows (``()`` for one plane)."""
        data = layer.data[0] if layer.multiscale else layer.data
        n_stack = layer.ndim - 2  # layer.ndim does not count an RGB channel axis
        if n_stack <= 0:
            return ()
        point = layer.world_to_data(self.viewer.dims.point)
        return tuple(
            int(np.clip(round(float(p)), 0, n - 1))
            for p, n in zip(point[:n_stack], data.shape[:n_stack], strict=True)
        )

    # -- computing ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a spectrum is being computed."""
        return self.worker is not None

    def refresh(self, *_: Any) -> FunctionWorker | None:
        """Compute the spectrum of the picked layer's shown plane (if not shown already).

        Returns
        -------
        FunctionWorker or None
            The running worker; None when nothing needs computing, or when a computation
            is running (the newest request then runs when it ends).
        """
        from napari.qt.threading import thread_worker

        self._update_buttons()
        layer = self.current_layer()
        if layer is None:
            self._shown = None
            self.names, self.spectra, self.marked_ranks = [], [], []
            self.status_label.setText("no image layer")
            self.draw()
            return None
        if self.running:
            self._dirty = True
            return None
        index = self._plane_index(layer)
        key = (layer, index, self.space())
        if key == self._shown:
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        spec = self._spec[1] if self._spec is not None and self._spec[0] is data else None
        self.status_label.setText(f"computing the spectrum of {layer.name!r}…")
        # The worker reads only the plane shown (a dask stack stays lazy).
        self.worker = worker = thread_worker(_spectra_job, start_thread=False)(
            data, bool(layer.rgb), self.space(), index, spec
        )
        # Bound methods, not lambdas: Qt drops the connections if the widget is deleted
        # (the dock closed) before the worker ends.
        self._request = (key, data)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        worker.start()
        return worker

    def _on_returned(self, out: tuple[str, Any]) -> None:
        status, payload = out
        key, data = self._request
        if status != "ok":
            self.status_label.setText(f"failed: {payload}")
            show_error(f"SVD spectrum: {payload}")
            return
        self._shown = key
        self.names, self.spectra, spec = payload
        self._spec = (data, spec)
        layer, index, _ = key
        where = f" plane {index}" if index else ""
        self.status_label.setText(f"{layer.name}{where}: {len(self.spectra[0])} singular values")
        self.draw()

    def _on_finished(self) -> None:
        self.worker = None
        if self._dirty:
            self._dirty = False
            self.refresh()

    # -- ranks and the plot ---------------------------------------------------------------

    def ranks(self) -> list[int]:
        """The rank per channel that the current rule picks, as the SVD codec computes it."""
        if not self.spectra:
            return []
        name, value = self.rule_value()
        if name == "percent":
            return [svd.percent_rank(s, value) for s in self.spectra]
        if name == "energy":
            return [svd.energy_rank(s, value) for s in self.spectra]
        ycc = self._shown is not None and self._shown[2] == "ycbcr" and len(self.spectra) == 3
        # _scaled_ranks reads only each channel's max_rank: the length of its spectrum.
        chans = [SimpleNamespace(max_rank=len(s)) for s in self.spectra]
        return svd._scaled_ranks(int(value), chans, float(self.chroma.value()), ycc)

    def draw(self, *_: Any) -> None:
        """Redraw the spectra and mark the ranks of the current rule."""
        self.figure.clear()
        self.marked_ranks = self.ranks()
        if not self.spectra:
            self.canvas.draw_idle()
            return
        ax_s, ax_c = self.figure.subplots(1, 2)
        space = self._shown[2] if self._shown is not None else "rgb"
        colours = _COLOURS[space] if len(self.spectra) == 3 else ("0.2",)
        name, value = self.rule_value()
        for ch, s, colour, k in zip(
            self.names, self.spectra, colours, self.marked_ranks, strict=True
        ):
            ranks = np.arange(1, len(s) + 1)
            positive = s > 0  # a log axis cannot show exact zeros
            ax_s.plot(ranks[positive], s[positive], color=colour, lw=1, label=ch)
            energy = np.cumsum(np.square(s)) / max(float(np.sum(np.square(s))), 1e-300)
            total = np.cumsum(s) / max(float(np.sum(s)), 1e-300)
            ax_c.plot(ranks, energy, color=colour, lw=1, label=f"{ch} energy")
            ax_c.plot(ranks, total, color=colour, lw=1, ls="--", label=f"{ch} sum")
            for ax in (ax_s, ax_c):
                ax.axvline(k, color=colour, lw=0.8, ls=":")
            ax_c.annotate(
                f"{ch}: k={k}",
                xy=(k, energy[k - 1]),
                xytext=(4, -12),
                textcoords="offset points",
                color=colour,
                fontsize="small",
            )
        if name in ("percent", "energy"):
            ax_c.axhline(value, color="0.5", lw=0.8)
        ax_s.set_yscale("log")
        ax_s.set_xlabel("index")
        ax_s.set_ylabel("singular value")
        ax_c.set_xlabel("rank k")
        ax_c.set_ylabel("fraction kept")
        ax_c.set_ylim(0, 1.02)
        for ax in (ax_s, ax_c):
            ax.grid(True, which="both", alpha=0.3)
        ax_s.legend(fontsize="small")
        ax_c.legend(fontsize="x-small", ncol=2 if len(self.spectra) > 1 else 1)
        shown = ", ".join(f"{c} {k}" for c, k in zip(self.names, self.marked_ranks, strict=True))
        self.figure.suptitle(f"{name} = {value:g}: rank {shown}", fontsize="medium")
        self.canvas.draw_idle()
