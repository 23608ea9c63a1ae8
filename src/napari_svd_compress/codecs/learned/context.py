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
are built from integer fixed-point powers (``format.laplace_tables``), so a bitstream
decodes to the same integers on every machine, like the factorized tables it replaces.
"""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np

from ...errors import BundleContentError
from ...format import laplace_tables as _tables
from ...format.block_context import _CLASSES, _OFFSETS, _classes
from ...format.entropy import decode_ints, encode_ints, stream_errors

GRID = _tables.GRID
_MAX_RADIUS = _tables.MAX_RADIUS

_lock = threading.Lock()
_costs: dict[int, np.ndarray] = {}
# Table index of every (curve, base, class).
_CHOICES = np.clip(np.arange(GRID)[None, :, None] + _OFFSETS[:, None, :], 0, GRID - 1)


def _bit_costs(j: int, top: int) -> np.ndarray:
    """Approximate bits of a value of magnitude ``0..top`` under table ``j`` (encoder)."""
    radius, w = _tables.weights(j)
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
            radius, table = _tables.table(int(j))
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
                radius, table = _tables.table(int(j))
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
