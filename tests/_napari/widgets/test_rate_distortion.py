"""The Rate-distortion dock widget, driven for real under Xvfb."""

from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent

from conftest import synthetic_rgb
from napari_svd_compress import registry
from napari_svd_compress._napari.widgets import rate_distortion
from napari_svd_compress._napari.widgets.rate_distortion import (
    RateDistortionWidget,
    visible_region,
)
from napari_svd_compress._napari.writer import META_KEY
from napari_svd_compress.pipelines.sweep import COLUMNS, DEFAULT_METHODS

pytestmark = pytest.mark.gui

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
    figures = new.metadata[META_KEY]["figures"]
    expected = peak_signal_noise_ratio(source.data, new.data, data_range=255)
    assert figures["psnr"] == pytest.approx(expected, rel=1e-9)
    assert figures["psnr"] == pytest.approx(row8["psnr"], rel=1e-9)  # the point clicked
    assert widget.current_layer() is source  # the result does not steal the picker

    widget.export_csv(tmp_path / "rd.csv")
    with open(tmp_path / "rd.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == (*COLUMNS, "region") and len(rows) == 5
    assert {r[-1] for r in rows[1:]} == {"full image, 5120 px"}
    assert widget.figure._suptitle.get_text() == "photo (full image, 5120 px)"
    widget.export_png(tmp_path / "rd.png")
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9
    return scene.camera if scene is not None else viewer.camera


def _spy_on_sweep(monkeypatch) -> list[tuple[tuple[int, ...], str | None]]:
    """Record the shape of each image the widget sweeps, and the region it names."""
    swept: list[tuple[tuple[int, ...], str | None]] = []
    real = rate_distortion.sweep

    def spy(image, *args, **kwargs):
        swept.append((tuple(np.shape(image)), kwargs.get("region")))
        return real(image, *args, **kwargs)

    monkeypatch.setattr(rate_distortion, "sweep", spy)
    return swept


def test_sweep_the_visible_region(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import napari_svd_compress as nsc

    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Rate-distortion")
    image = synthetic_rgb(400, 600)
    viewer.add_image(image, name="photo", scale=(2.0, 3.0), translate=(10.0, -20.0))
    viewer.window._qt_window.resize(1500, 1000)
    qtbot.wait(200)
    # A view of data rows 100:300 exactly (world y 209 to 609) whose left edge is the
    # edge of data column 200 (world x 199.5 * 3 - 20); the canvas's width sets the rest.
    canvas = viewer.window._qt_viewer.canvas
    height, width = canvas.native.height(), canvas.native.width()
    assert width > 300  # room for at least 64 columns
    zoom = height / 400
    camera = _camera(viewer)
    camera.zoom = zoom
    camera.center = (409.0, 199.5 * 3 - 20 + width / zoom / 2)
    qtbot.wait(50)
    # Where napari itself maps the canvas's bottom-right corner, in data columns.
    corner = canvas._map_canvas2world((width, height), canvas.view)
    assert corner[-2] == pytest.approx(609.0, abs=1e-3)
    right = (corner[-1] + 20) / 3
    x1 = min(math.ceil(right + 0.5 - 1e-6), 600)

    swept = _spy_on_sweep(monkeypatch)
    widget.set_methods(["jpeg"])
    widget.points = {"jpeg": [30, 80]}
    assert widget.region_mode() == "full"  # the default
    widget.set_region("visible")
    assert widget.run_sweep() is not None
    _wait(widget, qtbot)

    region = widget.region
    assert (region.y, region.x, region.full) == ((100, 300), (200, x1), False)
    pixels = 200 * (x1 - 200)
    assert region.text == f"visible region y 100:300, x 200:{x1}, {pixels} px"
    assert swept == [((200, x1 - 200, 3), region.text)]
    assert widget.table.region == region.text
    assert widget.figure._suptitle.get_text() == f"photo ({region.text})"
    assert region.text in widget.status_label.text()
    # The points are the region's figures.
    expected = nsc.compress(image[100:300, 200:x1], "jpeg", quality=80)
    row = next(r for r in widget.table if r["params"] == {"quality": 80})
    assert (row["bytes"], row["psnr"]) == (expected.nbytes, pytest.approx(expected.psnr))
    widget.export_csv(tmp_path / "rd.csv")
    with open(tmp_path / "rd.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][-1] == "region" and [r[-1] for r in rows[1:]] == [region.text] * 2

    # Back to the full image, whatever the view.
    widget.set_region("full")
    widget.run_sweep()
    _wait(widget, qtbot)
    assert swept[-1] == ((400, 600, 3), "full image, 0.2 Mpx")
    assert widget.region.full
    assert widget.figure._suptitle.get_text() == "photo (full image, 0.2 Mpx)"


def test_visible_region_refusals_and_stacks(viewer_widget, qtbot, notifications):
    viewer, widget = viewer_widget
    layer = viewer.add_image(synthetic_rgb(400, 600), name="photo")
    widget.set_methods(["jpeg"])
    widget.set_region("visible")
    with pytest.raises(ValueError, match="region must be"):
        widget.set_region("somewhere")

    camera = _camera(viewer)
    camera.zoom = 50.0  # a few pixels across
    assert widget.run_sweep() is None and not widget.running
    assert any("zoom out" in m for m in notifications.messages())
    camera.center = (5000.0, 5000.0)
    camera.zoom = 1.0
    with pytest.raises(ValueError, match="not in the canvas's view"):
        visible_region(viewer, layer)
    viewer.dims.ndisplay = 3
    with pytest.raises(ValueError, match="2-D view"):
        visible_region(viewer, layer)
    viewer.dims.ndisplay = 2

    # A stack: every plane is cropped the same way; a transposed view is refused.
    stack = np.stack([synthetic_rgb(200, 300)[..., 0]] * 3)
    planes = viewer.add_image(stack, name="stack")
    camera.center = (0.0, 100.0, 150.0)
    camera.zoom = 4.0
    region = visible_region(viewer, planes)
    assert not region.full and min(region.shape) >= 64
    assert region.crop(stack, rgb=False).shape == (3, *region.shape)
    assert region.crop(layer.data, rgb=True).shape == (*region.shape, 3)
    viewer.dims.order = (1, 0, 2)
    with pytest.raises(ValueError, match="image plane"):
        visible_region(viewer, planes)


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

    from napari_svd_compress._napari.widgets.spectrum import SpectrumWidget

    pm = PluginManifest.from_distribution(PLUGIN)
    commands = {c.id: c.python_name for c in pm.contributions.commands}
    found = {}
    for w in pm.contributions.widgets:
        module, name = commands[w.command].split(":")
        found[w.display_name] = getattr(importlib.import_module(module), name)
    assert found["Rate-distortion"] is RateDistortionWidget
    assert found["SVD spectrum"] is SpectrumWidget


def test_plot_follows_the_theme_and_keeps_the_toolbar(viewer_widget, qtbot):
    from matplotlib.backends.backend_qtagg import NavigationToolbar2QT
    from matplotlib.colors import to_rgb
    from napari.utils.theme import get_theme

    viewer, widget = viewer_widget
    viewer.add_image(synthetic_rgb(), name="photo", rgb=True)
    widget.points = {"svd": [2, 8]}
    widget.run_sweep()
    _wait(widget, qtbot)
    toolbars = widget.findChildren(NavigationToolbar2QT)
    assert len(toolbars) == 1 and toolbars[0].canvas is widget.canvas
    assert {"Home", "Pan", "Zoom", "Save"} <= {a.text() for a in toolbars[0].actions()}
    for theme in ("light", "dark"):
        viewer.theme = theme
        colours = get_theme(theme)
        background = np.array(colours.background.as_rgb_tuple()) / 255
        ink = np.array(colours.text.as_rgb_tuple()) / 255
        assert np.allclose(to_rgb(widget.figure.get_facecolor()), background, atol=0.01)
        for ax in widget.figure.axes:
            assert np.allclose(to_rgb(ax.get_facecolor()), background, atol=0.01)
            assert np.allclose(to_rgb(ax.yaxis.label.get_color()), ink, atol=0.01)
        widget.draw()  # a new sweep's plot is drawn in the current theme too
        ax = widget.figure.axes[0]
        assert np.allclose(to_rgb(ax.get_facecolor()), background, atol=0.01)
        assert np.allclose(to_rgb(ax.xaxis.label.get_color()), ink, atol=0.01)
