"""PSNR and SSIM against scikit-image: same values, from our banded and threaded code."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_svd_compress import metrics

# The agreement promised for SSIM (absolute); 8-bit and boolean images are exact.
SSIM_TOL = 1e-4
EXACT_TOL = 1e-9


def _photo(h: int, w: int) -> np.ndarray:
    """A photograph (astronaut, mirrored to any size) as float64 in [0, 1], RGB."""
    a = data.astronaut().astype(np.float64) / 255.0
    return np.pad(a, ((0, max(0, h - 512)), (0, max(0, w - 512)), (0, 0)), mode="symmetric")[:h, :w]


def _pair(
    shape: tuple[int, ...], dtype: str, lo: float, hi: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like reference with values in [lo, hi] and a noisy, shifted 'decoded' copy."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    unit = _photo(h, w)
    if len(shape) == 2:
        unit = unit[..., 1]
    elif shape[2] == 4:  # an alpha channel with some structure of its own
        unit = np.dstack([unit, np.flipud(unit[..., :1])])
    span = hi - lo
    ref = lo + unit * span
    test = ref + rng.normal(0, 0.03 * span, ref.shape) + 0.01 * span
    test = np.clip(test, lo, hi)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return np.rint(ref).astype(dtype), np.rint(test).astype(dtype)
    return ref.astype(dtype), test.astype(dtype)


def _expected(ref: np.ndarray, test: np.ndarray, rng: float, rgb: bool) -> float:
    return float(structural_similarity(ref, test, data_range=rng, channel_axis=-1 if rgb else None))


def _spec(rng: float, rgb: bool) -> SimpleNamespace:
    return SimpleNamespace(data_range=rng, rgb=rgb)


@pytest.mark.parametrize(
    "shape",
    [
        (7, 7),
        (7, 40),
        (45, 7),
        (7, 33, 3),
        (61, 37, 3),
        (37, 61, 4),
        (127, 33),
        (33, 301, 3),
        (1100, 300),  # many bands
        (301, 1100, 3),
    ],
)
def test_ssim_equals_scikit_image_on_shapes(shape):
    rgb = len(shape) == 3
    ref, test = _pair(shape, "uint8", 0, 255)
    got = metrics.ssim(ref, test, _spec(255, rgb))
    assert got == pytest.approx(_expected(ref, test, 255, rgb), abs=EXACT_TOL)
    assert metrics.ssim(ref, test) == got  # range and layout inferred the same way


@pytest.mark.parametrize(
    ("dtype", "lo", "hi", "rng"),
    [
        ("uint8", 0, 255, 255),
        ("uint8", 20, 90, 255),
        ("uint16", 0, 65535, 65535),
        ("uint16", 0, 4095, 4095),  # 12-bit camera data
        ("uint16", 30000, 31000, 65535),  # a narrow band far from zero
        ("int16", -32768, 32767, 65535),
        ("int16", -2000, 1500, 3500),
        ("int8", -128, 127, 255),
        ("int32", -(2**30), 2**30, 2**31),
        ("uint32", 0, 2**32 - 1, 2**32 - 1),
        ("float32", 0.0, 1.0, 1.0),
        ("float32", -3.0, 7.0, 10.0),
        ("float64", -1000.0, 5000.0, 6000.0),
        ("float64", 1000.0, 1001.0, 1.0),  # large offset, small range
        ("float64", 0.0, 1e-20, 1e-20),
        ("float64", 0.0, 1e30, 1e30),
        ("float16", 0.0, 1.0, 1.0),
    ],
)
@pytest.mark.parametrize("shape", [(97, 131), (83, 59, 3), (71, 67, 4)])
def test_ssim_equals_scikit_image_on_dtypes_and_ranges(dtype, lo, hi, rng, shape):
    rgb = len(shape) == 3
    ref, test = _pair(shape, dtype, lo, hi, seed=len(shape))
    got = metrics.ssim(ref, test, _spec(rng, rgb))
    assert np.isfinite(got) and 0 < got < 1
    # scikit-image scores float32 in float32, which is less exact than we are for
    # ill-conditioned data: compare with its float64 value, which it approximates.
    wide = ref.astype(np.float64), test.astype(np.float64)
    expected = _expected(*wide, rng, rgb)
    tol = EXACT_TOL if np.dtype(dtype).itemsize == 1 else SSIM_TOL
    assert got == pytest.approx(expected, abs=tol)
    if dtype not in ("float32", "float16"):  # there, its float64 value is the reference
        assert got == pytest.approx(_expected(ref, test, rng, rgb), abs=tol)


def test_ssim_of_float32_photo_equals_scikit_image_in_float32():
    ref, test = _pair((200, 150, 3), "float32", 0.0, 1.0)
    expected = _expected(ref, test, 1.0, True)
    assert metrics.ssim(ref, test, _spec(1.0, True)) == pytest.approx(expected, abs=SSIM_TOL)


def test_ssim_of_bool_images_equals_scikit_image():
    rng = np.random.default_rng(3)
    ref = _photo(90, 70)[..., 0] > 0.5
    test = ref ^ (rng.random(ref.shape) > 0.9)
    expected = _expected(ref, test, 1.0, False)
    assert metrics.ssim(ref, test) == pytest.approx(expected, abs=EXACT_TOL)
    assert metrics.ssim(ref, test, _spec(1.0, False)) == pytest.approx(expected, abs=EXACT_TOL)


def test_ssim_of_mixed_dtypes_equals_scikit_image():
    ref, test = _pair((64, 80, 3), "uint8", 0, 255)
    decoded = test.astype(np.float32) + 0.25
    expected = _expected(ref, decoded, 255, True)
    assert metrics.ssim(ref, decoded, _spec(255, True)) == pytest.approx(expected, abs=SSIM_TOL)


def test_ssim_of_identical_images_is_one():
    ref, _ = _pair((50, 40, 3), "uint16", 0, 65535)
    assert metrics.ssim(ref, ref.copy()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_large_rgb_pair_equals_scikit_image():
    ref, test = _pair((2000, 1500, 3), "uint8", 0, 255, seed=5)
    got = metrics.ssim(ref, test)
    assert got == pytest.approx(_expected(ref, test, 255, True), abs=EXACT_TOL)


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize(("dtype", "lo", "hi"), [("uint8", 0, 255), ("float64", -1000, 5000)])
def test_ssim_split_across_threads_equals_scikit_image(monkeypatch, threads, dtype, lo, hi):
    # Row blocks of odd sizes that end inside a band, more blocks than threads.
    monkeypatch.setattr(metrics, "_SSIM_THREADS", threads)
    monkeypatch.setattr(metrics, "_SSIM_THREADED_MIN", 0)
    ref, test = _pair((1100, 97, 3), dtype, lo, hi, seed=threads)
    rng = float(hi - lo)
    got = metrics.ssim(ref, test, _spec(rng, True))
    expected = _expected(ref, test, rng, True)
    assert got == pytest.approx(expected, abs=EXACT_TOL if dtype == "uint8" else SSIM_TOL)


def test_ssim_is_nan_when_the_window_does_not_fit():
    ref, test = _pair((6, 40, 3), "uint8", 0, 255)
    assert np.isnan(metrics.ssim(ref, test))
    assert np.isnan(metrics.ssim(ref[:, :6, 0], test[:, :6, 0]))


def test_ssim_rejects_different_shapes():
    ref, test = _pair((20, 30), "uint8", 0, 255)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.ssim(ref, test[:, :29])


def test_ssim_of_a_volume_is_scikit_image_nd():
    # Not colour (spec.rgb False) and 3-D: scikit-image's 3-D SSIM, as before.
    ref, test = _pair((30, 40, 3), "uint8", 0, 255)
    vol, vol_test = np.repeat(ref, 3, axis=2), np.repeat(test, 3, axis=2)  # 9 slices
    got = metrics.ssim(vol, vol_test, _spec(255, False))
    assert got == pytest.approx(_expected(vol, vol_test, 255, False), abs=EXACT_TOL)


@pytest.mark.parametrize(
    ("shape", "dtype", "lo", "hi"),
    [
        ((1000, 700, 3), "uint8", 0, 255),  # several bands of the squared error
        ((333, 211), "uint16", 0, 65535),
        ((129, 77, 4), "int16", -32768, 32767),
        ((97, 101), "int8", -128, 127),
        ((200, 150, 3), "float32", 0.0, 1.0),
        ((150, 90), "float64", -1000.0, 5000.0),
        ((50, 3000), "uint32", 0, 2**32 - 1),
    ],
)
def test_psnr_equals_scikit_image(shape, dtype, lo, hi):
    ref, test = _pair(shape, dtype, lo, hi)
    rng = float(hi - lo) if np.dtype(dtype).kind == "f" else None
    expected = peak_signal_noise_ratio(ref, test, data_range=rng)
    assert metrics.psnr(ref, test, rng) == pytest.approx(expected, rel=1e-9)
    exact = np.sum((ref.astype(np.float64) - test.astype(np.float64)) ** 2)
    assert metrics.squared_error(ref, test) == pytest.approx(exact, rel=1e-12)


def test_psnr_of_bool_and_mixed_dtypes_equals_scikit_image():
    rng = np.random.default_rng(4)
    a = rng.random((70, 90)) > 0.5
    b = a ^ (rng.random(a.shape) > 0.8)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1))
    ref, test = _pair((80, 60, 3), "uint8", 0, 255)
    decoded = test.astype(np.float32) - 0.4
    expected = peak_signal_noise_ratio(ref, decoded, data_range=255)
    assert metrics.psnr(ref, decoded) == pytest.approx(expected, rel=1e-9)


def test_psnr_of_identical_images_is_infinite():
    ref, _ = _pair((20, 30, 3), "uint8", 0, 255)
    assert metrics.psnr(ref, ref.copy()) == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(ref, ref[:, :29])
