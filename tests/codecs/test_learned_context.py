"""Context-adaptive latent coder of the learned codec (``codecs/learned/context.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_svd_compress.codecs.learned import context
from napari_svd_compress.errors import BundleContentError


def _latents(m: int = 12, h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    """Latents like an encoder's: busy on the right half, flat on the left, a few
    channels on an offset, one all zero, and a few values far out in the tails."""
    rng = np.random.default_rng(seed)
    busy = np.where(np.arange(w)[None, :] > w // 2, 4.0, 0.1) * np.ones((h, 1))
    out = np.round(rng.laplace(0, busy, (m, h, w)) / (1 + 0.2 * np.arange(m))[:, None, None])
    out[2] += 5
    out[3] -= 3
    out[5] = 0
    out[0, 3, 4] = 70000  # beyond every table: escaped
    out[7, 0, 0] = -90000
    return out.astype(np.int32)


def _order(m: int) -> np.ndarray:
    return np.arange(m)[::-1].copy()


def test_round_trip_with_offsets_and_escapes():
    lat = _latents()
    payloads = context.encode(lat, _order(len(lat)))
    assert len(payloads["escapes"]) == 8
    back = context.decode(payloads, lat.shape, _order(len(lat)))
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, lat)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 9), (2, 7, 1)])
def test_tiny_shapes(shape):
    lat = np.random.default_rng(1).integers(-3, 4, shape).astype(np.int32)
    order = np.arange(shape[0])
    np.testing.assert_array_equal(context.decode(context.encode(lat, order), shape, order), lat)


def test_activity_context_beats_one_table_per_channel():
    lat = _latents(m=16, h=32, w=32)
    lat[0, 3, 4] = lat[7, 0, 0] = 0
    ours = sum(len(v) for v in context.encode(lat, np.arange(16)).values())
    # The same coder with every latent in one class is a per-channel Laplace.
    flat = context._OFFSETS.copy()
    try:
        context._OFFSETS[:] = 0
        context._CHOICES[:] = np.clip(np.arange(context.GRID)[None, :, None], 0, context.GRID - 1)
        plain = sum(len(v) for v in context.encode(lat, np.arange(16)).values())
    finally:
        context._OFFSETS[:] = flat
        context._CHOICES[:] = np.clip(
            np.arange(context.GRID)[None, :, None] + flat[:, None, :], 0, context.GRID - 1
        )
    assert ours < 0.85 * plain


def test_channel_order_by_mean_magnitude():
    pmf = np.zeros((3, 5), np.int32)
    pmf[0, :3] = (1, 100, 1)  # narrow around 0
    pmf[1, :5] = (20, 20, 20, 20, 20)  # wide
    pmf[2, :3] = (1, 100, 1)  # as channel 0: the tie goes to the lower index
    lo = np.array([-1, -2, -1])
    size = np.array([3, 5, 3])
    assert context.channel_order(pmf, lo, size).tolist() == [1, 0, 2]


def test_damaged_payloads_raise():
    # (Words altered inside the range-coded stream are the codec's CRC's to catch:
    # test_learned.py.)
    lat = _latents()
    order = _order(len(lat))
    p = context.encode(lat, order)
    bad = [
        {**p, "latents": p["latents"][: len(p["latents"]) // 2]},
        {**p, "latents": p["latents"][:-1]},
        {**p, "escapes": p["escapes"][:4]},
        {**p, "escapes": p["escapes"] + b"\0\0\0\0"},
        {**p, "models": p["models"][:-3]},
    ]
    for payloads in bad:
        with pytest.raises(BundleContentError):
            context.decode(payloads, lat.shape, order)
