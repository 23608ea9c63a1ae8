"""Lossless integer coding: exact round trips, coder choice, corrupt streams."""

from __future__ import annotations

import numpy as np
import pytest

from napari_svd_compress.errors import BundleContentError
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
