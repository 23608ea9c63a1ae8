"""The colour transforms the codecs apply before factorising and after decoding."""

from __future__ import annotations

import numpy as np
import pytest

from napari_svd_compress.codecs import color


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rgb_to_ycbcr_is_full_range_bt601(dtype):
    rgb = np.random.default_rng(0).random((33, 17, 3)).astype(dtype)
    ycc = color.rgb_to_ycbcr(rgb)
    assert ycc.dtype == np.float32 and ycc.shape == rgb.shape
    want = rgb.astype(np.float64) @ color._RGB_TO_YCBCR.T + [0.0, 0.5, 0.5]
    np.testing.assert_allclose(ycc, want, atol=3e-7)
    # Known corners: white is (1, 0.5, 0.5), pure red has Cr = 1.
    corners = color.rgb_to_ycbcr(np.array([[[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]]))
    np.testing.assert_allclose(corners[0, 0], [1.0, 0.5, 0.5], atol=1e-7)
    np.testing.assert_allclose(corners[0, 1], [0.299, 0.5 - 0.168735892, 1.0], atol=1e-7)


def test_ycbcr_round_trip():
    rgb = np.random.default_rng(1).random((64, 48, 3), dtype=np.float32)
    back = color.ycbcr_to_rgb(color.rgb_to_ycbcr(rgb))
    np.testing.assert_allclose(back, rgb, atol=1e-6)


def test_rgb_to_ycbcr_into_separate_planes_equals_interleaved():
    rgb = np.random.default_rng(2).random((20, 30, 3), dtype=np.float32)
    planes = [np.empty((20, 30), np.float32) for _ in range(3)]
    color.rgb_to_ycbcr_into(rgb, planes)
    whole = color.rgb_to_ycbcr(rgb)
    for j in range(3):
        np.testing.assert_array_equal(planes[j], whole[..., j])


@pytest.mark.parametrize("shape", [(300, 517, 3), (40, 3), (1, 1, 3)])
def test_ycbcr_to_rgb_is_the_normative_float32_arithmetic(shape):
    ycc = np.random.default_rng(3).uniform(-0.1, 1.1, shape).astype(np.float32)
    m = color._YCBCR_TO_RGB32
    f32 = np.float32
    y, cb, cr = ycc[..., 0], ycc[..., 1] - f32(0.5), ycc[..., 2] - f32(0.5)
    want = np.stack([(y * m[j, 0] + cb * m[j, 1]) + cr * m[j, 2] for j in range(3)], axis=-1)
    assert want.dtype == np.float32
    np.testing.assert_array_equal(color.ycbcr_to_rgb(ycc), want)
    inplace = ycc.copy()
    assert color.ycbcr_to_rgb(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)
    planes = [np.ascontiguousarray(ycc[..., j]) for j in range(3)]
    out = np.empty(shape, np.float32)
    color.ycbcr_planes_to_rgb(*planes, out)
    np.testing.assert_array_equal(out, want)
