"""Context-adaptive entropy coding of the learned codec's integer latents.

A factorized prior gives every latent of a channel the same distribution, wherever it
is; but latents are large where the picture is busy and near zero where it is flat, in
all channels at once.  This coder exploits that, without a hyperprior network:

* Channels are coded one after the other, in the model's order of decreasing mean
  magnitude at the level (:func:`channel_order`, from the integer tables).
* Every latent gets an *activity class* (``_block_context._classes``): the sum of the
  magnitudes of the channels already coded, over its 3 x 3 neighbourhood, relative to
  the image's mean (8 classes).
* The latent is coded with a discrete Laplace table from a fixed grid of scales
  (``0.04 * 2**(j/3)``), at index ``base + offset[curve][class]``; ``base`` and
  ``curve`` are chosen per channel by the encoder (fewest bits) and sent, with the
  channel's median (some channels sit on an offset; the tables are centred on it).
  Values outside a table's range are escaped and stored verbatim as int32.

Everything the decoder computes to pick a table is integer arithmetic, and the tables
are built from integer fixed-point powers (``_table``), so a bitstream decodes to the
same integers on every machine, like the factorized tables it replaces.
"""

from __future__ import annotations

import functools
import threading
from fractions import Fraction

import numpy as np

from ...errors import BundleContentError
from ...format.block_context import _classes
from ...format.entropy import decode_ints, encode_ints, stream_errors

# exp(-1 / (0.04 * 2**(j/3))) in units of 2**-24: the ratio of successive weights of
# the discrete Laplace of grid scale j (written out: no platform's exp is involved).
_RATIOS = (
    0, 0, 2, 63, 824, 6381, 32388, 117584, 327184, 737139, 1404537, 2342913, 3516696,
    4854299, 6269574, 7681169, 9024501, 10256023, 11352032, 12304715, 13117451, 13800561,
    14367980, 14834901, 15216274, 15525937, 15776196, 15977694, 16139455, 16269009,
    16372576, 16455246, 16521158, 16573661, 16615451, 16648695, 16675128, 16696138,
    16712832, 16726094, 16736628, 16744993,
)  # fmt: skip
GRID = len(_RATIOS)
# Grid steps (a third of an octave each) added to the base per activity class, for six
# curves: round(3 * beta * log2(x)) at the classes' typical relative activity x.
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
_ONE = 1 << 40  # weight of the value 0 in every table
_TAIL = _ONE >> 20  # a table covers the values whose weight is above this
_MAX_RADIUS = 4096
_CLASSES = 8

_lock = threading.Lock()
_tables: dict[int, tuple[int, object]] = {}
_costs: dict[int, np.ndarray] = {}
# Table index of every (curve, base, class).
_CHOICES = np.clip(np.arange(GRID)[None, :, None] + _OFFSETS[:, None, :], 0, GRID - 1)


@functools.cache
def _weights(j: int) -> tuple[int, np.ndarray]:
    """Radius ``R`` and integer weights of ``-R..R`` then the escape, for grid index j."""
    r = _RATIOS[j]
    w = [_ONE]
    while len(w) <= _MAX_RADIUS:
        nxt = (w[-1] * r) >> 24
        if nxt < _TAIL:
            break
        w.append(nxt)
    radius = len(w) - 1
    side = np.array(w[1:], dtype=np.float64)
    # Escape: about the mass beyond the radius (exactly representable integers).
    esc = max(float(((w[-1] * r) >> 24) * 64), 1.0)
    return radius, np.concatenate([side[::-1], [float(_ONE)], side, [esc]])


def _table(j: int):
    """(radius, constriction ``Categorical``) of grid index ``j`` (cached)."""
    with _lock:
        t = _tables.get(j)
        if t is None:
            import constriction

            radius, w = _weights(j)
            # Every symbol keeps a nonzero probability (perfect=False is "leaky").
            t = (radius, constriction.stream.model.Categorical(w, perfect=False))
            _tables[j] = t
        return t


def _bit_costs(j: int, top: int) -> np.ndarray:
    """Approximate bits of a value of magnitude ``0..top`` under table ``j`` (encoder)."""
    radius, w = _weights(j)
    p = w / w.sum()
    mags = np.arange(top + 1)
    inside = mags <= radius
    c = np.empty(top + 1)
    c[inside] = -np.log2(np.maximum(p[radius + mags[inside]], 1e-300))
    c[~inside] = -np.log2(max(p[-1], 1e-300)) + 32.0
    return c


def channel_order(pmf: np.ndarray, lo: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Channels by decreasing mean magnitude under the level's integer tables (exact
    rational arithmetic, so every machine agrees; ties by channel index)."""
    keys = []
    for c in range(len(size)):
        n = int(size[c])
        f = pmf[c, :n].astype(np.int64)
        mags = np.abs(np.arange(int(lo[c]), int(lo[c]) + n, dtype=np.int64))
        keys.append((-Fraction(int((f * mags).sum()), max(int(f.sum()), 1)), c))
    return np.array([c for _, c in sorted(keys)], dtype=np.int64)


def _fit(values: np.ndarray, classes: np.ndarray) -> tuple[int, int]:
    """(curve, base) with the fewest bits for one channel."""
    top = min(int(np.abs(values).max(initial=0)), 2 * _MAX_RADIUS)
    hist = np.zeros((_CLASSES, top + 1))
    np.add.at(hist, (classes, np.minimum(np.abs(values), top)), 1.0)
    per = hist @ _cost_matrix(top).T  # (classes, GRID): bits of each class per table
    bits = per[np.arange(_CLASSES), _CHOICES].sum(axis=-1)  # (curves, GRID)
    curve, base = np.unravel_index(int(np.argmin(bits)), bits.shape)
    return int(curve), int(base)


def _cost_matrix(top: int) -> np.ndarray:
    """Bits of magnitudes ``0..top`` under every table, ``(GRID, top + 1)`` (cached by
    powers of two of ``top``)."""
    size = 1 << max(top, 1).bit_length()
    with _lock:
        m = _costs.get(size)
        if m is None:
            m = _costs[size] = np.stack([_bit_costs(j, size) for j in range(GRID)])
    return m[:, : top + 1]


def encode(symbols: np.ndarray, order: np.ndarray) -> dict[str, bytes]:
    """Code integer latents ``(M, h, w)``; returns the payloads ``latents`` (range-coded
    words), ``escapes`` (int32) and ``models`` (curve, base and median per channel)."""
    import constriction

    m, h, w = symbols.shape
    enc = constriction.stream.queue.RangeEncoder()
    activity = np.zeros((h, w), np.int64)
    models = np.zeros((3, m), np.int64)
    escapes: list[np.ndarray] = []
    for c in order:
        # Some channels sit on an offset: code the differences from their median.
        loc = int(np.median(symbols[c]))
        v = symbols[c].astype(np.int64) - loc
        cls = _classes(activity)
        curve, base = _fit(v.ravel(), cls.ravel())
        models[:, c] = curve, base, loc
        for k, j in enumerate(np.clip(base + _OFFSETS[curve], 0, GRID - 1)):
            sel = v[cls == k]
            if not sel.size:
                continue
            radius, table = _table(int(j))
            esc = np.abs(sel) > radius
            if esc.any():
                escapes.append(sel[esc].astype("<i4"))
            idx = np.where(esc, 2 * radius + 1, sel + radius)
            enc.encode(idx.astype(np.int32), table)
        activity += np.abs(v)
    return {
        "latents": enc.get_compressed().astype("<u4").tobytes(),
        "escapes": np.concatenate(escapes).tobytes() if escapes else b"",
        "models": encode_ints(models.astype(np.int32)),
    }


def decode(
    payloads: dict[str, bytes], shape: tuple[int, int, int], order: np.ndarray
) -> np.ndarray:
    """Decode :func:`encode` payloads into int32 latents ``shape`` = ``(M, h, w)``.

    Raises
    ------
    BundleContentError
        Malformed, truncated or altered payloads.
    """
    import constriction

    m, h, w = shape
    models = decode_ints(payloads["models"], shape=(3, m), dtype=np.int32).astype(np.int64)
    if np.any((models[0] < 0) | (models[0] >= len(_OFFSETS))) or np.any(
        (models[1] < 0) | (models[1] >= GRID)
    ):
        raise BundleContentError("learned-codec entropy models are out of range")
    if len(payloads["latents"]) % 4 or len(payloads.get("escapes", b"")) % 4:
        raise BundleContentError("learned-codec payloads are truncated")
    words = np.frombuffer(payloads["latents"], dtype="<u4").astype(np.uint32)
    escapes = np.frombuffer(payloads.get("escapes", b""), dtype="<i4")
    dec = constriction.stream.queue.RangeDecoder(words)
    out = np.empty((m, h, w), np.int64)
    activity = np.zeros((h, w), np.int64)
    used = 0
    with stream_errors("learned-codec bitstream"):
        for c in order:
            cls = _classes(activity)
            v = np.empty((h, w), np.int64)
            for k, j in enumerate(np.clip(models[1, c] + _OFFSETS[models[0, c]], 0, GRID - 1)):
                where = cls == k
                count = int(where.sum())
                if not count:
                    continue
                radius, table = _table(int(j))
                idx = np.asarray(dec.decode(table, count), dtype=np.int64)
                vals = idx - radius
                esc = idx == 2 * radius + 1
                n_esc = int(esc.sum())
                if n_esc:
                    if used + n_esc > len(escapes):
                        raise BundleContentError("the bitstream has more escapes than stored")
                    vals[esc] = escapes[used : used + n_esc]
                    used += n_esc
                v[where] = vals
            out[c] = v + models[2, c]
            activity += np.abs(v)
    # A well-formed stream is consumed exactly; a truncated one (which constriction
    # decodes into garbage without complaint) or one with trailing words is not.
    if not dec.maybe_exhausted():
        raise BundleContentError("learned-codec bitstream is truncated or has trailing data")
    if used != len(escapes):
        raise BundleContentError("the escape payload does not match the bitstream")
    if np.abs(out).max(initial=0) > np.iinfo(np.int32).max:
        raise BundleContentError("learned-codec latents decode out of range")
    return out.astype(np.int32)
