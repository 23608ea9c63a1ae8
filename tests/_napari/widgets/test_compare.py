"""Compare, flip and the signed error map of the Compress widget, driven under Xvfb."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from conftest import synthetic_rgb
from napari_svd_compress._napari.widgets import results
from napari_svd_compress._napari.widgets.compress import FLIP_KEY, CompressWidget
from napari_svd_compress._napari.writer import META_KEY

PLUGIN = "napari-svd-compress"
JOB_TIMEOUT_MS = 120_000


# --- the error maps, without a viewer ----------------------------------------------------


def test_signed_difference_of_a_grayscale_stack_is_result_minus_source():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 65535, (2, 5, 7), dtype=np.uint16)
    decoded = rng.integers(0, 65535, (2, 5, 7), dtype=np.uint16)
    out = results.signed_difference(source, decoded, rgb=False)
    assert out.dtype == np.float32 and out.shape == source.shape
    np.testing.assert_array_equal(out, decoded.astype(np.float64) - source)


def test_signed_difference_of_colour_is_the_luma_of_the_difference():
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)  # RGBA: alpha is ignored
    decoded = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    out = results.signed_difference(source, decoded, rgb=True)
    d = decoded[..., :3].astype(np.float64) - source[..., :3]
    expected = 0.299 * d[..., 0] + 0.587 * d[..., 1] + 0.114 * d[..., 2]
    assert out.shape == (6, 4)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)


def test_error_map_limits():
    source = np.zeros((100, 100), np.float32)
    decoded = np.linspace(-2.0, 2.0, 10_000, dtype=np.float32).reshape(100, 100)
    decoded[0, 0] = 50.0  # one outlier does not set the scale
    signed = results.error_map(source, decoded, rgb=False, kind="signed")
    assert signed.kind == "signed"
    assert signed.limit == pytest.approx(np.percentile(np.abs(decoded), 99.9), rel=1e-6)
    assert 1.9 < signed.limit < 2.1
    absolute = results.error_map(source, decoded, rgb=False, kind="absolute")
    assert absolute.limit == pytest.approx(50.0)
    same = results.error_map(source, source, rgb=False)
    assert same.limit == 1.0  # never an empty range
    with pytest.raises(ValueError, match="kind"):
        results.error_map(source, decoded, rgb=False, kind="squared")


# --- in the viewer -----------------------------------------------------------------------


@pytest.fixture
def viewer_widget(make_napari_viewer, monkeypatch):
    # Compress in the worker thread: these tests are about what happens afterwards.
    monkeypatch.setattr(CompressWidget, "use_process", False)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compress")
    assert isinstance(widget, CompressWidget)
    return viewer, widget


def _run(widget: CompressWidget, qtbot, rank: int) -> None:
    widget.set_method("svd")
    widget.set_param("rank", rank)
    assert widget.compress() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=JOB_TIMEOUT_MS)


def _visible(viewer) -> set[str]:
    return {layer.name for layer in viewer.layers if layer.visible}


def _setup(viewer, widget, qtbot, ranks=(3, 12)):
    other = viewer.add_image(np.zeros((20, 20), np.uint8), name="other")
    source = viewer.add_image(synthetic_rgb(48, 64), name="photo")
    widget.set_layer(source)
    for rank in ranks:
        _run(widget, qtbot, rank)
    return other, source


@pytest.mark.gui
def test_compare_side_by_side_and_back(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    assert not widget.compare_button.isEnabled()  # nothing to compare yet
    assert widget.compare() is False  # and asking changes nothing
    assert not viewer.canvas.grid.enabled
    other, source = _setup(viewer, widget, qtbot)
    first, second = widget.runs
    # The user's own view: grid off, some layers hidden.
    second.layer.visible = False
    viewer.canvas.grid.stride = 2
    before = {layer.name: layer.visible for layer in viewer.layers}
    assert widget.compare_button.isEnabled()
    assert FLIP_KEY in widget.compare_button.toolTip()

    widget.select_runs([first])
    widget.compare_button.click()  # the button toggles
    grid = viewer.canvas.grid
    assert widget.comparison.mode == "side by side" and widget.compare_button.isChecked()
    assert grid.enabled and tuple(grid.shape) == (1, 2)
    assert _visible(viewer) == {"photo", first.layer.name}
    layers = list(viewer.layers)
    # The source first (top left), the result beside it; hidden layers take no view box.
    assert grid.position(layers.index(source), layers) == (0, 0)
    assert grid.position(layers.index(first.layer), layers) == (0, 1)
    assert grid.position(layers.index(other), layers) == (-1, -1)
    assert grid.actual_shape(layers) == (1, 2)
    # One camera for both view boxes: a zoom is the same zoom everywhere.
    viewer.scene.camera.zoom = 3.0
    assert viewer.scene.camera.zoom == pytest.approx(3.0)

    widget.compare_button.click()  # back to the view the user had
    assert not widget.compare_button.isChecked() and widget.comparison.mode is None
    assert not grid.enabled and grid.stride == 2
    assert {layer.name: layer.visible for layer in viewer.layers} == before


@pytest.mark.gui
def test_compare_several_results_and_the_row_menu(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    _setup(viewer, widget, qtbot, ranks=(2, 6, 20))
    runs = widget.runs
    widget.select_runs(runs)
    assert widget.selected_runs() == runs
    assert widget.compare(True)
    assert viewer.canvas.grid.enabled
    assert _visible(viewer) == {"photo", *(r.layer.name for r in runs)}
    assert viewer.canvas.grid.actual_shape(list(viewer.layers)) == (2, 2)
    # Comparing again with another selection replaces the comparison, one saved view.
    widget.select_runs(runs[1:2])
    assert widget.compare(True)
    assert _visible(viewer) == {"photo", runs[1].layer.name}
    widget.leave_comparison()
    assert not viewer.canvas.grid.enabled
    assert _visible(viewer) == {"other", "photo", *(r.layer.name for r in runs)}


@pytest.mark.gui
def test_flip_swaps_source_and_result_in_one_place(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    # Nothing selected, no result: flipping changes nothing.
    viewer.add_image(np.zeros((20, 20), np.uint8), name="lonely")
    before = _visible(viewer)
    assert widget.flip() is None and _visible(viewer) == before
    assert not viewer.canvas.grid.enabled and not widget.comparison.active

    _, source = _setup(viewer, widget, qtbot)
    first, second = widget.runs
    widget.select_runs([first])
    before = {layer.name: layer.visible for layer in viewer.layers}
    # The result is on top of its source: the eye sees a result, so flip shows the source.
    shown = widget.flip()
    assert shown == source and _visible(viewer) == {"photo"}
    assert source.name_overlay.visible
    assert widget.flip() == first.layer and _visible(viewer) == {first.layer.name}
    assert widget.flip() == source
    assert not viewer.canvas.grid.enabled  # the same place: no grid
    # From side by side, flip leaves the grid and shows the result.
    widget.compare(True)
    assert viewer.canvas.grid.enabled
    assert widget.flip() == first.layer and not viewer.canvas.grid.enabled
    widget.compare()  # the button, pressed while flipping: back to the user's view
    assert {layer.name: layer.visible for layer in viewer.layers} == before
    assert not widget.compare_button.isChecked()

    # A result whose source is gone: harmless.
    widget.select_runs([second])
    viewer.layers.remove(source)
    assert widget.flip() is None
    assert not widget.comparison.active


@pytest.mark.gui
def test_flip_key_in_the_viewer(viewer_widget, qtbot):
    from napari.utils.key_bindings import KeyBinding

    viewer, widget = viewer_widget
    _setup(viewer, widget, qtbot, ranks=(4,))
    (run,) = widget.runs
    bound = viewer.keymap[KeyBinding.from_str(FLIP_KEY)]
    assert "Flip" in bound.__doc__
    bound(viewer)
    assert _visible(viewer) == {"photo"}
    bound(viewer)
    assert _visible(viewer) == {run.layer.name}
    # Pressed on the canvas, where the user looks.
    assert FLIP_KEY == "F"
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_F)
    assert _visible(viewer) == {"photo"}
    widget.leave_comparison()
    assert _visible(viewer) == {"other", "photo", run.layer.name}


@pytest.mark.gui
@pytest.mark.parametrize("rgb", [True, False], ids=["rgb", "gray"])
def test_signed_error_map_layer(viewer_widget, qtbot, rgb):
    viewer, widget = viewer_widget
    image = synthetic_rgb(40, 56)
    source = viewer.add_image(image if rgb else image[..., 1], name="photo")
    widget.set_layer(source)
    widget.error_map_check.setChecked(True)
    assert widget.error_kind_combo.currentData() == "signed"  # the default
    _run(widget, qtbot, 3)
    qtbot.waitUntil(lambda: viewer.layers[-1].visible, timeout=JOB_TIMEOUT_MS)
    result, error = viewer.layers[-2], viewer.layers[-1]
    assert error.name == f"{result.name} signed error"
    d = result.data.astype(np.float64) - source.data
    expected = d @ np.array([0.299, 0.587, 0.114]) if rgb else d
    np.testing.assert_allclose(error.data, expected, rtol=1e-5, atol=1e-3)
    assert error.data.min() < 0 < error.data.max()  # both signs: truly signed
    lo, hi = error.contrast_limits
    assert lo == pytest.approx(-hi) and hi > 0
    assert hi == pytest.approx(np.percentile(np.abs(error.data), 99.9), rel=1e-6)
    assert error.colormap.name == results.SIGNED_COLORMAP
    assert error.metadata[META_KEY]["error_kind"] == "signed"
    assert error.colorbar.visible
