"""The "SVD spectrum" dock widget: the singular values of an image layer's channels and the
rank that an SVD rank rule would keep.

For the picked layer (for a stack, the plane the viewer shows) each channel, in the chosen
colour space, is mapped into ``[0, 1]`` exactly as the codecs see it and its singular values
are computed with :func:`napari_svd_compress.codecs.svd.singular_values` in a worker thread.
The plot shows them on a log scale, with the cumulative energy (the ``energy`` rule) and
the cumulative sum (the seed scripts' ``percent`` rule), and marks the rank per channel that
the rule and value in the form pick, computed by the codec itself
(:func:`~napari_svd_compress.codecs.svd.choose_ranks`).

Below the plot, the live rank preview (:mod:`.preview`): a rank slider whose moves show the
plane reconstructed at that rank in a preview layer, with its PSNR and bundle size, marked
on the plot by a solid line; "Keep" makes it a regular result.  The plot follows napari's
theme and has matplotlib's navigation toolbar (:mod:`.plot`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import QFormLayout, QVBoxLayout, QWidget

from ... import registry
from ...codecs import svd
from .job import JobPanel, JobRunner
from .layer_picker import LayerPicker
from .params import ParamForm
from .plot import PlotPanel
from .preview import PreviewSource, RankPreview

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

__all__ = ["SpectrumWidget", "channel_spectra"]

#: The rank rules shown: those that need only the spectrum (not a trial compression).
RULES = ("rank", "percent", "energy")
# "ink": the theme's text colour (the luma and gray curves read as the foreground).
_COLOURS = {
    "rgb": ("tab:red", "tab:green", "tab:blue"),
    "ycbcr": ("ink", "tab:blue", "tab:red"),
}
_NAMES = {"rgb": ("R", "G", "B"), "ycbcr": ("Y", "Cb", "Cr")}


def channel_spectra(
    image: Any,
    rgb: bool,
    space: str,
    index: tuple[int, ...] = (),
    *,
    value_range: tuple[float, float] | None = None,
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
    value_range : (float, float), optional
        The values mapped onto ``[0, 1]`` (:func:`~napari_svd_compress.codecs.svd.unit_range`
        of the whole image by default, which reads all of a floating-point stack).

    Returns
    -------
    names : list of str
    spectra : list of ndarray
        One float64 array of ``min(H, W)`` values per channel, of the plane scaled into
        ``[0, 1]`` as the codecs see it (with the whole stack's value range, as when the
        stack is compressed).
    """
    spectra = svd.singular_values(image, rgb=rgb, color=space, index=index, value_range=value_range)
    names = list(_NAMES[space]) if len(spectra) == 3 else ["gray"]
    return names, spectra


def _spectra_job(
    image: Any,
    rgb: bool,
    space: str,
    index: tuple[int, ...],
    value_range: tuple[float, float] | None,
) -> tuple[list[str], list[np.ndarray], tuple[float, float]]:
    """:func:`channel_spectra` and the value range used (kept for the stack's next plane)."""
    value_range = value_range or svd.unit_range(image, rgb=rgb)
    return (*channel_spectra(image, rgb, space, index, value_range=value_range), value_range)


class SpectrumWidget(QWidget):
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
    form : ParamForm
        The SVD parameters that set the ranks: a rank rule, the colour space and chroma.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.names: list[str] = []
        self.spectra: list[np.ndarray] = []
        self.marked_ranks: list[int] = []
        self._shown: tuple[Any, ...] | None = None  # (layer, plane index, space) shown
        self._dirty = False
        # (data, value range) of the last layer data: a float stack's value range costs
        # a pass over the whole stack, so it is not recomputed for every plane.
        self._range: tuple[Any, tuple[float, float]] | None = None
        self._request: tuple[tuple[Any, ...], Any] | None = None  # (key, data) computing

        layout = QVBoxLayout(self)
        top = QFormLayout()
        self.layer_combo = LayerPicker(
            napari_viewer,
            # Unlike the Compress widget this follows results too: a result's spectrum
            # shows what the compression kept.
            follow_results=True,
            tooltip="The image layer (for a stack, the plane shown)",
            parent=self,
        )
        top.addRow("layer", self.layer_combo)
        layout.addLayout(top)
        # The codec's own form, so ranges, defaults and tooltips are the registry's.
        self.form = ParamForm(registry.get("svd"), names=(*RULES, "color", "chroma"))
        layout.addWidget(self.form.native)

        panel = JobPanel(self, cancel=False, progress=False)
        self.status_label = panel.status_label
        layout.addWidget(self.status_label)
        self.jobs = JobRunner(panel, "SVD spectrum", on_state=self._on_job_state, parent=self)
        self.plot = PlotPanel(napari_viewer, self, on_theme=self.draw)
        self.figure = self.plot.figure
        self.canvas = self.plot.canvas
        layout.addWidget(self.plot, stretch=1)
        self.preview = RankPreview(
            napari_viewer,
            self._preview_source,
            on_rank=self._mark_preview,
            start_rank=lambda: self.marked_ranks[0] if self.marked_ranks else None,
            parent=self,
        )
        layout.addWidget(self.preview)
        self._preview_lines: list[Any] = []

        self.layer_combo.currentIndexChanged.connect(self.refresh)
        self.layer_combo.layers_changed.connect(self.refresh)
        self.form.changed.connect(self._on_form_changed)
        self.viewer.dims.events.current_step.connect(self._on_step)

        self._update_buttons()
        self.refresh()

    def _update_buttons(self) -> None:
        self.form.fields["chroma"].enabled = self.space() == "ycbcr"

    # -- settings -------------------------------------------------------------------------

    def current_layer(self) -> Image | None:
        """The image layer the picker shows."""
        return self.layer_combo.current_layer()

    def set_layer(self, layer: Image) -> None:
        """Pick ``layer`` (it must be an image layer of the viewer)."""
        self.layer_combo.set_layer(layer)

    def space(self) -> str:
        """The colour space in which colour planes are factored."""
        return self.form.value("color")

    def set_space(self, space: str) -> None:
        """Select colour space ``space`` (``"rgb"`` or ``"ycbcr"``)."""
        self.form.set_values({"color": space})

    def rule_value(self) -> tuple[str, Any]:
        """The selected rank rule and its value."""
        name = self.form.rule("rule")
        return name, self.form.value(name)

    def set_rule(self, name: str, value: Any) -> None:
        """Select rank rule ``name`` (rank, percent or energy) with ``value``."""
        self.form.set_values({name: value})

    def _on_form_changed(self, values: dict[str, Any] | None = None) -> None:
        self._update_buttons()
        self.refresh()  # a new colour space needs new spectra; else nothing happens
        self.draw()

    # -- following the viewer -------------------------------------------------------------

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
        """Whether a spectrum is being computed (or its plot being drawn)."""
        return self.jobs.running

    @property
    def worker(self) -> FunctionWorker | None:
        """The thread worker computing a spectrum (None once it returned)."""
        return self.jobs.worker

    def refresh(self, *_: Any) -> FunctionWorker | None:
        """Compute the spectrum of the picked layer's shown plane (if not shown already).

        Returns
        -------
        FunctionWorker or None
            The running worker; None when nothing needs computing, or when a computation
            is running (the newest request then runs when it ends).
        """
        self.preview.refresh()
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
        space = self.space()
        key = (layer, index, space)
        if key == self._shown:
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        rgb = bool(layer.rgb)
        known = self._range[1] if self._range is not None and self._range[0] is data else None
        self._request = (key, data)
        # The worker reads only the plane shown (a dask stack stays lazy).
        return self.jobs.start(
            lambda ctx: _spectra_job(data, rgb, space, index, known),
            on_done=self._on_spectra,
            status=f"computing the spectrum of {layer.name!r}…",
        )

    def _on_spectra(self, value: tuple[list[str], list[np.ndarray], tuple[float, float]]) -> None:
        key, data = self._request
        self.names, self.spectra, value_range = value
        self._shown = key
        self._range = (data, value_range)
        layer, index, _ = key
        where = f" plane {index}" if index else ""
        self.status_label.setText(f"{layer.name}{where}: {len(self.spectra[0])} singular values")
        self.draw()

    def _preview_source(self) -> PreviewSource | None:
        layer = self.current_layer()
        if layer is None:
            return None
        return PreviewSource(
            layer, self._plane_index(layer), self.space(), float(self.form.value("chroma"))
        )

    def _mark_preview(self, k: int | None) -> None:
        """Move the preview's rank line on the plot (none when ``k`` is None)."""
        if (k is None) == (not self._preview_lines):
            for line in self._preview_lines:
                line.set_xdata([k, k])
            self.plot.update_overlay()  # blitted: no full redraw per slider move
        else:
            self.draw()  # the line appears or goes

    def _on_job_state(self) -> None:
        if not self.running and self._dirty:
            self._dirty = False
            self.refresh()

    # -- ranks and the plot ---------------------------------------------------------------

    def ranks(self) -> list[int]:
        """The rank per channel that the current rule picks, as the SVD codec computes it."""
        if not self.spectra:
            return []
        space = self._shown[2] if self._shown is not None and len(self.spectra) == 3 else "gray"
        return svd.choose_ranks(self.form.values(), self.spectra, space=space)

    def draw(self, *_: Any) -> None:
        """Redraw the spectra and mark the ranks of the current rule."""
        self.figure.clear()
        self._preview_lines = []
        self.plot.set_overlay([])
        self.marked_ranks = self.ranks()
        if not self.spectra:
            self.plot.style()
            self.canvas.draw_idle()
            return
        ax_s, ax_c = self.figure.subplots(1, 2)
        space = self._shown[2] if self._shown is not None else "rgb"
        colours = _COLOURS[space] if len(self.spectra) == 3 else ("ink",)
        colours = [self.plot.ink if c == "ink" else c for c in colours]
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
        # The preview's rank: a solid line, labelled so that it stays out of the legends.
        k = self.preview.rank
        if k is not None:
            self._preview_lines = [
                ax.axvline(k, color=self.plot.ink, lw=1.2, label="_preview") for ax in (ax_s, ax_c)
            ]
            self.plot.set_overlay(self._preview_lines)
        self.plot.style()
        self.canvas.draw_idle()
