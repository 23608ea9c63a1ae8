"""JPEG, WebP and AVIF baselines: the bundle is the format's own file."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform

import napari_svd_compress as nsc
from napari_svd_compress.errors import BundleError
from napari_svd_compress.format.native import sniff

METHODS = [m for m in ("jpeg", "webp", "avif") if m in nsc.available_methods()]


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    small = transform.resize(data.astronaut(), (96, 128), anti_aliasing=True)
    return np.round(small * 255).astype(np.uint8)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("gray", [False, True])
def test_round_trip_uint8(rgb8, method, gray):
    image = rgb8[..., 1] if gray else rgb8
    r = nsc.compress(image, method, quality=80)
    assert sniff(r.bundle) == method
    back = nsc.decompress(r.bundle)
    assert back.dtype == np.uint8
    if gray and back.ndim == 3:
        # WebP stores grey as RGB; its three channels are equal.
        assert method == "webp" and np.array_equal(back[..., 0], back[..., 2])
        back = back[..., 0]
    assert back.shape == image.shape
    np.testing.assert_array_equal(back, r.image)
    assert 28 < r.psnr < 60
    assert r.bpp < 4


@pytest.mark.parametrize("method", METHODS)
def test_uint16_input_keeps_dtype_in_result(rgb8, method):
    image = rgb8.astype(np.uint16) * 257
    r = nsc.compress(image, method, quality=80)
    assert r.image.dtype == np.uint16 and r.image.shape == image.shape
    # The file itself is 8-bit: it decodes to the top byte of the result.
    back = nsc.decompress(r.bundle)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, np.round(r.image / 257).astype(np.uint8))
    assert r.psnr > 28


def test_quality_orders_size(rgb8):
    sizes = [nsc.compress(rgb8, "jpeg", quality=q).nbytes for q in (10, 50, 90)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_jpeg_optimised_tables_keep_pixels_and_save_bytes(rgb8):
    opt = nsc.compress(rgb8, "jpeg", quality=10)
    plain = nsc.compress(rgb8, "jpeg", quality=10, optimize=False)
    np.testing.assert_array_equal(opt.image, plain.image)
    # Measured 1155 against 1522 bytes.
    assert opt.nbytes < 0.9 * plain.nbytes


@pytest.mark.parametrize("method", METHODS)
def test_corrupt_file_raises_bundle_error(rgb8, method):
    r = nsc.compress(rgb8, method, quality=50)
    with pytest.raises(BundleError):
        nsc.decompress(r.bundle[: len(r.bundle) // 3])


def test_decode_rejects_wrong_format(rgb8):
    codec = nsc.get_method("jpeg")
    webp = nsc.compress(rgb8, "webp").bundle
    with pytest.raises(BundleError):
        codec.decode({"format": "jpeg"}, {"file": webp}, rgb8.shape)
    with pytest.raises(BundleError):
        codec.decode({"format": "jpeg"}, {}, rgb8.shape)


def test_unit_plane_to_8_bit_rounds_and_clips_like_the_formula():
    from napari_svd_compress.codecs.standard import _to_uint8

    # More values than one piece of the conversion, some outside [0, 1].
    plane = np.random.default_rng(0).uniform(-0.2, 1.2, (300, 400, 3)).astype(np.float32)
    plane[0, :4, 0] = [0.5 / 255, 1.5 / 255, 127.5 / 255, 1.0]
    got = _to_uint8(plane)
    assert got.dtype == np.uint8 and got.shape == plane.shape
    np.testing.assert_array_equal(got, np.clip(np.rint(plane * 255.0), 0, 255).astype(np.uint8))
    assert got[0, :4, 0].tolist() == [0, 2, 128, 255]  # halves to even
    assert got.min() == 0 and got.max() == 255
