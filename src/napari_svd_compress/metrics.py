"""Quality and rate figures: PSNR and SSIM (scikit-image) and the Bjontegaard delta rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from ._image import dtype_range

__all__ = ["bd_rate", "data_range", "psnr", "psnr_from_mse", "ssim"]

# Rows per band when measuring large images, so no float64 copy of a whole
# 24-megapixel image is ever made.
_BAND_ROWS = 512
# SSIM's default 7x7 window reaches 3 rows beyond the band it scores.
_SSIM_PAD = 3


def data_range(image: np.ndarray) -> float:
    """The PSNR/SSIM data range of an image: 255 for uint8, 65535 for uint16, the
    dtype's span for other integers, and the actual span of the values for floats."""
    nominal = dtype_range(np.dtype(image.dtype))
    if nominal is not None:
        return nominal[1] - nominal[0]
    span = float(np.max(image)) - float(np.min(image))
    return span if span > 0 else 1.0


_range_of = data_range


def squared_error(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of squared differences, computed in bands of float64."""
    total = 0.0
    for start in range(0, a.shape[0], _BAND_ROWS):
        d = a[start : start + _BAND_ROWS].astype(np.float64) - b[start : start + _BAND_ROWS]
        total += float(np.vdot(d, d))
    return total


def psnr_from_mse(mse: float, data_range: float) -> float:
    """``10 log10(range^2 / mse)``; infinite for a perfect reconstruction."""
    if mse <= 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (equal to scikit-image's, computed in bands)."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {test.shape}")
    rng = _range_of(reference) if data_range is None else data_range
    return psnr_from_mse(squared_error(reference, test) / reference.size, rng)


def ssim(reference: np.ndarray, test: np.ndarray, spec: Any = None) -> float:
    """Mean structural similarity (scikit-image, default 7x7 window).

    Large images are scored in overlapping row bands whose SSIM maps are stitched, which
    gives scikit-image's value without its many whole-image float64 temporaries.
    ``spec`` (an :class:`~napari_svd_compress._image.ImageSpec`) supplies the data range
    and whether the last axis is colour; without it they are inferred.
    """
    if spec is not None:
        rng, rgb = spec.data_range, spec.rgb
    else:
        rng, rgb = data_range(reference), reference.ndim == 3 and reference.shape[-1] in (3, 4)
    if min(reference.shape[:2]) < 7:
        return float("nan")  # scikit-image's window does not fit
    channel_axis = -1 if rgb else None
    h = reference.shape[0]
    if h <= 2 * _BAND_ROWS:
        return float(
            structural_similarity(reference, test, data_range=rng, channel_axis=channel_axis)
        )
    total = 0.0
    count = 0
    for start in range(0, h, _BAND_ROWS):
        stop = min(start + _BAND_ROWS, h)
        lo, hi = max(start - _SSIM_PAD, 0), min(stop + _SSIM_PAD, h)
        _, smap = structural_similarity(
            reference[lo:hi], test[lo:hi], data_range=rng, channel_axis=channel_axis, full=True
        )
        # scikit-image averages the map without a border of _SSIM_PAD pixels.
        keep_lo, keep_hi = max(start, _SSIM_PAD), min(stop, h - _SSIM_PAD)
        if keep_hi <= keep_lo:
            continue
        rows = smap[keep_lo - lo : keep_hi - lo, _SSIM_PAD:-_SSIM_PAD]
        total += float(rows.sum(dtype=np.float64))
        count += rows.size
    return total / count


def bd_rate(
    rate_a: Sequence[float],
    psnr_a: Sequence[float],
    rate_ref: Sequence[float],
    psnr_ref: Sequence[float],
) -> float:
    """Bjontegaard delta rate of curve A against a reference curve, as a fraction.

    Cubic polynomials of ``ln(rate)`` as a function of PSNR are fitted to both curves
    and integrated over the PSNR interval they share; the result is
    ``exp(mean difference) - 1``: -0.3 means A needs 30% fewer bits for the same PSNR.
    Returns NaN when the curves do not overlap or have fewer than 4 finite points.
    """
    ra, pa = _clean(rate_a, psnr_a)
    rr, pr = _clean(rate_ref, psnr_ref)
    if len(pa) < 4 or len(pr) < 4:
        return float("nan")
    lo, hi = max(pa.min(), pr.min()), min(pa.max(), pr.max())
    if hi <= lo:
        return float("nan")
    fa = np.polyfit(pa, np.log(ra), 3)
    fr = np.polyfit(pr, np.log(rr), 3)
    ia, ir = np.polyint(fa), np.polyint(fr)
    mean_diff = (
        (np.polyval(ia, hi) - np.polyval(ia, lo)) - (np.polyval(ir, hi) - np.polyval(ir, lo))
    ) / (hi - lo)
    return float(np.exp(mean_diff) - 1.0)


def _clean(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    return r[ok], q[ok]
