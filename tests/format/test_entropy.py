"""Lossless integer coding: exact round trips, coder choice, corrupt streams."""

from __future__ import annotations

import lzma
import zlib

import numpy as np
import pytest

from napari_svd_compress import _threads
from napari_svd_compress.errors import BundleContentError
from napari_svd_compress.format import entropy
from napari_svd_compress.format.entropy import coder_name, decode_ints, encode_ints


@pytest.mark.parametrize("dtype", ["int32", "int16", "uint8", "uint16", "int8", "bool"])
def test_round_trip(dtype):
    rng = np.random.default_rng(0)
    x = rng.laplace(0, 5, size=(7, 333))
    if dtype == "bool":
        arr = x > 0
    else:
        info = np.iinfo(dtype)
        arr = np.clip(np.rint(x), info.min, info.max).astype(dtype)
    out = decode_ints(encode_ints(arr), shape=arr.shape, dtype=arr.dtype)
    np.testing.assert_array_equal(out, arr)


def test_laplace_beats_general_purpose_coders_on_coefficients():
    rng = np.random.default_rng(1)
    scales = np.array([0.3, 2.0, 10.0, 50.0])[:, None]
    arr = np.rint(rng.laplace(0, scales, size=(4, 20000))).astype(np.int32)
    best = encode_ints(arr)
    assert coder_name(best) == "laplace"
    assert len(best) < 0.9 * len(encode_ints(arr, methods=("lzma", "zlib")))


def test_smooth_rows_are_coded_as_differences():
    ramp = np.arange(1, 5001, dtype=np.int32)[None]  # differences are all 1
    coded = encode_ints(ramp, methods=("laplace",))
    assert len(coded) < 400
    np.testing.assert_array_equal(decode_ints(coded, shape=ramp.shape, dtype=np.int32), ramp)


def test_row_models_are_per_row_whatever_the_chunks(monkeypatch):
    """The row statistics go a few rows at a time: the same models as all rows at once."""
    rng = np.random.default_rng(3)
    rows = np.rint(rng.laplace(0, [[0.5], [4.0], [300.0], [2e5]], size=(4, 5000))).astype(np.int64)
    rows[1] += np.arange(5000) * 7  # a trend: coded as differences
    rows = np.concatenate([rows, rows[::-1] * 3])
    whole = entropy._row_models(rows)
    assert whole[0][1] and not whole[0][0]
    for values in (1, 6000, 12000):
        monkeypatch.setattr(entropy, "_STATS_VALUES", values)
        for got, want in zip(entropy._row_models(rows), whole, strict=True):
            np.testing.assert_array_equal(got, want)
    one_by_one = [entropy._row_models(r[None]) for r in rows]
    for i, models in enumerate(one_by_one):
        assert [int(m[0]) for m in models] == [int(w[i]) for w in whole]


def test_repetitive_masks_pick_lzma_or_zlib():
    mask = np.zeros((300, 300), np.uint8)
    mask[50:250, 50:250] = 255
    assert coder_name(encode_ints(mask)) in ("lzma", "zlib", "laplace")
    assert len(encode_ints(mask)) < 600


def test_shape_dtype_and_corruption_are_checked():
    arr = np.arange(100, dtype=np.int32).reshape(10, 10)
    data = encode_ints(arr)
    with pytest.raises(BundleContentError, match="shape"):
        decode_ints(data, shape=(5, 20), dtype=np.int32)
    with pytest.raises(BundleContentError, match="dtype"):
        decode_ints(data, shape=(10, 10), dtype=np.int16)
    with pytest.raises(BundleContentError):
        decode_ints(data[:7], shape=(10, 10), dtype=np.int32)
    with pytest.raises(BundleContentError):
        decode_ints(b"XX" + data[2:], shape=(10, 10), dtype=np.int32)
    for method in ("zlib", "lzma", "laplace", "raw"):
        coded = encode_ints(arr, methods=(method,))
        with pytest.raises(BundleContentError):
            decode_ints(coded[: len(coded) - 5], shape=(10, 10), dtype=np.int32)


def test_declared_huge_shape_is_refused_before_allocation():
    arr = np.zeros((4, 4), np.int32)
    data = encode_ints(arr, methods=("zlib",))
    with pytest.raises(BundleContentError, match="shape"):
        decode_ints(data, shape=(10**6, 10**6), dtype=np.int32)


def _index_map(shape=(1100, 1000), noise=0.1):
    """A 16-colour index map (> 1 MiB): smooth regions, borders dithered by ``noise``."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[: shape[0], : shape[1]]
    field = 8 + 7 * np.sin(x / 97.0) * np.cos(y / 131.0) + rng.normal(0, noise, shape)
    return np.clip(np.rint(field), 0, 15).astype(np.uint8)


def test_quick_codes_a_large_map_once_and_exactly():
    labels = _index_map()
    assert labels.nbytes > entropy._QUICK_MIN_BYTES
    coded = encode_ints(labels, methods=("raw", "zlib", "laplace"), quick=True)
    assert coder_name(coded) == "zlib"
    np.testing.assert_array_equal(decode_ints(coded, shape=labels.shape, dtype=np.uint8), labels)
    # Deterministic, and no more than a few percent longer than every coder at its best.
    assert coded == encode_ints(labels, methods=("raw", "zlib", "laplace"), quick=True)
    best = encode_ints(labels, methods=("raw", "zlib", "laplace"))
    assert len(coded) < 1.2 * len(best)
    # On a noisier map the per-row Laplace model wins, and the estimates see it.
    noisy = _index_map(noise=0.8)
    coded = encode_ints(noisy, methods=("raw", "zlib", "laplace"), quick=True)
    assert coded == encode_ints(noisy, methods=("laplace",))
    np.testing.assert_array_equal(decode_ints(coded, shape=noisy.shape, dtype=np.uint8), noisy)


def test_chunked_zlib_is_one_standard_stream_whatever_the_threads(monkeypatch):
    raw = _index_map().tobytes()
    buf = memoryview(raw)
    monkeypatch.setattr(entropy, "_ZLIB_CHUNK", 1 << 18)  # several chunks
    settings = [s for m, s in entropy._QUICK_CODERS if m == entropy._ZLIB] + [(9, 0)]
    streams = []
    for threads in (1, 3):
        monkeypatch.setattr(_threads, "THREADS", threads)
        for level, strategy in settings:
            streams.append(entropy._zlib_chunked(buf, level, strategy))
    assert streams[:3] == streams[3:]
    for stream in streams:
        assert zlib.decompress(stream) == raw


def test_quick_picks_laplace_where_it_wins():
    rng = np.random.default_rng(2)
    scales = rng.uniform(0.5, 20, size=(600, 1))
    arr = np.rint(rng.laplace(0, scales, size=(600, 1000))).astype(np.int16)
    assert arr.nbytes > entropy._QUICK_MIN_BYTES
    coded = encode_ints(arr, quick=True)
    assert coder_name(coded) == "laplace"
    np.testing.assert_array_equal(decode_ints(coded, shape=arr.shape, dtype=np.int16), arr)


def test_quick_on_small_arrays_only_makes_lzma_faster():
    small = _index_map((300, 300))
    others = ("raw", "zlib", "laplace")
    assert encode_ints(small, others, quick=True) == encode_ints(small, others)
    fast = encode_ints(small, ("lzma",), quick=True)
    assert coder_name(fast) == "lzma"
    assert fast[5 + 8 * small.ndim :] == lzma.compress(small.tobytes(), preset=1)
    np.testing.assert_array_equal(decode_ints(fast, shape=small.shape, dtype=np.uint8), small)


@pytest.mark.parametrize("methods", [("lzma",), ("zlib",), ("laplace",), ("raw", "lzma")])
def test_quick_respects_methods_on_large_arrays(methods):
    large = _index_map()
    coded = encode_ints(large, methods=methods, quick=True)
    assert coder_name(coded) in methods
    np.testing.assert_array_equal(decode_ints(coded, shape=large.shape, dtype=np.uint8), large)


def test_quick_falls_back_to_raw_on_incompressible_bytes():
    arr = np.random.default_rng(3).integers(0, 256, size=(1100, 1000), dtype=np.uint8)
    coded = encode_ints(arr, methods=("raw", "zlib"), quick=True)
    assert coder_name(coded) == "raw"
    np.testing.assert_array_equal(decode_ints(coded, shape=arr.shape, dtype=np.uint8), arr)


def test_laplace_streams_of_version_3_use_integer_tables_and_keep_every_value():
    rng = np.random.default_rng(5)
    rows = np.rint(rng.laplace(0, 4, (6, 900))).astype(np.int64)
    rows[1] = np.cumsum(rows[1])  # a smooth row: coded as differences
    rows[2] += 1 << 40  # far from zero: an integer location
    rows[3, ::97] = (1 << 44) * np.sign(rng.standard_normal(10))  # escapes
    rows[4] = np.rint(rng.laplace(0, 3e6, 900))  # wide: a level with low bits
    rows[5] = 0
    coded = encode_ints(rows, methods=("laplace",))
    assert coded[2] == 4 and coder_name(coded) == "laplace"
    np.testing.assert_array_equal(decode_ints(coded, rows.shape, np.int64), rows)


def test_laplace_streams_with_trailing_or_missing_words_are_refused():
    values = np.rint(np.random.default_rng(6).laplace(0, 5, (4, 500))).astype(np.int32)
    coded = encode_ints(values, methods=("laplace",))
    for bad in (coded + b"\0\0\0\0", coded[:-4], coded[:-1]):
        with pytest.raises(BundleContentError):
            decode_ints(bad, values.shape, np.int32)
