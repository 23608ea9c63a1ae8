"""svd.choose_ranks and svd.singular_values: the ranks the codec keeps, from the spectrum."""

from __future__ import annotations

import numpy as np
import pytest

import napari_svd_compress as nsc
from conftest import synthetic_rgb
from napari_svd_compress.codecs import svd
from napari_svd_compress.codecs.color import to_space
from napari_svd_compress.errors import ImageError, ParameterError


def _kept(result) -> list[int]:
    return [ch["rank"] for ch in result.info["channels"]]


@pytest.mark.parametrize(
    "params",
    [
        {"rank": 9},
        {"rank": 9, "chroma": 0.3},
        {"rank": 9, "color": "rgb"},
        {"percent": 0.4},
        {"energy": 0.995},
        {"energy": 0.995, "color": "rgb"},
    ],
)
def test_ranks_are_those_the_encoder_keeps(params):
    image = synthetic_rgb(48, 64)
    spectra = svd.singular_values(image, color=params.get("color", "ycbcr"))
    assert len(spectra) == 3 and all(len(s) == 48 for s in spectra)
    assert svd.choose_ranks(params, spectra) == _kept(nsc.compress(image, "svd", **params))


def test_grayscale_and_the_rank_cap():
    gray = synthetic_rgb(40, 56)[..., 1]
    (s,) = svd.singular_values(gray)
    np.testing.assert_allclose(s[:8], np.linalg.svd(gray / 255.0, compute_uv=False)[:8], rtol=1e-6)
    assert svd.choose_ranks({"energy": 0.99}, [s]) == _kept(nsc.compress(gray, "svd", energy=0.99))
    # The rank rule cannot keep more than min(H, W) values, and chroma does not apply.
    assert svd.choose_ranks({"rank": 500, "chroma": 0.1}, [s]) == [40]


def test_explicit_space_overrides_the_color_parameter():
    s = np.array([4.0, 2.0, 1.0, 1.0, 0.5])
    assert svd.choose_ranks({"rank": 4, "chroma": 0.5}, [s, s, s]) == [4, 2, 2]  # ycbcr default
    assert svd.choose_ranks({"rank": 4, "chroma": 0.5}, [s, s, s], space="rgb") == [4, 4, 4]
    assert svd.choose_ranks({"rank": 4, "percent": None}, [s]) == [4]  # None means unset
    # chroma never rounds a channel down to rank 0
    assert svd.choose_ranks({"rank": 1, "chroma": 0.0}, [s, s, s]) == [1, 1, 1]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"target_psnr": 30.0}, "target_psnr"),
        ({"target_bpp": 1.0}, "target_bpp"),
        ({"rank": 5, "patch": 8}, "patch"),
        ({"rank": 5, "energy": 0.9}, "only one"),
        ({"percent": 2.0}, "percent"),
        ({"nope": 1}, "nope"),
    ],
)
def test_rules_a_spectrum_cannot_answer(params, match):
    with pytest.raises(ParameterError, match=match):
        svd.choose_ranks(params, [np.ones(4)])


def test_singular_values_of_a_float_stack_use_the_whole_range():
    base = synthetic_rgb(32, 40)[..., 0].astype(np.float32) / 100
    stack = np.stack([base, base * 0.5 + 3])
    lo, hi = float(stack.min()), float(stack.max())
    assert svd.unit_range(stack) == (lo, hi)
    (s,) = svd.singular_values(stack, index=(1,))
    want = np.linalg.svd((stack[1] - lo) / (hi - lo), compute_uv=False)
    np.testing.assert_allclose(s[:5], want[:5], rtol=1e-5)
    (given,) = svd.singular_values(stack, index=(1,), value_range=(lo, hi))
    np.testing.assert_allclose(given, s)
    with pytest.raises(ImageError, match="index"):
        svd.singular_values(stack)
    with pytest.raises(ImageError, match="value_range"):
        svd.singular_values(stack, index=(0,), value_range=(1.0, 1.0))


def test_singular_values_of_rgba_in_both_spaces():
    rgb = synthetic_rgb(32, 48)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])  # alpha is ignored
    unit = rgb.astype(np.float32) / 255
    for space in ("rgb", "ycbcr"):
        got = svd.singular_values(rgba, color=space)
        x = to_space(unit, space)
        for c, s in enumerate(got):
            want = np.linalg.svd(x[..., c].astype(np.float64), compute_uv=False)
            np.testing.assert_allclose(s[:6], want[:6], rtol=1e-5)
    with pytest.raises(ParameterError, match="color"):
        svd.singular_values(rgb, color="lab")
