"""Quality and rate figures: PSNR, SSIM and the Bjontegaard delta rate.

PSNR and SSIM equal scikit-image's (``peak_signal_noise_ratio`` and
``structural_similarity`` with its defaults) but are computed in row bands, so that a
24-megapixel image never gets a whole-image float64 temporary, and SSIM is several
times faster (see :func:`ssim`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from ._image import dtype_range
from ._threads import THREADS, thread_map

__all__ = ["SSIM_RADIUS", "bd_rate", "data_range", "psnr", "psnr_from_mse", "squared_error", "ssim"]

# Rows per band for the scikit-image fallback of :func:`ssim` (n-D images).
_BAND_ROWS = 512
# SSIM's default 7x7 window reaches 3 rows beyond the band it scores; scikit-image also
# leaves a border of this width out of the mean.
SSIM_RADIUS = 3
_SSIM_WIN = 2 * SSIM_RADIUS + 1
_SSIM_NP = _SSIM_WIN * _SSIM_WIN  # pixels per window
_SSIM_K1, _SSIM_K2 = 0.01, 0.03  # scikit-image's defaults
# Output rows per band of the fast SSIM: its buffers (a few MB per thread) stay in cache.
_SSIM_BAND = 16
# Output rows per sub-band of the float64 final combination (its temporaries stay in L2).
_SSIM_SUB_BAND = 4
# Below this many window positions (per image) threads cost more than they save.
_SSIM_THREADED_MIN = 1 << 20
# Threads for one SSIM (numpy releases the GIL inside its loops).
_SSIM_THREADS = THREADS
# Elements per band of the squared error: its float64 difference buffer is ~2 MB.
_SQERR_BAND_ELEMENTS = 1 << 18
# Integer dtypes whose differences fit a wider integer (dtype.str without byte order).
_WIDER_INT = {"u1": np.int16, "i1": np.int16, "u2": np.int32, "i2": np.int32}


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
    """Sum of squared differences of two images, as scikit-image's float64 MSE sums them.

    Parameters
    ----------
    a, b : numpy.ndarray
        Images of the same shape (any real or boolean dtype; they may differ).

    Returns
    -------
    float
        ``sum((a - b) ** 2)`` evaluated in float64.

    Notes
    -----
    One pass per band: the difference is cast to float64 inside the subtraction and
    written into a small reused buffer, whose squares are then summed.  Integer differences
    are exact in float64, so for 8- and 16-bit images the sum is exact up to 2**53.
    """
    if a.shape != b.shape or a.ndim == 0 or a.size == 0:  # rare: keep it simple
        d = np.subtract(np.asarray(a), np.asarray(b), dtype=np.float64)
        return float(np.vdot(d, d))
    row = max(1, a.size // a.shape[0])
    rows = min(a.shape[0], max(1, _SQERR_BAND_ELEMENTS // row))
    buf = np.empty((rows, *a.shape[1:]), dtype=np.float64)
    # 8- and 16-bit integers: subtracting in a wider integer is faster than casting both
    # operands to float64 first, and just as exact.
    wide = _WIDER_INT.get(a.dtype.str[1:]) if a.dtype == b.dtype else None
    ibuf = None if wide is None else np.empty(buf.shape, dtype=wide)
    total = 0.0
    for start in range(0, a.shape[0], rows):
        stop = min(start + rows, a.shape[0])
        d = buf[: stop - start]
        ab, bb = np.asarray(a[start:stop]), np.asarray(b[start:stop])
        if ibuf is None:
            np.subtract(ab, bb, out=d, dtype=np.float64)
        else:
            di = ibuf[: stop - start]
            np.subtract(ab, bb, out=di, dtype=di.dtype)
            np.copyto(d, di)
        flat = d.reshape(-1)
        # einsum, not BLAS dot: one thread, which a busy neighbour core cannot stall.
        total += float(np.einsum("i,i->", flat, flat))
    return total


def psnr_from_mse(mse: float, data_range: float) -> float:
    """``10 log10(range^2 / mse)``; infinite for a perfect reconstruction."""
    if mse <= 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, equal to scikit-image's ``peak_signal_noise_ratio``.

    Parameters
    ----------
    reference, test : numpy.ndarray
        Images of the same shape.
    data_range : float, optional
        Peak-to-peak range; by default :func:`data_range` of ``reference``.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the images are equal.
    """
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {test.shape}")
    rng = _range_of(reference) if data_range is None else data_range
    return psnr_from_mse(squared_error(reference, test) / reference.size, rng)


def ssim(reference: np.ndarray, test: np.ndarray, spec: Any = None) -> float:
    """Mean structural similarity, equal to scikit-image's with its default settings.

    That is ``structural_similarity(reference, test, data_range=..., channel_axis=-1 if
    RGB else None)``: 7x7 uniform window, K1=0.01, K2=0.03, sample covariance, mean over
    the map without a 3-pixel border, averaged over colour channels.

    Parameters
    ----------
    reference, test : numpy.ndarray
        Images of the same shape: 2-D grey, or channel-last colour (``spec.rgb``).
    spec : ImageSpec, optional
        An :class:`~napari_svd_compress._image.ImageSpec` supplying ``data_range`` and
        ``rgb`` (whether the last axis is colour).  Without it the range is
        :func:`data_range` of ``reference`` and a last axis of 3 or 4 is colour.

    Returns
    -------
    float
        The mean SSIM; NaN when an image side is shorter than the 7-pixel window.

    Notes
    -----
    2-D and colour images take a fast path (about 0.1x scikit-image's time on a
    24-megapixel RGB image, using up to ``_SSIM_THREADS`` threads): the 7x7 window sums
    are separable sums over bands of rows (float32 horizontally; vertically running
    sums, float32 for 8-bit data, else float64) and the final combination is float64.
    For 8-bit and boolean images every sum is exact, so the result equals
    scikit-image's to rounding (~1e-14); for other dtypes it agrees to ~1e-6.  Other
    layouts (3-D volumes) are scored by scikit-image in overlapping row bands.
    """
    if spec is not None:
        rng, rgb = spec.data_range, spec.rgb
    else:
        rng, rgb = data_range(reference), reference.ndim == 3 and reference.shape[-1] in (3, 4)
    if min(reference.shape[:2]) < _SSIM_WIN:
        return float("nan")  # scikit-image's window does not fit
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {test.shape}")
    if reference.ndim == 2:
        return _ssim_fast(reference, test, float(rng), 1)
    if reference.ndim == 3 and rgb:
        return _ssim_fast(reference, test, float(rng), reference.shape[2])
    return _ssim_banded_skimage(reference, test, rng, rgb)


def _ssim_banded_skimage(reference: np.ndarray, test: np.ndarray, rng: float, rgb: bool) -> float:
    """scikit-image's SSIM of any layout, in overlapping row bands whose maps are stitched."""
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
        lo, hi = max(start - SSIM_RADIUS, 0), min(stop + SSIM_RADIUS, h)
        _, smap = structural_similarity(
            reference[lo:hi], test[lo:hi], data_range=rng, channel_axis=channel_axis, full=True
        )
        # scikit-image averages the map without a border of SSIM_RADIUS pixels.
        keep_lo, keep_hi = max(start, SSIM_RADIUS), min(stop, h - SSIM_RADIUS)
        if keep_hi <= keep_lo:
            continue
        rows = smap[keep_lo - lo : keep_hi - lo, SSIM_RADIUS:-SSIM_RADIUS]
        total += float(rows.sum(dtype=np.float64))
        count += rows.size
    return total / count


def _ssim_fast(reference: np.ndarray, test: np.ndarray, rng: float, channels: int) -> float:
    """Mean SSIM of 2-D (``channels == 1``) or channel-last images of at least 7x7.

    Channels stay interleaved: each image row is one line of ``width * channels``
    values and the horizontal window steps by ``channels``, so no strided copies are
    needed and every numpy call covers all channels at once.
    """
    h, w = reference.shape[:2]
    out_rows, out_cols = h - 2 * SSIM_RADIUS, w - 2 * SSIM_RADIUS
    offset, scale = _ssim_shift(reference, rng)
    cov_norm = _SSIM_NP / (_SSIM_NP - 1)  # scikit-image's sample covariance
    # Constants in units of window *sums* of the shifted, scaled values; the luminance
    # and contrast-structure terms are scaled by NP^2 and NP^2 / cov_norm, which leaves
    # their ratios, and so SSIM, unchanged (see _ssim_rows).
    c1 = (_SSIM_K1 * rng * scale) ** 2 * _SSIM_NP**2
    c2 = (_SSIM_K2 * rng * scale) ** 2 * _SSIM_NP**2 / cov_norm
    shift = _SSIM_NP * offset * scale  # window sum of the offset, to undo the centring

    def rows(lo: int, hi: int) -> float:
        return _ssim_rows(reference, test, lo, hi, channels, offset, scale, c1, c2, shift)

    workers = min(_SSIM_THREADS, max(1, out_rows // (4 * _SSIM_BAND)))
    if workers == 1 or out_rows * out_cols * channels < _SSIM_THREADED_MIN:
        total = rows(0, out_rows)
    else:
        # Blocks of contiguous rows (each carries its running sums down), a few per
        # thread so that a thread slowed by other work on its core does not hold up
        # the result: the pool hands the blocks out as threads become free.
        blocks = min(4 * workers, max(workers, out_rows // (16 * _SSIM_BAND)))
        cuts = [round(i * out_rows / blocks) for i in range(blocks + 1)]
        total = sum(thread_map(rows, cuts[:-1], cuts[1:], workers=workers))
    return total / (out_rows * out_cols * channels)


def _ssim_shift(reference: np.ndarray, rng: float) -> tuple[float, float]:
    """Offset and scale applied to both images before the float32 window sums.

    SSIM's variances are differences of large sums (``E[x^2] - E[x]^2``); centring the
    values on their typical level keeps float32 from losing them.  8-bit and boolean
    images are left alone: their sums are then exact integers in float32.  Integers
    keep an integer offset (exact subtraction); floats and 32-bit integers are also
    scaled by a power of two near ``1 / rng`` (exact), so squares cannot overflow.
    """
    dt = np.dtype(reference.dtype)
    if dt == np.bool_ or (dt.kind in "iu" and dt.itemsize == 1):
        return 0.0, 1.0
    h, w = reference.shape[:2]
    sample = np.asarray(reference[:: max(1, h // 64), :: max(1, w // 64)])
    offset = float(np.mean(sample, dtype=np.float64))
    if not math.isfinite(offset):
        offset = 0.0  # NaN or inf in the image: SSIM is NaN anyway, as in scikit-image
    if dt.kind in "iu":
        offset = float(round(offset))
        if dt.itemsize <= 2:
            return offset, 1.0
    if not (math.isfinite(rng) and rng > 0):
        return offset, 1.0
    return offset, math.ldexp(1.0, -math.frexp(rng)[1])


def _ssim_load(src: np.ndarray, offset: float, scale: float, out: np.ndarray) -> None:
    """``out[...] = (src - offset) * scale`` in float32, without a float64 copy of ``src``."""
    if offset == 0.0:
        np.copyto(out, src, casting="unsafe")
    elif src.dtype.itemsize <= 2 or src.dtype == np.float32:
        np.subtract(src, offset, out=out, dtype=np.float32)  # exact enough in float32
    else:  # float64 or 32-bit integers: subtract in float64, then round
        np.subtract(src, offset, out=out, dtype=np.float64, casting="same_kind")
    if scale != 1.0:
        out *= scale


def _box_rows(a: np.ndarray, step: int, p2: np.ndarray, p4: np.ndarray, out: np.ndarray) -> None:
    """Sums of 7 values ``step`` apart along the last axis of ``a``, into ``out``.

    Doubling (pairs, then quads, then quad + pair + one) takes 4 additions per value
    instead of 6 and keeps float32 sums of integers exact.
    """
    n = a.shape[-1]
    n2, n4, n7 = n - step, n - 3 * step, n - 6 * step
    pairs, quads = p2[..., :n2], p4[..., :n4]
    np.add(a[..., :n2], a[..., step:], out=pairs)
    np.add(pairs[..., :n4], pairs[..., 2 * step :], out=quads)
    np.add(quads[..., :n7], pairs[..., 4 * step : 4 * step + n7], out=out)
    out += a[..., 6 * step :]


def _ssim_rows(
    reference: np.ndarray,
    test: np.ndarray,
    lo: int,
    hi: int,
    channels: int,
    offset: float,
    scale: float,
    c1: float,
    c2: float,
    shift: float,
) -> float:
    """Sum of the SSIM map over output rows ``[lo, hi)`` (window top rows), cropped columns.

    Per band of ``_SSIM_BAND`` output rows: load the new image rows as float32 ``x``,
    ``y``, form ``x^2 + y^2`` and ``xy``, take the horizontal 7-sums of these four
    (float32), then the vertical 7-sums as running sums (add the row entering the
    window, subtract the one leaving; float32 where exact, else float64), carried from
    band to band so that no row is processed twice.  The float64 combination
    (:func:`_ssim_combine`) runs on sub-bands of ``_SSIM_SUB_BAND`` rows.

    With window sums Sx, Sy, Sq = S(x^2 + y^2), Sxy of the centred values,
    P = Sx Sy, U = Sx^2 + Sy^2 and the luminance shift K = 2 m (Sx + Sy) + 2 m^2 + c1
    (m = ``shift``, the window sum of the offset)::

        SSIM = (2P + K) (2 (NP Sxy - P) + c2) / ((U + K) (NP Sq - U + c2))

    which is scikit-image's (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2))
    with both factors rescaled.
    """
    if hi <= lo:
        return 0.0
    w = reference.shape[1]
    line = w * channels  # interleaved values per image row
    hline = line - 6 * channels  # horizontal window sums per row
    band = min(_SSIM_BAND, hi - lo)
    sub = min(_SSIM_SUB_BAND, band)
    f32 = np.float32
    # Window sums of 8-bit and boolean images are integers below 2**24, exact in
    # float32; other data are summed vertically in float64 so the running sums do not drift.
    exact32 = offset == 0.0 and scale == 1.0 and _exact_in_float32(reference, test)
    vdt = f32 if exact32 else np.float64
    q = np.empty((4, band + 6, line), f32)  # x, y, x^2 + y^2, xy of new image rows
    sq = np.empty((band + 6, line), f32)
    p2 = np.empty((4, band + 6, line), f32)
    p4 = np.empty((4, band + 6, line), f32)
    # Horizontal sums; local row j is image row (band top - 1 + j), rows 0-6 carried over.
    hsum = np.empty((4, band + 7, hline), f32)
    # Vertical running sums of a sub-band; row 0 is the previous output row.
    vsum = np.empty((4, sub + 1, hline), vdt)
    t, u, v, a2, b2 = (np.empty((sub, hline), np.float64) for _ in range(5))
    nwin = float(_SSIM_NP)
    total = 0.0
    for top in range(lo, hi, band):
        b = min(band, hi - top)
        first = top == lo
        new_lo = 1 if first else 7  # first local row to compute
        r0, r1 = top - 1 + new_lo, top + b + 6  # the image rows it holds
        k = r1 - r0
        x, y, xx, xy = q[0, :k], q[1, :k], q[2, :k], q[3, :k]
        _ssim_load(_lines(reference, r0, r1, line), offset, scale, x)
        _ssim_load(_lines(test, r0, r1, line), offset, scale, y)
        np.multiply(x, x, out=xx)
        np.multiply(y, y, out=sq[:k])
        xx += sq[:k]
        np.multiply(x, y, out=xy)
        _box_rows(q[:, :k], channels, p2[:, :k], p4[:, :k], hsum[:, new_lo : new_lo + k])

        # Output row i of the band (local horizontal rows i+1..i+7), in sub-bands that
        # keep the float64 temporaries in cache.
        for s0 in range(0, b, sub):
            n = min(sub, b - s0)
            for i in range(1, n + 1):
                j = s0 + i  # its horizontal rows are j..j+6
                if first and j == 1:
                    np.sum(hsum[:, 1:8], axis=1, dtype=vdt, out=vsum[:, 1])
                    continue
                # Add the row entering the window, subtract the one leaving it.
                np.add(vsum[:, i - 1], hsum[:, j + 6], out=vsum[:, i])
                vsum[:, i] -= hsum[:, j - 1]
            total += _ssim_combine(vsum[:, 1 : n + 1], (t, u, v, a2, b2), nwin, c1, c2, shift)
            vsum[:, 0] = vsum[:, n]

        # Carry the last 7 horizontal rows to the next band.
        hsum[:, :7] = hsum[:, b : b + 7]
    return total


def _exact_in_float32(*images: np.ndarray) -> bool:
    """Whether window sums of these images' values and products are exact in float32."""
    return all(
        im.dtype == np.bool_ or (im.dtype.kind in "iu" and im.dtype.itemsize == 1) for im in images
    )


def _ssim_combine(
    sums: np.ndarray,
    buffers: tuple[np.ndarray, ...],
    nwin: float,
    c1: float,
    c2: float,
    shift: float,
) -> float:
    """Sum of SSIM over rows of window sums ``sums = (Sx, Sy, Sq, Sxy)``, in float64.

    Computes 4 (P + Kh) (NP Sxy - P + c2 / 2) / ((U + 2 Kh) (NP Sq - U + c2)), the
    formula of :func:`_ssim_rows` with its factors of 2 taken out (Kh = K / 2).
    """
    sx, sy, sq, sxy = sums
    n = sx.shape[0]
    f64 = np.float64  # also for float32 sums: their products are not exact in float32
    t, u, v, a, b = (buf[:n] for buf in buffers)
    np.multiply(sx, sy, out=t, dtype=f64)  # P
    np.multiply(sx, sx, out=u, dtype=f64)
    np.multiply(sy, sy, out=v, dtype=f64)
    u += v  # U
    np.multiply(sxy, nwin, out=a, dtype=f64)
    a -= t
    a += 0.5 * c2  # half the contrast-structure numerator
    np.multiply(sq, nwin, out=b, dtype=f64)
    b -= u
    b += c2  # contrast-structure denominator
    if shift:
        np.add(sx, sy, out=v, dtype=f64)
        v *= shift
        v += shift * shift + 0.5 * c1  # Kh
        t += v
        u += v
        u += v
    else:
        t += 0.5 * c1
        u += c1
    t *= a
    u *= b
    t /= u
    return 4.0 * float(t.sum())


def _lines(image: np.ndarray, r0: int, r1: int, line: int) -> np.ndarray:
    """Rows ``[r0, r1)`` of ``image`` as a 2-D array of ``line`` values per row."""
    return np.asarray(image[r0:r1]).reshape(r1 - r0, line)


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
