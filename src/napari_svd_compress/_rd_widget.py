"""The "Rate-distortion" dock widget: sweep several methods over an image layer and plot
PSNR and SSIM against bits per pixel; clicking a point of the plot compresses the layer at
that point's setting and adds the result as a layer.

The sweep itself is :func:`napari_svd_compress.sweep.sweep` and the plot
:func:`~napari_svd_compress.sweep.plot_rd`, drawn into a matplotlib Qt canvas inside the
dock.  The layer picker, the progress and cancel handling and the adding of result layers
come from the mixins the Compress widget is built on, so that both widgets behave and
name their layers the same way.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import _compress_process, registry
from ._widget import _POLL_MS, _PROGRESS_STEPS, _STEP_MS, Run, _Jobs, _LayerPicker
from .atomic import atomic_write
from .errors import Cancelled, SVDCompressError
from .sweep import DEFAULT_METHODS, SweepTable, plot_rd, sweep

if TYPE_CHECKING:
    import napari
    from matplotlib.backend_bases import PickEvent
    from matplotlib.lines import Line2D
    from napari.qt.threading import FunctionWorker

__all__ = ["RateDistortionWidget"]

log = logging.getLogger(__name__)

#: Methods per row of the checkbox grid.
_CHECK_COLUMNS = 3


def _plan_for(names: Sequence[str], points: Mapping[str, Sequence[Any]]) -> dict[str, list[dict]]:
    """Per method, the explicit parameter dicts of its sweep points.

    Handing :func:`sweep` dicts (rather than bare values) makes its rows line up one to one
    with these dicts, so each row can carry the raw parameters a click needs, without
    parsing the ``param`` text back.
    """
    plan: dict[str, list[dict]] = {}
    for name in names:
        codec = registry.get(name)
        pname = codec.sweep[0] if codec.sweep else None
        values = points.get(name)
        if values is None:
            values = codec.sweep[1] if codec.sweep else [{}]
        plan[name] = [dict(v) if isinstance(v, Mapping) else {pname: v} for v in values]
    return plan


def _sweep_job(
    data: Any,
    rgb: bool,
    plan: dict[str, list[dict]],
    flag: threading.Event,
    widget: RateDistortionWidget,
) -> tuple[str, Any]:
    """Run the sweep method by method; return ``("ok", (table, failures))``,
    ``("cancelled", None)`` or ``("error", message)``.

    One sweep per method, so that a method that cannot take this image (a baseline on a
    stack, a codec limited to some channel counts) is reported and skipped instead of
    losing every other method's points.
    """
    total = max(sum(len(v) for v in plan.values()), 1)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    done = 0
    for name, params in plan.items():
        if flag.is_set():
            return "cancelled", None

        def progress(fraction: float, start: int = done, n: int = len(params)) -> None:
            widget._fraction = (start + fraction * n) / total
            if flag.is_set():
                raise Cancelled("cancelled")

        try:
            table = sweep(data, [name], points={name: params}, progress=progress, rgb=rgb)
        except Cancelled:
            return "cancelled", None
        except MemoryError:
            failures.append(f"{name}: not enough memory")
        except SVDCompressError as exc:
            failures.append(f"{name}: {exc}")
        except Exception as exc:  # a bug in a codec: reported, logged with its traceback
            log.exception("sweep of %s failed", name)
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            for row, p in zip(table.rows, params, strict=True):
                row["params"] = dict(p)  # an extra key: the CSV keeps its columns
            rows.extend(table.rows)
        done += len(params)
        widget._fraction = done / total
    return "ok", (SweepTable(rows=rows), failures)


class RateDistortionWidget(_LayerPicker, _Jobs, QWidget):
    """Rate-distortion curves of an image layer, one per selected method.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose image layers are offered (napari passes it in).

    Attributes
    ----------
    table : SweepTable or None
        The last finished sweep; each row also has ``params``, the raw parameters.
    points : dict
        Per method, sweep values to use instead of the codec's defaults (as for
        :func:`~napari_svd_compress.sweep.sweep`'s ``points``).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.table: SweepTable | None = None
        self.points: dict[str, Sequence[Any]] = {}
        self.runs: list[Run] = []
        self.worker: FunctionWorker | None = None
        self._pending = False
        self._cancel_flag = threading.Event()
        self._fraction = 0.0
        self._layers: list[Image] = []
        self._checks: dict[str, QCheckBox] = {}
        self._source: Image | None = None  # the layer of the sweep shown
        self._job_layer: Image | None = None  # the layer of the running job
        self._lines: dict[Line2D, tuple[str, str]] = {}
        self._marks: list[Any] = []

        layout = QVBoxLayout(self)
        top = QFormLayout()
        self.layer_combo = QComboBox(self)
        self.layer_combo.setToolTip("The image layer to sweep")
        top.addRow("layer", self.layer_combo)
        layout.addLayout(top)

        self.method_box = QGroupBox("methods", self)
        self.method_grid = QGridLayout(self.method_box)
        layout.addWidget(self.method_box)

        buttons = QHBoxLayout()
        self.sweep_button = QPushButton("Sweep", self)
        self.sweep_button.setToolTip("Compress the layer at each method's sweep settings")
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.sweep_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, _PROGRESS_STEPS)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        self.figure = Figure(figsize=(6, 3.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setParent(self)
        self.canvas.setMinimumHeight(260)
        self.canvas.setToolTip("Click a point to compress the layer at that setting")
        self.canvas.mpl_connect("pick_event", self._on_pick)
        layout.addWidget(self.canvas, stretch=1)

        export = QHBoxLayout()
        self.csv_button = QPushButton("Export CSV…", self)
        self.png_button = QPushButton("Export PNG…", self)
        export.addWidget(self.csv_button)
        export.addWidget(self.png_button)
        layout.addLayout(export)

        self._poll = QTimer(self)
        self._poll.setInterval(_POLL_MS)
        self._poll.timeout.connect(self._show_progress)

        self.sweep_button.clicked.connect(self.run_sweep)
        self.cancel_button.clicked.connect(self.cancel)
        self.csv_button.clicked.connect(self._csv_dialog)
        self.png_button.clicked.connect(self._png_dialog)

        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)
        events.moved.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._on_active)

        self.refresh_methods()
        self._refresh_layers()
        self._on_active()
        self._update_buttons()

    # -- hooks of the shared mixins --------------------------------------------------------

    def _refresh_table_names(self) -> None:
        """Nothing to rename: this widget lists no layer names."""

    def _append_row(self, run: Run) -> None:
        """Nothing to list: the result is the new layer and the status line."""

    def _update_buttons(self) -> None:
        self.sweep_button.setEnabled(not self.running and self.current_layer() is not None)
        self.cancel_button.setEnabled(self.running)
        has_table = self.table is not None and len(self.table) > 0
        self.csv_button.setEnabled(has_table)
        self.png_button.setEnabled(has_table)

    # -- methods --------------------------------------------------------------------------

    def refresh_methods(self) -> None:
        """One checkbox per registered codec (a codec registered since is added)."""
        codecs = registry.all_codecs()
        if list(self._checks) == [c.name for c in codecs]:
            return
        checked = {n for n, box in self._checks.items() if box.isChecked()}
        first = not self._checks
        for box in self._checks.values():
            self.method_grid.removeWidget(box)
            box.deleteLater()
        self._checks.clear()
        for i, codec in enumerate(codecs):
            box = QCheckBox(codec.name, self.method_box)
            box.setToolTip(f"{codec.label}: {codec.description}")
            box.setChecked(codec.name in (DEFAULT_METHODS if first else checked))
            self._checks[codec.name] = box
            self.method_grid.addWidget(box, i // _CHECK_COLUMNS, i % _CHECK_COLUMNS)

    def showEvent(self, event: Any) -> None:  # Qt's name: refresh the methods when shown
        self.refresh_methods()
        super().showEvent(event)

    def selected_methods(self) -> list[str]:
        """Registry names of the checked methods, in registry order."""
        return [name for name, box in self._checks.items() if box.isChecked()]

    def set_methods(self, names: Sequence[str]) -> None:
        """Check exactly the methods ``names``."""
        self.refresh_methods()
        unknown = set(names) - set(self._checks)
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(sorted(unknown))}")
        for name, box in self._checks.items():
            box.setChecked(name in names)

    # -- sweeping -------------------------------------------------------------------------

    def _start(
        self,
        job: Any,
        args: tuple,
        flag: threading.Event,
        layer: Image,
        on_returned: Any,
        status: str,
    ) -> FunctionWorker:
        """Run ``job(*args)`` on ``layer`` in a napari thread worker; Cancel sets ``flag``.

        ``on_returned`` must be a bound method (not a lambda): Qt then drops the connection
        if the widget is deleted (its dock closed) before the worker ends.
        """
        from napari.qt.threading import thread_worker

        self._cancel_flag = flag
        self._job_layer = layer
        self._fraction = 0.0
        self.worker = worker = thread_worker(job, start_thread=False)(*args)
        worker.returned.connect(on_returned)
        worker.finished.connect(self._on_finished)
        self.progress_bar.setValue(0)
        self.status_label.setText(status)
        self._update_buttons()
        self._poll.start()
        worker.start()
        return worker

    def run_sweep(self) -> FunctionWorker | None:
        """Start a sweep of the picked layer over the checked methods.

        Returns
        -------
        FunctionWorker or None
            The running worker (None when nothing could be started; the reason is shown
            as a notification).
        """
        if self.running:
            return None
        layer = self.current_layer()
        if layer is None:
            show_warning("Rate-distortion: there is no image layer to sweep")
            return None
        methods = self.selected_methods()
        if not methods:
            show_warning("Rate-distortion: check at least one method")
            return None
        try:
            plan = _plan_for(methods, self.points)
        except SVDCompressError as exc:
            show_error(f"Rate-distortion: {exc}")
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        n = sum(len(v) for v in plan.values())
        flag = threading.Event()
        return self._start(
            _sweep_job,
            (data, bool(layer.rgb), plan, flag, self),
            flag,
            layer,
            self._on_swept,
            f"sweeping {layer.name!r}: {len(methods)} methods, {n} points…",
        )

    def _on_swept(self, out: tuple[str, Any]) -> None:
        status, payload = out
        layer = self._job_layer
        if status == "cancelled":
            self.status_label.setText("cancelled")
            self.progress_bar.setValue(0)
            show_info("Rate-distortion: sweep cancelled")
            return
        if status == "error":
            self.status_label.setText(f"failed: {payload}")
            self.progress_bar.setValue(0)
            show_error(f"Rate-distortion: {payload}")
            return
        table, failures = payload
        for failure in failures:
            show_warning(f"Rate-distortion: {failure}")
        self.progress_bar.setValue(_PROGRESS_STEPS)
        if not len(table):
            self.status_label.setText("no method could compress this layer")
            return
        self.table = table
        self._source = layer
        self.draw()
        self.status_label.setText(
            f"{layer.name}: {len(table)} points; click one to compress at its setting"
        )
        self._update_buttons()

    # -- the plot -------------------------------------------------------------------------

    def draw(self) -> None:
        """Redraw the plot of :attr:`table` (PSNR left, SSIM right), points pickable."""
        self.figure.clear()
        self._lines.clear()
        self._marks.clear()
        if self.table is None:
            self.canvas.draw_idle()
            return
        axes = self.figure.subplots(1, 2)
        title = self._source.name if self._source is not None else None
        plot_rd(self.table, axes, title=title)
        for ax, key in zip(axes, ("psnr", "ssim"), strict=True):
            for line in ax.get_lines():
                line.set_picker(True)
                line.set_pickradius(5)
                self._lines[line] = (line.get_label(), key)
        self.canvas.draw_idle()

    def lines(self, key: str = "psnr") -> list[Line2D]:
        """The plotted curves of ``key`` (``"psnr"`` or ``"ssim"``)."""
        return [line for line, (_, k) in self._lines.items() if k == key]

    def row_at(self, line: Line2D, index: int) -> dict[str, Any]:
        """The table row drawn as point ``index`` of ``line``."""
        method, key = self._lines[line]
        x = float(line.get_xdata()[index])
        y = float(line.get_ydata()[index])
        candidates = [r for r in self.table or [] if r["method"] == method]
        # The curve is the rows sorted by rate, minus non-finite values: find the row by
        # its coordinates rather than by position.
        return min(candidates, key=lambda r: (abs(r["bpp"] - x), abs(r[key] - y)))

    def _on_pick(self, event: PickEvent) -> None:
        if event.artist not in self._lines or not len(getattr(event, "ind", ())):
            return
        if self.running:
            # One click fires a pick for each curve near it: only the first one counts.
            return
        row = self.row_at(event.artist, int(event.ind[0]))
        self._mark(row)
        self.compress_row(row)

    def _mark(self, row: dict[str, Any]) -> None:
        for artist in self._marks:
            artist.remove()
        self._marks.clear()
        for line, (method, key) in self._lines.items():
            if method == row["method"]:
                (mark,) = line.axes.plot(
                    [row["bpp"]], [row[key]], "o", ms=10, mfc="none", mec="k", zorder=5
                )
                self._marks.append(mark)
        self.canvas.draw_idle()

    def compress_row(self, row: dict[str, Any]) -> FunctionWorker | None:
        """Compress the swept layer at ``row``'s method and parameters and add the result.

        Returns
        -------
        FunctionWorker or None
            The running worker (None when nothing could be started).
        """
        source = self._source
        if self.running or source is None:
            return None
        if source not in self.viewer.layers:
            show_warning(f"Rate-distortion: the layer {source.name!r} is gone")
            return None
        flag = threading.Event()

        def progress(fraction: float) -> None:
            self._fraction = fraction
            if flag.is_set():
                raise Cancelled("cancelled")

        data = source.data[0] if source.multiscale else source.data
        method, params = row["method"], dict(row["params"])
        return self._start(
            _compress_process.run_job,
            (data, method, bool(source.rgb), params, progress),
            flag,
            source,
            self._on_compressed,
            f"compressing {source.name!r} with {method} {row['param']}…",
        )

    def _on_compressed(self, out: tuple[str, Any]) -> None:
        status, payload = out
        source = self._job_layer
        if status != "ok":
            self.progress_bar.setValue(0)
            text = "cancelled" if status == "cancelled" else f"failed: {payload}"
            self.status_label.setText(text)
            (show_info if status == "cancelled" else show_error)(f"Rate-distortion: {text}")
            return
        self.progress_bar.setValue(_PROGRESS_STEPS)
        # As in the Compress widget: a turn of the event loop before napari adds the layer.
        self._pending = True
        QTimer.singleShot(_STEP_MS, lambda: self._add_result(payload, None, source))

    # -- exports --------------------------------------------------------------------------

    def export_csv(self, path: str | Path) -> Path:
        """Write the sweep table as CSV (the columns of :data:`.sweep.COLUMNS`)."""
        if self.table is None:
            raise ValueError("there is no sweep to export")
        self.table.to_csv(path)
        return Path(path)

    def export_png(self, path: str | Path) -> Path:
        """Write the plot as shown as PNG (atomically)."""
        if self.table is None:
            raise ValueError("there is no sweep to export")
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=110)
        return atomic_write(path, buf.getvalue())

    def _csv_dialog(self) -> None:
        self._save_dialog("Export the sweep table", "rate-distortion.csv", "CSV (*.csv)")

    def _png_dialog(self) -> None:
        self._save_dialog("Export the plot", "rate-distortion.png", "PNG (*.png)")

    def _save_dialog(self, title: str, default: str, pattern: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, title, default, pattern)
        if not path:
            return
        suffix = Path(default).suffix
        if not Path(path).suffix:
            path += suffix
        try:
            (self.export_csv if suffix == ".csv" else self.export_png)(path)
        except (OSError, ValueError) as exc:
            show_error(f"cannot write {path}: {exc}")
