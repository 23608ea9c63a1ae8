"""The SVD spectrum dock widget, driven for real under Xvfb."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_rgb
from napari_svd_compress._napari.widgets.spectrum import SpectrumWidget
from napari_svd_compress.codecs import _linalg, svd
from napari_svd_compress.codecs.color import to_space

pytestmark = pytest.mark.gui

PLUGIN = "napari-svd-compress"
TIMEOUT_MS = 60_000


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "SVD spectrum")
    assert isinstance(widget, SpectrumWidget)
    return viewer, widget


def _shown(widget: SpectrumWidget, qtbot, layer, index=()) -> None:
    qtbot.waitUntil(
        lambda: (
            not widget.running and widget._shown is not None and widget._shown[:2] == (layer, index)
        ),
        timeout=TIMEOUT_MS,
    )


def _marked_on_plot(widget: SpectrumWidget) -> set[int]:
    """Ranks of the vertical lines drawn on the plot."""
    ax = widget.figure.axes[1]
    xs = {tuple(line.get_xdata()) for line in ax.get_lines()}
    return {int(x[0]) for x in xs if len(x) == 2 and x[0] == x[1]}


def test_grayscale_marks_the_rule_rank(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    image = synthetic_rgb(64, 96)[..., 1]
    layer = viewer.add_image(image, name="gray")
    _shown(widget, qtbot, layer)
    expected = _linalg.spectrum(image.astype(np.float64) / 255)
    assert widget.names == ["gray"]
    np.testing.assert_allclose(widget.spectra[0], expected, rtol=1e-6, atol=1e-9)
    # The Gram route agrees with a plain SVD on the leading values.
    full = np.linalg.svd(image / 255.0, compute_uv=False)
    np.testing.assert_allclose(widget.spectra[0][:10], full[:10], rtol=1e-6)

    widget.set_rule("percent", 0.6)
    k = svd.percent_rank(expected, 0.6)
    assert widget.marked_ranks == [k]
    assert k in _marked_on_plot(widget)
    assert f"k={k}" in {t.get_text().split(": ")[-1] for t in widget.figure.axes[1].texts}

    widget.set_rule("energy", 0.99)
    assert widget.marked_ranks == [svd.energy_rank(expected, 0.99)]

    widget.set_rule("rank", 7)
    assert widget.marked_ranks == [7]
    assert _marked_on_plot(widget) == {7}


def test_rgb_channels_in_both_colour_spaces(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    image = synthetic_rgb(48, 64)
    layer = viewer.add_image(image, name="photo")
    _shown(widget, qtbot, layer)
    assert widget.space() == "ycbcr" and widget.names == ["Y", "Cb", "Cr"]
    assert widget.form.fields["chroma"].enabled  # chroma applies to YCbCr only
    ycc = to_space(image.astype(np.float32) / 255, "ycbcr")
    expected = [_linalg.spectrum(ycc[..., c]) for c in range(3)]
    for got, want in zip(widget.spectra, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    widget.set_rule("percent", 0.5)
    assert widget.marked_ranks == [svd.percent_rank(s, 0.5) for s in expected]
    # The rank rule gives the chroma planes the codec's chroma fraction of the luma rank.
    widget.set_rule("rank", 10)
    widget.form.set_values({"chroma": 0.3})
    assert widget.marked_ranks == [10, 3, 3]

    widget.set_space("rgb")
    qtbot.waitUntil(lambda: not widget.running and widget._shown[2] == "rgb", timeout=TIMEOUT_MS)
    assert widget.names == ["R", "G", "B"]
    assert not widget.form.fields["chroma"].enabled
    np.testing.assert_allclose(
        widget.spectra[0], _linalg.spectrum(image[..., 0] / 255.0), rtol=1e-5, atol=1e-6
    )
    assert widget.marked_ranks == [10, 10, 10]


def test_stack_follows_the_viewer_plane(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    base = synthetic_rgb(48, 64)[..., 0].astype(np.float32) / 100  # values in [0, 2.55]
    stack = np.stack([base, base[::-1, ::-1] * 0.5, base**2 + 1])
    layer = viewer.add_image(stack, name="stack")
    _shown(widget, qtbot, layer, (viewer.dims.current_step[0],))
    viewer.dims.set_current_step(0, 2)
    _shown(widget, qtbot, layer, (2,))
    # Scaled with the whole stack's range, as compressing the stack would.
    lo, hi = float(stack.min()), float(stack.max())
    expected = _linalg.spectrum((stack[2] - lo) / (hi - lo))
    np.testing.assert_allclose(widget.spectra[0], expected, rtol=1e-5, atol=1e-7)
    viewer.dims.set_current_step(0, 1)
    _shown(widget, qtbot, layer, (1,))
    expected = _linalg.spectrum((stack[1] - lo) / (hi - lo))
    np.testing.assert_allclose(widget.spectra[0], expected, rtol=1e-5, atol=1e-7)


def test_follows_the_active_layer_and_npe2_validates(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    a = viewer.add_image(synthetic_rgb(32, 40), name="a")
    b = viewer.add_image(synthetic_rgb(40, 32)[..., 2], name="b")
    viewer.layers.selection.active = a
    assert widget.current_layer() is a
    _shown(widget, qtbot, a)
    viewer.layers.selection.active = b
    _shown(widget, qtbot, b)
    assert widget.names == ["gray"]

    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    if npe2 is None:
        pytest.skip("npe2 is not installed")
    proc = subprocess.run(
        [npe2, "validate", PLUGIN, "--imports"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
