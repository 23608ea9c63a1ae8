"""The Compress dock widget, driven for real under Xvfb."""

from __future__ import annotations

import base64
import csv
import gc
import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_svd_compress import registry
from napari_svd_compress._napari.widgets.compress import COLUMNS, CompressWidget
from napari_svd_compress._napari.writer import META_KEY

pytestmark = pytest.mark.gui

PLUGIN = "napari-svd-compress"
JOB_TIMEOUT_MS = 120_000


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compress")
    assert isinstance(widget, CompressWidget)
    return viewer, widget


def _run(widget: CompressWidget, qtbot) -> None:
    worker = widget.compress()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)


def _psnr(a, b, data_range):
    from skimage.metrics import peak_signal_noise_ratio

    return peak_signal_noise_ratio(np.asarray(a), np.asarray(b), data_range=data_range)


# --- the form ---------------------------------------------------------------------------


def test_form_is_generated_from_the_registry(viewer_widget, slow_codec):
    _, widget = viewer_widget
    widget.refresh_methods()  # a codec registered later appears by itself
    names = [widget.method_combo.itemData(i) for i in range(widget.method_combo.count())]
    assert names == registry.available()
    assert "slowtest" in names
    for codec in registry.all_codecs():
        widget.set_method(codec.name)
        form = widget.form
        assert form.codec is codec
        assert form.native.parent() is widget.param_box  # the magicgui form is docked
        assert set(form.fields) == {p.name for p in codec.params}
        assert set(form.choosers) == {p.group for p in codec.params if p.group}
        rows = {w.label for w in form.container}
        for p in codec.params:
            assert (p.group or p.name) in rows
    widget.set_method("svd")
    rule = widget.form.choosers["rule"]
    assert list(rule.choices) == [
        "rank",
        "percent",
        "energy",
        "target_psnr",
        "target_bpp",
    ]
    assert widget.form.rule("rule") == "rank"
    params = widget.current_params()
    assert params["rank"] == 50 and "percent" not in params
    widget.set_param("energy", 0.95)
    params = widget.current_params()
    assert params["energy"] == pytest.approx(0.95) and "rank" not in params
    widget.set_method("slowtest")
    assert widget.current_params() == {"steps": 10, "fail": False}  # optional path unset


def test_picker_offers_image_layers_and_follows_the_active_one(viewer_widget, rgb_image):
    viewer, widget = viewer_widget
    assert widget.current_layer() is None
    assert not widget.compress_button.isEnabled()
    a = viewer.add_image(rgb_image, name="a")
    viewer.add_labels(np.zeros((8, 8), dtype=np.uint8), name="labels")
    b = viewer.add_image(rgb_image[..., 0], name="b")
    names = [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    assert names == ["a", "b"]
    viewer.layers.selection.active = a
    assert widget.current_layer() is a
    viewer.layers.selection.active = b
    assert widget.current_layer() is b
    b.name = "renamed"
    assert widget.layer_combo.currentText() == "renamed"


# --- compressing ------------------------------------------------------------------------

RULES = [
    ("rank", 8),
    ("percent", 0.5),
    ("energy", 0.999),
    ("target_psnr", 32.0),
    ("target_bpp", 1.5),
]


def test_svd_with_every_rank_rule(viewer_widget, qtbot, rgb_image):
    viewer, widget = viewer_widget
    source = viewer.add_image(rgb_image, name="photo", scale=(2.0, 3.0), translate=(5.0, -1.0))
    source.contrast_limits = (10, 240)
    widget.set_method("svd")
    for i, (rule, value) in enumerate(RULES):
        widget.set_layer(source)
        widget.set_param(rule, value)
        _run(widget, qtbot)
        assert len(viewer.layers) == 2 + i
        new = viewer.layers[-1]
        run = widget.runs[-1]
        codec = registry.get("svd")
        assert run.params[rule] == pytest.approx(value)
        label = f"svd {codec.label_for(run.params)}".strip()
        assert new.name == f"photo [{label}]"
        assert new.data.shape == rgb_image.shape and new.data.dtype == np.uint8
        np.testing.assert_allclose(new.scale, source.scale)
        np.testing.assert_allclose(new.translate, source.translate)
        np.testing.assert_allclose(new.contrast_limits, source.contrast_limits)
        figures = new.metadata[META_KEY]["figures"]
        assert figures["psnr"] == pytest.approx(_psnr(source.data, new.data, 255), rel=1e-9)
        assert figures["bytes"] == len(base64.b64decode(new.metadata[META_KEY]["bundle"]))
        row = widget.table_rows()[-1]
        assert row[0] == new.name and row[1] == "svd"
        assert f"{rule}=" in row[2]
        assert row[3] == str(figures["bytes"])
        assert float(row[6]) == pytest.approx(figures["psnr"], abs=0.01)
    assert widget.table.rowCount() == len(RULES)
    if dict(RULES)["target_psnr"]:
        psnr_run = widget.runs[3]
        assert psnr_run.figures["psnr"] >= 32.0 - 0.5
    # Results do not steal the picker: the next run compresses the original again.
    assert widget.current_layer() is source


def test_selecting_a_row_selects_its_layer(viewer_widget, qtbot, rgb_image):
    viewer, widget = viewer_widget
    viewer.add_image(rgb_image, name="photo")
    widget.set_method("svd")
    widget.set_param("rank", 5)
    _run(widget, qtbot)
    widget.set_param("rank", 9)
    _run(widget, qtbot)
    first, second = widget.runs
    widget.table.selectRow(0)
    assert viewer.layers.selection.active == first.layer  # the widget holds napari proxies
    widget.table.selectRow(1)
    assert viewer.layers.selection.active == second.layer


def test_save_both_writers_and_export_csv(viewer_widget, qtbot, tmp_path, rgb_image):
    import napari_svd_compress as nsc

    viewer, widget = viewer_widget
    viewer.add_image(rgb_image, name="photo")
    widget.set_method("svd")
    widget.set_param("rank", 6)
    _run(widget, qtbot)
    run = widget.runs[-1]
    # The proof that the layer shows the bundle, hashed by the job off the GUI thread.
    from napari_svd_compress._napari.writer import pixel_digest

    assert run.layer.metadata[META_KEY]["digest"] == pixel_digest(run.layer.data)
    svdz = tmp_path / "result.svdz"
    assert widget.save_result(svdz) == [str(svdz)]
    # The file on disk is the one whose size the widget showed.
    assert svdz.stat().st_size == run.figures["bytes"]
    assert svdz.read_bytes() == base64.b64decode(run.layer.metadata[META_KEY]["bundle"])
    np.testing.assert_array_equal(nsc.decompress(svdz), run.layer.data)
    (reopened,) = viewer.open(str(svdz), plugin=PLUGIN)
    np.testing.assert_array_equal(reopened.data, run.layer.data)
    jpg = tmp_path / "result.jpg"
    assert widget.save_result(jpg) == [str(jpg)]
    from PIL import Image

    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size == (rgb_image.shape[1], rgb_image.shape[0])
    table = tmp_path / "runs.csv"
    widget.export_csv(table)
    with open(table, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][: len(COLUMNS)] == list(COLUMNS)
    assert len(rows) == 2 and rows[1][0] == run.layer.name


def test_error_map_layer(viewer_widget, qtbot, rgb_image):
    viewer, widget = viewer_widget
    source = viewer.add_image(rgb_image, name="photo")
    widget.set_param("rank", 4)
    widget.error_map_check.setChecked(True)
    widget.error_kind_combo.setCurrentIndex(widget.error_kind_combo.findData("absolute"))
    _run(widget, qtbot)
    result, error = viewer.layers[-2], viewer.layers[-1]
    assert error.name == f"{result.name} error"
    expected = np.abs(source.data.astype(np.float32) - result.data).mean(axis=-1)
    np.testing.assert_allclose(error.data, expected, rtol=1e-6)
    assert error.colormap.name == "magma"


@pytest.mark.parametrize(
    "kind",
    ["uint16", "float32", "rgba", "stack", "dask-stack", "multiscale"],
)
def test_data_kinds(viewer_widget, qtbot, kind, rgb_image):
    import dask.array as da

    viewer, widget = viewer_widget
    gray = rgb_image[..., 1]
    kwargs = {}
    if kind == "uint16":
        data = gray.astype(np.uint16) * 200
    elif kind == "float32":
        data = gray.astype(np.float32) / 17.0 - 3.0
    elif kind == "rgba":
        data = np.dstack([rgb_image, np.full(gray.shape, 180, np.uint8)])
    elif kind == "stack":
        data = np.stack([gray, gray[::-1], np.roll(gray, 7, axis=1)])
    elif kind == "dask-stack":
        stack = np.stack([gray, gray[::-1], np.roll(gray, 7, axis=1)])

        class Counting:
            reads = 0

        def load(block):
            Counting.reads += 1
            return block

        data = da.from_array(stack, chunks=(1, *gray.shape)).map_blocks(load, dtype=stack.dtype)
    else:
        data = [rgb_image, rgb_image[::2, ::2]]
        kwargs = {"multiscale": True, "rgb": True}
    source = viewer.add_image(data, name=kind, **kwargs)
    widget.set_layer(source)
    widget.set_method("svd")
    widget.set_param("rank", 10)
    _run(widget, qtbot)
    new = viewer.layers[-1]
    assert new.name.startswith(f"{kind} [svd")
    full = np.asarray(data[0] if kind == "multiscale" else data)
    assert new.data.shape == full.shape and new.data.dtype == full.dtype
    rng = float(np.ptp(full)) if full.dtype.kind == "f" else np.iinfo(full.dtype).max
    assert new.metadata[META_KEY]["figures"]["psnr"] == pytest.approx(
        _psnr(full, new.data, rng), rel=1e-6
    )
    if kind == "dask-stack":
        assert widget.runs[-1].figures["bytes"] > 0


def test_errors_become_notifications(viewer_widget, qtbot, rgb_image, slow_codec, notifications):
    viewer, widget = viewer_widget
    viewer.add_image(rgb_image, name="photo")
    widget.refresh_methods()
    widget.set_method("slowtest")
    widget.set_param("steps", 1)
    widget.set_param("fail", True)
    _run(widget, qtbot)
    assert len(viewer.layers) == 1
    assert any("deliberate failure" in m for m in notifications.messages())
    assert "failed" in widget.status_label.text()
    assert widget.compress_button.isEnabled()


def test_cancel_a_running_job(viewer_widget, qtbot, rgb_image, slow_codec):
    viewer, widget = viewer_widget
    viewer.add_image(rgb_image, name="photo")
    widget.refresh_methods()
    widget.set_method("slowtest")
    widget.set_param("steps", 2000)  # 40 s if not cancelled
    started = time.perf_counter()
    widget.compress()
    assert widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.progress_bar.value() > 0, timeout=10_000)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert time.perf_counter() - started < 10
    assert len(viewer.layers) == 1
    assert widget.runs == []
    assert widget.status_label.text() == "cancelled"
    assert widget.compress_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_cancel_in_the_helper_process(viewer_widget, qtbot, rgb_image):
    viewer, widget = viewer_widget
    assert widget.use_process
    viewer.add_image(np.tile(rgb_image, (8, 8, 1)), name="tiled")  # 768 x 1024 RGB
    widget.set_method("svd")
    widget.set_param("target_psnr", 60.0)  # a long search
    started = time.perf_counter()
    widget.compress()
    qtbot.wait(500)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=20_000)
    # Either the codec stopped at a progress report or the process was stopped for it.
    assert time.perf_counter() - started < 15
    assert widget.status_label.text() == "cancelled"
    assert len(viewer.layers) == 1 and widget.runs == []
    # The next job starts a fresh process if the old one had to be stopped.
    widget.set_param("rank", 5)
    _run(widget, qtbot)
    assert len(viewer.layers) == 2


@pytest.mark.slow
@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "rgb"])
def test_event_loop_stays_responsive_on_24_megapixels(make_napari_viewer, qtbot, capsys, rgb):
    import os

    from napari_svd_compress._napari.worker import SEGMENT_PREFIX
    from napari_svd_compress._napari.worker import shared as shared_process

    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compress")
    y = np.arange(4000, dtype=np.float32)[:, None]
    x = np.arange(6000, dtype=np.float32)[None, :]
    big = (127 + 60 * np.sin(x / 40) * np.cos(y / 55)).astype(np.uint8)  # 4000 x 6000
    if rgb:  # 72 MB, a camera photo's size
        big = np.stack([big, big[::-1], np.roll(big, 99, axis=1)], axis=-1)
    viewer.add_image(big, name="big")
    widget.set_method("svd")
    widget.set_param("rank", 20)
    qtbot.wait(200)  # let the source layer draw before measuring

    ticks: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    gc_pauses: list[tuple[float, float]] = []
    gc_start = [0.0]

    def on_gc(phase, info):
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_pauses.append((gc_start[0], time.perf_counter() - gc_start[0]))

    gc.callbacks.append(on_gc)
    heartbeat.start()
    qtbot.wait(50)
    clicked = time.perf_counter()
    widget.compress_button.click()
    assert widget.running
    qtbot.waitUntil(lambda: widget.worker is None, timeout=JOB_TIMEOUT_MS)
    returned = time.perf_counter()
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)
    qtbot.wait(500)  # the new 24-megapixel layer is added and drawn inside the window
    heartbeat.stop()
    gc.callbacks.remove(on_gc)

    assert len(viewer.layers) == 2 and viewer.layers[-1].data.shape == big.shape
    # The image went to the helper process and the result came back through shared
    # memory, whose segments are gone.
    timing = shared_process().last_timing
    assert timing["shared"]
    if os.path.isdir("/dev/shm"):
        mine = f"{SEGMENT_PREFIX}{os.getpid()}_"
        assert not [name for name in os.listdir("/dev/shm") if name.startswith(mine)]
    gaps = np.diff(ticks)
    worst = int(np.argmax(gaps))
    longest_gc = max((d for _, d in gc_pauses), default=0.0)
    with capsys.disabled():
        print(
            f"\n24 Mpixel run: {len(ticks)} heartbeats, largest stall {gaps[worst] * 1000:.0f} ms "
            f"ending {ticks[worst + 1] - clicked:.2f} s after the click (job done at "
            f"{returned - clicked:.2f} s); longest GC pause {longest_gc * 1000:.0f} ms; "
            f"transfer {timing['total_s'] - timing['compress_s']:.2f} s"
        )
    # The event loop ran all along: heartbeats while the helper process worked, and no
    # freeze when the result came back (the compression or its metrics on this thread
    # would freeze it for a second or more).  The 250 ms stall budget is a speed target,
    # measured with medians by benchmarks/compress_widget.py, not asserted here: napari's
    # own add_layer and texture upload under Xvfb's software GL take 150-300 ms on a
    # loaded 2-core machine.
    during = [t for t in ticks if clicked < t < returned]
    assert len(during) >= 0.5 * (returned - clicked) / 0.01
    assert gaps.max() < 0.6


def test_gui_subcommand_builds_the_viewer(qtbot, dng_path):
    import argparse

    from napari_svd_compress._napari.viewer import build_viewer
    from napari_svd_compress.cli import gui

    parser = argparse.ArgumentParser()
    gui.add_parser(parser.add_subparsers())
    args = parser.parse_args(["gui", str(dng_path)])
    assert args.image == str(dng_path) and args.run is gui.run
    viewer, widget = build_viewer(dng_path, show=False)
    try:
        assert isinstance(widget, CompressWidget)
        assert [layer.name for layer in viewer.layers] == ["synthetic"]
        assert widget.current_layer().name == "synthetic"
    finally:
        viewer.close()
