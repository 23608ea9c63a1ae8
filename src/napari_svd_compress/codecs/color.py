"""Colour transforms on float planes in [0, 1]."""

from __future__ import annotations

import numpy as np

from .._image import _row_bands

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
_RGB_TO_YCBCR32 = _RGB_TO_YCBCR.astype(np.float32)
_YCBCR_TO_RGB = _YCBCR_TO_RGB32.astype(np.float64)
_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float32)

COLOR_SPACES = ("rgb", "ycbcr")


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] to YCbCr (float32, same layout)."""
    out = np.empty(rgb.shape, np.float32)
    rgb_to_ycbcr_into(rgb, [out[..., j] for j in range(3)])
    return out


def rgb_to_ycbcr_into(rgb: np.ndarray, planes: list[np.ndarray]) -> None:
    """:func:`rgb_to_ycbcr` of ``rgb`` (..., 3) written into three arrays of its shape
    less the last axis (the encoder's separate channel planes: no interleaved copy).

    Elementwise in float32, per output channel ``(R m0 + G m1) + B m2 + offset``, in
    cache-sized bands of rows: a matrix product with an inner dimension of 3 is several
    times slower in BLAS, and whole-plane temporaries cost more than the arithmetic.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 1:  # one pixel
        rgb, planes = rgb[None], [p[None] for p in planes]
    m = _RGB_TO_YCBCR32
    for sl in _bands_of(rgb[..., 0]):
        band = rgb[sl].astype(np.float32, copy=False)
        scratch = np.empty(band.shape[:-1], np.float32)
        for j, out in enumerate(planes):
            o = np.multiply(band[..., 0], m[j, 0], out=out[sl])
            o += np.multiply(band[..., 1], m[j, 1], out=scratch)
            o += np.multiply(band[..., 2], m[j, 2], out=scratch)
            if _OFFSET[j]:
                o += _OFFSET[j]


def ycbcr_to_rgb(ycc: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping), into ``out`` if given (which may
    be ``ycc`` itself).

    Normative arithmetic (every operation rounded to float32, none fused): with
    ``cb = Cb - 0.5`` and ``cr = Cr - 0.5``, channel ``j`` is
    ``(Y * m[j, 0] + cb * m[j, 1]) + cr * m[j, 2]``.  Elementwise, not a matrix product,
    whose summation order (and use of fused multiply-adds) is BLAS's choice.
    """
    ycc = ycc.astype(np.float32, copy=False)
    out = np.empty(ycc.shape, np.float32) if out is None else out
    v, o = (ycc[None], out[None]) if ycc.ndim == 1 else (ycc, out)
    ycbcr_planes_to_rgb(v[..., 0], v[..., 1], v[..., 2], o)
    return out


def ycbcr_planes_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, out: np.ndarray) -> None:
    """:func:`ycbcr_to_rgb` of three planes (float32, any layout) into ``out`` (..., 3),
    in cache-sized bands of rows; ``out`` may hold the planes themselves.  From
    contiguous planes this is half the time of the same arithmetic on interleaved
    channels."""
    m = _YCBCR_TO_RGB32
    for sl in _bands_of(y):
        b = np.subtract(cb[sl], _OFFSET[1])
        r = np.subtract(cr[sl], _OFFSET[2])
        t, u = np.empty_like(b), np.empty_like(b)
        # Y last: its slot of ``out`` may be Y itself.
        for j in (1, 2, 0):
            np.multiply(y[sl], m[j, 0], out=t)
            t += np.multiply(b, m[j, 1], out=u)
            t += np.multiply(r, m[j, 2], out=u)
            out[sl, ..., j] = t


def _bands_of(plane: np.ndarray) -> list[slice]:
    """Cache-sized bands of the first axis of ``plane`` (at least 1-D)."""
    return _row_bands(len(plane), plane.size // max(len(plane), 1))


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
