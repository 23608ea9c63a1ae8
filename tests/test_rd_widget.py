"""The Rate-distortion dock widget, driven for real under Xvfb."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent

from conftest import synthetic_rgb
from napari_svd_compress import registry
from napari_svd_compress._rd_widget import RateDistortionWidget
from napari_svd_compress.sweep import COLUMNS, DEFAULT_METHODS

PLUGIN = "napari-svd-compress"
JOB_TIMEOUT_MS = 120_000


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Rate-distortion")
    assert isinstance(widget, RateDistortionWidget)
    return viewer, widget


def _wait(widget: RateDistortionWidget, qtbot) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)


def test_method_checkboxes_follow_the_registry(viewer_widget, slow_codec):
    _, widget = viewer_widget
    widget.refresh_methods()  # a codec registered later appears by itself
    assert list(widget._checks) == registry.available()
    assert widget.selected_methods() == [m for m in registry.available() if m in DEFAULT_METHODS]
    widget.set_methods(["svd", "slowtest"])
    assert widget.selected_methods() == ["svd", "slowtest"]
    with pytest.raises(ValueError, match="nope"):
        widget.set_methods(["nope"])


def test_sweep_plot_click_and_export(viewer_widget, qtbot, tmp_path):
    from skimage.metrics import peak_signal_noise_ratio

    viewer, widget = viewer_widget
    assert not widget.sweep_button.isEnabled()  # no layer yet
    image = synthetic_rgb(64, 80)
    source = viewer.add_image(image, name="photo", scale=(2.0, 3.0))
    widget.set_methods(["svd", "jpeg"])
    widget.points = {"svd": [2, 8], "jpeg": [30, 80]}
    assert widget.run_sweep() is not None
    assert widget.cancel_button.isEnabled()
    _wait(widget, qtbot)

    table = widget.table
    assert table is not None and table.methods == ["svd", "jpeg"]
    assert [r["param"] for r in table] == ["rank=2", "rank=8", "quality=30", "quality=80"]
    assert [r["params"] for r in table] == [
        {"rank": 2},
        {"rank": 8},
        {"quality": 30},
        {"quality": 80},
    ]
    for key in ("psnr", "ssim"):
        lines = widget.lines(key)
        assert sorted(line.get_label() for line in lines) == ["jpeg", "svd"]
        assert all(len(line.get_xdata()) == 2 for line in lines)

    # A click on the svd rank-8 point of the PSNR plot, through matplotlib's own picking.
    widget.canvas.draw()
    line = next(ln for ln in widget.lines("psnr") if ln.get_label() == "svd")
    row8 = next(r for r in table if r["params"] == {"rank": 8})
    index = list(line.get_xdata()).index(row8["bpp"])
    x, y = line.axes.transData.transform((line.get_xdata()[index], line.get_ydata()[index]))
    click = MouseEvent("button_press_event", widget.canvas, x, y, button=1)
    widget.canvas.callbacks.process("button_press_event", click)
    assert widget.running
    _wait(widget, qtbot)

    assert len(viewer.layers) == 2
    new = viewer.layers[-1]
    assert new.name == "photo [svd r=8]"
    np.testing.assert_allclose(new.scale, source.scale)
    figures = new.metadata["figures"]
    expected = peak_signal_noise_ratio(source.data, new.data, data_range=255)
    assert figures["psnr"] == pytest.approx(expected, rel=1e-9)
    assert figures["psnr"] == pytest.approx(row8["psnr"], rel=1e-9)  # the point clicked
    assert widget.current_layer() is source  # the result does not steal the picker

    widget.export_csv(tmp_path / "rd.csv")
    with open(tmp_path / "rd.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 5
    widget.export_png(tmp_path / "rd.png")
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failing_method_is_a_warning(viewer_widget, qtbot, slow_codec, notifications):
    viewer, widget = viewer_widget
    viewer.add_image(synthetic_rgb(48, 48), name="photo")
    widget.refresh_methods()
    widget.set_methods(["jpeg", "slowtest"])
    widget.points = {"jpeg": [50], "slowtest": [{"steps": 1, "fail": True}]}
    widget.run_sweep()
    _wait(widget, qtbot)
    assert widget.table.methods == ["jpeg"]
    assert any("deliberate failure" in m for m in notifications.messages())


def test_cancel_a_running_sweep(viewer_widget, qtbot, slow_codec):
    viewer, widget = viewer_widget
    viewer.add_image(synthetic_rgb(48, 48), name="photo")
    widget.refresh_methods()
    widget.set_methods(["slowtest"])
    widget.points = {"slowtest": [25] * 20}  # 20 points of 0.5 s: 10 s if not cancelled
    started = time.perf_counter()
    widget.run_sweep()
    qtbot.wait(200)
    assert widget.running
    widget.cancel_button.click()
    _wait(widget, qtbot)
    # Cancelling takes effect at the end of the point being compressed.
    assert time.perf_counter() - started < 5
    assert widget.status_label.text() == "cancelled"
    assert widget.table is None and widget.lines() == []
    assert len(viewer.layers) == 1
    assert widget.sweep_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_manifest_lists_both_widgets():
    import importlib

    from npe2 import PluginManifest

    from napari_svd_compress._spectrum_widget import SpectrumWidget

    pm = PluginManifest.from_distribution(PLUGIN)
    commands = {c.id: c.python_name for c in pm.contributions.commands}
    found = {}
    for w in pm.contributions.widgets:
        module, name = commands[w.command].split(":")
        found[w.display_name] = getattr(importlib.import_module(module), name)
    assert found["Rate-distortion"] is RateDistortionWidget
    assert found["SVD spectrum"] is SpectrumWidget
