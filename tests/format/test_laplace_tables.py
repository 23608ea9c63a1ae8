"""The integer Laplace tables: their construction, levels beyond the grid, round trips."""

from __future__ import annotations

import constriction
import numpy as np
import pytest

from napari_svd_compress.format import laplace_tables as lt


def test_tables_are_integer_symmetric_and_decreasing():
    for j in (0, 10, lt.TOP, lt.GRID - 1):
        radius, w = lt.weights(j)
        assert np.all(w == np.round(w)) and np.all(w >= 1)
        assert w[radius] == lt.ONE and len(w) == 2 * radius + 2
        side = w[radius + 1 : 2 * radius + 1]
        assert np.all(np.diff(side) <= 0) and np.array_equal(side, w[radius - 1 :: -1][:radius])


def test_weights_follow_the_written_rule():
    # Grid index 12: w[i+1] = (w[i] * ratio) >> 24 down to 2**20, escape 64x the next one.
    radius, w = lt.weights(12)
    ratio = lt._RATIOS[12]
    expect = [1 << 40]
    while (expect[-1] * ratio) >> 24 >= 1 << 20:
        expect.append((expect[-1] * ratio) >> 24)
    assert radius == len(expect) - 1 == 8
    assert w[radius:-1].astype(np.int64).tolist() == expect
    assert w[-1] == ((expect[-1] * ratio) >> 24) * 64


def test_levels_split_into_a_table_and_low_bits():
    assert lt.split(0) == (0, 0) and lt.split(lt.TOP) == (lt.TOP, 0)
    assert lt.split(lt.TOP + 1) == (lt.TOP - 2, 1)
    assert lt.split(lt.TOP + 3) == (lt.TOP, 1)
    assert lt.split(lt.MAX_LEVEL) == (lt.TOP, 40)
    for level in range(lt.MAX_LEVEL + 1):
        j, m = lt.split(level)
        assert level == j + 3 * m and j <= lt.TOP and (m == 0 or j > lt.TOP - 3)
    assert lt.level_of(0.0) == 0 and lt.level_of(0.04 * 2**10) == 30


@pytest.mark.parametrize("level", [0, 5, 20, lt.TOP, lt.TOP + 1, lt.TOP + 20, lt.TOP + 60])
def test_values_round_trip_at_every_kind_of_level(level):
    rng = np.random.default_rng(level)
    scale = float(lt.level_scale(level))
    values = np.rint(rng.laplace(0, scale, 3000)).astype(np.int64)
    values[:3] = (0, -(1 << 45), (1 << 45) - 1)  # far outside any table: escapes
    enc = constriction.stream.queue.RangeEncoder()
    escapes: list[np.ndarray] = []
    lt.encode(enc, values[:1000], level, escapes)
    lt.encode(enc, values[1000:], level, escapes)
    esc = np.concatenate(escapes)
    assert len(esc) >= 2
    dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
    first, used = lt.decode(dec, 1000, level, esc, 0)
    second, used = lt.decode(dec, 2000, level, esc, used)
    assert used == len(esc) and dec.maybe_exhausted()
    np.testing.assert_array_equal(np.concatenate([first, second]), values)


def test_decoding_with_missing_escapes_raises():
    enc = constriction.stream.queue.RangeEncoder()
    escapes: list[np.ndarray] = []
    lt.encode(enc, np.array([0, 1 << 30, 2]), 3, escapes)
    dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
    with pytest.raises(IndexError):
        lt.decode(dec, 3, 3, np.zeros(0, np.int64), 0)


def test_value_bits_are_the_tables_costs_escapes_and_low_bits():
    mags = np.array([0, 1, 2, 7, 40, 4096, 1 << 20, (1 << 40) + 5], np.int64)
    for level in (0, 12, lt.TOP, lt.TOP + 1, lt.TOP + 20, lt.MAX_LEVEL):
        j, m = lt.split(level)
        radius, w = lt.weights(j)
        p = w / w.sum()
        # Magnitudes past the radius cost an escape symbol plus 64 verbatim bits.
        want = [
            (-np.log2(p[radius + (v >> m)]) if (v >> m) <= radius else 64 - np.log2(p[-1])) + m
            for v in mags.tolist()
        ]
        np.testing.assert_allclose(lt.value_bits(mags, level), want, rtol=1e-12)


def test_best_level_is_the_cheapest_and_near_the_scale():
    rng = np.random.default_rng(0)
    for scale in (0.1, 3.0, 200.0, 5e4):
        mags = np.abs(np.rint(rng.laplace(0, scale, 4000))).astype(np.int64)
        best = lt.best_level(mags, scale)
        costs = [lt.level_bits(mags, lv) for lv in range(lt.MAX_LEVEL + 1)]
        assert costs[best] == min(costs[max(0, best - 6) : best + 7])
        if scale >= 1:
            assert abs(lt.level_scale(best) / scale - 1) < 0.5
