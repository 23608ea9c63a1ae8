"""The "Compress" dock widget: a thin Qt layer over :func:`napari_svd_compress.compress`.

The parameter form is generated from the codec registry (:class:`.params.ParamForm`), so a
codec registered later appears with its parameters without any code here.  Compression
runs in a helper process (or a thread worker); the main thread only polls the progress
fraction and, at the end, adds the finished arrays as layers, so the viewer stays
responsive.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QPoint, Qt, Signal
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QMenu,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ... import registry
from ...errors import SVDCompressError
from ..worker import CannotSend, CompressProcess, JobOutcome, run_job
from ..worker import shared as shared_process
from ..writer import pixel_digest
from .compare import Comparison
from .job import JobContext, JobPanel, JobRunner
from .layer_picker import LayerPicker
from .params import ParamForm
from .results import Run, add_result, error_map

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from ...api import Result

__all__ = ["COLUMNS", "FLIP_KEY", "CompressWidget"]

log = logging.getLogger(__name__)

#: The library's package: codecs registered from its modules exist in the helper process.
_LIBRARY = registry.__name__.rpartition(".")[0]

#: Columns of the results table (the CSV export adds encode and decode seconds).
COLUMNS = ("layer", "method", "parameters", "bytes", "bpp", "ratio", "PSNR", "SSIM", "seconds")

#: The key that flips between the source and the selected result (in the viewer's canvas,
#: and in this widget).
FLIP_KEY = "F"

_COMPARE_TIP = (
    "Show the source and the selected result side by side (napari's grid mode, one camera:\n"
    "zoom and pan move both; select several rows to see several results). Press again to\n"
    "return to your view (grid off, the layers you had visible).\n"
    f"Flip: press {FLIP_KEY} (in the viewer or here) to see the source and the selected result\n"
    f"in the same place, one at a time; each {FLIP_KEY} swaps them."
)
_FLIP_TIP = (
    f"Flip ({FLIP_KEY}): the source and the selected result in the same place, one at a time;\n"
    "press again to swap. Compare (or Esc in the table) returns to your view."
)
_ERROR_MAPS = (
    ("signed (result - source, luma)", "signed"),
    ("|difference|", "absolute"),
)


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "result"


class CompressWidget(QWidget):
    """Compress an image layer with any registered method and compare the results.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose image layers are offered (napari passes it in).

    Attributes
    ----------
    form : ParamForm or None
        The parameter form of the selected method.
    runs : list of Run
        The compressions of this session, one per table row.
    jobs : JobRunner
        Runs, cancels and reports the compression.
    """

    #: Compress in a helper process (:mod:`napari_svd_compress._napari.worker`) so that C
    #: code holding the GIL cannot freeze napari; False compresses in the worker thread.
    use_process: bool = True

    #: A result was added (its :class:`~.results.Run`) and its table row appended.
    result_added = Signal(object)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runs: list[Run] = []
        self.form: ParamForm | None = None

        layout = QVBoxLayout(self)
        top = QFormLayout()
        self.layer_combo = LayerPicker(
            napari_viewer, tooltip="The image layer to compress", parent=self
        )
        self.method_combo = QComboBox(self)
        self.method_combo.setToolTip("Compression method (from the codec registry)")
        top.addRow("layer", self.layer_combo)
        top.addRow("method", self.method_combo)
        layout.addLayout(top)

        self.param_box = QGroupBox("parameters", self)
        self.param_layout = QVBoxLayout(self.param_box)
        layout.addWidget(self.param_box)

        error_row = QHBoxLayout()
        self.error_map_check = QCheckBox("add an error map layer:", self)
        self.error_kind_combo = QComboBox(self)
        for text, kind in _ERROR_MAPS:
            self.error_kind_combo.addItem(text, kind)
        self.error_kind_combo.setToolTip(
            "signed: result - source in the source's units (for colour, the luma of the\n"
            "difference, 0.299 R + 0.587 G + 0.114 B), blue where the result is darker,\n"
            "red where brighter, limits symmetric about 0; |difference|: the absolute\n"
            "difference averaged over the channels, glowing over the result"
        )
        error_row.addWidget(self.error_map_check)
        error_row.addWidget(self.error_kind_combo, stretch=1)
        layout.addLayout(error_row)

        panel = JobPanel(self)
        self.cancel_button = panel.cancel_button
        self.progress_bar = panel.progress_bar
        self.status_label = panel.status_label
        buttons = QHBoxLayout()
        self.compress_button = QPushButton("Compress", self)
        buttons.addWidget(self.compress_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        self.jobs = JobRunner(panel, "Compress", on_state=self._update_buttons, parent=self)

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.setToolTip(
            f"Right-click a row to compare it with its source; {FLIP_KEY} flips between them"
        )
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.table, stretch=1)

        self.comparison = Comparison(napari_viewer)
        compare_row = QHBoxLayout()
        self.compare_button = QPushButton("Compare", self)
        self.compare_button.setCheckable(True)
        self.compare_button.setToolTip(_COMPARE_TIP)
        self.flip_button = QPushButton(f"Flip ({FLIP_KEY})", self)
        self.flip_button.setToolTip(_FLIP_TIP)
        compare_row.addWidget(self.compare_button)
        compare_row.addWidget(self.flip_button)
        layout.addLayout(compare_row)

        save_row = QHBoxLayout()
        self.save_svdz_button = QPushButton("Save .svdz…", self)
        self.save_jpg_button = QPushButton("Save JPG…", self)
        self.export_button = QPushButton("Export CSV…", self)
        for b in (self.save_svdz_button, self.save_jpg_button, self.export_button):
            save_row.addWidget(b)
        layout.addLayout(save_row)

        self.method_combo.currentIndexChanged.connect(self._build_form)
        self.compress_button.clicked.connect(self.compress)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.save_svdz_button.clicked.connect(lambda: self._save_dialog(".svdz"))
        self.save_jpg_button.clicked.connect(lambda: self._save_dialog(".jpg"))
        self.export_button.clicked.connect(self._export_dialog)
        self.layer_combo.layers_changed.connect(self._update_buttons)
        self.layer_combo.renamed.connect(self._refresh_table_names)
        self.compare_button.clicked.connect(lambda: self.compare())
        self.flip_button.clicked.connect(lambda: self.flip())
        self.table.customContextMenuRequested.connect(self._table_menu)
        # The flip key, here and in the viewer's canvas (where the user looks).
        for key in (FLIP_KEY, "Escape"):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(self.flip if key == FLIP_KEY else self.leave_comparison)
        self._bind_flip_key()

        if self.use_process and CompressProcess.supported():
            # Start the helper process (a few seconds of imports) while the user picks.
            threading.Thread(target=shared_process().start, daemon=True).start()
        self.refresh_methods()
        self._update_buttons()

    # -- layers ---------------------------------------------------------------------------

    def current_layer(self) -> Image | None:
        """The image layer the picker shows."""
        return self.layer_combo.current_layer()

    def set_layer(self, layer: Image) -> None:
        """Pick ``layer`` (it must be an image layer of the viewer)."""
        self.layer_combo.set_layer(layer)

    # -- methods and parameters -----------------------------------------------------------

    def refresh_methods(self) -> None:
        """List the registry's codecs (a codec registered since is added)."""
        names = [self.method_combo.itemData(i) for i in range(self.method_combo.count())]
        codecs = registry.all_codecs()
        if names == [c.name for c in codecs]:
            return
        current = self.method_name() or "svd"
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        for c in codecs:
            self.method_combo.addItem(c.label, c.name)
            self.method_combo.setItemData(
                self.method_combo.count() - 1, c.description, Qt.ItemDataRole.ToolTipRole
            )
        index = max(self.method_combo.findData(current), 0)
        self.method_combo.setCurrentIndex(index)
        self.method_combo.blockSignals(False)
        self._build_form()

    def showEvent(self, event: Any) -> None:  # Qt's name: refresh the methods when shown
        self.refresh_methods()
        super().showEvent(event)

    def method_name(self) -> str | None:
        """Registry name of the selected method."""
        return self.method_combo.currentData()

    def set_method(self, name: str) -> None:
        """Select method ``name`` (rebuilds the parameter form)."""
        index = self.method_combo.findData(name)
        if index < 0:
            raise ValueError(f"unknown method {name!r}")
        self.method_combo.setCurrentIndex(index)

    def _build_form(self, *_: Any) -> None:
        if self.form is not None:
            self.param_layout.removeWidget(self.form.native)
            self.form.native.deleteLater()
            self.form = None
        name = self.method_name()
        if name is None:
            return
        codec = registry.get(name)
        self.param_box.setToolTip(codec.description)
        self.form = ParamForm(codec)
        self.param_layout.addWidget(self.form.native)

    def set_param(self, name: str, value: Any) -> None:
        """Set a parameter of the selected method; for a rule, also choose that rule."""
        self._form().set_values({name: value})

    def current_params(self) -> dict[str, Any]:
        """The form's parameters: every plain one, and only the chosen rule of a group."""
        return self._form().values()

    def _form(self) -> ParamForm:
        if self.form is None:
            raise ValueError("no method is selected")
        return self.form

    # -- running --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a job is running or its result is still being added to the viewer."""
        return self.jobs.running

    @property
    def worker(self) -> FunctionWorker | None:
        """The thread worker of the running job (None once it returned)."""
        return self.jobs.worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress report."""
        self.jobs.cancel()

    def _update_buttons(self) -> None:
        self.compress_button.setEnabled(not self.running and self.current_layer() is not None)
        has_runs = bool(self.runs)
        for b in (self.save_svdz_button, self.save_jpg_button, self.export_button):
            b.setEnabled(has_runs)
        self.compare_button.setEnabled(has_runs or self.comparison.active)
        self.compare_button.setChecked(self.comparison.active)
        self.flip_button.setEnabled(has_runs)

    def compress(self) -> FunctionWorker | None:
        """Start compressing the picked layer with the form's method and parameters.

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
            show_warning("Compress: there is no image layer to compress")
            return None
        method = self.method_name()
        params = self.current_params()
        try:
            codec = registry.get(method)
            codec.resolve(params)
        except SVDCompressError as exc:
            show_error(f"Compress: {exc}")
            return None
        # Full resolution of a multiscale layer; a dask array is passed as it is, and the API
        # reads it one plane at a time.
        data = layer.data[0] if layer.multiscale else layer.data
        rgb = bool(layer.rgb)
        want_error_map = self.error_map_check.isChecked()
        error_kind = self.error_kind_combo.currentData()
        # The helper process knows the codecs of this package (importing it registers them);
        # one registered at run time by other code exists only here, so it runs in a thread.
        encoder_module = getattr(codec.encode, "__module__", "") or ""
        use_process = (
            self.use_process
            and CompressProcess.supported()
            and encoder_module.startswith(f"{_LIBRARY}.")
        )

        def job(ctx: JobContext) -> JobOutcome:
            # Everything heavy happens off the main thread: in the helper process when the
            # image can be sent there, else here in the worker thread.
            outcome = None
            if use_process:
                try:
                    # Cancelling there goes through the process's own flag, not an exception.
                    outcome = shared_process().run(
                        data, method, rgb, params, ctx.report, lambda: ctx.cancelled
                    )
                except CannotSend as exc:
                    log.info("compressing in a thread: the image cannot be sent (%s)", exc)
            if outcome is None:
                outcome = run_job(data, method, rgb, params, ctx.progress)
            if not outcome.ok:
                return outcome
            try:
                errors = None
                if want_error_map:
                    errors = error_map(data, outcome.value.image, rgb, error_kind)
            except MemoryError:
                errors = None
                log.warning("no error map: not enough memory")
            # Hashed here, not on the GUI thread: 50 ms for 24 megapixels of RGB.
            digest = pixel_digest(outcome.value.image)
            return JobOutcome.done((outcome.value, errors, layer, digest))

        return self.jobs.start(
            job,
            on_done=self._on_compressed,
            status=f"compressing {layer.name!r} with {method}…",
        )

    def _on_compressed(self, value: tuple[Result, Any, Image, str]) -> None:
        result, errors, source, digest = value
        run, steps = add_result(self.viewer, result, source, errors, digest)
        run.extra["source_layer"] = source
        self.runs.append(run)
        self._append_row(run)
        self.status_label.setText(f"{run.layer.name}: {_figures_line(result)}")
        self.jobs.later([*steps, lambda: self.result_added.emit(run)])

    # -- results table --------------------------------------------------------------------

    def _append_row(self, run: Run) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        for col, text in enumerate(run.row()):
            item = QTableWidgetItem(text)
            if col >= 3:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, col, item)
        self.table.blockSignals(True)
        self.table.selectRow(row)
        self.table.blockSignals(False)
        self._update_buttons()

    def _refresh_table_names(self) -> None:
        for row, run in enumerate(self.runs):
            self.table.item(row, 0).setText(run.layer.name)

    def selected_run(self) -> Run | None:
        """The run of the selected table row (the latest run when none is selected)."""
        runs = self.selected_runs()
        return runs[0] if runs else None

    def selected_runs(self) -> list[Run]:
        """The runs of the selected rows, in table order (the latest run when none is)."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        if rows:
            return [self.runs[r] for r in rows]
        return self.runs[-1:]

    def select_runs(self, runs: list[Run]) -> None:
        """Select the table rows of ``runs``."""
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for run in runs:
            self.table.selectRow(self.runs.index(run))
        self.table.setSelectionMode(mode)

    # -- comparing ------------------------------------------------------------------------

    def source_of(self, run: Run) -> Image | None:
        """The layer ``run`` compressed, if it is still in the viewer."""
        layer = run.extra.get("source_layer")
        if layer is not None and layer in self.viewer.layers:
            return layer
        matches = [ly for ly in self.viewer.layers if ly.name == run.source]
        return matches[0] if matches and isinstance(matches[0], Image) else None

    def compare(self, on: bool | None = None) -> bool:
        """Show the selected results beside their source, or return to the user's view.

        Parameters
        ----------
        on : bool, optional
            True: compare (again, with the current selection); False: leave the
            comparison; None (the button): leave a comparison (side by side or flip)
            if one is shown, else compare.

        Returns
        -------
        bool
            Whether a side-by-side comparison is shown now.
        """
        if on is None:
            on = not self.comparison.active
        shown = False
        if on:
            runs = self.selected_runs()
            source = self.source_of(runs[0]) if runs else None
            results = [r.layer for r in runs if self.source_of(r) == source]
            if source is None:
                self.status_label.setText("compare: the result's source layer is gone")
            else:
                shown = self.comparison.side_by_side(source, results)
        else:
            self.comparison.leave()
        self._update_buttons()
        return shown

    def leave_comparison(self) -> None:
        """Return to the user's view (grid, visible layers) if a comparison is shown."""
        self.comparison.leave()
        self._update_buttons()

    def flip(self) -> Image | None:
        """Swap which of the selected result and its source is visible, in one place.

        Returns
        -------
        Image or None
            The layer now visible; None, changing nothing, when there is no result (or
            its source or layer is gone).
        """
        run = self.selected_run()
        shown = None
        if run is not None:
            shown = self.comparison.flip(self.source_of(run), run.layer)
        if shown is None:
            self.status_label.setText("flip: select a result whose source is in the viewer")
        else:
            self.status_label.setText(f"flip: showing {shown.name!r}")
        self._update_buttons()
        return shown

    def _bind_flip_key(self) -> None:
        import weakref

        ref = weakref.ref(self)

        def flip(viewer: Any) -> None:
            widget = ref()
            if widget is not None:
                widget.flip()

        flip.__doc__ = "Flip between a compression result and its source (SVD Compress)."
        self.viewer.bind_key(FLIP_KEY, flip, overwrite=True)

        def unbind(*_: Any, viewer: Any = self.viewer) -> None:
            if any(v is flip for v in viewer.keymap.values()):  # still ours
                viewer.bind_key(FLIP_KEY, None)

        self.destroyed.connect(unbind)

    def _table_menu(self, pos: QPoint) -> None:
        row = self.table.rowAt(pos.y())
        if row < 0:
            return
        if row not in {i.row() for i in self.table.selectionModel().selectedRows()}:
            self.table.selectRow(row)
        menu = QMenu(self)
        n = len(self.selected_runs())
        menu.addAction(
            "Compare with source" if n == 1 else f"Compare {n} results with source",
            lambda: self.compare(True),
        )
        menu.addAction(f"Flip source / result\t{FLIP_KEY}", self.flip)
        leave = menu.addAction("Back to my view", self.leave_comparison)
        leave.setEnabled(self.comparison.active)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _on_row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        layer = self.runs[rows[0].row()].layer
        if layer in self.viewer.layers:
            self.viewer.layers.selection.active = layer

    def table_rows(self) -> list[list[str]]:
        """The table's text, row by row."""
        return [
            [self.table.item(r, c).text() for c in range(self.table.columnCount())]
            for r in range(self.table.rowCount())
        ]

    def export_csv(self, path: str | Path) -> Path:
        """Write every run of the session as CSV (atomically); return the path."""
        from ...fileio.atomic import atomic_write

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*COLUMNS, "encode_s", "decode_s"])
        for run, row in zip(self.runs, self.table_rows(), strict=True):
            writer.writerow(
                [*row, f"{run.figures['encode_s']:.4f}", f"{run.figures['decode_s']:.4f}"]
            )
        return atomic_write(path, buf.getvalue().encode("utf-8"))

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export results", "results.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except OSError as exc:
                show_error(f"cannot write {path}: {exc.strerror or exc}")

    # -- saving ---------------------------------------------------------------------------

    def save_result(self, path: str | Path, run: Run | None = None) -> list[str]:
        """Save a run's layer through the plugin's writers (.svdz or .jpg, by extension).

        A .svdz gets the exact bundle the run measured.  Returns the paths written.
        """
        import napari

        run = run or self.selected_run()
        if run is None:
            raise ValueError("there is no result to save")
        return napari.save_layers(str(path), [run.layer], plugin="napari-svd-compress")

    def _save_dialog(self, suffix: str) -> None:
        run = self.selected_run()
        if run is None:
            return
        pattern = "SVD bundle (*.svdz)" if suffix == ".svdz" else "JPEG (*.jpg *.jpeg)"
        default = _safe_filename(run.layer.name) + suffix
        path, _ = QFileDialog.getSaveFileName(self, "Save result", default, pattern)
        if not path:
            return
        if not Path(path).suffix:
            path += suffix
        try:
            written = self.save_result(path, run)
        except (SVDCompressError, OSError, ValueError) as exc:
            show_error(f"cannot save {path}: {exc}")
            return
        if written:
            show_info(f"saved {', '.join(written)}")


def _figures_line(result: Result) -> str:
    return (
        f"{result.nbytes} bytes, {result.bpp:.3f} bpp, "
        f"PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f}"
    )
