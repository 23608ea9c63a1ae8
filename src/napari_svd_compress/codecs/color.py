"""Colour transforms on float planes in [0, 1]."""

from __future__ import annotations

import numpy as np

# Full-range BT.601 (the JPEG/JFIF convention): Y in [0, 1], Cb and Cr centred on 0.5.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ],
    dtype=np.float64,
)
# The inverse, as the decoder applies it (docs/bundle-format.md, section 5): the float64
# inverse of the matrix above rounded to float32, written out so that no LAPACK rounding
# is involved (the tiny entries are that inverse's round-off, kept as the bundles
# written before this table have them).
_YCBCR_TO_RGB32 = np.array(
    [
        [float.fromhex("0x1p+0"), float.fromhex("0x1.0243fap-31"), float.fromhex("0x1.66e978p+0")],
        [float.fromhex("0x1p+0"), float.fromhex("-0x1.606544p-2"), float.fromhex("-0x1.6da346p-1")],
        [float.fromhex("0x1p+0"), float.fromhex("0x1.c5a1cap+0"), float.fromhex("0x1.6af7cp-30")],
    ],
    dtype=np.float32,
)
_YCBCR_TO_RGB = _YCBCR_TO_RGB32.astype(np.float64)
_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float32)

COLOR_SPACES = ("rgb", "ycbcr")


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] to YCbCr (float32, same layout)."""
    out = rgb.astype(np.float32, copy=False) @ _RGB_TO_YCBCR.T.astype(np.float32)
    out += _OFFSET
    return out


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping).

    Normative arithmetic (every operation rounded to float32, none fused): with
    ``cb = Cb - 0.5`` and ``cr = Cr - 0.5``, channel ``j`` is
    ``(Y * m[j, 0] + cb * m[j, 1]) + cr * m[j, 2]``.  Elementwise, not a matrix product,
    whose summation order (and use of fused multiply-adds) is BLAS's choice.
    """
    ycc = ycc.astype(np.float32, copy=False)
    y = ycc[..., 0]
    cb = ycc[..., 1] - _OFFSET[1]
    cr = ycc[..., 2] - _OFFSET[2]
    m = _YCBCR_TO_RGB32
    out = np.empty(ycc.shape, np.float32)
    for j in range(3):
        t = np.multiply(y, m[j, 0], out=out[..., j])
        t += cb * m[j, 1]
        t += cr * m[j, 2]
    return out


def to_space(plane: np.ndarray, space: str) -> np.ndarray:
    """Convert an (H, W, C) unit plane to ``space`` (grayscale passes through)."""
    if space == "rgb" or plane.shape[-1] != 3:
        return plane
    return rgb_to_ycbcr(plane)


def from_space(plane: np.ndarray, space: str) -> np.ndarray:
    """Inverse of :func:`to_space`."""
    if space == "rgb" or plane.shape[-1] != 3:
        return plane
    return ycbcr_to_rgb(plane)
