"""Context-adaptive coding of block-transform coefficients (``pca`` blocks, patch SVD).

The coefficients form a ``(k, rows, cols)`` array: component ``i`` of the block at
``(r, c)``.  They are coded one component at a time, each with a quantised Laplace
model whose scale depends on the block's *activity*: the sum of the magnitudes of
what was coded before, in the block and its eight neighbours.  Flat regions, whose
blocks have quantised to nearly nothing so far, get narrow models and cost next to
nothing; busy regions get wide ones.  Per component the coder sends a base level of
:mod:`.laplace_tables` and the index of one of a few fixed curves (``_OFFSETS``) that
add levels per activity class.  Components that vary smoothly between blocks (the
block means, the gradients) are coded as residuals of the LOCO-I median prediction
from their left, upper and upper-left neighbours (``_med``), when that is shorter.

On the photos of docs/rate-distortion.md this coder took the ``pca`` codec's BD-rate
against JPEG from -5.6 % (one Laplace model per component, as in ``_entropy``) to
-14.8 %.

Decoding must reproduce the encoder's models exactly: classes and levels are integer
arithmetic, and the tables are built from integers (mode 2, format version 3).  Mode 1
(versions 1 and 2, still read) took a scale as the product of two float16 values and
left the quantisation of the Laplace distribution to constriction's floating point.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import BundleContentError
from . import laplace_tables as _tables
from .entropy import decode_ints, encode_ints, stream_errors

_MAGIC = b"C1"
_MAX_SPAN = 1 << 22
_MIN_SCALE = 0.02
# Activity classes: 0 is "nothing coded around here yet"; then the activity relative to
# its mean over the image, split at these fractions (numerator, denominator).
_EDGES = ((1, 8), (1, 4), (1, 2), (1, 1), (2, 1), (4, 1))
# Mode 1 (read only): scale multiplier per class, x ** beta at the classes' typical
# relative activity x = 0.03, 0.09, 0.18, 0.35, 0.7, 1.4, 2.8, 6 for beta = 0, 0.25, ...,
# 1.25, written out so that no power function is involved.
_CURVES = np.array(
    [
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [0.4162, 0.5477, 0.6513, 0.7692, 0.9147, 1.0878, 1.2935, 1.5651],
        [0.1732, 0.3, 0.4243, 0.5916, 0.8367, 1.1832, 1.6733, 2.4495],
        [0.0721, 0.1643, 0.2763, 0.4551, 0.7653, 1.2871, 2.1645, 3.8337],
        [0.03, 0.09, 0.18, 0.35, 0.7, 1.4, 2.8, 6.0],
        [0.0125, 0.0493, 0.1173, 0.2692, 0.6403, 1.5229, 3.6218, 9.3905],
    ]
)
# Version 3: levels of :mod:`.laplace_tables` added to a component's base level per
# activity class, for six curves: round(3 * beta * log2(x)) at the classes' typical
# relative activity x (above), beta = 0, 0.25, ..., 1.25 (the learned codec's too).
_OFFSETS = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [-4, -3, -2, -1, 0, 0, 1, 2],
        [-8, -5, -4, -2, -1, 1, 2, 4],
        [-11, -8, -6, -3, -1, 1, 3, 6],
        [-15, -10, -7, -5, -2, 1, 4, 8],
        [-19, -13, -9, -6, -2, 2, 6, 10],
    ]
)
_CLASSES = 8
_INT32_MAX = (1 << 31) - 1
# Blocks sampled per component when fitting its model (enough for a stable fit), and
# the base levels tried on either side of the first guess.
_FIT_COLUMNS = 2048
_FIT_SPREAD = 8


def encode(coef: np.ndarray, rows: int, cols: int) -> bytes:
    """Code integer coefficients ``coef`` of shape ``(k, rows * cols)`` (mode 2)."""
    import constriction

    k = coef.shape[0]
    n = rows * cols
    coef = np.asarray(coef).reshape(k, rows, cols)
    if np.abs(coef).max(initial=0) > _INT32_MAX // 2:
        # Not a real picture's coefficients (absurd steps): the plain per-row coder.
        return _MAGIC + b"\x00" + encode_ints(coef.astype(np.int64).reshape(k, n))
    enc = constriction.stream.queue.RangeEncoder()
    side = bytearray()
    escapes: list[np.ndarray] = []
    activity = np.zeros((rows, cols), np.int64)
    sample = slice(None, None, max(1, n // _FIT_COLUMNS))
    for i in range(k):
        cls = _classes(activity).ravel()
        sym = coef[i].astype(np.int64)
        pred = 0
        resid = sym - _med(sym)
        # Smooth components (the block means, the gradients) are cheaper as residuals.
        if np.abs(resid).mean() < 0.9 * np.abs(sym).mean():
            plain_fit = _fit_levels(np.abs(sym.ravel()[sample]), cls[sample])
            resid_fit = _fit_levels(np.abs(resid.ravel()[sample]), cls[sample])
            pred = int(resid_fit[0] < plain_fit[0])
            _, curve, base = resid_fit if pred else plain_fit
        else:
            _, curve, base = _fit_levels(np.abs(sym.ravel()[sample]), cls[sample])
        if pred:
            sym = resid
        side.append(curve | (pred << 4))
        side += struct.pack("<H", base)
        flat = sym.ravel()
        for c, level in enumerate(_class_levels(base, curve)):
            values = flat[cls == c]
            if values.size:
                _tables.encode(enc, values, int(level), escapes)
        activity += np.abs(sym)
    return _MAGIC + b"\x02" + bytes(side) + _tables.pack_tail(enc, escapes)


def decode(data: bytes, k: int, rows: int, cols: int) -> np.ndarray:
    """Decode :func:`encode` output into an int32 array ``(k, rows * cols)``.

    Raises
    ------
    BundleContentError
        If the stream is malformed, truncated or altered.
    """
    n = rows * cols
    try:
        if len(data) < 3 or data[:2] != _MAGIC:
            raise BundleContentError("coefficient stream has a bad header")
        if data[2:3] == b"\x02":
            return _decode_tables(data[3:], k, rows, cols).reshape(k, n)
        if data[2:3] == b"\x00":
            out = decode_ints(data[3:], shape=(k, n), dtype=np.int64)
        elif data[2:3] == b"\x01":
            out = _decode_context(data[3:], k, rows, cols).reshape(k, n)
        else:
            raise BundleContentError("coefficient stream has an unknown mode")
    except (struct.error, ValueError, OverflowError) as exc:
        raise BundleContentError(f"coefficient stream is corrupt: {exc}") from None
    if np.abs(out).max(initial=0) > np.iinfo(np.int32).max:
        raise BundleContentError("coefficient stream decodes out of range")
    return out.astype(np.int32)


def _decode_tables(data: bytes, k: int, rows: int, cols: int) -> np.ndarray:
    """Mode 2 (format version 3): the integer tables of :mod:`.laplace_tables`."""
    import constriction

    if len(data) < 3 * k + 4:
        raise BundleContentError("coefficient stream is truncated or corrupt")
    heads = np.frombuffer(data[: 3 * k], np.uint8).reshape(k, 3)
    flags = heads[:, 0]
    base = heads[:, 1].astype(np.int64) | (heads[:, 2].astype(np.int64) << 8)
    escapes, words = _tables.unpack_tail(data, 3 * k, _INT32_MAX, "coefficient stream")
    if (
        np.any(flags & 0x0F >= len(_OFFSETS))
        or np.any(flags >> 4 > 1)
        or np.any(base > _tables.MAX_LEVEL)
    ):
        raise BundleContentError("coefficient stream is truncated or corrupt")
    out = np.empty((k, rows, cols), np.int32)  # every value checked on the way
    activity = np.zeros((rows, cols), np.int64)
    used = 0
    with stream_errors("coefficient stream"):
        dec = constriction.stream.queue.RangeDecoder(words)
        for i in range(k):
            cls = _classes(activity).ravel()
            sym = np.empty(rows * cols, np.int64)
            for c, level in enumerate(_class_levels(int(base[i]), int(flags[i] & 0x0F))):
                where = cls == c
                count = int(where.sum())
                if count:
                    try:
                        sym[where], used = _tables.decode(dec, count, int(level), escapes, used)
                    except IndexError:
                        raise BundleContentError("coefficient stream has too few escapes") from None
            if np.abs(sym).max(initial=0) > _INT32_MAX:
                raise BundleContentError("coefficient stream decodes out of range")
            sym = sym.reshape(rows, cols)
            activity += np.abs(sym)
            if flags[i] >> 4:
                sym = _unmed(sym)
                if np.abs(sym).max(initial=0) > _INT32_MAX:
                    raise BundleContentError("coefficient stream decodes out of range")
            out[i] = sym
        if not dec.maybe_exhausted() or used != len(escapes):
            raise BundleContentError("coefficient stream is truncated or corrupt")
    return out


def _class_levels(base: int, curve: int) -> np.ndarray:
    """The level of each activity class: ``base`` plus the curve's offsets, clipped."""
    return np.clip(base + _OFFSETS[curve], 0, _tables.MAX_LEVEL)


def _fit_levels(mags: np.ndarray, cls: np.ndarray) -> tuple[float, int, int]:
    """Bits, curve and base level of the shortest code of integer magnitudes ``mags`` in
    classes ``cls`` (a sample), from the tables' own costs."""
    guess = _tables.level_of(float(mags.mean()) if mags.size else 0.0)
    lo = max(0, guess - _FIT_SPREAD - int(_OFFSETS.max()))
    hi = min(_tables.MAX_LEVEL, guess + _FIT_SPREAD - int(_OFFSETS.min()))
    # bits[c, L - lo]: class c's magnitudes at level L.
    bits = np.stack(
        [
            np.bincount(cls, weights=_tables.value_bits(mags, level), minlength=_CLASSES)
            for level in range(lo, hi + 1)
        ],
        axis=1,
    )
    best = (np.inf, 0, 0)
    for curve in range(len(_OFFSETS)):
        for base in range(
            max(0, guess - _FIT_SPREAD), min(_tables.MAX_LEVEL, guess + _FIT_SPREAD) + 1
        ):
            idx = np.clip(_class_levels(base, curve), lo, hi) - lo
            total = float(bits[np.arange(_CLASSES), idx].sum())
            if total < best[0]:
                best = (total, curve, base)
    return best


def _decode_context(data: bytes, k: int, rows: int, cols: int) -> np.ndarray:
    """Mode 1 (format versions 1 and 2, read only): constriction's quantised Laplace."""
    import constriction

    lo, hi = struct.unpack("<qq", data[:16])
    pos = 16
    flags = np.frombuffer(data[pos : pos + k], np.uint8)
    pos += k
    base = np.frombuffer(data[pos : pos + 2 * k], "<f2")
    pos += 2 * k
    words = np.frombuffer(data[pos:], np.uint8)
    if (
        hi <= lo
        or hi - lo > _MAX_SPAN
        or len(flags) != k
        or len(base) != k
        or np.any(flags & 0x0F >= len(_CURVES))
        or np.any(flags >> 4 > 1)
        or not np.all(np.isfinite(base))
        or not np.all(base > 0)
        or len(words) % 4
    ):
        raise BundleContentError("coefficient stream is truncated or corrupt")
    model = constriction.stream.model.QuantizedLaplace(int(lo), int(hi))
    out = np.empty((k, rows, cols), np.int64)
    activity = np.zeros((rows, cols), np.int64)
    zeros = np.zeros(rows * cols)
    with stream_errors("coefficient stream"):
        coder = constriction.stream.stack.AnsCoder(words.view("<u4").astype(np.uint32))
        for i in range(k):
            scales = _scales(base[i], flags[i] & 0x0F, _classes(activity).ravel())
            sym = coder.decode(model, zeros, scales).astype(np.int64).reshape(rows, cols)
            activity += np.abs(sym)
            out[i] = _unmed(sym) if flags[i] >> 4 else sym
        if not coder.is_empty():
            raise BundleContentError("coefficient stream is truncated or corrupt")
    return out


def _classes(activity: np.ndarray) -> np.ndarray:
    """Activity class of every block from the running magnitudes (integers only)."""
    a = np.pad(activity, 1, mode="edge")
    rows, cols = activity.shape
    # The 3 x 3 sums, separably (integers: the same sums in any order).
    h = a[:, :cols] + a[:, 1 : cols + 1]
    h += a[:, 2 : cols + 2]
    s = h[:rows] + h[1 : rows + 1]
    s += h[2 : rows + 2]
    total = int(s.sum())
    if total == 0:
        return np.zeros(s.shape, np.int8)
    # Class 1 where anything was coded around (s > 0), class j + 2 where the activity
    # relative to its mean reaches _EDGES[j]: s * size * den >= total * num, that is
    # s * size >= ceil(total * num / den); the bounds rise with j.
    scaled = s * s.size
    cls = (s > 0).astype(np.int8)
    for num, den in _EDGES:
        cls += scaled >= -(-(total * num) // den)
    return cls


def _scales(base: np.float16, curve: int, classes: np.ndarray) -> np.ndarray:
    mult = _CURVES[curve].astype(np.float16).astype(np.float64)
    return np.maximum(float(base) * mult[classes], _MIN_SCALE)


def _neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left, upper and upper-left neighbours, continued along the first row/column."""
    a = np.empty_like(x)
    a[:, 1:] = x[:, :-1]
    a[1:, 0] = x[:-1, 0]
    a[0, 0] = 0
    b = np.empty_like(x)
    b[1:] = x[:-1]
    b[0] = a[0]
    c = np.empty_like(x)
    c[1:, 1:] = x[:-1, :-1]
    c[1:, 0] = b[1:, 0]
    c[0] = a[0]
    return a, b, c


def _med_of(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    # The median of a, b and a + b - c: a + b - c clipped to [min(a, b), max(a, b)].
    return np.clip(a + b - c, np.minimum(a, b), np.maximum(a, b))


def _med(x: np.ndarray) -> np.ndarray:
    """The median (LOCO-I) prediction of every element of ``x`` from its neighbours."""
    return _med_of(*_neighbours(x))


def _unmed(resid: np.ndarray) -> np.ndarray:
    """Invert ``x - _med(x)``.

    The first row is a running sum (its prediction is the left neighbour), the first
    column too (the one above); every other element depends on its left, upper and
    upper-left neighbours, so the anti-diagonals ``r + j = t`` are done one after the
    other, each at once, in a skewed copy where diagonal ``t`` is row ``t``.
    """
    rows, cols = resid.shape
    x = np.empty_like(resid)
    x[0] = np.cumsum(resid[0])
    if rows == 1:
        return x
    x[:, 0] = x[0, 0] + np.concatenate([[0], np.cumsum(resid[1:, 0])])
    if cols == 1:
        return x
    # skew[t, r] = x[r, t - r]
    n_diag = rows + cols - 1
    r_idx, j_idx = np.indices((rows, cols))
    t_idx = r_idx + j_idx
    skew = np.zeros((n_diag, rows), resid.dtype)
    res = np.zeros((n_diag, rows), resid.dtype)
    res[t_idx, r_idx] = resid
    skew[t_idx[0], 0] = x[0]
    skew[t_idx[:, 0], r_idx[:, 0]] = x[:, 0]
    for t in range(2, n_diag):
        lo, hi = max(1, t - cols + 1), min(t - 1, rows - 1) + 1
        if lo >= hi:
            continue
        left = skew[t - 1, lo:hi]
        up = skew[t - 1, lo - 1 : hi - 1]
        corner = skew[t - 2, lo - 1 : hi - 1]
        small, big = np.minimum(left, up), np.maximum(left, up)
        pred = np.where(corner >= big, small, np.where(corner <= small, big, left + up - corner))
        np.add(pred, res[t, lo:hi], out=skew[t, lo:hi])
    return skew[t_idx, r_idx]
