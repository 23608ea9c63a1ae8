"""A decoder of `.svdz` bundles (format versions 1 to 3) written from docs/bundle-format.md.

It is deliberately independent of the ``napari_svd_compress`` package: one file, using
only the standard library (``zipfile``, ``json``, ``struct``, ``zlib``, ``lzma``), NumPy,
and ``constriction``'s entropy decoders and models (``AnsCoder`` with ``QuantizedLaplace``
for versions 1 and 2; ``RangeDecoder`` with ``Categorical`` and ``Uniform`` for version
3).  Section numbers in the comments (``§4.2``) refer to the specification.

Usage::

    python conformance/reference_decoder.py [--model FILE] BUNDLE...
    # prints shape, dtype, SHA-256 of the image (of the integer latents for learned)

Codecs: ``svd`` (whole image and ``patch``), ``pca`` (``blocks`` with the deblocking
filter, ``rows``) and ``kmeans``.  Of ``learned`` bundles it decodes the integer latents
(:func:`decode_latents`, §10.1), reading the channel order from the model file (§10.2;
the built-in model by default); their pixels, a neural network's float output, and the
baselines' native files are refused with :class:`Unsupported`.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import math
import struct
import sys
import zipfile
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np


class Refused(Exception):
    """The bundle is malformed: a conforming reader must not decode it."""


class Unsupported(Refused):
    """A valid bundle of a codec this decoder does not implement."""


# --- §1-2 container and manifest -----------------------------------------------------


def read_bundle(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the payloads of a bundle (§1, §2)."""
    if data[:4] != b"PK\x03\x04":
        raise Refused("no ZIP signature")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise Refused(f"not a ZIP archive: {exc}") from None
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise Refused("duplicate members")
    for name in names:
        ok = name and all(ch.isascii() and (ch.isalnum() or ch in "_./-") for ch in name)
        if not ok or ".." in name or name[0] in "./-":
            raise Refused(f"invalid member name {name!r}")
    if "manifest.json" not in names:
        raise Refused("no manifest.json")
    manifest = json.loads(zf.read("manifest.json").decode("utf-8"))
    if not isinstance(manifest, dict) or manifest.get("format") != "svdz":
        raise Refused("not an svdz manifest")
    if manifest.get("version") not in (1, 2, 3) or isinstance(manifest.get("version"), bool):
        raise Refused(f"unsupported version {manifest.get('version')!r}")
    payloads = {}
    for name, size in manifest["payloads"].items():
        if name not in names or name == "manifest.json":
            raise Refused(f"payload {name!r} missing")
        blob = zf.read(name)
        if len(blob) != size:
            raise Refused(f"payload {name!r} has the wrong size")
        payloads[name] = blob
    return manifest, payloads


# --- §3 integer streams --------------------------------------------------------------

_E1_DTYPES = ["<u1", "<u2", "<u4", "<i1", "<i2", "<i4", "<i8", "|b1"]


def decode_ints(data: bytes, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """An ``E1`` integer stream (§3), checked against the expected shape and dtype."""
    if data[:2] != b"E1" or len(data) < 5:
        raise Refused("bad integer stream magic")
    method, code, ndim = data[2], data[3], data[4]
    got = struct.unpack(f"<{ndim}Q", data[5 : 5 + 8 * ndim])
    if code >= len(_E1_DTYPES) or tuple(got) != tuple(shape):
        raise Refused("integer stream of unexpected shape or dtype")
    dt = np.dtype(_E1_DTYPES[code])
    if dt != np.dtype(dtype).newbyteorder("<") and dt != np.dtype(dtype):
        raise Refused("integer stream of unexpected dtype")
    body = data[5 + 8 * ndim :]
    count = math.prod(shape)
    if method == 0:
        raw = body
    elif method == 1:
        raw = zlib.decompress(body)  # RFC 1950 zlib container
    elif method == 2:
        raw = lzma.decompress(body, format=lzma.FORMAT_XZ)
    elif method == 3:
        return _laplace(body, shape).astype(dt)
    elif method == 4:
        return _laplace_tables(body, shape).astype(dt)
    else:
        raise Refused("unknown integer coder")
    if len(raw) != count * dt.itemsize:
        raise Refused("integer stream holds the wrong number of values")
    return np.frombuffer(raw, dt).reshape(shape)


def _laplace(body: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The ``laplace`` coder's body (§3.2)."""
    import constriction

    count = math.prod(shape)
    rows = 1 if len(shape) < 2 else shape[0]
    n = count // rows
    lo, hi, nrows = struct.unpack("<qqI", body[:20])
    if nrows != rows or not lo < hi or hi - lo > 1 << 22:
        raise Refused("bad laplace side information")
    pos = 20
    flags = np.unpackbits(np.frombuffer(body[pos : pos + (rows + 7) // 8], np.uint8))[:rows]
    diff = flags.astype(bool)
    pos += (rows + 7) // 8
    loc16 = np.frombuffer(body[pos : pos + 2 * rows], "<f2")
    pos += 2 * rows
    scale16 = np.frombuffer(body[pos : pos + 2 * rows], "<f2")
    pos += 2 * rows
    nd = int(diff.sum())
    first = np.frombuffer(body[pos : pos + 8 * nd], "<f8")
    pos += 8 * nd
    # Trailing bytes short of a whole word are ignored (§5.1).
    words = np.frombuffer(body[pos : pos + (len(body) - pos) // 4 * 4], "<u4").astype(np.uint32)
    if not (np.all(np.isfinite(loc16)) and np.all(scale16 > 0) and np.all(first > 0)):
        raise Refused("bad laplace model parameters")
    # Per symbol, in C order: the row's float16 location and scale widened to float64;
    # a differenced row's first symbol has location 0 and its own float64 scale.
    loc = np.repeat(loc16.astype(np.float64), n)
    scale = np.repeat(scale16.astype(np.float64), n)
    loc[np.flatnonzero(diff) * n] = 0.0
    scale[np.flatnonzero(diff) * n] = first
    model = constriction.stream.model.QuantizedLaplace(int(lo), int(hi))
    coder = constriction.stream.stack.AnsCoder(words)
    symbols = coder.decode(model, loc, scale).astype(np.int64).reshape(rows, n)
    if not coder.is_empty():
        raise Refused("laplace stream not used up")
    symbols[diff] = np.cumsum(symbols[diff], axis=1)
    return symbols.reshape(shape)


# --- §5.3 integer Laplace tables (version 3) ---------------------------------------------

RATIOS = (
    0, 0, 2, 63, 824, 6381, 32388, 117584, 327184, 737139, 1404537, 2342913, 3516696,
    4854299, 6269574, 7681169, 9024501, 10256023, 11352032, 12304715, 13117451, 13800561,
    14367980, 14834901, 15216274, 15525937, 15776196, 15977694, 16139455, 16269009,
    16372576, 16455246, 16521158, 16573661, 16615451, 16648695, 16675128, 16696138,
    16712832, 16726094, 16736628, 16744993,
)  # fmt: skip
MAX_LEVEL = 153
_TABLES: dict[int, tuple[int, Any]] = {}


def laplace_table(j: int) -> tuple[int, Any]:
    """§5.3: the radius and the ``Categorical`` model of grid index ``j``."""
    if j not in _TABLES:
        import constriction

        w = [1 << 40]
        while len(w) <= 4096 and (w[-1] * RATIOS[j]) >> 24 >= 1 << 20:
            w.append((w[-1] * RATIOS[j]) >> 24)
        esc = max(((w[-1] * RATIOS[j]) >> 24) * 64, 1)
        weights = np.array(w[:0:-1] + w + [esc], np.float64)
        model = constriction.stream.model.Categorical(weights, perfect=False)
        _TABLES[j] = (len(w) - 1, model)
    return _TABLES[j]


def decode_level(dec, count: int, level: int, escapes: list[int]) -> np.ndarray:
    """§5.3: ``count`` values at ``level``; escaped ones are popped from ``escapes``."""
    import constriction

    m = max(0, -(-(level - 33) // 3))
    radius, model = laplace_table(level - 3 * m)
    idx = np.asarray(dec.decode(model, count), np.int64)
    esc = idx == 2 * radius + 1
    values = idx - radius
    if m:
        low = np.zeros(int((~esc).sum()), np.int64)
        for shift in range(0, m, 16):
            bits = min(16, m - shift)
            if low.size:
                uniform = constriction.stream.model.Uniform(1 << bits)
                low |= np.asarray(dec.decode(uniform, low.size), np.int64) << shift
        values[~esc] = (values[~esc] << m) + low
    for i in np.flatnonzero(esc):
        if not escapes:
            raise Refused("more escapes in the stream than stored")
        values[i] = escapes.pop(0)
    return values


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """§5.2: an unsigned LEB128 number."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise Refused("truncated varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        shift, pos = shift + 7, pos + 1
        if byte < 0x80:
            return value, pos


def _signed(z: int) -> int:
    return (z >> 1) if z % 2 == 0 else -((z + 1) >> 1)


def _escapes_and_words(body: bytes, pos: int, bound: int):
    """§5.2: the escape list and a ``RangeDecoder`` over the words, which end the body."""
    import constriction

    (n_esc,) = struct.unpack("<I", body[pos : pos + 4])
    escapes = np.frombuffer(body[pos + 4 : pos + 4 + 8 * n_esc], "<i8").tolist()
    pos += 4 + 8 * n_esc
    (n_words,) = struct.unpack("<I", body[pos : pos + 4])
    pos += 4
    if len(escapes) != n_esc or len(body) - pos != 4 * n_words:
        raise Refused("escapes or words of the wrong length")
    if any(abs(e) > bound for e in escapes):
        raise Refused("escape out of range")
    words = np.frombuffer(body[pos:], "<u4").astype(np.uint32)
    return escapes, constriction.stream.queue.RangeDecoder(words)


def _laplace_tables(body: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """§5.2: the version-3 ``laplace`` body."""
    count = math.prod(shape)
    rows = 1 if len(shape) < 2 else shape[0]
    n = count // rows
    if struct.unpack("<I", body[:4])[0] != rows:
        raise Refused("bad row count")
    pos, params = 4, []
    for _ in range(rows):
        head, pos = _varint(body, pos)
        mu, pos = _varint(body, pos)
        first = 0
        if head & 1:
            first, pos = _varint(body, pos)
        params.append((head & 1, _signed(mu), _signed(first), head >> 1))
        if head >> 1 > MAX_LEVEL or abs(_signed(mu)) >= 1 << 46 or abs(_signed(first)) >= 1 << 46:
            raise Refused("row model out of range")
    escapes, dec = _escapes_and_words(body, pos, (1 << 48) - 1)
    out = np.zeros((rows, n), np.int64)
    for r, (diff, mu, first, level) in enumerate(params):
        coded = n - 1 if diff else n
        values = decode_level(dec, coded, level, escapes) + mu if coded > 0 else None
        if diff:
            out[r, 0] = first
            if coded > 0:
                if n * int(np.abs(values).max()) >= 1 << 62:
                    raise Refused("running sum out of range")
                out[r, 1:] = first + np.cumsum(values)
        elif coded > 0:
            out[r] = values
    if escapes or not dec.maybe_exhausted():
        raise Refused("laplace stream not used up exactly")
    return out.reshape(shape)


# --- §5 colour --------------------------------------------------------------------------

# §5.1: the inverse of the full-range BT.601 matrix, rounded to float32 (exact values).
YCBCR_TO_RGB = np.array(
    [
        [float.fromhex(v) for v in row]
        for row in (
            ("0x1p+0", "0x1.0243fap-31", "0x1.66e978p+0"),
            ("0x1p+0", "-0x1.606544p-2", "-0x1.6da346p-1"),
            ("0x1p+0", "0x1.c5a1cap+0", "0x1.6af7cp-30"),
        )
    ],
    np.float32,
)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """§5.1: float32 ``(Y, Cb - 0.5, Cr - 0.5)`` times the matrix, summed left to right."""
    y = ycc[..., 0]
    cb = ycc[..., 1] - np.float32(0.5)
    cr = ycc[..., 2] - np.float32(0.5)
    m = YCBCR_TO_RGB
    out = np.empty_like(ycc)
    for j in range(3):
        out[..., j] = (y * m[j, 0] + cb * m[j, 1]) + cr * m[j, 2]
    return out


# --- §6 svd -----------------------------------------------------------------------------


def svd_plane(meta: dict[str, Any], payloads: dict[str, bytes], h: int, w: int, c: int):
    if "patch" in meta:
        return pca_plane(meta, payloads, h, w, c)
    data = payloads["svd"]
    out = np.empty((h, w, c), np.float32)
    pos = 0
    for ch, entry in enumerate(meta["channels"]):
        k, step, (na, nu, nv) = entry["rank"], float(entry["step"]), entry["lengths"]
        if not 0 <= k <= min(h, w) or na != 4 * k:
            raise Refused("svd: bad channel entry")
        amp = np.frombuffer(data[pos : pos + na], "<f4")
        if not (np.all(np.isfinite(amp)) and np.all(amp > 0)) or not step > 0:
            raise Refused("svd: amplitudes and step must be positive and finite")
        qu = decode_ints(data[pos + na : pos + na + nu], (k, h), "int32")
        qv = decode_ints(data[pos + na + nu : pos + na + nu + nv], (k, w), "int32")
        pos += na + nu + nv
        g = (step * step) / amp.astype(np.float64)
        if "shift" not in entry:
            # §6.3 (version 1): x = sum_i (qu_i g_i) qv_i in float64, then float32.
            out[..., ch] = ((qu.T.astype(np.float64) * g) @ qv.astype(np.float64)).astype(
                np.float32
            )
            continue
        # §6.2 (version 2): integer weights m_i = rint(g_i 2^shift); the sum of the
        # integer products is exact (checked below 2^53), scaled by 2^-shift, then float32.
        e = entry["shift"]
        m = [int(v) for v in np.rint(np.ldexp(g, e))]
        mu = [int(v) for v in np.abs(qu.astype(np.int64)).max(axis=1, initial=0)]
        mv = [int(v) for v in np.abs(qv.astype(np.int64)).max(axis=1, initial=0)]
        if abs(e) > 1000 or sum(a * b * c for a, b, c in zip(m, mu, mv)) > 2**53:
            raise Refused("svd: the exact sum could exceed 2^53")
        s = np.zeros((h, w), np.int64)
        for i in range(k):  # integers: any order gives the same sum
            s += (m[i] * qu[i].astype(np.int64))[:, None] * qv[i].astype(np.int64)[None, :]
        out[..., ch] = np.ldexp(s.astype(np.float64), -e).astype(np.float32)
    if pos != len(data):
        raise Refused("svd: trailing bytes")
    return ycbcr_to_rgb(out) if meta["space"] == "ycbcr" else out


# --- §7 pca -----------------------------------------------------------------------------


def dct_reference(b: int, c: int) -> np.ndarray:
    """§7.2: rows are the separable orthonormal DCT-II vectors (x) the colour vectors."""
    n = np.arange(b)
    d = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * b)) * math.sqrt(2.0 / b)
    d[0] = 1.0 / math.sqrt(b)
    if c == 3:
        col = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]])
        col /= np.linalg.norm(col, axis=1, keepdims=True)
    else:
        col = np.eye(c)
    return np.kron(np.kron(d, d), col)


CURVES = np.array(
    [
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [0.4162, 0.5477, 0.6513, 0.7692, 0.9147, 1.0878, 1.2935, 1.5651],
        [0.1732, 0.3, 0.4243, 0.5916, 0.8367, 1.1832, 1.6733, 2.4495],
        [0.0721, 0.1643, 0.2763, 0.4551, 0.7653, 1.2871, 2.1645, 3.8337],
        [0.03, 0.09, 0.18, 0.35, 0.7, 1.4, 2.8, 6.0],
        [0.0125, 0.0493, 0.1173, 0.2692, 0.6403, 1.5229, 3.6218, 9.3905],
    ]
).astype(np.float16)
EDGES = ((1, 8), (1, 4), (1, 2), (1, 1), (2, 1), (4, 1))


def activity_classes(act: np.ndarray) -> np.ndarray:
    """§7.4: class 0..7 of every block from the 3x3 sums of running magnitudes."""
    a = np.pad(act, 1, mode="edge")
    rows, cols = act.shape
    s = sum(a[i : i + rows, j : j + cols] for i in range(3) for j in range(3))
    total = int(s.sum())
    if total == 0:
        return np.zeros(s.shape, np.int64)
    cls = (s > 0).astype(np.int64)
    for num, den in EDGES:
        cls += s * s.size >= -(-(total * num) // den)
    return cls


def unmed(res: np.ndarray) -> np.ndarray:
    """§7.4: invert the LOCO-I median prediction, in raster order."""
    rows, cols = res.shape
    x = np.zeros((rows, cols), np.int64)
    for r in range(rows):
        for j in range(cols):
            if r == 0 and j == 0:
                p = 0
            elif r == 0:
                p = x[0, j - 1]
            elif j == 0:
                p = x[r - 1, 0]
            else:
                a, b, c = x[r, j - 1], x[r - 1, j], x[r - 1, j - 1]
                p = min(max(a + b - c, min(a, b)), max(a, b))
            x[r, j] = p + res[r, j]
    return x


def block_coefficients(data: bytes, k: int, rows: int, cols: int) -> np.ndarray:
    """§7.4: the ``C1`` coefficient stream, ``(k, rows * cols)``."""
    import constriction

    if data[:2] != b"C1":
        raise Refused("bad coefficient stream")
    if data[2] == 0:
        return decode_ints(data[3:], (k, rows * cols), "int64")
    if data[2] == 2:
        return _coefficients_v3(data[3:], k, rows, cols)
    if data[2] != 1:
        raise Refused("unknown coefficient stream mode")
    lo, hi = struct.unpack("<qq", data[3:19])
    flags = np.frombuffer(data[19 : 19 + k], np.uint8)
    base = np.frombuffer(data[19 + k : 19 + 3 * k], "<f2")
    if (len(data) - 19 - 3 * k) % 4 or not lo < hi or hi - lo > 1 << 22:
        raise Refused("coefficient stream is malformed")
    if np.any(flags & 15 > 5) or np.any(flags >> 4 > 1) or not np.all(base > 0):
        raise Refused("coefficient stream is malformed")
    words = np.frombuffer(data[19 + 3 * k :], "<u4").astype(np.uint32)
    model = constriction.stream.model.QuantizedLaplace(int(lo), int(hi))
    coder = constriction.stream.stack.AnsCoder(words)
    act = np.zeros((rows, cols), np.int64)
    out = np.empty((k, rows, cols), np.int64)
    for i in range(k):
        mult = CURVES[flags[i] & 15].astype(np.float64)
        scale = np.maximum(float(base[i]) * mult[activity_classes(act).ravel()], 0.02)
        sym = coder.decode(model, np.zeros(rows * cols), scale).astype(np.int64)
        sym = sym.reshape(rows, cols)
        act += np.abs(sym)
        out[i] = unmed(sym) if flags[i] >> 4 else sym
    if not coder.is_empty():
        raise Refused("coefficient stream not used up")
    return out.reshape(k, rows * cols)


OFFSETS = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [-4, -3, -2, -1, 0, 0, 1, 2],
        [-8, -5, -4, -2, -1, 1, 2, 4],
        [-11, -8, -6, -3, -1, 1, 3, 6],
        [-15, -10, -7, -5, -2, 1, 4, 8],
        [-19, -13, -9, -6, -2, 2, 6, 10],
    ]
)


def _coefficients_v3(body: bytes, k: int, rows: int, cols: int) -> np.ndarray:
    """§8.3 mode 2: levels per activity class, values by §5.3."""
    head = np.frombuffer(body[: 3 * k], np.uint8).reshape(k, 3)
    if len(head) != k:
        raise Refused("coefficient stream is malformed")
    flags = head[:, 0]
    base = head[:, 1].astype(np.int64) + 256 * head[:, 2].astype(np.int64)
    if np.any(flags & 15 > 5) or np.any(flags >> 4 > 1) or np.any(base > MAX_LEVEL):
        raise Refused("coefficient stream is malformed")
    escapes, dec = _escapes_and_words(body, 3 * k, (1 << 31) - 1)
    act = np.zeros((rows, cols), np.int64)
    out = np.empty((k, rows, cols), np.int64)
    for i in range(k):
        cls = activity_classes(act).ravel()
        sym = np.zeros(rows * cols, np.int64)
        levels = np.clip(base[i] + OFFSETS[flags[i] & 15], 0, MAX_LEVEL)
        for c in range(8):
            where = np.flatnonzero(cls == c)
            if where.size:
                sym[where] = decode_level(dec, where.size, int(levels[c]), escapes)
        if np.abs(sym).max() > (1 << 31) - 1:
            raise Refused("coefficient out of range")
        sym = sym.reshape(rows, cols)
        act += np.abs(sym)
        out[i] = unmed(sym) if flags[i] >> 4 else sym
    if escapes or not dec.maybe_exhausted():
        raise Refused("coefficient stream not used up exactly")
    return out.reshape(k, rows * cols)


def _patches(x: np.ndarray, b: int) -> np.ndarray:
    """Whole ``b x b`` blocks of ``x`` in raster order, each flattened as (y, x, channel)."""
    nr, nc, c = x.shape[0] // b, x.shape[1] // b, x.shape[2]
    return x.reshape(nr, b, nc, b, c).transpose(0, 2, 1, 3, 4).reshape(nr * nc, b * b * c)


def _unpatch(p: np.ndarray, nr: int, nc: int, b: int, c: int) -> np.ndarray:
    return p.reshape(nr, nc, b, b, c).transpose(0, 2, 1, 3, 4).reshape(nr * b, nc * b, c)


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    period = max(2 * (n - 1), 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def pca_plane(meta: dict[str, Any], payloads: dict[str, bytes], h: int, w: int, c: int):
    if meta["mode"] == "rows":
        out = pca_rows(meta, payloads, h, w, c)
    else:
        out = pca_blocks(meta, payloads, h, w, c)
    return ycbcr_to_rgb(out) if meta["space"] == "ycbcr" else out


def pca_rows(meta: dict[str, Any], payloads: dict[str, bytes], h: int, w: int, c: int):
    """§8.4 (and §8.7 for channels with a ``shift``)."""
    qmean = decode_ints(payloads["mean"], (c, w), "int32")
    mean = qmean / 4096.0
    out = np.empty((h, w, c), np.float32)
    for ch, entry in enumerate(meta["channels"]):
        k = entry["components"]
        gains = np.asarray(entry["gains"], np.float64)
        basis = decode_ints(payloads[f"basis{ch}"], (k, w), "int32")
        coef = decode_ints(payloads[f"coef{ch}"], (k, h), "int32")
        if "shift" in entry:
            e = entry["shift"]
            if not (isinstance(e, int) and 12 <= e <= 200):
                raise Refused("pca: bad shift")
            u = np.rint(
                np.ldexp(basis.astype(np.float64) * (float(meta["step"]) / gains)[:, None], e)
            )
            if not np.all(np.abs(u) <= 2.0**53):
                raise Refused("pca: basis too large")
            bound = sum(_imax(coef[i]) * _imax(u[i]) for i in range(k))
            if bound + (_imax(qmean[ch]) << (e - 12)) > 2**53:
                raise Refused("pca: the exact sum could exceed 2^53")
            s = coef.T.astype(np.float64) @ u + np.ldexp(qmean[ch].astype(np.float64), e - 12)
            out[..., ch] = np.ldexp(s, -e).astype(np.float32)
            continue
        vec = (basis / gains[:, None]).astype(np.float32)
        x = (coef.T.astype(np.float32) * np.float32(meta["step"])) @ vec
        out[..., ch] = x + mean[ch]  # float32 + float64 in float64, then float32
    return out


def pca_blocks(meta: dict[str, Any], payloads: dict[str, bytes], h: int, w: int, c: int):
    """§7.2-7.5."""
    b, k, step = meta["block"], meta["components"], float(meta["step"])
    d = b * b * c
    gains = np.asarray(meta["gains"], np.float64)
    hp, wp = -(-h // b) * b, -(-w // b) * b
    nr, nc = hp // b, wp // b
    mean = decode_ints(payloads["mean"], (d,), "int32") / 4096.0
    if meta["basis"] == "dct":
        basis = decode_ints(payloads["basis"], (k, d + 1), "int32")
    else:
        basis = decode_ints(payloads["basis"], (d + 1, k), "int32").T
    wq, qbasis = basis[:, 0], basis[:, 1:]
    coef = block_coefficients(payloads["coef"], k, nr, nc)
    if "shift" in meta:
        offsets, threshold = meta.get("deblock", [0, 0.0])
        qmean = decode_ints(payloads["mean"], (d,), "int32").astype(np.int64)
        out = pca_blocks_exact(meta, qbasis, wq, gains, qmean, coef, b, c, nr, nc)
        if offsets and k:
            out = deblock_exact(out, offsets, threshold)
        return out[:h, :w]
    steps = (step * wq / 64).astype(np.float32)
    vec = ((qbasis / gains[:, None]) @ dct_reference(b, c)).astype(np.float32)
    mean32 = mean.astype(np.float32)
    p = (coef.T.astype(np.float32) * steps) @ vec
    out = _unpatch(p + mean32, nr, nc, b, c)
    offsets, threshold = meta.get("deblock", [0, 0.0])
    if offsets and k:
        out = deblock(out, vec, steps, mean32, b, offsets, threshold)
    return out[:h, :w]


def deblock(out, vec, steps, mean32, b: int, offsets: int, threshold: float) -> np.ndarray:
    """§7.5: average ``out`` with its re-projections at shifted block grids."""
    hp, wp, c = out.shape
    nr, nc = hp // b, wp // b
    g = max(1, min(math.isqrt(offsets), b))
    shifts = [(i * b // g, j * b // g) for i in range(g) for j in range(g)][1:]
    proj = np.linalg.pinv(vec.astype(np.float64)).astype(np.float32)
    inv_steps = (1.0 / steps).astype(np.float32)
    rows = _reflect(np.arange(-b, hp + b), hp)
    cols = _reflect(np.arange(-b, wp + b), wp)
    slab = out[rows][:, cols]
    acc = out.copy()
    for dy, dx in shifts:
        z = slab[dy : dy + hp + b, dx : dx + wp + b]
        co = ((_patches(z, b) - mean32) @ proj) * inv_steps
        co[np.abs(co) < threshold] = 0.0
        rec = _unpatch((co * steps) @ vec + mean32, nr + 1, nc + 1, b, c)
        acc += rec[b - dy : b - dy + hp, b - dx : b - dx + wp]
    return acc * np.float32(1.0 / (len(shifts) + 1))


# --- §8.5-8.7 version 3: exact integer arithmetic ----------------------------------------

LIMIT = 2**53


def _imax(a: np.ndarray) -> int:
    """The largest magnitude of an integer-valued array, as a Python int."""
    return int(np.abs(a).max()) if a.size else 0


def dct_table(b: int, c: int) -> np.ndarray:
    """§8.5: ``rint(2^26 R)`` (no entry is near a rounding boundary)."""
    return np.rint(dct_reference(b, c) * 2.0**26)


def gauss_jordan(h: np.ndarray, a: np.ndarray) -> np.ndarray:
    """§8.5: ``H^-1 A``, column by column, elementwise float64 operations only."""
    k = h.shape[0]
    m = np.concatenate([h, a], axis=1)
    diag = np.diag(h).copy()
    for j in range(k):
        pivot = m[j, j]
        if not pivot > diag[j] * 2.0**-40:
            m[j, :] = 0.0  # columns < j of row j are already 0
            continue
        row = m[j] / pivot
        for i in range(k):
            if i != j:
                m[i] = m[i] - m[i, j] * row
        m[j] = row
    return m[:, k:]


class ExactPlane:
    """What §8.5 computes once per plane, kept for the filter (§8.6)."""


_EXACT = ExactPlane()


def pca_blocks_exact(meta, qbasis, wq, gains, qmean, coef, b, c, nr, nc) -> np.ndarray:
    """§8.5: the padded plane from integer sums."""
    if not (isinstance(meta["shift"], list) and len(meta["shift"]) == 2):
        raise Refused("pca: bad shift")
    e, g = meta["shift"]
    if not (isinstance(e, int) and isinstance(g, int) and 12 <= e <= 200 and -200 <= g <= 200):
        raise Refused("pca: bad shift")
    q = qbasis.astype(np.int64)
    k = q.shape[0]
    l1 = [int(v) for v in np.abs(q).sum(axis=1)]
    if k and (max(l1) > 2**27 or max(l1) * _imax(q) > LIMIT):
        raise Refused("pca: basis coordinates too large")
    qf = q.astype(np.float64)
    a = qf @ dct_table(b, c)  # integers below 2^53: exact
    x = gauss_jordan(qf @ qf.T, a)
    s = float(meta["step"]) * wq.astype(np.float64) / 64.0
    u = np.rint(np.ldexp(a * (s / gains)[:, None], e - 26))
    pt = np.rint(np.ldexp(x * (gains / s)[:, None], g - 26)).T
    if not (np.all(np.abs(u) <= LIMIT) and np.all(np.abs(pt) <= LIMIT)):
        raise Refused("pca: basis too large")
    bound = sum(_imax(coef[i]) * _imax(u[i]) for i in range(k))
    if bound + (_imax(qmean) << (e - 12)) > LIMIT:
        raise Refused("pca: the exact sum could exceed 2^53")
    total = coef.T.astype(np.float64) @ u + np.ldexp(qmean.astype(np.float64), e - 12)
    x32 = np.ldexp(total, -e).astype(np.float32)
    _EXACT.__dict__.update(u=u, pt=pt, qmean=qmean, e=e, g=g, b=b, c=c)
    return _unpatch(x32, nr, nc, b, c)


def deblock_exact(out: np.ndarray, offsets: int, threshold: float) -> np.ndarray:
    """§8.6: the filter on fixed-point integers, summed exactly, scaled once."""
    u, pt, qmean, e, g, b = (_EXACT.__dict__[n] for n in ("u", "pt", "qmean", "e", "g", "b"))
    hp, wp, c = out.shape
    nr, nc = hp // b, wp // b
    gg = max(1, min(math.isqrt(offsets), b))
    shifts = [(i * b // gg, j * b // gg) for i in range(gg) for j in range(gg)][1:]
    big_e = e + 8
    # The bounds (Python integers).
    pmax = 2**20 + _imax(qmean) * 2**8
    if pt.size and _imax(pt) > LIMIT // pmax:
        raise Refused("pca: projection too large")
    l1 = [sum(int(v) for v in np.abs(pt[:, i])) for i in range(pt.shape[1])]
    if any(pmax * v > LIMIT for v in l1):
        raise Refused("pca: projection too large")
    cmax = [math.ceil(pmax * v / Fraction(2) ** (12 + g)) for v in l1]
    rec = sum(cm * _imax(u[i]) for i, cm in enumerate(cmax))
    if 2**big_e + len(shifts) * (rec + _imax(qmean) * 2 ** (big_e - 12)) > LIMIT:
        raise Refused("pca: the filter's sum could exceed 2^53")
    z = np.rint(np.clip(out, 0, 1).astype(np.float64) * 2.0**20)
    mfix = qmean.astype(np.float64) * 2.0**8
    mrec = np.ldexp(qmean.astype(np.float64), big_e - 12)
    rows = _reflect(np.arange(-b, hp + b), hp)
    cols = _reflect(np.arange(-b, wp + b), wp)
    ext = z[rows][:, cols]
    acc = z * 2.0 ** (big_e - 20)
    for dy, dx in shifts:
        blocks = _patches(ext[dy : dy + hp + b, dx : dx + wp + b], b) - mfix
        co = blocks @ pt  # exact integers
        keep = np.abs(co) >= threshold * 2.0 ** (20 + g)
        co = np.where(keep, np.rint(co * 2.0 ** (8 - 20 - g)), 0.0)
        rec = _unpatch(co @ u + mrec, nr + 1, nc + 1, b, c)
        acc += rec[b - dy : b - dy + hp, b - dx : b - dx + wp]
    return (np.ldexp(acc, -big_e) / (len(shifts) + 1)).astype(np.float32)


# --- §8 kmeans --------------------------------------------------------------------------


def kmeans_plane(meta: dict[str, Any], payloads: dict[str, bytes], h: int, w: int, c: int):
    k = meta["colors"]
    if not 1 <= k <= 256:
        raise Refused("kmeans: bad palette size")
    palette = decode_ints(payloads["palette"], (k, c), "uint16")
    index = decode_ints(payloads["index"], (h, w), "uint8")
    if int(index.max()) >= k:
        raise Refused("kmeans: index beyond the palette")
    return (palette.astype(np.float32) / np.float32(65535))[index]


# --- §10 learned: the integer latents ----------------------------------------------------

#: The built-in model (§10.2), found by path: this decoder imports nothing of the library.
BUILTIN_MODEL = (
    Path(__file__).resolve().parents[1]
    / "src/napari_svd_compress/codecs/learned/weights/builtin.svdm"
)
MODEL_MEMBERS = (
    "analysis.onnx",
    "synthesis.onnx",
    "gain.npy",
    "inv_gain.npy",
    "pmf.npy",
    "lo.npy",
    "size.npy",
)

_MODELS: dict[str, dict[str, Any]] = {}


def read_model(path: str | Path) -> dict[str, Any]:
    """A ``.svdm`` model file's identity and entropy tables (§10.2), digest checked."""
    key = str(Path(path).resolve())
    if key in _MODELS:
        return _MODELS[key]
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json").decode("utf-8"))
        members = {n: zf.read(n) for n in MODEL_MEMBERS}
    if manifest.get("format") != "napari-svd-compress/learned-model":
        raise Refused(f"{path}: not a learned-codec model")
    if manifest.get("format_version") != 1 or manifest.get("stride") != 16:
        raise Unsupported(f"{path}: model format version or stride not supported")
    h = hashlib.sha256()
    for name in sorted(members):
        data = members[name]
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    if h.hexdigest() != manifest["sha256"]:
        raise Refused(f"{path}: the members do not match the model's sha256")
    arrays = {
        k: np.load(io.BytesIO(members[f"{k}.npy"]), allow_pickle=False)
        for k in ("pmf", "lo", "size")
    }
    if any(a.dtype != np.int32 for a in arrays.values()):
        raise Refused(f"{path}: entropy tables must be int32")
    model = {k: manifest[k] for k in ("name", "version", "sha256", "levels")}
    model.update(arrays)
    _MODELS[key] = model
    return model


def channel_order(model: dict[str, Any], level: int) -> list[int]:
    """§10.2: channels by decreasing mean magnitude under the level's tables (exact
    rationals), ties by index."""
    pmf, lo, size = model["pmf"][level - 1], model["lo"][level - 1], model["size"][level - 1]
    keys = []
    for c in range(len(size)):
        n, first = int(size[c]), int(lo[c])
        freq = [int(f) for f in pmf[c, :n]]
        total = sum(f * abs(first + k) for k, f in enumerate(freq))
        keys.append((-Fraction(total, max(sum(freq), 1)), c))
    return [c for _, c in sorted(keys)]


def learned_latents(
    meta: dict[str, Any], payloads: dict[str, bytes], h: int, w: int, models: list[Any]
) -> np.ndarray:
    """§10.1: the integer latents ``(M, ceil(h/16), ceil(w/16))`` of a learned plane."""
    import constriction

    if meta.get("codec_version") != 2:
        raise Unsupported(f"learned codec_version {meta.get('codec_version')!r}")
    ident = meta["model"]
    found = [read_model(p) for p in models]
    model = next(
        (m for m in found if all(m[k] == ident[k] for k in ("name", "version", "sha256"))),
        None,
    )
    if model is None:
        raise Unsupported(f"learned: model {ident['name']!r} ({ident['sha256'][:12]}) absent")
    level, (m, lh, lw) = meta["quality"], meta["latent_shape"]
    if level not in model["levels"] or m != model["pmf"].shape[1] or meta["stride"] != 16:
        raise Refused("learned: quality, channels or stride do not match the model")
    if (lh, lw) != (-(-h // 16), -(-w // 16)):
        raise Refused("learned: latent shape does not match the plane")
    bits, esc = payloads["latents"], payloads.get("escapes", b"")
    if len(bits) % 4 or len(bits) > m * lh * lw * 8 + 64 or zlib.crc32(bits) != meta["crc32"]:
        raise Refused("learned: latent stream of a bad size or CRC-32")
    if len(esc) % 4 or len(esc) // 4 != meta["escapes"] or len(esc) // 4 > m * lh * lw:
        raise Refused("learned: escape payload does not match the metadata")
    side = decode_ints(payloads["models"], (3, m), "int32").astype(np.int64)
    curves, bases, medians = side
    if np.any((curves < 0) | (curves > 5)) or np.any((bases < 0) | (bases >= len(RATIOS))):
        raise Refused("learned: curve or base out of range")
    escapes = np.frombuffer(esc, "<i4").astype(np.int64)
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(bits, "<u4").astype(np.uint32))
    out = np.empty((m, lh, lw), np.int64)
    act = np.zeros((lh, lw), np.int64)
    used = 0
    try:
        for c in channel_order(model, level):
            cls = activity_classes(act)
            v = np.empty((lh, lw), np.int64)
            # Class by class, each class's latents in raster order.
            for k in range(8):
                where = cls == k
                count = int(where.sum())
                if not count:
                    continue
                j = min(max(int(bases[c]) + OFFSETS[curves[c]][k], 0), len(RATIOS) - 1)
                radius, table = laplace_table(j)
                idx = np.asarray(decoder.decode(table, count), np.int64)
                vals = idx - radius
                hit = np.flatnonzero(idx == 2 * radius + 1)
                if used + len(hit) > len(escapes):
                    raise Refused("learned: more escapes than stored")
                vals[hit] = escapes[used : used + len(hit)]
                used += len(hit)
                v[where] = vals
            out[c] = v + medians[c]
            act += np.abs(v)
    except Refused:
        raise
    except BaseException as exc:  # constriction reports bad streams as Rust panics too
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise Refused(f"learned: latent stream is corrupt ({exc})") from None
    if not decoder.maybe_exhausted() or used != len(escapes):
        raise Refused("learned: latent stream or escapes not used up exactly")
    if np.abs(out).max(initial=0) > 2**31 - 1:
        raise Refused("learned: latents beyond int32")
    return out.astype(np.int32)


def decode_latents(data: bytes, models: list[Any] | None = None) -> np.ndarray:
    """The integer latents of a learned bundle: int32 ``(*stack axes, M, h, w)``.

    ``models``: model files that may hold the bundle's model (the built-in one when
    omitted); a bundle's model is the one whose name, version and sha256 it names.
    """
    manifest, payloads = read_bundle(data)
    if manifest["codec"] != "learned":
        raise Unsupported("not a learned bundle")
    shape, rgb = tuple(manifest["shape"]), manifest["rgb"]
    stack = shape[:-3] if rgb else shape[:-2]
    h, w = (shape[-3], shape[-2]) if rgb else (shape[-2], shape[-1])
    n = math.prod(stack)
    if len(manifest["planes"]) != n:
        raise Refused("wrong number of plane entries")
    planes = []
    for i in range(n):
        prefix = f"p{i}/" if n > 1 else ""
        mine = {k[len(prefix) :]: v for k, v in payloads.items() if k.startswith(prefix)}
        meta = manifest["planes"][i]
        planes.append(learned_latents(meta, mine, h, w, models or [BUILTIN_MODEL]))
    return np.stack(planes).reshape(*stack, *planes[0].shape)


# --- §4 the image -----------------------------------------------------------------------

PLANE_DECODERS = {"svd": svd_plane, "pca": pca_plane, "kmeans": kmeans_plane}


def from_unit(unit: np.ndarray, dtype: np.dtype, lo: float, hi: float) -> np.ndarray:
    """§4.3: clip to [0, 1] and map back with ``value_range``."""
    x = np.clip(unit, np.float32(0), np.float32(1))
    if dtype.kind == "f":
        y = x.astype(np.float64) * (hi - lo) + lo
        return np.clip(y, lo, hi).astype(dtype)
    y = x * np.float32(hi - lo)
    if lo != 0.0:
        y = y + np.float32(lo)
    return np.clip(np.rint(y), lo, hi).astype(dtype)


def decode(data: bytes) -> np.ndarray:
    """Decode a bundle to the array it records."""
    manifest, payloads = read_bundle(data)
    codec = manifest["codec"]
    if codec == "learned":
        raise Unsupported("learned pixels are a neural network's output: see decode_latents")
    if codec not in PLANE_DECODERS:
        raise Unsupported(f"codec {codec!r}")
    shape, dtype = tuple(manifest["shape"]), np.dtype(manifest["dtype"])
    rgb, alpha = manifest["rgb"], manifest["alpha"]
    lo, hi = (float(v) for v in manifest["value_range"])
    stack = shape[:-3] if rgb else shape[:-2]
    h, w = (shape[-3], shape[-2]) if rgb else (shape[-2], shape[-1])
    c = 3 if rgb else 1
    n = math.prod(stack)
    if len(manifest["planes"]) != n:
        raise Refused("wrong number of plane entries")
    out = np.empty((n, *shape[len(stack) :]), dtype)
    for i in range(n):
        prefix = f"p{i}/" if n > 1 else ""
        mine = {k[len(prefix) :]: v for k, v in payloads.items() if k.startswith(prefix)}
        unit = PLANE_DECODERS[codec](manifest["planes"][i], mine, h, w, c)
        plane = from_unit(unit, dtype, lo, hi)
        if alpha:
            # Float alpha: the integers of its IEEE-754 bits (spec 4.4).
            bits = {"float32": "int32", "float64": "int64"}.get(dtype.name)
            a = decode_ints(mine["alpha"], (h, w), bits or dtype.name)
            a = a.view(dtype) if bits else a
            plane = np.concatenate([plane, a[..., None]], axis=-1)
        out[i] = plane if rgb else plane[..., 0]
    return out.reshape(shape)


def main(argv: list[str]) -> int:
    models = [BUILTIN_MODEL]
    while argv[:1] == ["--model"]:
        models.append(Path(argv[1]))
        argv = argv[2:]
    status = 0
    for path in argv:
        with open(path, "rb") as fh:
            data = fh.read()
        what = ""
        try:
            if read_bundle(data)[0]["codec"] == "learned":
                a, what = decode_latents(data, models), "latents "
            else:
                a = np.ascontiguousarray(decode(data))
        except Refused as exc:
            print(f"{path}: refused ({type(exc).__name__}: {exc})")
            status = 1
            continue
        digest = hashlib.sha256(a.tobytes()).hexdigest()
        print(f"{path}: {what}{list(a.shape)} {a.dtype.name} {digest}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
