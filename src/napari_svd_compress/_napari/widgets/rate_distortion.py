"""The "Rate-distortion" dock widget: sweep several methods over an image layer and plot
PSNR and SSIM against bits per pixel; clicking a point of the plot compresses the layer at
that point's setting and adds the result as a layer.

The sweep itself is :func:`napari_svd_compress.pipelines.sweep.sweep` and the plot
:func:`~napari_svd_compress.pipelines.sweep.plot_rd`, drawn into a matplotlib Qt canvas inside the
dock.  The layer picker (:mod:`.layer_picker`), the job handling (:mod:`.job`) and the
adding of result layers (:mod:`.results`) are the Compress widget's, so that both widgets
behave and name their layers the same way.

A sweep measures the full image or only the part of it visible in the canvas
(:func:`visible_region`), which on a large image is much faster; the plot's title and the
CSV export say which part was measured.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ... import registry
from ...errors import Cancelled, SVDCompressError
from ...fileio.atomic import atomic_write
from ...pipelines.sweep import DEFAULT_METHODS, SweepTable, plot_rd, sweep
from ..worker import run_job
from .job import JobContext, JobPanel, JobRunner
from .layer_picker import LayerPicker
from .plot import PlotPanel
from .results import Run, add_result

if TYPE_CHECKING:
    import napari
    from matplotlib.backend_bases import PickEvent
    from matplotlib.lines import Line2D
    from napari.qt.threading import FunctionWorker

    from ...api import Result

__all__ = ["REGIONS", "RateDistortionWidget", "Region", "full_region", "visible_region"]

log = logging.getLogger(__name__)

#: Methods per row of the checkbox grid.
_CHECK_COLUMNS = 3
#: The region choices: (shown text, :meth:`RateDistortionWidget.set_region` name).
REGIONS = (("full image", "full"), ("visible region", "visible"))
#: The smallest visible region a sweep measures, in pixels a side (less of a small image).
MIN_REGION = 64


def _pixels_text(n: int) -> str:
    return f"{n / 1e6:.1f} Mpx" if n >= 100_000 else f"{n} px"


@dataclass(frozen=True)
class Region:
    """The part of a layer's image plane a sweep measures: rows ``y``, columns ``x``.

    The slices apply to the last two spatial axes (before the colour axis of an RGB
    layer), so a stack is cropped the same way in every plane.
    """

    y: tuple[int, int]
    x: tuple[int, int]
    full: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width of the region."""
        return (self.y[1] - self.y[0], self.x[1] - self.x[0])

    @property
    def text(self) -> str:
        """What was measured, for the plot's title and the CSV: ``"full image, 24.0 Mpx"``
        or ``"visible region y 1000:3000, x 2000:5000, 6.0 Mpx"``."""
        pixels = _pixels_text(self.shape[0] * self.shape[1])
        if self.full:
            return f"full image, {pixels}"
        return f"visible region y {self.y[0]}:{self.y[1]}, x {self.x[0]}:{self.x[1]}, {pixels}"

    def crop(self, data: Any, rgb: bool) -> Any:
        """``data`` (a layer's array, NumPy or lazy) cut to the region; lazy stays lazy."""
        if self.full:
            return data
        index = (Ellipsis, slice(*self.y), slice(*self.x))
        return data[(*index, slice(None)) if rgb else index]


def _plane_shape(layer: Image) -> tuple[int, int]:
    data = layer.data[0] if layer.multiscale else layer.data
    shape = data.shape[:-1] if layer.rgb else data.shape
    return int(shape[-2]), int(shape[-1])


def full_region(layer: Image) -> Region:
    """The whole image plane of ``layer``."""
    height, width = _plane_shape(layer)
    return Region((0, height), (0, width), full=True)


def _camera(viewer: napari.viewer.Viewer) -> Any:
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 moved the camera there
    return scene.camera if scene is not None else viewer.camera


def _canvas_size(viewer: napari.viewer.Viewer) -> tuple[float, float]:
    """Height and width in screen pixels of the canvas (of one view box in grid mode).

    napari's model of the canvas follows the Qt canvas while the window is shown.
    """
    model = getattr(viewer, "canvas", None)  # napari >= 0.6: the canvas model
    if model is not None and hasattr(model, "viewbox_size"):
        size = np.asarray(model.viewbox_size(viewer.layers), dtype=float)
    else:  # napari 0.5
        size = np.asarray(viewer._canvas_size, dtype=float)
        if viewer.grid.enabled:
            shape = np.asarray(viewer.grid.actual_shape(len(viewer.layers)), dtype=float)
            size = size / np.maximum(shape, 1.0)
    return float(size[0]), float(size[1])


def visible_region(
    viewer: napari.viewer.Viewer, layer: Image, min_size: int = MIN_REGION
) -> Region:
    """The part of ``layer``'s image plane inside the canvas's current view.

    The view (the camera's center and zoom over the canvas's size) is mapped to the
    layer's data coordinates through its transforms (scale, translate, rotation...),
    widened to whole pixels (pixel ``i`` covers ``[i - 0.5, i + 0.5)``) and clipped to
    the image.

    Raises
    ------
    ValueError
        When the view is 3-D, shows other axes than the layer's last two, misses the
        layer, or shows less of it than ``min_size`` pixels a side (or the whole height
        or width of a smaller image).
    """
    dims = viewer.dims
    if dims.ndisplay != 2:
        raise ValueError("the visible region needs a 2-D view")
    offset = dims.ndim - layer.ndim
    displayed = [d - offset for d in dims.displayed]
    if displayed != [layer.ndim - 2, layer.ndim - 1]:
        raise ValueError("the view does not show the layer's image plane (its last two axes)")
    height, width = _canvas_size(viewer)
    camera = _camera(viewer)
    zoom = float(camera.zoom)
    cy, cx = (float(c) for c in tuple(camera.center)[-2:])
    half_y, half_x = height / (2 * zoom), width / (2 * zoom)
    point = list(dims.point)
    corners = []
    for wy in (cy - half_y, cy + half_y):
        for wx in (cx - half_x, cx + half_x):
            world = list(point)
            world[dims.displayed[0]], world[dims.displayed[1]] = wy, wx
            corners.append(np.asarray(layer.world_to_data(world), dtype=float)[-2:])
    lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
    plane = _plane_shape(layer)
    eps = 1e-6
    bounds = []
    for a, b, n in zip(lo, hi, plane, strict=True):
        start = max(math.floor(a - 0.5 + eps) + 1, 0)
        stop = min(math.ceil(b + 0.5 - eps), n)
        bounds.append((start, stop))
    (y0, y1), (x0, x1) = bounds
    if y1 <= y0 or x1 <= x0:
        raise ValueError("the layer is not in the canvas's view")
    if y1 - y0 < min(min_size, plane[0]) or x1 - x0 < min(min_size, plane[1]):
        raise ValueError(
            f"the visible part of the layer (y {y0}:{y1}, x {x0}:{x1}) is smaller than "
            f"{min_size}x{min_size} pixels: zoom out"
        )
    return Region((y0, y1), (x0, x1), full=(y0, y1, x0, x1) == (0, plane[0], 0, plane[1]))


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
    data: Any, rgb: bool, plan: dict[str, list[dict]], ctx: JobContext, region: str | None = None
) -> tuple[SweepTable, list[str]]:
    """Run the sweep method by method; return the table and the methods' failures.

    One sweep per method, so that a method that cannot take this image (a baseline on a
    stack, a codec limited to some channel counts) is reported and skipped instead of
    losing every other method's points.  A cancel raises
    :class:`~napari_svd_compress.errors.Cancelled`.  ``region`` says what ``data`` is
    (:attr:`Region.text`); the table keeps it.
    """
    total = max(sum(len(v) for v in plan.values()), 1)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    done = 0
    for name, params in plan.items():
        ctx.check()

        def progress(fraction: float, start: int = done, n: int = len(params)) -> None:
            ctx.progress((start + fraction * n) / total)

        try:
            table = sweep(
                data, [name], points={name: params}, progress=progress, rgb=rgb, region=region
            )
        except Cancelled:
            raise  # an SVDCompressError, but it ends the sweep rather than one method
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
        ctx.report(done / total)
    return SweepTable(rows=rows, region=region), failures


class RateDistortionWidget(QWidget):
    """Rate-distortion curves of an image layer, one per selected method.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose image layers are offered (napari passes it in).

    Attributes
    ----------
    table : SweepTable or None
        The last finished sweep; each row also has ``params``, the raw parameters.
    region : Region or None
        The part of the layer the last finished sweep measured.
    points : dict
        Per method, sweep values to use instead of the codec's defaults (as for
        :func:`~napari_svd_compress.pipelines.sweep.sweep`'s ``points``).
    runs : list of Run
        The results added by clicking points.
    jobs : JobRunner
        Runs, cancels and reports the sweep and the compression of a clicked point.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.table: SweepTable | None = None
        self.region: Region | None = None
        self._job_region: Region | None = None
        self.points: dict[str, Sequence[Any]] = {}
        self.runs: list[Run] = []
        self._checks: dict[str, QCheckBox] = {}
        self._source: Image | None = None  # the layer of the sweep shown
        self._job_layer: Image | None = None  # the layer of the running job
        self._lines: dict[Line2D, tuple[str, str]] = {}
        self._marks: list[Any] = []

        layout = QVBoxLayout(self)
        top = QFormLayout()
        self.layer_combo = LayerPicker(
            napari_viewer, tooltip="The image layer to sweep", parent=self
        )
        top.addRow("layer", self.layer_combo)
        self.region_combo = QComboBox(self)
        for text, name in REGIONS:
            self.region_combo.addItem(text, name)
        self.region_combo.setToolTip(
            "What the sweep measures: the whole image, or only the part of it inside the\n"
            f"canvas's current view (at least {MIN_REGION}x{MIN_REGION} pixels; much faster on "
            "a large image).\nThe plot's title and the CSV export say which part was measured;"
            "\na click on a point compresses the whole layer."
        )
        top.addRow("region", self.region_combo)
        layout.addLayout(top)

        self.method_box = QGroupBox("methods", self)
        self.method_grid = QGridLayout(self.method_box)
        layout.addWidget(self.method_box)

        panel = JobPanel(self)
        self.cancel_button = panel.cancel_button
        self.progress_bar = panel.progress_bar
        self.status_label = panel.status_label
        buttons = QHBoxLayout()
        self.sweep_button = QPushButton("Sweep", self)
        self.sweep_button.setToolTip("Compress the layer at each method's sweep settings")
        buttons.addWidget(self.sweep_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)

        # napari's theme, and matplotlib's toolbar (zoom, pan, save as PNG/SVG).
        self.plot = PlotPanel(napari_viewer, self)
        self.figure = self.plot.figure
        self.canvas = self.plot.canvas
        self.canvas.setToolTip("Click a point to compress the layer at that setting")
        self.canvas.mpl_connect("pick_event", self._on_pick)
        layout.addWidget(self.plot, stretch=1)

        export = QHBoxLayout()
        self.csv_button = QPushButton("Export CSV…", self)
        self.png_button = QPushButton("Export PNG…", self)
        export.addWidget(self.csv_button)
        export.addWidget(self.png_button)
        layout.addLayout(export)

        self.jobs = JobRunner(panel, "Rate-distortion", on_state=self._update_buttons, parent=self)

        self.sweep_button.clicked.connect(self.run_sweep)
        self.csv_button.clicked.connect(self._csv_dialog)
        self.png_button.clicked.connect(self._png_dialog)
        self.layer_combo.layers_changed.connect(self._update_buttons)

        self.refresh_methods()
        self._update_buttons()

    # -- layers and jobs ------------------------------------------------------------------

    def current_layer(self) -> Image | None:
        """The image layer the picker shows."""
        return self.layer_combo.current_layer()

    def set_layer(self, layer: Image) -> None:
        """Pick ``layer`` (it must be an image layer of the viewer)."""
        self.layer_combo.set_layer(layer)

    @property
    def running(self) -> bool:
        """Whether a job is running or its result is still being handled."""
        return self.jobs.running

    @property
    def worker(self) -> FunctionWorker | None:
        """The thread worker of the running job (None once it returned)."""
        return self.jobs.worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress report."""
        self.jobs.cancel()

    def _update_buttons(self) -> None:
        self.sweep_button.setEnabled(not self.running and self.current_layer() is not None)
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

    def region_mode(self) -> str:
        """``"full"`` or ``"visible"``: what the next sweep measures."""
        return self.region_combo.currentData()

    def set_region(self, mode: str) -> None:
        """Measure the ``"full"`` image or the ``"visible"`` region in the next sweep."""
        index = self.region_combo.findData(mode)
        if index < 0:
            raise ValueError(f"region must be one of {', '.join(n for _, n in REGIONS)}")
        self.region_combo.setCurrentIndex(index)

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
        try:
            region = (
                visible_region(self.viewer, layer)
                if self.region_mode() == "visible"
                else full_region(layer)
            )
        except ValueError as exc:
            show_warning(f"Rate-distortion: {exc}")
            return None
        rgb = bool(layer.rgb)
        data = region.crop(layer.data[0] if layer.multiscale else layer.data, rgb)
        n = sum(len(v) for v in plan.values())
        self._job_layer = layer
        self._job_region = region
        return self.jobs.start(
            lambda ctx: _sweep_job(data, rgb, plan, ctx, region.text),
            on_done=self._on_swept,
            status=(
                f"sweeping {layer.name!r} ({region.text}): {len(methods)} methods, {n} points…"
            ),
            what="sweep",
        )

    def _on_swept(self, value: tuple[SweepTable, list[str]]) -> None:
        table, failures = value
        layer = self._job_layer
        for failure in failures:
            show_warning(f"Rate-distortion: {failure}")
        if not len(table):
            self.status_label.setText("no method could compress this layer")
            return
        self.table = table
        self.region = self._job_region
        self._source = layer
        self.draw()
        whole = "" if self.region is None or self.region.full else " the whole layer"
        self.status_label.setText(
            f"{layer.name} ({table.region}): {len(table)} points; click one to compress"
            f"{whole} at its setting"
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
        self.plot.style()
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
                    [row["bpp"]], [row[key]], "o", ms=10, mfc="none", color=self.plot.ink, zorder=5
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
        data = source.data[0] if source.multiscale else source.data
        rgb = bool(source.rgb)
        method, params = row["method"], dict(row["params"])
        self._job_layer = source
        return self.jobs.start(
            lambda ctx: run_job(data, method, rgb, params, ctx.progress),
            on_done=self._on_compressed,
            status=f"compressing {source.name!r} with {method} {row['param']}…",
        )

    def _on_compressed(self, result: Result) -> None:
        run, steps = add_result(self.viewer, result, self._job_layer)
        self.runs.append(run)
        self.status_label.setText(
            f"{run.layer.name}: {result.nbytes} bytes, {result.bpp:.3f} bpp, "
            f"PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f}"
        )
        self.jobs.later(steps)

    # -- exports --------------------------------------------------------------------------

    def export_csv(self, path: str | Path) -> Path:
        """Write the sweep table as CSV: the columns of :data:`.sweep.COLUMNS`, then
        ``region``, the part of the layer measured (:attr:`Region.text`)."""
        if self.table is None:
            raise ValueError("there is no sweep to export")
        region = self.table.region or ""
        SweepTable(
            rows=[{**row, "region": region} for row in self.table],
            columns=(*self.table.columns, "region"),
            region=self.table.region,
        ).to_csv(path)
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
