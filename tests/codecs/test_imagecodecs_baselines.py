"""JPEG XL, JPEG 2000 and HTJ2K baselines (imagecodecs): 8 and 16 bits, grey and RGB."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from skimage import data, transform

pytest.importorskip("imagecodecs")

import napari_svd_compress as nsc
from napari_svd_compress import registry
from napari_svd_compress.errors import (
    BundleError,
    BundleFormatError,
    BundleLimitError,
    BundleVersionError,
)
from napari_svd_compress.fileio.images import read_image
from napari_svd_compress.format import native

METHODS = [m for m in ("jpegxl", "jpeg2000", "htj2k") if m in nsc.available_methods()]
FILES = {"jpegxl": "jxl", "jpeg2000": "jp2", "htj2k": "j2k"}
# Settings that keep (nearly) everything, and the lossless ones.
HIGH = {"jpegxl": {"quality": 100}, "jpeg2000": {"psnr": 75.0}, "htj2k": {"qstep": 0.0005}}
LOSSLESS = {"jpegxl": {"lossless": True}, "jpeg2000": {"psnr": 0}, "htj2k": {"qstep": 0}}
LOW = {"jpegxl": {"quality": 30}, "jpeg2000": {"psnr": 28.0}, "htj2k": {"qstep": 0.2}}


def test_all_three_are_registered():
    assert set(METHODS) == {"jpegxl", "jpeg2000", "htj2k"}


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    small = transform.resize(data.astronaut(), (96, 128), anti_aliasing=True)
    return np.round(small * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def rgb16() -> np.ndarray:
    """A genuinely 16-bit image: astronaut resampled (cubic), so thousands of levels."""
    small = transform.resize(data.astronaut() / 255.0, (96, 128), order=3, anti_aliasing=True)
    return np.round(np.clip(small, 0, 1) * 65535).astype(np.uint16)


@pytest.mark.parametrize("method", METHODS)
def test_registry_entry_has_a_quality_knob_and_a_sweep(method):
    codec = registry.get(method)
    name, values = codec.sweep
    assert codec.param(name).kind in (int, float)
    assert len(values) >= 5
    assert codec.native == FILES[method]
    assert codec.label_for(codec.resolve({}))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("gray", [False, True])
def test_round_trip_uint8(rgb8, method, gray):
    image = rgb8[..., 1] if gray else rgb8
    r = nsc.compress(image, method)
    assert native.sniff(r.bundle) == FILES[method]
    assert r.info["bits"] == 8
    back = nsc.decompress(r.bundle)
    assert back.dtype == np.uint8 and back.shape == image.shape
    np.testing.assert_array_equal(back, r.image)
    assert 28 < r.psnr < 70
    assert r.bpp < 8


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("gray", [False, True])
def test_uint16_keeps_its_precision(rgb16, method, gray):
    image = rgb16[..., 0] if gray else rgb16
    assert len(np.unique(image)) > 4000
    r = nsc.compress(image, method, **HIGH[method])
    assert r.info["bits"] == 16
    back = nsc.decompress(r.bundle)  # the file itself, as another program reads it
    assert back.dtype == np.uint16 and back.shape == image.shape
    np.testing.assert_array_equal(back, r.image)
    # Far more than 8 bits of levels survive, and the error is below what 8 bits allow
    # (8-bit rounding alone costs about 59 dB).
    assert len(np.unique(back)) > 2000
    assert r.psnr > 60


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lossless_settings_are_exact(rgb8, rgb16, method, dtype):
    image = rgb8 if dtype == np.uint8 else rgb16
    r = nsc.compress(image[..., 2], method, **LOSSLESS[method])
    np.testing.assert_array_equal(r.image, image[..., 2])
    np.testing.assert_array_equal(nsc.decompress(r.bundle), image[..., 2])
    assert r.psnr == float("inf") or r.psnr > 150


@pytest.mark.parametrize("method", METHODS)
def test_quality_knob_orders_size_and_psnr(rgb8, method):
    low = nsc.compress(rgb8, method, **LOW[method])
    high = nsc.compress(rgb8, method, **HIGH[method])
    assert low.nbytes < high.nbytes
    assert low.psnr < high.psnr


@pytest.mark.parametrize("method", METHODS)
def test_float_and_int16_inputs_are_written_at_16_bits(method):
    ramp = np.linspace(-1.5, 2.5, 64 * 80, dtype=np.float32).reshape(64, 80)
    r = nsc.compress(ramp, method, **LOSSLESS[method])
    assert r.info["bits"] == 16
    assert r.image.dtype == np.float32
    # 16-bit steps of the float range: far finer than 8 bits.
    assert np.abs(r.image - ramp).max() < 4.0 / 65535 * 1.01
    r = nsc.compress((ramp * 8000).astype(np.int16), method, **HIGH[method])
    assert r.info["bits"] == 16 and r.image.dtype == np.int16


@pytest.mark.parametrize("method", METHODS)
def test_tiny_and_odd_planes(method):
    rng = np.random.default_rng(3)
    for shape in [(2, 2), (3, 5), (7, 9, 3)]:
        image = rng.integers(0, 65535, shape, dtype=np.uint16)
        r = nsc.compress(image, method, **LOSSLESS[method])
        np.testing.assert_array_equal(r.image, image)


def test_htj2k_overshoots_are_clamped_not_wrapped():
    """OpenJPH's decoder (imagecodecs.htj2k_decode) wraps values over the top to 0 on lossy
    files; ours decodes through OpenJPEG, which clamps: white stays white."""
    if "htj2k" not in METHODS:
        pytest.skip("no HTJ2K")
    image = np.zeros((64, 64), np.uint8)
    image[16:48, 16:48] = 255
    r = nsc.compress(image, "htj2k", qstep=0.02)
    assert r.image[20:44, 20:44].min() > 200


@pytest.mark.parametrize("shape", [(8, 8), (512, 768), (768, 512), (240, 320), (100, 7), (33, 44)])
def test_header_sizes(shape):
    import imagecodecs

    h, w = shape
    image = np.zeros(shape, np.uint8)
    for blob in (
        imagecodecs.jpegxl_encode(image, level=50, effort=1),
        imagecodecs.jpegxl_encode(image, level=50, effort=1, usecontainer=True),
        imagecodecs.jpeg2k_encode(image, level=30),
        imagecodecs.jpeg2k_encode(image, level=30, codecformat="J2K"),
        imagecodecs.htj2k_encode(image, level=0.1),
    ):
        assert native.image_size(blob) == (w, h)


def _jxl_header(height: int, ratio: int = 1) -> bytes:
    """A JPEG XL codestream signature and SizeHeader (not small, 30-bit height)."""
    bits = 0 | (3 << 1) | ((height - 1) << 3) | (ratio << 33)
    return b"\xff\x0a" + bits.to_bytes(8, "little") + b"\x00" * 32


def test_jxl_bomb_is_refused_before_decoding():
    blob = _jxl_header(1 << 20)
    assert native.image_size(blob) == (1 << 20, 1 << 20)
    with pytest.raises(BundleLimitError):
        nsc.decompress(blob)


def test_j2k_bomb_is_refused_before_decoding():
    siz = struct.pack(">HHIIIIIIIIH", 41, 0, 100_000, 100_000, 0, 0, 1024, 1024, 0, 0, 1)
    blob = b"\xff\x4f\xff\x51" + siz + b"\x07\x01\x01" + b"\x00" * 16
    with pytest.raises(BundleLimitError):
        nsc.decompress(blob)
    jp2 = native._JP2_SIGNATURE + struct.pack(">I4s", 8 + len(blob), b"jp2c") + blob
    with pytest.raises(BundleLimitError):
        nsc.decompress(jp2)


@pytest.mark.parametrize("method", METHODS)
def test_corrupt_files_raise_bundle_errors(rgb8, method, tmp_path):
    good = nsc.compress(rgb8, method).bundle
    rng = np.random.default_rng(0)
    cases = [
        good[: len(good) // 3],  # truncated
        good[:14],  # header cut short
        good[:40] + bytes(rng.integers(0, 256, 400, dtype=np.uint8)),  # garbage body
    ]
    for blob in cases:
        with pytest.raises(BundleError):
            nsc.decompress(blob)
        path = tmp_path / f"bad.{FILES[method]}"
        path.write_bytes(blob)
        with pytest.raises(BundleError, match="bad"):
            read_image(path)


def test_corrupt_jxl_signature_only():
    with pytest.raises(BundleFormatError):
        nsc.decompress(b"\xff\x0a")


@pytest.mark.parametrize("method", METHODS)
def test_read_image_opens_the_files_at_16_bits(rgb16, method, tmp_path):
    r = nsc.compress(rgb16, method, **HIGH[method])
    path = tmp_path / f"x.{FILES[method]}"
    path.write_bytes(r.bundle)
    image, meta = read_image(path)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, r.image)
    assert meta["format"] == FILES[method]


def test_without_imagecodecs_jxl_is_refused_and_jp2_falls_back(rgb8, monkeypatch):
    jxl = nsc.compress(rgb8, "jpegxl").bundle
    jp2 = nsc.compress(rgb8, "jpeg2000").bundle
    expected = nsc.decompress(jp2)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with pytest.raises(BundleVersionError, match="formats"):
        nsc.decompress(jxl)
    np.testing.assert_array_equal(nsc.decompress(jp2), expected)  # Pillow's OpenJPEG


def test_sweep_spans_photo_rates(rgb8):
    from napari_svd_compress.pipelines.sweep import sweep

    table = sweep(rgb8, methods=METHODS)
    for method in METHODS:
        bpp, psnr = table.curve(method)
        assert bpp[0] < 1.0 and bpp[-1] > 1.5 and bpp[-1] > 4 * bpp[0]
        assert psnr[-1] > psnr[0]
