"""Lossless coding of integer arrays: quantised factors, index maps, alpha planes.

Each array is coded by whichever of several coders gives the fewest bytes (with
``quick``, large arrays by the one that wins estimates on samples; see encode_ints):

* ``laplace``: a range coder (constriction) with a discrete Laplace table per row, one
  of :mod:`.laplace_tables`' integer tables, chosen by a level and centred on an
  integer location (side information).  Each row is coded either as it is or as first
  differences (smooth singular vectors, such as the first one, are far cheaper as
  differences).  This is the workhorse for transform coefficients.  Streams of format
  versions 1 and 2 used constriction's floating-point quantised Laplace instead
  (``laplace-v1``, still read).
* ``zlib`` and ``lzma``: for arrays with long repeats (alpha masks, flat index maps).
* ``raw``: the bytes as they are (when nothing helps).

The stream starts with a small header (method, dtype, shape) that the decoder checks
against the shape the caller expects before allocating anything.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .._threads import thread_map
from ..errors import BundleContentError
from . import laplace_tables as _tables
from .laplace_tables import laplace_bits

_MAGIC = b"E1"
_DTYPES = ["uint8", "uint16", "uint32", "int8", "int16", "int32", "int64", "bool"]
_RAW, _ZLIB, _LZMA, _LAPLACE_V1, _LAPLACE = range(5)
_NAMES = {
    _RAW: "raw",
    _ZLIB: "zlib",
    _LZMA: "lzma",
    _LAPLACE_V1: "laplace-v1",
    _LAPLACE: "laplace",
}
# Versions 1 and 2 (read only): constriction's quantised Laplace, a bounded symbol range.
_MAX_SPAN = 1 << 22
# Version 3: values beyond this magnitude go to the other coders.
_MAX_VALUE = 1 << 46
_GENERAL_MAX_BYTES = 1 << 18
# The most memory an lzma stream may make its decoder take (preset 6 needs about 9 MiB).
_LZMA_MEMLIMIT = 32 << 20


# Quick coding (``encode_ints(..., quick=True)``, for 24-megapixel index maps).  Arrays
# over _QUICK_MIN_BYTES are not coded by every coder: each candidate's length is estimated
# on samples (_QUICK_SAMPLES evenly spaced pieces, 1/8 of the bytes, for zlib and lzma; up
# to _QUICK_ROWS rows for the Laplace model, whose cost is a sum over rows), and one coder
# codes the array.  The candidates go from fast to slow (_QUICK_CODERS: (method, setting));
# a slower one is taken only where its estimate is below _QUICK_GAIN times that of the one
# taken so far.  On index maps zlib's level 9 takes 8x longer than level 6 for 10-30%, and
# run-length matching (Z_RLE) is 3x faster than level 6 and as short on maps of noisy
# photographs; lzma's preset 1 matches level 9 at a tenth of its time on clean ones.  zlib
# runs over chunks of _ZLIB_CHUNK bytes on parallel threads, joined into one zlib stream.
# With quick, lzma runs at preset _QUICK_LZMA on any array.
_QUICK_MIN_BYTES = 1 << 20
_QUICK_LZMA = 1
_QUICK_CODERS = (
    (_RAW, None),
    (_ZLIB, (1, zlib.Z_RLE)),
    (_ZLIB, (6, zlib.Z_DEFAULT_STRATEGY)),
    (_LZMA, _QUICK_LZMA),
    (_LAPLACE, None),
)
_QUICK_GAIN = 0.9
_QUICK_SAMPLES = 8
_QUICK_ROWS = 64
_ZLIB_CHUNK = 1 << 22
_ZLIB_WINDOW = 1 << 15


def encode_ints(
    arr: np.ndarray, methods: tuple[str, ...] | None = None, *, quick: bool = False
) -> bytes:
    """Losslessly code an integer (or boolean) array; return the smallest stream.

    Parameters
    ----------
    arr : ndarray
        Integer or boolean array of any shape.  Rows (the first axis) get their own
        entropy-model parameters.
    methods : tuple of str, optional
        Restrict the candidates (``"raw"``, ``"zlib"``, ``"lzma"``, ``"laplace"``).
    quick : bool
        Trade a few percent of length for time.  lzma runs at a fast preset (1, not 6).
        Arrays over 1 MiB are coded once, by a coder chosen from estimates on samples:
        zlib run-length or level 6 (not 9, and on parallel threads), lzma or laplace;
        a slower coder only where it saves 10%.  Several times faster on a 24-megapixel
        index map.  The stream is decoded by :func:`decode_ints` as any other.
    """
    arr = np.asarray(arr)
    if arr.dtype.name not in _DTYPES:
        raise TypeError(f"cannot entropy-code dtype {arr.dtype}")
    # The stream holds little-endian values on every machine.
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    header = _MAGIC + struct.pack("<BB", _DTYPES.index(arr.dtype.name), arr.ndim)
    header += struct.pack(f"<{arr.ndim}Q", *arr.shape)
    allowed = set(methods or _NAMES.values())
    coded = _encode_quick(arr, allowed) if quick and arr.nbytes > _QUICK_MIN_BYTES else None
    if coded is not None:
        method, body = coded
        return header[:2] + bytes([method]) + header[2:] + body
    raw = arr.tobytes()
    candidates: list[tuple[int, bytes]] = []
    if "raw" in allowed:
        candidates.append((_RAW, raw))
    # The general-purpose coders win on masks and repetitive maps; on large coefficient
    # arrays they lose to the Laplace model and only cost time, so they are skipped there.
    general = methods is not None or arr.dtype.itemsize == 1 or len(raw) <= _GENERAL_MAX_BYTES
    if "zlib" in allowed and general:
        candidates.append((_ZLIB, zlib.compress(raw, 9)))
    if "lzma" in allowed and general:
        candidates.append((_LZMA, lzma.compress(raw, preset=_QUICK_LZMA if quick else 6)))
    if "laplace" in allowed and arr.size:
        body = _laplace_encode(arr)
        if body is not None:
            candidates.append((_LAPLACE, body))
    method, body = min(candidates, key=lambda c: len(c[1]))
    return header[:2] + bytes([method]) + header[2:] + body


def _encode_quick(arr: np.ndarray, allowed: set[str]) -> tuple[int, bytes] | None:
    """Method and body of a large array, coded once by the coder the estimates pick."""
    buf = memoryview(arr).cast("B")
    options: list[tuple[float, int, Any]] = []  # (estimate, method, setting), fast first
    for method, setting in _QUICK_CODERS:
        if _NAMES[method] not in allowed:
            continue
        if method == _RAW:
            estimate: float | None = float(arr.nbytes)
        elif method == _LAPLACE:
            estimate = _laplace_estimate(_rows(arr))
        else:
            estimate = _general_estimate(buf, method, setting)
        if estimate is not None:
            options.append((estimate, method, setting))
    chosen: list[tuple[float, int, Any]] = []
    for option in options:
        if not chosen or option[0] < _QUICK_GAIN * chosen[-1][0]:
            chosen.append(option)
    # The pick is the last taken; should it fail (a Laplace span too wide), the one before.
    for _, method, setting in reversed(chosen):
        body = _general_code(buf, method, setting) if method != _LAPLACE else _laplace_encode(arr)
        if body is None:
            continue
        if "raw" in allowed and len(body) > arr.nbytes:
            return _RAW, bytes(buf)
        return method, body
    return None  # no candidate left: code as without quick


def _general_code(buf: memoryview, method: int, setting: Any) -> bytes:
    """``buf`` coded by zlib (setting: level, strategy) or lzma (setting: preset)."""
    if method == _ZLIB:
        return _zlib_chunked(buf, *setting)
    return lzma.compress(buf, preset=setting)


def _general_estimate(buf: memoryview, method: int, setting: Any) -> float:
    """The length of ``_general_code(buf, ...)``, extrapolated from evenly spaced pieces
    (1/8 of it)."""
    n = len(buf)
    size = max(n // (8 * _QUICK_SAMPLES), 1 << 16)
    if size * _QUICK_SAMPLES >= n:
        return float(len(_general_code(buf, method, setting)))
    coded = 0
    for s in np.linspace(0, n - size, _QUICK_SAMPLES).astype(np.int64):
        piece = buf[s : s + size]
        if method == _ZLIB:
            c = zlib.compressobj(setting[0], zlib.DEFLATED, 15, 8, setting[1])
            coded += len(c.compress(piece)) + len(c.flush())
        else:
            coded += len(lzma.compress(piece, preset=setting))
    return coded * n / (size * _QUICK_SAMPLES)


def _laplace_estimate(rows: np.ndarray) -> float | None:
    """The Laplace coder's length in bytes, from the model bits of sampled rows."""
    n_rows = rows.shape[0]
    if not rows.size:
        return None
    pick = np.unique(np.linspace(0, n_rows - 1, min(n_rows, _QUICK_ROWS)).astype(np.int64))
    sample = rows[pick].astype(np.int64)
    if np.abs(sample).max(initial=0) >= _MAX_VALUE:
        return None
    use_diff, loc, levels = _row_models(sample)
    symbols = sample.copy()
    symbols[use_diff, 1:] = np.diff(sample[use_diff], axis=1)
    a = np.abs(symbols[:, 1:] - loc[:, None])
    bits = float(laplace_bits(a, _tables.level_scale(levels)[:, None]).sum())
    # The side information: about 4 bytes a row, and the first values of differences.
    bits += 32.0 * len(pick) + 32.0 * int(use_diff.sum())
    return bits / 8 * n_rows / len(pick) + 8


def _zlib_chunked(buf: memoryview, level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    """One zlib stream of ``buf``, its chunks compressed on parallel threads.

    Each chunk is raw deflate primed with the 32 KiB before it (so matches reach back
    as in one stream) and ended by a sync flush (byte aligned, not final); the zlib
    header and the Adler-32 of the whole go around them (as pigz does).  The chunks
    do not depend on the number of threads, so neither does the stream.
    """
    n = len(buf)
    bounds = [(s, min(s + _ZLIB_CHUNK, n)) for s in range(0, n, _ZLIB_CHUNK)] or [(0, 0)]

    def chunk(i: int) -> bytes:
        s, e = bounds[i]
        if s:
            zdict = buf[max(0, s - _ZLIB_WINDOW) : s]
            c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy, zdict=zdict)
        else:
            c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy)
        return c.compress(buf[s:e]) + c.flush(zlib.Z_FINISH if e == n else zlib.Z_SYNC_FLUSH)

    parts = thread_map(chunk, range(len(bounds)))
    head = zlib.compressobj(level, zlib.DEFLATED, 15, 8, strategy)
    head = (head.compress(b"") + head.flush())[:2]
    return head + b"".join(parts) + zlib.adler32(buf).to_bytes(4, "big")


def coder_name(data: bytes) -> str:
    """The name of the coder that produced ``data`` (for reports and tests)."""
    return _NAMES.get(data[2], "?") if len(data) > 2 else "?"


def decode_ints(
    data: bytes,
    shape: tuple[int, ...] | None = None,
    dtype: np.dtype | str | None = None,
) -> np.ndarray:
    """Decode :func:`encode_ints` output, checking it has the expected shape and dtype.

    Raises
    ------
    BundleContentError
        If the stream is malformed, truncated, or not of the expected shape/dtype.
    """
    try:
        if len(data) < 5 or data[:2] != _MAGIC:
            raise BundleContentError("an integer payload has a bad header")
        method, code, ndim = data[2], data[3], data[4]
        if method not in _NAMES or code >= len(_DTYPES) or ndim > 8:
            raise BundleContentError("an integer payload has an unknown coder or dtype")
        end = 5 + 8 * ndim
        if len(data) < end:
            raise BundleContentError("an integer payload is truncated")
        got_shape = struct.unpack(f"<{ndim}Q", data[5:end])
        got_dtype = np.dtype(_DTYPES[code])
        if shape is not None and tuple(got_shape) != tuple(int(s) for s in shape):
            raise BundleContentError(
                f"an integer payload has shape {got_shape}, expected {tuple(shape)}"
            )
        if dtype is not None and got_dtype != np.dtype(dtype):
            raise BundleContentError(
                f"an integer payload has dtype {got_dtype}, expected {np.dtype(dtype)}"
            )
        if shape is None:
            raise BundleContentError("decode_ints needs the expected shape")
        count = int(np.prod(got_shape, dtype=np.int64))
        nbytes = count * got_dtype.itemsize
        body = bytes(data[end:])
        if method == _RAW:
            raw = body
        elif method in (_ZLIB, _LZMA):
            # An xz header declares its dictionary size, which the decoder allocates: cap
            # it (our streams need ~9 MiB), or 76 bytes could ask for 1.5 GiB.
            d = (
                zlib.decompressobj()
                if method == _ZLIB
                else lzma.LZMADecompressor(memlimit=_LZMA_MEMLIMIT)
            )
            # Bounded output: a stream cannot inflate beyond the declared shape.
            raw = d.decompress(body, nbytes + 1)
            if not d.eof:
                raise BundleContentError("an integer payload is truncated")
        elif method == _LAPLACE_V1:
            return _laplace_v1_decode(body, got_shape, got_dtype)
        else:
            return _tables_decode(body, got_shape, got_dtype)
        if len(raw) != nbytes:
            raise BundleContentError("an integer payload does not hold as many values as it says")
        little = np.frombuffer(raw, dtype=got_dtype.newbyteorder("<"))
        return little.astype(got_dtype.newbyteorder("="), copy=True).reshape(got_shape)
    except BundleContentError:
        raise
    except (zlib.error, lzma.LZMAError, struct.error, ValueError, OverflowError) as exc:
        raise BundleContentError(f"an integer payload is corrupt: {exc}") from None


@contextmanager
def stream_errors(what: str) -> Iterator[None]:
    """Raise :class:`BundleContentError` for whatever a coder raises on a bad stream.

    constriction reports corrupt input as assorted exceptions, some of them (Rust
    panics) outside ``Exception``; interrupts still pass through.
    """
    try:
        yield
    except BundleContentError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise BundleContentError(f"{what} is corrupt: {exc}") from None


def _rows(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    if arr.ndim == 1:
        return arr.reshape(1, -1)
    return arr.reshape(arr.shape[0], -1)


def _row_models(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: whether to code differences, its integer location and its level."""
    n_rows, n = rows.shape
    use_diff = np.zeros(n_rows, bool)
    loc = np.zeros(n_rows, np.int64)
    levels = np.zeros(n_rows, np.int64)
    step = max(1, n // _FIT_COLUMNS)
    # A few rows at a time: every figure is per row, and small temporaries stay in cache
    # (those of a whole 2000 x 6000 factor are 100 MB, each paid in page faults).
    chunk = max(1, _STATS_VALUES // max(n, 1))
    for r0 in range(0, n_rows, chunk):
        part = rows[r0 : r0 + chunk]
        diff = np.diff(part, axis=1)
        loc_p = np.rint(np.median(part, axis=1)).astype(np.int64)
        loc_d = np.rint(np.median(diff, axis=1)).astype(np.int64) if diff.size else loc_p
        cost_p = np.mean(np.abs(part - loc_p[:, None]), axis=1)
        cost_d = np.mean(np.abs(diff - loc_d[:, None]), axis=1) if diff.size else cost_p
        by_diff = cost_d < 0.9 * cost_p
        use_diff[r0 : r0 + chunk] = by_diff
        loc[r0 : r0 + chunk] = here = np.where(by_diff, loc_d, loc_p)
        scale = np.where(by_diff, cost_d, cost_p)
        for i in range(len(part)):
            values = diff[i, ::step] if by_diff[i] else part[i, ::step]
            levels[r0 + i] = _tables.best_level(np.abs(values - here[i]), float(scale[i]))
    return use_diff, loc, levels


# Values per chunk of rows in _row_models.
_STATS_VALUES = 1 << 18
# Values sampled per row when choosing its level.
_FIT_COLUMNS = 2048


def _laplace_encode(arr: np.ndarray) -> bytes | None:
    """The version-3 ``laplace`` body: per row an integer location and a level of
    :mod:`.laplace_tables`, the row or its differences range coded (see the spec, 5.2)."""
    import constriction

    rows = _rows(arr).astype(np.int64)
    if np.abs(rows).max(initial=0) >= _MAX_VALUE:
        return None
    use_diff, loc, levels = _row_models(rows)
    side = bytearray(struct.pack("<I", rows.shape[0]))
    enc = constriction.stream.queue.RangeEncoder()
    escapes: list[np.ndarray] = []
    for i, row in enumerate(rows):
        _put_varint(side, int(levels[i]) * 2 + int(use_diff[i]))
        _put_varint(side, _zigzag(int(loc[i])))
        if use_diff[i]:
            _put_varint(side, _zigzag(int(row[0])))
            row = np.diff(row)
        if row.size:
            _tables.encode(enc, row - loc[i], int(levels[i]), escapes)
    return bytes(side) + _tables.pack_tail(enc, escapes)


def _tables_decode(body: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    import constriction

    count = int(np.prod(shape, dtype=np.int64))
    n_rows = 1 if len(shape) < 2 else int(shape[0])
    n = count // n_rows if n_rows else 0
    (declared,) = struct.unpack("<I", body[:4])
    if declared != n_rows:
        raise BundleContentError("an entropy-coded payload has inconsistent side information")
    pos = 4
    params = []
    for _ in range(n_rows):
        head, pos = _get_varint(body, pos)
        loc, pos = _get_varint(body, pos)
        first = 0
        if head & 1:
            first, pos = _get_varint(body, pos)
        level, loc, first = head >> 1, _unzigzag(loc), _unzigzag(first)
        if level > _tables.MAX_LEVEL or abs(loc) >= _MAX_VALUE or abs(first) >= _MAX_VALUE:
            raise BundleContentError("an entropy-coded payload has out-of-range models")
        params.append((bool(head & 1), loc, first, level))
    escapes, words = _tables.unpack_tail(body, pos, 4 * _MAX_VALUE - 1, "an entropy-coded payload")
    out = np.empty((n_rows, n), np.int64)
    used = 0
    with stream_errors("an entropy-coded payload"):
        dec = constriction.stream.queue.RangeDecoder(words)
        for i, (diff, loc, first, level) in enumerate(params):
            if diff:
                out[i, 0] = first
            coded = out[i, 1:] if diff else out[i]
            if not coded.size:
                continue
            try:
                vals, used = _tables.decode(dec, coded.size, level, escapes, used)
            except IndexError:
                raise BundleContentError("an entropy-coded payload has too few escapes") from None
            vals += loc
            if diff:
                # |first| + n |d| stays far below 2**63: no wrap-around in the sum.
                if n * float(np.abs(vals).max()) >= 2.0**62:
                    raise BundleContentError("an entropy-coded payload sums out of range")
                np.cumsum(vals, out=coded)
                coded += first
            else:
                coded[...] = vals
        if not dec.maybe_exhausted() or used != len(escapes):
            raise BundleContentError("an entropy-coded payload is truncated or corrupt")
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    if info is not None and (out.min(initial=0) < info.min or out.max(initial=0) > info.max):
        raise BundleContentError("an entropy-coded payload decodes out of its dtype's range")
    return out.astype(dtype).reshape(shape)


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(u: int) -> int:
    return u >> 1 if not u & 1 else -((u + 1) >> 1)


def _put_varint(out: bytearray, u: int) -> None:
    """LEB128: seven bits a byte, lowest first, the high bit set on all but the last."""
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    u = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise BundleContentError("an entropy-coded payload is truncated or corrupt")
        byte = buf[pos]
        pos += 1
        u |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return u, pos


def _laplace_v1_decode(body: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The ``laplace`` body of versions 1 and 2: constriction's quantised Laplace with
    float16 location and scale per row (read only)."""
    import constriction

    count = int(np.prod(shape, dtype=np.int64))
    n_rows = 1 if len(shape) < 2 else int(shape[0])
    n = count // n_rows if n_rows else 0
    lo, hi, rows_declared = struct.unpack("<qqI", body[:20])
    # hi == lo makes constriction panic (a Rust assertion); the encoder keeps hi > lo.
    if rows_declared != n_rows or hi <= lo or hi - lo > _MAX_SPAN:
        raise BundleContentError("an entropy-coded payload has inconsistent side information")
    pos = 20
    flags_len = (n_rows + 7) // 8
    use_diff = np.unpackbits(np.frombuffer(body[pos : pos + flags_len], np.uint8))[:n_rows]
    pos += flags_len
    loc16 = np.frombuffer(body[pos : pos + 2 * n_rows], "<f2")
    pos += 2 * n_rows
    scale16 = np.frombuffer(body[pos : pos + 2 * n_rows], "<f2")
    pos += 2 * n_rows
    use_diff = use_diff.astype(bool)
    n_first = int(use_diff.sum())
    first_scale = np.frombuffer(body[pos : pos + 8 * n_first], "<f8")
    pos += 8 * n_first
    words = np.frombuffer(body[pos : pos + (len(body) - pos) // 4 * 4], "<u4")
    if (
        len(use_diff) != n_rows
        or len(loc16) != n_rows
        or len(scale16) != n_rows
        or len(first_scale) != n_first
        or not np.all(np.isfinite(loc16))
        or not np.all(scale16 > 0)
        or not np.all(first_scale > 0)
    ):
        raise BundleContentError("an entropy-coded payload is truncated or corrupt")
    loc = np.repeat(loc16.astype(np.float64), n)
    scale = np.repeat(scale16.astype(np.float64), n)
    first = np.flatnonzero(use_diff) * n
    loc[first] = 0.0
    scale[first] = first_scale
    model = constriction.stream.model.QuantizedLaplace(int(lo), int(hi))
    with stream_errors("an entropy-coded payload"):
        coder = constriction.stream.stack.AnsCoder(words.astype(np.uint32))
        symbols = coder.decode(model, loc, scale).astype(np.int64)
        # A complete stream is used up exactly; anything else was cut or altered.
        if not coder.is_empty():
            raise BundleContentError("an entropy-coded payload is truncated or corrupt")
    rows = symbols.reshape(n_rows, n)
    rows[use_diff] = np.cumsum(rows[use_diff], axis=1)
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    if info is not None and (rows.min(initial=0) < info.min or rows.max(initial=0) > info.max):
        raise BundleContentError("an entropy-coded payload decodes out of its dtype's range")
    return rows.astype(dtype).reshape(shape)
