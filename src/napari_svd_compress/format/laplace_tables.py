"""Discrete Laplace tables built in integer arithmetic, and the symbols coded with them.

Every entropy model of the format (version 3 streams, and the learned codec's latents
in every version) is one of a fixed grid of tables: grid index ``j`` is a discrete
Laplace of scale ``0.04 * 2**(j/3)``, whose integer weights are made from the written
out ratio ``_RATIOS[j]`` by integer multiplications and shifts (:func:`weights`), so no
platform's ``exp`` or floating-point quantisation decides a symbol's probability.  The
weights go to constriction's ``Categorical`` (``perfect=False``) as exactly
representable numbers, as docs/bundle-format.md (section 5.2) specifies.

Wider distributions than the grid's top use a *level* ``J`` beyond it: the value's
high part ``v >> m`` is coded with table ``J - 3m`` (a factor ``2**m`` narrower) and its
``m`` low bits uniformly (:func:`split`), which costs next to nothing once the table's
scale is above a few units.  Values outside a table's radius are coded as its escape
symbol and stored verbatim beside the stream.
"""

from __future__ import annotations

import functools
import math
import struct
import threading

import numpy as np

from ..errors import BundleContentError

# round(exp(-1 / (0.04 * 2**(j/3))) * 2**24): the ratio of successive weights of the
# discrete Laplace of grid index j (written out: no platform's exp is involved).
_RATIOS = (
    0, 0, 2, 63, 824, 6381, 32388, 117584, 327184, 737139, 1404537, 2342913, 3516696,
    4854299, 6269574, 7681169, 9024501, 10256023, 11352032, 12304715, 13117451, 13800561,
    14367980, 14834901, 15216274, 15525937, 15776196, 15977694, 16139455, 16269009,
    16372576, 16455246, 16521158, 16573661, 16615451, 16648695, 16675128, 16696138,
    16712832, 16726094, 16736628, 16744993,
)  # fmt: skip
GRID = len(_RATIOS)
ONE = 1 << 40  # weight of the value 0 in every table
_TAIL = ONE >> 20  # a table covers the values whose weight is above this
MAX_RADIUS = 4096
# Levels above TOP code a high part with table TOP - 2 .. TOP and uniform low bits.
TOP = 33
# Low bits go through uniform models of at most this many bits each.
_LOW_CHUNK = 16
# The widest level: 40 low bits (values are kept below 2**47 in magnitude).
MAX_LEVEL = TOP + 3 * 40

_lock = threading.Lock()
_tables: dict[int, tuple[int, object]] = {}
_uniform: dict[int, object] = {}


@functools.cache
def weights(j: int) -> tuple[int, np.ndarray]:
    """Radius ``R`` and integer weights (as float64) of ``-R..R`` then the escape, for
    grid index ``j``: ``w[0] = 2**40``, ``w[i+1] = (w[i] * ratio) >> 24`` while it stays
    at or above ``2**20`` (at most 4096 steps); the escape weighs
    ``max(((w[R] * ratio) >> 24) * 64, 1)``."""
    r = _RATIOS[j]
    w = [ONE]
    while len(w) <= MAX_RADIUS:
        nxt = (w[-1] * r) >> 24
        if nxt < _TAIL:
            break
        w.append(nxt)
    radius = len(w) - 1
    side = np.array(w[1:], dtype=np.float64)
    esc = max(float(((w[-1] * r) >> 24) * 64), 1.0)
    return radius, np.concatenate([side[::-1], [float(ONE)], side, [esc]])


def table(j: int) -> tuple[int, object]:
    """(radius, constriction ``Categorical``) of grid index ``j`` (cached)."""
    with _lock:
        t = _tables.get(j)
        if t is None:
            import constriction

            radius, w = weights(j)
            # Every symbol keeps a nonzero probability (perfect=False is "leaky").
            t = (radius, constriction.stream.model.Categorical(w, perfect=False))
            _tables[j] = t
        return t


def _uniform_model(bits: int):
    with _lock:
        u = _uniform.get(bits)
        if u is None:
            import constriction

            u = _uniform[bits] = constriction.stream.model.Uniform(1 << bits)
        return u


def split(level: int) -> tuple[int, int]:
    """Grid index ``j`` and low bits ``m`` of a level (``level - 3m == j <= TOP``)."""
    m = max(0, -(-(level - TOP) // 3))
    return level - 3 * m, m


def level_of(scale: float) -> int:
    """The level whose scale, ``0.04 * 2**(level/3)``, is nearest ``scale`` (in log)."""
    if not scale > 0.04:
        return 0
    return int(min(MAX_LEVEL, max(0, round(3.0 * math.log2(scale / 0.04)))))


def level_scale(level: np.ndarray | int) -> np.ndarray:
    """The scale of a level (for the encoder's estimates)."""
    return 0.04 * np.exp2(np.asarray(level, np.float64) / 3.0)


def _low_chunks(m: int) -> list[tuple[int, int]]:
    """(shift, bits) of the uniform pieces of ``m`` low bits, lowest first."""
    return [(s, min(_LOW_CHUNK, m - s)) for s in range(0, m, _LOW_CHUNK)]


def encode(enc, values: np.ndarray, level: int, escapes: list[np.ndarray]) -> None:
    """Code int64 ``values`` at ``level`` with range encoder ``enc``: the high parts, then
    each piece of the low bits; values beyond the radius are appended to ``escapes``."""
    j, m = split(level)
    radius, model = table(j)
    high = values >> m if m else values
    esc = np.abs(high) > radius
    if esc.any():
        escapes.append(values[esc])
    idx = np.where(esc, 2 * radius + 1, high + radius)
    enc.encode(idx.astype(np.int32), model)
    if m:
        keep = ~esc
        low = values[keep] - (high[keep] << m)
        for shift, bits in _low_chunks(m):
            piece = (low >> shift) & ((1 << bits) - 1)
            if piece.size:
                enc.encode(piece.astype(np.int32), _uniform_model(bits))


def decode(dec, count: int, level: int, escapes: np.ndarray, used: int) -> tuple[np.ndarray, int]:
    """Decode ``count`` values coded by :func:`encode` at ``level``; ``escapes`` holds the
    verbatim values, of which ``used`` are taken.  Returns the values and the new
    ``used``.  Raises ``IndexError`` when the escapes run out (the caller's error)."""
    j, m = split(level)
    radius, model = table(j)
    idx = np.asarray(dec.decode(model, count), dtype=np.int64)
    esc = idx == 2 * radius + 1
    n_esc = int(esc.sum())
    if used + n_esc > len(escapes):
        raise IndexError("more escapes than stored")
    values = idx - radius
    if m:
        keep = ~esc
        n = int(keep.sum())
        low = np.zeros(n, np.int64)
        for shift, bits in _low_chunks(m):
            if n:
                piece = np.asarray(dec.decode(_uniform_model(bits), n), dtype=np.int64)
                low |= piece << shift
        values[keep] = (values[keep] << m) + low
    if n_esc:
        values[esc] = escapes[used : used + n_esc]
    return values, used + n_esc


def pack_tail(enc, escapes: list[np.ndarray]) -> bytes:
    """The end of a version-3 stream: the escaped values (uint32 LE count, int64 LE
    values), then the range coder's words (uint32 LE count, uint32 LE words)."""
    esc = np.concatenate(escapes) if escapes else np.zeros(0, np.int64)
    words = enc.get_compressed().astype("<u4")
    return (
        struct.pack("<I", len(esc))
        + esc.astype("<i8").tobytes()
        + struct.pack("<I", len(words))
        + words.tobytes()
    )


def unpack_tail(data: bytes, pos: int, bound: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The escapes (int64) and words (uint32) of :func:`pack_tail` output at ``pos``,
    which must end ``data``; escapes beyond ``bound`` in magnitude are refused."""
    (n_esc,) = struct.unpack("<I", data[pos : pos + 4])
    escapes = np.frombuffer(data[pos + 4 : pos + 4 + 8 * n_esc], "<i8").astype(np.int64)
    pos += 4 + 8 * n_esc
    (n_words,) = struct.unpack("<I", data[pos : pos + 4])
    pos += 4
    if len(escapes) != n_esc or len(data) - pos != 4 * n_words:
        raise BundleContentError(f"{what} is truncated or corrupt")
    if np.abs(escapes).max(initial=0) > bound:
        raise BundleContentError(f"{what} has out-of-range escapes")
    return escapes, np.frombuffer(data[pos:], "<u4").astype(np.uint32)


@functools.cache
def _costs(j: int) -> np.ndarray:
    """Bits of magnitudes ``0..R`` under table ``j``, then of an escape (+ 64 bits)."""
    radius, w = weights(j)
    p = w / w.sum()
    return np.concatenate([-np.log2(p[radius : 2 * radius + 1]), [64.0 - np.log2(p[-1])]])


def value_bits(magnitude: np.ndarray, level: int) -> np.ndarray:
    """Bits of each integer magnitude at ``level`` under its table (an estimate)."""
    j, m = split(level)
    high = magnitude >> m if m else magnitude
    # The last cost is the escape's: larger magnitudes clip to it.
    bits = _costs(j).take(high, mode="clip")
    return bits + m if m else bits


def level_bits(magnitude: np.ndarray, level: int) -> float:
    """Bits of integer magnitudes at ``level`` under its table (the encoder's estimate)."""
    return float(value_bits(magnitude, level).sum())


def best_level(magnitude: np.ndarray, scale: float, spread: int = 6) -> int:
    """The level with the fewest bits for integer ``magnitude``, searched around the one
    nearest ``scale``; the tables' shape differs from a quantised continuous Laplace at
    small scales, so their own costs decide."""
    guess = level_of(scale)
    levels = range(max(0, guess - spread), min(MAX_LEVEL, guess + spread) + 1)
    return min(levels, key=lambda lv: level_bits(magnitude, lv))


def laplace_bits(magnitude: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Bits of each value at distance ``magnitude`` from the centre of a quantised Laplace
    of ``scale``: ``P(x) = F(x + 1/2) - F(x - 1/2)`` (an encoder's estimate)."""
    a, s = magnitude, scale
    p = np.where(a < 0.5, -np.expm1(-0.5 / s), 0.5 * np.exp(-(a - 0.5) / s) * -np.expm1(-1.0 / s))
    return -np.log2(np.maximum(p, 1e-300))
