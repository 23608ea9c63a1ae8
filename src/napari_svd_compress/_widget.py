"""The "Compress" dock widget: a thin Qt layer over :func:`napari_svd_compress.compress`.

The parameter form is generated from the codec registry (:class:`~.registry.Param`), so a
codec registered later appears with its parameters without any code here.  Compression
runs in a napari thread worker; the main thread only polls the progress fraction and, at the
end, adds the finished arrays as layers, so the viewer stays responsive.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import _compress_process, registry
from ._writer import META_KEY
from .errors import Cancelled, SVDCompressError

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from .api import Result

__all__ = ["COLUMNS", "CompressWidget"]

log = logging.getLogger(__name__)

#: Columns of the results table (the CSV export adds encode and decode seconds).
COLUMNS = ("layer", "method", "parameters", "bytes", "bpp", "ratio", "PSNR", "SSIM", "seconds")

_INT_MIN, _INT_MAX = -(2**31) + 1, 2**31 - 1
_FLOAT_BIG = 1e12
_PROGRESS_STEPS = 1000
_POLL_MS = 50
#: Milliseconds between the steps of adding a result, so the event loop runs in between.
_STEP_MS = 15


# --- parameter editors ----------------------------------------------------------------------


def _start_value(p: registry.Param) -> Any:
    """A sensible first value for a parameter whose default is None (an unselected rule)."""
    if p.default is not None:
        return p.default
    if p.kind is bool:
        return False
    if p.kind is str:
        return p.choices[0] if p.choices else ""
    lo = p.low if p.low is not None else 0.0
    hi = p.high if p.high is not None else max(lo, 1.0) * 100
    if p.kind is float and hi <= 1.0:
        value = lo + 0.9 * (hi - lo)  # fractions (percent, energy): keep most of it
    elif lo > 0 and hi / lo > 100:
        value = math.sqrt(lo * hi)  # wide positive ranges: the middle on a log scale
        value = float(f"{value:.2g}")
    else:
        value = (lo + hi) / 2
    return round(value) if p.kind is int else value


class _Editor:
    """One value widget for one Param: ``widget``, ``value()`` and ``set_value()``."""

    def __init__(self, param: registry.Param, parent: QWidget | None = None) -> None:
        self.param = param
        self.optional = param.default is None and param.group is None
        p = param
        if p.kind is bool:
            self.widget: QWidget = QCheckBox(parent)
        elif p.kind is int:
            box = QSpinBox(parent)
            lo = int(p.low) if p.low is not None else _INT_MIN
            hi = int(p.high) if p.high is not None else _INT_MAX
            lo, hi = max(lo, _INT_MIN), min(hi, _INT_MAX)
            if self.optional:
                # One step below the range reads "auto" and means None (the codec decides).
                lo -= 1
                box.setSpecialValueText("auto")
            box.setRange(lo, hi)
            self.widget = box
        elif p.kind is float:
            box = QDoubleSpinBox(parent)
            lo = float(p.low) if p.low is not None else -_FLOAT_BIG
            hi = float(p.high) if p.high is not None else _FLOAT_BIG
            decimals = 2
            if 0 < lo < 1:
                decimals = min(6, max(2, math.ceil(-math.log10(lo))))
            elif hi <= 1:
                decimals = 4
            box.setDecimals(decimals)
            if self.optional:
                lo -= 10**-decimals
                box.setSpecialValueText("auto")
            box.setRange(lo, hi)
            box.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
            self.widget = box
        elif p.choices:
            combo = QComboBox(parent)
            for choice in p.choices:
                combo.addItem(str(choice), choice)
            self.widget = combo
        elif p.path:
            self.widget = QWidget(parent)
            row = QHBoxLayout(self.widget)
            row.setContentsMargins(0, 0, 0, 0)
            self._line = QLineEdit(self.widget)
            button = QToolButton(self.widget)
            button.setText("…")
            button.setToolTip("Choose a file")
            button.clicked.connect(self._browse)
            row.addWidget(self._line)
            row.addWidget(button)
        else:
            self.widget = QLineEdit(parent)
        self.widget.setToolTip(p.help)
        self.widget.setObjectName(f"param_{p.name}")
        self.set_value(_start_value(p) if not self.optional else None)

    def _browse(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self.widget, self.param.help)
        if name:
            self._line.setText(name)

    def value(self) -> Any:
        w, p = self.widget, self.param
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QSpinBox | QDoubleSpinBox):
            if self.optional and w.value() == w.minimum():
                return None
            return int(w.value()) if p.kind is int else float(w.value())
        if isinstance(w, QComboBox):
            return w.currentData()
        text = (self._line if p.path else w).text().strip()
        return text if text or p.default is not None else None

    def set_value(self, value: Any) -> None:
        w = self.widget
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QSpinBox | QDoubleSpinBox):
            w.setValue(w.minimum() if value is None else value)
        elif isinstance(w, QComboBox):
            index = w.findData(value)
            if index < 0:
                raise ValueError(f"{self.param.name} must be one of {self.param.choices}")
            w.setCurrentIndex(index)
        else:
            (self._line if self.param.path else w).setText("" if value is None else str(value))


class _RuleEditor:
    """A group of alternative parameters: a "rule" combo and the chosen rule's value field."""

    def __init__(self, group: str, params: list[registry.Param], parent: QWidget) -> None:
        self.group = group
        self.combo = QComboBox(parent)
        self.combo.setObjectName(f"rule_{group}")
        self.stack = QStackedWidget(parent)
        self.editors: dict[str, _Editor] = {}
        default = 0
        for i, p in enumerate(params):
            editor = _Editor(p, self.stack)
            self.editors[p.name] = editor
            self.stack.addWidget(editor.widget)
            self.combo.addItem(p.name, p.name)
            self.combo.setItemData(i, p.help, Qt.ItemDataRole.ToolTipRole)
            if p.default is not None:
                default = i
        self.combo.currentIndexChanged.connect(self.stack.setCurrentIndex)
        self.combo.setCurrentIndex(default)
        self.stack.setCurrentIndex(default)

    @property
    def rule(self) -> str:
        return self.combo.currentData()

    def select(self, name: str) -> None:
        self.combo.setCurrentIndex(self.combo.findData(name))


# --- run records ----------------------------------------------------------------------------


@dataclass
class Run:
    """One compression of this session, as listed in the results table."""

    layer: Image
    source: str
    method: str
    params: dict[str, Any]
    figures: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> list[str]:
        f = self.figures
        params = ", ".join(f"{k}={v}" for k, v in self.params.items() if v is not None)
        return [
            self.layer.name,
            self.method,
            params,
            str(f["bytes"]),
            f"{f['bpp']:.4f}",
            f"{f['ratio']:.2f}",
            f"{f['psnr']:.2f}",
            f"{f['ssim']:.4f}",
            f"{f['encode_s'] + f['decode_s']:.2f}",
        ]


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "result"


def _difference(source: Any, decoded: np.ndarray, rgb: bool) -> np.ndarray:
    """|source - decoded| as float32, averaged over colour channels, read plane by plane."""
    out_shape = decoded.shape[:-1] if rgb else decoded.shape
    out = np.empty(out_shape, dtype=np.float32)
    stack = out_shape[:-2]
    for idx in np.ndindex(*stack):
        a = np.asarray(source[idx] if idx else source, dtype=np.float32)
        b = np.asarray(decoded[idx] if idx else decoded, dtype=np.float32)
        d = np.abs(a - b)
        out[idx] = d.mean(axis=-1) if rgb else d
    return out


# --- the widget -----------------------------------------------------------------------------


class _LayerPicker:
    """An image-layer picker that follows the active layer (shared by the dock widgets).

    The widget provides ``viewer``, ``_layers``, ``layer_combo`` and the hooks
    ``_update_buttons`` and ``_refresh_table_names``.
    """

    @staticmethod
    def _is_result(layer: Any) -> bool:
        entry = getattr(layer, "metadata", {}).get(META_KEY)
        return isinstance(entry, dict) and "source_layer" in entry

    def _refresh_layers(self, event: Any = None) -> None:
        current = self.current_layer()
        for layer in self._layers:
            layer.events.name.disconnect(self._refresh_layers)
        self._layers = [ly for ly in self.viewer.layers if isinstance(ly, Image)]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for layer in self._layers:
            self.layer_combo.addItem(layer.name)
            layer.events.name.connect(self._refresh_layers)
        if current in self._layers:
            self.layer_combo.setCurrentIndex(self._layers.index(current))
        self.layer_combo.blockSignals(False)
        if event is not None and getattr(event, "type", None) == "name":
            self._refresh_table_names()
        self._update_buttons()

    def _on_active(self, event: Any = None) -> None:
        # Follow the active layer, except onto our own results: the picker then stays on the
        # source, so that the next run with other parameters compresses the original again.
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and active in self._layers and not self._is_result(active):
            self.layer_combo.setCurrentIndex(self._layers.index(active))

    def current_layer(self) -> Image | None:
        """The image layer the picker shows."""
        i = self.layer_combo.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer: Image) -> None:
        """Pick ``layer`` (it must be an image layer of the viewer)."""
        self.layer_combo.setCurrentIndex(self._layers.index(layer))


class _Jobs:
    """Progress polling, cancelling and adding result layers (shared by the dock widgets).

    The widget provides ``worker``, ``_pending``, ``_fraction``, ``_poll``, ``_cancel_flag``,
    the progress and status widgets, ``runs`` and the hooks ``_update_buttons``,
    ``_append_row`` and ``_add_error_map``.
    """

    @property
    def running(self) -> bool:
        """Whether a job is running or its result is still being added to the viewer."""
        return self.worker is not None or self._pending

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress report."""
        if self.running:
            self._cancel_flag.set()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("cancelling…")

    def _show_progress(self) -> None:
        self.progress_bar.setValue(int(min(max(self._fraction, 0.0), 1.0) * _PROGRESS_STEPS))

    def _on_finished(self) -> None:
        self._poll.stop()
        self.worker = None
        self._update_buttons()

    def _add_result(self, result: Result, error_map: np.ndarray | None, source: Image) -> None:
        # The arrays are ready; what is left is napari's own work of adding a layer (Qt
        # controls, the vispy node) and of uploading its texture.  For a 24-megapixel image
        # each costs a good part of the 250 ms budget, so the layer is added hidden and shown
        # in a later turn of the event loop, and the error map after that.
        figures = result.figures()
        name = f"{source.name} [{result.label}]"
        metadata = {
            "figures": figures,
            META_KEY: {
                "bundle": result.bundle,
                "source_layer": source.name,
                "label": result.label,
                "info": result.info,
            },
        }
        kwargs: dict[str, Any] = {
            "name": name,
            "rgb": bool(source.rgb),
            "scale": source.scale,
            "translate": source.translate,
            "contrast_limits": list(source.contrast_limits),
            "metadata": metadata,
            "visible": False,
        }
        if not source.rgb:
            kwargs["colormap"] = source.colormap
            kwargs["gamma"] = source.gamma
        layer = self.viewer.add_layer(Image(result.image, **kwargs))
        run = Run(
            layer=layer,
            source=source.name,
            method=result.method,
            params=result.params,
            figures=figures,
        )
        self.runs.append(run)
        self._append_row(run)
        self.status_label.setText(
            f"{name}: {result.nbytes} bytes, {result.bpp:.3f} bpp, "
            f"PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f}"
        )
        steps = [lambda: setattr(layer, "visible", True)]
        if error_map is not None:
            added: list[Image] = []
            steps.append(
                lambda: added.append(self._add_error_map(error_map, name, figures, source))
            )
            steps.append(lambda: setattr(added[0], "visible", True))
        self._later(steps)

    def _later(self, steps: list[Any]) -> None:
        """Run ``steps`` one per turn of the event loop (the widget is busy until the last)."""
        if not steps:
            self._pending = False
            self._update_buttons()
            return
        self._pending = True
        self._update_buttons()

        def step() -> None:
            try:
                steps[0]()
            finally:
                self._later(steps[1:])

        QTimer.singleShot(_STEP_MS, step)


class CompressWidget(_LayerPicker, _Jobs, QWidget):
    """Compress an image layer with any registered method and compare the results.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose image layers are offered (napari passes it in).
    """

    #: Compress in a helper process (see :mod:`._compress_process`) so that C code holding
    #: the GIL cannot freeze napari; False compresses in the worker thread.
    use_process: bool = True

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runs: list[Run] = []
        self.worker: FunctionWorker | None = None
        self._pending = False
        self._cancel_flag = threading.Event()
        self._fraction = 0.0
        self._job_started = 0.0
        self._layers: list[Image] = []
        self._editors: dict[str, _Editor] = {}
        self._rules: dict[str, _RuleEditor] = {}

        layout = QVBoxLayout(self)
        top = QFormLayout()
        self.layer_combo = QComboBox(self)
        self.layer_combo.setToolTip("The image layer to compress")
        self.method_combo = QComboBox(self)
        self.method_combo.setToolTip("Compression method (from the codec registry)")
        top.addRow("layer", self.layer_combo)
        top.addRow("method", self.method_combo)
        layout.addLayout(top)

        self.param_box = QGroupBox("parameters", self)
        self.param_form = QFormLayout(self.param_box)
        layout.addWidget(self.param_box)

        self.error_map_check = QCheckBox("add an error map layer (|difference|)", self)
        layout.addWidget(self.error_map_check)

        buttons = QHBoxLayout()
        self.compress_button = QPushButton("Compress", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.compress_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, _PROGRESS_STEPS)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.table, stretch=1)

        save_row = QHBoxLayout()
        self.save_svdz_button = QPushButton("Save .svdz…", self)
        self.save_jpg_button = QPushButton("Save JPG…", self)
        self.export_button = QPushButton("Export CSV…", self)
        for b in (self.save_svdz_button, self.save_jpg_button, self.export_button):
            save_row.addWidget(b)
        layout.addLayout(save_row)

        self._poll = QTimer(self)
        self._poll.setInterval(_POLL_MS)
        self._poll.timeout.connect(self._show_progress)

        self.method_combo.currentIndexChanged.connect(self._build_form)
        self.compress_button.clicked.connect(self.compress)
        self.cancel_button.clicked.connect(self.cancel)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.save_svdz_button.clicked.connect(lambda: self._save_dialog(".svdz"))
        self.save_jpg_button.clicked.connect(lambda: self._save_dialog(".jpg"))
        self.export_button.clicked.connect(self._export_dialog)

        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)
        events.moved.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._on_active)

        if self.use_process and _compress_process.CompressProcess.supported():
            # Start the helper process (a few seconds of imports) while the user picks.
            threading.Thread(target=_compress_process.shared().start, daemon=True).start()
        self.refresh_methods()
        self._refresh_layers()
        self._on_active()
        self._update_buttons()

    # -- layers ---------------------------------------------------------------------------

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
        while self.param_form.rowCount():
            self.param_form.removeRow(0)
        self._editors.clear()
        self._rules.clear()
        name = self.method_name()
        if name is None:
            return
        codec = registry.get(name)
        self.param_box.setToolTip(codec.description)
        groups: dict[str, list[registry.Param]] = {}
        for p in codec.params:
            if p.group is not None:
                groups.setdefault(p.group, []).append(p)
        shown: set[str] = set()
        for p in codec.params:
            if p.group is None:
                editor = _Editor(p, self.param_box)
                self._editors[p.name] = editor
                self.param_form.addRow(p.name, editor.widget)
            elif p.group not in shown:
                shown.add(p.group)
                rule = _RuleEditor(p.group, groups[p.group], self.param_box)
                self._rules[p.group] = rule
                for q in groups[p.group]:
                    self._editors[q.name] = rule.editors[q.name]
                self.param_form.addRow(p.group, rule.combo)
                self.param_form.addRow("value", rule.stack)

    def set_param(self, name: str, value: Any) -> None:
        """Set a parameter of the selected method; for a rule, also select that rule."""
        editor = self._editors[name]
        group = editor.param.group
        if group is not None:
            self._rules[group].select(name)
        editor.set_value(value)

    def current_params(self) -> dict[str, Any]:
        """The form's parameters: every plain one, and only the selected rule of a group."""
        out: dict[str, Any] = {}
        for name, editor in self._editors.items():
            group = editor.param.group
            if group is not None and self._rules[group].rule != name:
                continue
            value = editor.value()
            if value is not None:
                out[name] = value
        return out

    # -- running --------------------------------------------------------------------------

    def _update_buttons(self) -> None:
        self.compress_button.setEnabled(not self.running and self.current_layer() is not None)
        self.cancel_button.setEnabled(self.running)
        has_runs = bool(self.runs)
        for b in (self.save_svdz_button, self.save_jpg_button, self.export_button):
            b.setEnabled(has_runs)

    def compress(self) -> FunctionWorker | None:
        """Start compressing the picked layer with the form's method and parameters.

        Returns
        -------
        FunctionWorker or None
            The running worker (None when nothing could be started; the reason is shown
            as a notification).
        """
        from napari.qt.threading import create_worker

        if self.running:
            return None
        layer = self.current_layer()
        if layer is None:
            show_warning("Compress: there is no image layer to compress")
            return None
        method = self.method_name()
        params = self.current_params()
        try:
            registry.get(method).resolve(params)
        except SVDCompressError as exc:
            show_error(f"Compress: {exc}")
            return None
        # Full resolution of a multiscale layer; a dask array is passed as it is, and the API
        # reads it one plane at a time.
        data = layer.data[0] if layer.multiscale else layer.data
        rgb = bool(layer.rgb)
        want_error_map = self.error_map_check.isChecked()
        # The helper process knows the codecs of this package (importing it registers them);
        # one registered at run time by other code exists only here, so it runs in a thread.
        encoder_module = getattr(registry.get(method).encode, "__module__", "") or ""
        use_process = (
            self.use_process
            and _compress_process.CompressProcess.supported()
            and encoder_module.startswith(f"{__package__}.")
        )
        flag = self._cancel_flag = threading.Event()
        self._fraction = 0.0

        def set_fraction(fraction: float) -> None:
            self._fraction = fraction

        def progress(fraction: float) -> None:
            self._fraction = fraction
            if flag.is_set():
                raise Cancelled("cancelled")

        def job() -> tuple[str, Any]:
            # Everything heavy happens off the main thread: in the helper process when the
            # image can be sent there, else here in the worker thread.
            status, payload = "error", "not run"
            if use_process:
                try:
                    # Cancelling there goes through the process's own flag, not an exception.
                    status, payload = _compress_process.shared().run(
                        data, method, rgb, params, set_fraction, flag.is_set
                    )
                except _compress_process.CannotSend as exc:
                    log.info("compressing in a thread: the image cannot be sent (%s)", exc)
                    status = "unsent"
            if status == "unsent" or not use_process:
                status, payload = _compress_process.run_job(data, method, rgb, params, progress)
            if status != "ok":
                return status, payload
            try:
                error_map = _difference(data, payload.image, rgb) if want_error_map else None
            except MemoryError:
                error_map = None
                log.warning("no error map: not enough memory")
            return "ok", (payload, error_map)

        self.worker = worker = create_worker(job)
        worker.returned.connect(lambda out: self._on_returned(out, layer))
        worker.finished.connect(self._on_finished)
        self.progress_bar.setValue(0)
        self.status_label.setText(f"compressing {layer.name!r} with {method}…")
        self._job_started = time.perf_counter()
        self._update_buttons()
        self._poll.start()
        worker.start()
        return worker

    def _on_returned(self, out: tuple[str, Any], source: Image) -> None:
        status, payload = out
        if status == "cancelled":
            self.status_label.setText("cancelled")
            self.progress_bar.setValue(0)
            show_info("Compress: cancelled")
            return
        if status == "error":
            self.status_label.setText(f"failed: {payload}")
            self.progress_bar.setValue(0)
            show_error(f"Compress: {payload}")
            return
        result, error_map = payload
        self.progress_bar.setValue(_PROGRESS_STEPS)
        # A moment later, from a timer: the viewer first gets a turn of its own (input,
        # repaints) before napari's work of adding the layer starts.
        self._pending = True
        QTimer.singleShot(_STEP_MS, lambda: self._add_result(result, error_map, source))

    def _add_error_map(
        self, error_map: np.ndarray, name: str, figures: dict[str, Any], source: Image
    ) -> Image:
        top = float(error_map.max()) if error_map.size else 0.0
        return self.viewer.add_layer(
            Image(
                error_map,
                name=f"{name} error",
                scale=source.scale[-error_map.ndim :],
                translate=source.translate[-error_map.ndim :],
                colormap="magma",
                contrast_limits=[0.0, top if top > 0 else 1.0],
                blending="additive",
                metadata={"figures": figures, "error_map_of": name},
                visible=False,
            )
        )

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

    def _refresh_table_names(self) -> None:
        for row, run in enumerate(self.runs):
            self.table.item(row, 0).setText(run.layer.name)

    def selected_run(self) -> Run | None:
        """The run of the selected table row (the latest run when none is selected)."""
        rows = self.table.selectionModel().selectedRows()
        if rows:
            return self.runs[rows[0].row()]
        return self.runs[-1] if self.runs else None

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
        from .atomic import atomic_write

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
