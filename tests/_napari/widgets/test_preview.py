"""The SVD spectrum widget's live rank preview, its plot's theme and toolbar, under Xvfb."""

from __future__ import annotations

import time

import numpy as np
import pytest
from matplotlib.backends.backend_qtagg import NavigationToolbar2QT
from qtpy.QtCore import QTimer
from skimage import data, transform

from conftest import synthetic_rgb
from napari_svd_compress._napari.widgets.compress import CompressWidget
from napari_svd_compress._napari.widgets.layer_picker import is_preview
from napari_svd_compress._napari.widgets.preview import rank_of, slider_of
from napari_svd_compress._napari.widgets.spectrum import SpectrumWidget

pytestmark = pytest.mark.gui

PLUGIN = "napari-svd-compress"
TIMEOUT_MS = 120_000


@pytest.fixture
def viewer_widget(make_napari_viewer, monkeypatch):
    monkeypatch.setattr(CompressWidget, "use_process", False)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "SVD spectrum")
    assert isinstance(widget, SpectrumWidget)
    return viewer, widget


def _factored(widget: SpectrumWidget, qtbot) -> None:
    preview = widget.preview
    qtbot.waitUntil(
        lambda: (
            preview.factorisation is not None and not preview.busy and preview.layer is not None
        ),
        timeout=TIMEOUT_MS,
    )


def _shown(widget: SpectrumWidget, qtbot, k: int) -> None:
    qtbot.waitUntil(lambda: widget.preview._shown == (k, 1), timeout=TIMEOUT_MS)


def _truncated_uint8(x: np.ndarray, k: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(x / 255.0, full_matrices=False)
    return np.clip(np.rint((u[:, :k] * s[:k]) @ vt[:k] * 255), 0, 255)


def test_slider_shows_the_rank_k_reconstruction(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    image = synthetic_rgb(60, 90)[..., 0]
    source = viewer.add_image(image, name="gray", scale=(2.0, 3.0), translate=(1.0, -4.0))
    widget.preview.set_enabled(True)
    _factored(widget, qtbot)
    preview = widget.preview
    layer = preview.layer
    assert layer.name == "gray [svd preview]" and is_preview(layer)
    np.testing.assert_allclose(layer.scale, source.scale)
    np.testing.assert_allclose(layer.translate, source.translate)
    assert preview.max_rank == 60 and preview.slider.isEnabled()
    # The preview starts at the rank the rule marks (rank 50 by default).
    assert preview.rank == widget.marked_ranks[0] == 50
    # Neither picker of the plugin offers the preview, and it did not take the selection.
    assert layer not in widget.layer_combo.layers
    assert widget.current_layer() is not None and widget.current_layer().name == "gray"

    for k in (1, 4, 17, 60):
        preview.slider.setValue(slider_of(k, preview.max_rank))  # as the user drags it
        assert preview.rank == k and preview.rank_box.value() == k
        _shown(widget, qtbot, k)
        expected = _truncated_uint8(image, k)
        diff = np.abs(layer.data.astype(np.float64) - expected)
        assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3
        assert f"rank {k}" in preview.figures_label.text()
        assert "PSNR" in preview.figures_label.text()
    # A typed rank.
    preview.rank_box.setValue(9)
    _shown(widget, qtbot, 9)
    assert np.abs(layer.data.astype(float) - _truncated_uint8(image, 9)).max() <= 1
    # The size follows once the slider rests; it is the bundle's, within a few bytes.
    qtbot.waitUntil(lambda: preview.nbytes is not None, timeout=TIMEOUT_MS)
    import napari_svd_compress as nsc

    result = nsc.compress(image, "svd", rank=9)
    assert abs(preview.nbytes - result.nbytes) <= 16
    assert f"{preview.nbytes:,} bytes" in preview.figures_label.text()
    assert preview.psnr == pytest.approx(result.psnr, abs=0.2)
    # The rank is marked on the plot by the preview's line.
    lines = [ln for ln in widget.figure.axes[1].get_lines() if ln.get_label() == "_preview"]
    assert len(lines) == 1 and list(lines[0].get_xdata()) == [9, 9]

    preview.set_enabled(False)
    assert layer not in viewer.layers and preview.layer is None
    assert not [ln for ln in widget.figure.axes[1].get_lines() if ln.get_label() == "_preview"]


def test_rank_slider_scale():
    assert rank_of(0, 500) == 1 and rank_of(1000, 500) == 500
    assert rank_of(500, 500) == round(500**0.5)  # a log feel: the middle is sqrt(max)
    for k in (1, 2, 3, 10, 99, 500):
        assert rank_of(slider_of(k, 500), 500) == k
    assert rank_of(0, 1) == 1 and slider_of(1, 1) == 0


def test_preview_follows_the_colour_space_and_keeps_a_result(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    image = synthetic_rgb(48, 64)
    source = viewer.add_image(image, name="photo")
    widget.set_rule("rank", 10)
    widget.preview.set_enabled(True)
    _factored(widget, qtbot)
    preview = widget.preview
    assert preview.factorisation.space == "ycbcr" and preview.rank == 10
    assert "Y 10, Cb 5, Cr 5" in preview.figures_label.text()
    widget.set_space("rgb")  # refactored in the new space
    qtbot.waitUntil(
        lambda: preview.factorisation is not None and preview.factorisation.space == "rgb",
        timeout=TIMEOUT_MS,
    )
    _shown(widget, qtbot, 10)
    assert "R 10, G 10, B 10" in preview.figures_label.text()
    preview.set_rank(7)
    _shown(widget, qtbot, 7)
    shown = preview.layer.data.copy()

    job = preview.keep()
    assert job is not None
    _, compress = viewer.window.add_plugin_dock_widget(PLUGIN, "Compress")
    qtbot.waitUntil(lambda: bool(compress.runs) and preview.layer is None, timeout=TIMEOUT_MS)
    (run,) = compress.runs
    assert run.method == "svd" and run.params["rank"] == 7 and run.params["color"] == "rgb"
    assert run.layer.name == "photo [svd r=7 rgb]" and compress.table.rowCount() == 1
    assert compress.source_of(run) == source
    # The kept result is the preview, quantised: within a few levels of it.
    assert np.abs(run.layer.data.astype(int) - shown).mean() < 2
    assert not [ly for ly in viewer.layers if is_preview(ly)]
    # The spectrum follows the active layer, results included, and the preview with it.
    qtbot.waitUntil(lambda: preview.layer is not None, timeout=TIMEOUT_MS)
    assert preview.layer.name == f"{run.layer.name} [svd preview]"


def test_preview_latency_on_a_768x512_photo(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    photo = transform.resize(data.astronaut(), (512, 768), anti_aliasing=True)
    viewer.add_image((photo * 255).round().astype(np.uint8), name="photo")
    widget.preview.set_enabled(True)
    _factored(widget, qtbot)
    preview = widget.preview
    assert preview.max_rank == 512
    # A heartbeat: the longest the event loop went without running a 10 ms timer.
    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(10)
    preview.latencies.clear()
    ranks = (3, 25, 120, 400, 60, 8)
    for k in ranks:
        preview.slider.setValue(slider_of(k, preview.max_rank))
        _shown(widget, qtbot, preview.rank)
    qtbot.wait(50)
    timer.stop()
    latencies = [s for _, s in preview.latencies]
    stall = max(np.diff(beats))
    print(f"768x512 preview latencies (s): {np.round(latencies, 3)}; longest stall {stall:.3f} s")
    assert len(latencies) == len(ranks)
    assert max(latencies) <= 0.3
    assert stall <= 0.25


def test_plot_follows_the_theme_and_keeps_the_toolbar(viewer_widget, qtbot):
    from matplotlib.colors import to_rgb
    from napari.utils.theme import get_theme

    viewer, widget = viewer_widget
    viewer.add_image(data.camera()[::8, ::8], name="camera")
    qtbot.waitUntil(lambda: widget._shown is not None and not widget.running, timeout=TIMEOUT_MS)
    toolbars = widget.findChildren(NavigationToolbar2QT)
    assert len(toolbars) == 1 and toolbars[0].canvas is widget.canvas
    names = {a.text() for a in toolbars[0].actions()}
    assert {"Home", "Pan", "Zoom", "Save"} <= names  # zoom, and save as PNG/SVG
    for theme in ("light", "dark", "light"):
        viewer.theme = theme  # the plot redraws itself
        colours = get_theme(theme)
        background = np.array(colours.background.as_rgb_tuple()) / 255
        ink = np.array(colours.text.as_rgb_tuple()) / 255
        fig = widget.figure
        assert fig.axes
        assert np.allclose(to_rgb(fig.get_facecolor()), background, atol=0.01)
        for ax in fig.axes:
            assert np.allclose(to_rgb(ax.get_facecolor()), background, atol=0.01)
            assert np.allclose(to_rgb(ax.xaxis.label.get_color()), ink, atol=0.01)
            assert np.allclose(to_rgb(ax.get_xticklabels()[0].get_color()), ink, atol=0.01)
        # The gray channel's curve is drawn in the theme's text colour, legible on both.
        curve = fig.axes[0].get_lines()[0]
        assert np.allclose(to_rgb(curve.get_color()), ink, atol=0.01)
        # The toolbar's icons are drawn for the theme's background.
        lightness = toolbars[0].palette().color(toolbars[0].backgroundRole()).value()
        assert (lightness < 128) == (theme == "dark")
