"""The live rank preview of the SVD spectrum widget: a rank slider and one preview layer.

Turning the preview on factors the plane the spectrum shows once, in a worker thread with
progress and cancel (:func:`napari_svd_compress.codecs.svd.factorise`, up to the slider's
maximum).  Each slider move then asks for the rank-``k`` reconstruction ``U_k S_k V_k^T``;
a single background thread computes it (NumPy's matrix products release the GIL, so the
event loop keeps running), and only the newest request is ever computed: moves made
while one is computed are coalesced into the last of them (:class:`LatestOnly`).  The
result replaces the data of one layer, ``<layer> [svd preview]``, and its PSNR shows
beside the plot; once the slider rests the exact size of the bundle at that rank follows
(quantising and entropy coding the factors costs more than the product).

On a large plane (over :data:`DRAFT_PIXELS`) a slider being dragged shows drafts, every
second row and column (four times cheaper), and the full plane when it is let go; a rank
typed or stepped with the keyboard is shown in full at once.  The size is computed by a
second thread, :data:`REST_MS` after the last full preview, so that it never delays one.

"Keep" turns the preview into a regular result: the Compress widget compresses the layer
with the SVD codec at that rank (through :func:`napari_svd_compress.compress`, its real
bundle and figures, a row in its table), and the preview layer goes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, Qt, QTimer, Signal, Slot
from qtpy.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ... import registry
from ...api import container_for
from ...codecs import svd
from .job import JobContext, JobPanel, JobRunner
from .layer_picker import PREVIEW_KEY

if TYPE_CHECKING:
    import napari

    from ...codecs.svd import Factorisation

__all__ = ["DRAFT_PIXELS", "LatestOnly", "PreviewSource", "RankPreview", "rank_of", "slider_of"]

log = logging.getLogger(__name__)

PLUGIN = "napari-svd-compress"
#: Positions of the rank slider: ranks are spread on a log scale over them.
SLIDER_STEPS = 1000
#: Planes with more pixels than this show drafts while the slider is dragged.
DRAFT_PIXELS = 6_000_000
#: The slider rests when no preview was asked for this many milliseconds: the size follows.
REST_MS = 300


def rank_of(position: int, max_rank: int) -> int:
    """The rank at slider ``position`` (log scale: 0 is rank 1, the end ``max_rank``)."""
    if max_rank <= 1:
        return 1
    return int(min(max(round(math.exp(position / SLIDER_STEPS * math.log(max_rank))), 1), max_rank))


def slider_of(rank: int, max_rank: int) -> int:
    """The slider position of ``rank`` (inverse of :func:`rank_of`)."""
    if max_rank <= 1:
        return 0
    return round(SLIDER_STEPS * math.log(max(rank, 1)) / math.log(max_rank))


class LatestOnly(QObject):
    """One background thread that computes only the newest of the requests it is given.

    ``work(request, superseded)`` runs in the thread; ``superseded()`` says whether a
    newer request is waiting (long work may stop early and return None).  Its value is
    delivered to the main thread by :attr:`done` (or :attr:`failed` with the error);
    connect to them with :meth:`deliver_to`, so that :attr:`idle` stays False until the
    receiver has handled the value.

    Signals
    -------
    done(request, value)
    failed(request, message)
    """

    done = Signal(object, object)
    failed = Signal(object, str)

    def __init__(
        self, work: Callable[[Any, Callable[[], bool]], Any], parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._work = work
        self._cond = threading.Condition()
        self._pending: Any = None
        self._has_pending = False
        self._in_flight = 0  # taken by the thread and not yet handled by the receiver
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="svd preview", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """Whether nothing is computing, waiting, or on its way to the receiver."""
        with self._cond:
            return self._in_flight == 0 and not self._has_pending

    @property
    def waiting(self) -> bool:
        """Whether a request waits to be computed."""
        return self._has_pending

    def deliver_to(
        self, on_done: Callable[[Any, Any], None], on_failed: Callable[[Any, str], None]
    ) -> None:
        """Connect the receiver's slots (then the one that marks a value as landed)."""
        self.done.connect(on_done)
        self.failed.connect(on_failed)
        self.done.connect(self._landed)
        self.failed.connect(self._landed)

    @Slot()
    def _landed(self, *_: Any) -> None:
        with self._cond:
            self._in_flight -= 1

    def submit(self, request: Any) -> None:
        """Compute ``request`` next, dropping any request still waiting."""
        with self._cond:
            self._pending, self._has_pending = request, True
            self._cond.notify()

    def superseded(self) -> bool:
        """Whether a newer request waits (for the work to check)."""
        return self._has_pending or self._stopped

    def stop(self) -> None:
        """End the thread after the request it computes, if any."""
        with self._cond:
            self._stopped = True
            self._has_pending = False
            self._pending = None
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._has_pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                request, self._pending, self._has_pending = self._pending, None, False
                self._in_flight += 1
            try:
                value = self._work(request, self.superseded)
            except Exception as exc:  # shown to the user; the thread goes on
                log.exception("preview failed")
                value, error = None, f"{type(exc).__name__}: {exc}"
            else:
                error = None
            if self._stopped:
                return
            try:
                # In flight until the main thread has handled the value (_landed).
                if error is None:
                    self.done.emit(request, value)
                else:
                    self.failed.emit(request, error)
            except RuntimeError:  # the receiver's Qt object is gone
                return


@dataclass(frozen=True)
class PreviewSource:
    """What is previewed: a plane of an image layer, factored in a colour space."""

    layer: Image
    index: tuple[int, ...]
    space: str
    chroma: float

    def same(self, other: PreviewSource | None) -> bool:
        return (
            other is not None
            and other.layer == self.layer
            and (other.index, other.space, other.chroma) == (self.index, self.space, self.chroma)
        )


@dataclass(frozen=True)
class _Request:
    kind: str  # "image" or "size"
    fact: Factorisation
    rank: int
    step: int
    asked: float  # time.perf_counter() of the slider move


class RankPreview(QGroupBox):
    """The live preview controls: on/off, a rank slider and box, the figures, Keep.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    source : callable
        Returns the :class:`PreviewSource` to preview now (None: nothing to preview).
    on_rank : callable, optional
        Called with the rank shown (None when the preview is off), to mark it on a plot.
    start_rank : callable, optional
        The rank to show first once factored (by default the last one, or 50).
    parent : QWidget, optional

    Attributes
    ----------
    factorisation : Factorisation or None
        The factored plane (None until the preview is on and factored).
    layer : Image or None
        The preview layer.
    latencies : list of (int, float)
        For each full-resolution preview shown: its rank and the seconds from the move
        that asked for it to its data in the layer.
    psnr, nbytes : float or None, int or None
        The figures of the rank shown (``nbytes`` once computed).
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        source: Callable[[], PreviewSource | None],
        on_rank: Callable[[int | None], None] | None = None,
        start_rank: Callable[[], int | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("live rank preview", parent)
        self._start_rank = start_rank
        self._dirty = False
        self.viewer = viewer
        self._source_of = source
        self._on_rank = on_rank
        self.factorisation: Factorisation | None = None
        self.layer: Image | None = None
        self.latencies: list[tuple[int, float]] = []
        self.psnr: float | None = None
        self.nbytes: int | None = None
        self._source: PreviewSource | None = None
        self._container: Any = None
        self._rank: int | None = None
        self._shown: tuple[int, int] | None = None  # (rank, step) in the layer
        self._keeping: tuple[PreviewSource, int] | None = None
        self._sizing: _SizeRequest | None = None
        self._compress: Any = None  # the Compress widget a Keep went to

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.enable_check = QCheckBox("preview rank", self)
        self.enable_check.setToolTip(
            "Factor the plane once (in the background), then show it at the rank of the\n"
            "slider in a layer '<layer> [svd preview]', with its PSNR and bundle size"
        )
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, SLIDER_STEPS)
        self.rank_box = QSpinBox(self)
        self.rank_box.setRange(1, 1)
        self.rank_box.setToolTip("The rank, typed")
        self.keep_button = QPushButton("Keep", self)
        self.keep_button.setToolTip(
            "Compress the layer at this rank with the SVD codec (the Compress widget: the\n"
            "real bundle and figures, a row in its table); the preview layer goes"
        )
        top.addWidget(self.enable_check)
        top.addWidget(self.slider, stretch=1)
        top.addWidget(self.rank_box)
        top.addWidget(self.keep_button)
        layout.addLayout(top)
        self.figures_label = QLabel("", self)
        self.figures_label.setWordWrap(True)
        self.figures_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.figures_label)
        panel = JobPanel(self)
        row = QHBoxLayout()
        row.addWidget(panel.progress_bar, stretch=1)
        row.addWidget(panel.cancel_button)
        layout.addLayout(row)
        layout.addWidget(panel.status_label)
        self.progress_bar = panel.progress_bar
        self.cancel_button = panel.cancel_button
        self.status_label = panel.status_label
        self.jobs = JobRunner(panel, "SVD preview", on_state=self._on_job_state, parent=self)
        self.worker = LatestOnly(self._work, parent=self)
        self.sizer = LatestOnly(self._work, parent=self)
        for thread in (self.worker, self.sizer):
            thread.deliver_to(self._on_done, self._on_failed)
        self._rest = QTimer(self)
        self._rest.setSingleShot(True)
        self._rest.setInterval(REST_MS)
        self._rest.timeout.connect(self._on_rest)

        self.enable_check.toggled.connect(self._on_toggled)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(self._on_released)
        self.rank_box.valueChanged.connect(self._on_box)
        self.keep_button.clicked.connect(lambda: self.keep())
        self.destroyed.connect(lambda *_, a=self.worker, b=self.sizer: (a.stop(), b.stop()))
        self._update()

    # -- state ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the preview is on."""
        return self.enable_check.isChecked()

    def set_enabled(self, on: bool) -> None:
        """Turn the preview on (factoring the plane) or off (removing its layer)."""
        self.enable_check.setChecked(on)

    @property
    def rank(self) -> int | None:
        """The rank of the slider (None while nothing is factored)."""
        return self._rank if self.factorisation is not None else None

    @property
    def max_rank(self) -> int:
        """The slider's largest rank."""
        return self.factorisation.max_rank if self.factorisation is not None else 1

    @property
    def busy(self) -> bool:
        """Whether a factorisation, a reconstruction or a size is being computed."""
        return (
            self.jobs.running
            or not self.worker.idle
            or not self.sizer.idle
            or self._rest.isActive()
        )

    def _update(self) -> None:
        ready = self.factorisation is not None and not self.jobs.running
        for w in (self.slider, self.rank_box, self.keep_button):
            w.setEnabled(ready and self.enabled)

    def _on_job_state(self) -> None:
        self._update()
        if not self.jobs.running and self._dirty:
            self._dirty = False
            self.refresh()

    def _on_toggled(self, on: bool) -> None:
        if on:
            self.refresh()
        else:
            self.jobs.cancel()
            self._drop()
            self.status_label.setText("")
        self._update()

    def _drop(self) -> None:
        """Forget the factorisation and remove the preview layer."""
        self.factorisation = self._source = self._container = None
        self._shown = None
        self.psnr = self.nbytes = None
        self.figures_label.setText("")
        self._remove_layer()
        if self._on_rank is not None:
            self._on_rank(None)

    def _remove_layer(self) -> None:
        layer, self.layer = self.layer, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    # -- factoring ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Factor what the spectrum shows, if the preview is on and it changed."""
        if not self.enabled:
            return
        source = self._source_of()
        if source is None:
            self._drop()
            self.status_label.setText("no image layer")
            return
        if source.same(self._source) and (self.factorisation is not None or self.jobs.running):
            return
        if self.jobs.running:
            self._dirty = True  # refreshed when the running job ends
            self.jobs.cancel()
            return
        if self._source is not None and self._source.layer != source.layer:
            self._remove_layer()
        self._source = source
        self.factorisation = None
        self._shown = None
        self.psnr = self.nbytes = None
        self.figures_label.setText("")
        layer = source.layer
        data = layer.data[0] if layer.multiscale else layer.data
        rgb, index, space, chroma = bool(layer.rgb), source.index, source.space, source.chroma

        def job(ctx: JobContext) -> tuple[Factorisation, Any]:
            fact = svd.factorise(
                data,
                rgb=rgb,
                color=space,
                chroma=chroma,
                index=index,
                value_range=svd.unit_range(data, rgb=rgb) if index else None,
                progress=ctx.progress,
            )
            codec = registry.get("svd")
            params = codec.resolve({**fact.params, "rank": fact.max_rank})
            return fact, container_for(codec, params, fact.spec)

        self.jobs.start(
            job, on_done=self._on_factored, status=f"factoring {layer.name!r}…", what="factoring"
        )

    def _on_factored(self, value: tuple[Factorisation, Any]) -> None:
        fact, self._container = value
        if not self.enabled:
            return
        self.factorisation = fact
        capped = min(fact.shape[:2]) > fact.max_rank
        note = (
            f"\n(capped at {fact.max_rank}: factoring all {min(fact.shape[:2])} ranks of so "
            "large a plane would take minutes)"
            if capped
            else ""
        )
        tip = f"Rank 1 .. {fact.max_rank}, on a log scale{note}"
        if fact.shape[0] * fact.shape[1] > DRAFT_PIXELS:
            tip += "\nDrafts (every second pixel) while dragging; the full plane when let go"
        self.slider.setToolTip(tip)
        self.rank_box.blockSignals(True)
        self.rank_box.setRange(1, fact.max_rank)
        self.rank_box.blockSignals(False)
        self.status_label.setText(
            f"{self._source.layer.name}: factored up to rank {fact.max_rank}"
            + (" (capped)" if capped else "")
        )
        self._update()
        start = self._rank or (self._start_rank() if self._start_rank else None) or 50
        self.set_rank(min(max(start, 1), fact.max_rank))

    # -- the slider -----------------------------------------------------------------------

    def set_rank(self, k: int, *, draft: bool = False) -> None:
        """Show rank ``k`` (the slider and the box follow); ``draft`` allows a draft."""
        if self.factorisation is None:
            self._rank = int(k)
            return
        k = int(min(max(k, 1), self.factorisation.max_rank))
        self._rank = k
        for w, v in ((self.slider, slider_of(k, self.max_rank)), (self.rank_box, k)):
            w.blockSignals(True)
            w.setValue(v)
            w.blockSignals(False)
        if self._on_rank is not None:
            self._on_rank(k)
        fact = self.factorisation
        big = fact.shape[0] * fact.shape[1] > DRAFT_PIXELS
        step = 2 if draft and big else 1
        if self._shown == (k, step):
            return
        self._submit("image", k, step)

    def _submit(self, kind: str, k: int, step: int) -> None:
        self._rest.stop()
        self.worker.submit(_Request(kind, self.factorisation, k, step, time.perf_counter()))

    def _on_slider(self, position: int) -> None:
        k = rank_of(position, self.max_rank)
        if k != self._rank:
            self.set_rank(k, draft=self.slider.isSliderDown())

    def _on_released(self) -> None:
        if self._rank is not None:
            self.set_rank(self._rank)

    def _on_box(self, k: int) -> None:
        self.set_rank(k)

    # -- in the worker thread ---------------------------------------------------------------

    def _work(self, request: _Request, superseded: Callable[[], bool]) -> Any:
        fact = request.fact
        if request.kind == "size":
            # Stop when the slider moved on (reading an int set by the main thread).
            def moved() -> bool:
                return superseded() or self._rank != request.rank

            return fact.bundle_nbytes(request.rank, request.container, cancelled=moved)
        image = fact.reconstruct(request.rank, step=request.step)
        psnr = fact.psnr(image) if request.step == 1 else None
        return image, psnr

    # -- back in the main thread --------------------------------------------------------------

    @Slot(object, object)
    def _on_done(self, request: _Request, value: Any) -> None:
        if request.fact is not self.factorisation or not self.enabled or value is None:
            return
        if request.kind == "size":
            if request.rank == self._rank:
                self.nbytes = int(value)
                self._show_figures()
            return
        image, psnr = value
        self._show(image, request.step)
        self._shown = (request.rank, request.step)
        if request.step == 1:
            self.latencies.append((request.rank, time.perf_counter() - request.asked))
            self.psnr = psnr
            self.nbytes = None
            self._show_figures()
            if not self.worker.waiting and request.rank == self._rank:
                self._sizing = _SizeRequest.of(request, self._container)
                self._rest.start()  # if nothing else is asked for meanwhile, the size

    @Slot()
    def _on_rest(self) -> None:
        request = self._sizing
        if (
            request is not None
            and request.fact is self.factorisation
            and request.rank == self._rank
        ):
            self.sizer.submit(request)

    @Slot(object, str)
    def _on_failed(self, request: _Request, message: str) -> None:
        self.status_label.setText(f"preview failed: {message}")

    def _show(self, image: np.ndarray, step: int) -> None:
        source = self._source.layer
        scale = np.asarray(source.scale[-2:], dtype=float)
        translate = np.asarray(source.translate[-2:], dtype=float)
        if self.layer is None or self.layer not in self.viewer.layers:
            kwargs: dict[str, Any] = {
                "name": f"{source.name} [svd preview]",
                "rgb": bool(source.rgb),
                "scale": scale * step,
                "translate": translate,
                "contrast_limits": list(source.contrast_limits),
                "metadata": {PREVIEW_KEY: source.name},
            }
            if not source.rgb:
                kwargs["colormap"] = source.colormap
                kwargs["gamma"] = source.gamma
            active = self.viewer.layers.selection.active
            self.layer = self.viewer.add_layer(Image(image, **kwargs))
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active  # the preview does not take it
            return
        if tuple(self.layer.scale) != tuple(scale * step):
            self.layer.scale = scale * step
        self.layer.data = image

    def _show_figures(self) -> None:
        fact = self.factorisation
        if fact is None or self._rank is None:
            return
        ranks = fact.ranks(self._rank)
        text = f"rank {self._rank}"
        if len(ranks) > 1:
            names = ("Y", "Cb", "Cr") if fact.space == "ycbcr" else ("R", "G", "B")
            text += " (" + ", ".join(f"{n} {r}" for n, r in zip(names, ranks, strict=True)) + ")"
        if self.psnr is not None:
            text += f": PSNR {self.psnr:.2f} dB before quantisation"
        pixels = fact.shape[0] * fact.shape[1]
        if self.nbytes is not None:
            text += f"; bundle {self.nbytes:,} bytes, {self.nbytes * 8 / pixels:.3f} bpp"
        else:
            text += "; bundle size: computing…"
        self.figures_label.setText(text)

    # -- keeping ----------------------------------------------------------------------------

    def keep(self) -> Any:
        """Compress the previewed layer at the slider's rank in the Compress widget.

        Returns
        -------
        FunctionWorker or None
            The Compress widget's job (None when nothing could be started).
        """
        if self.factorisation is None or self._source is None or self._rank is None:
            return None
        source, k, fact = self._source, self._rank, self.factorisation
        _, widget = self.viewer.window.add_plugin_dock_widget(PLUGIN, "Compress")
        if widget.running:
            show_warning("SVD preview: the Compress widget is busy; Keep again when it is done")
            return None
        if self._compress is None or widget != self._compress:
            widget.result_added.connect(self._on_kept)
            self._compress = widget
        widget.set_layer(source.layer)
        widget.set_method("svd")
        widget.set_param("rank", k)
        widget.set_param("color", fact.params["color"])
        widget.set_param("chroma", fact.params["chroma"])
        widget.set_param("patch", 0)
        widget.set_param("qloss", fact.params["qloss"])
        job = widget.compress()
        if job is not None:
            self._keeping = (source, k)
            self.status_label.setText(f"keeping rank {k}: compressing in the Compress widget…")
        return job

    def _on_kept(self, run: Any) -> None:
        if self._keeping is None:
            return
        source, k = self._keeping
        if run.method != "svd" or run.params.get("rank") != k or run.source != source.layer.name:
            return
        self._keeping = None
        self._remove_layer()
        self._shown = None
        self.status_label.setText(f"kept rank {k} as {run.layer.name!r}")


@dataclass(frozen=True)
class _SizeRequest(_Request):
    container: Any = None

    @classmethod
    def of(cls, request: _Request, container: Any) -> _SizeRequest:
        return cls("size", request.fact, request.rank, 1, request.asked, container)
