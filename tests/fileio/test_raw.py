"""Tests of camera RAW decoding and the DNG writer."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from napari_svd_compress.errors import ImageError, ParameterError, RawError
from napari_svd_compress.fileio import raw


def _smooth_rgb(height: int, width: int) -> np.ndarray:
    """A smooth, colourful uint8 test image (gradients, no edges to upset demosaicing)."""
    y, x = np.mgrid[0:height, 0:width]
    y = y / (height - 1)
    x = x / (width - 1)
    rgb = np.stack([x, y, 0.5 + 0.4 * np.sin(2 * np.pi * (x + y) / 2)], axis=-1)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _correlations(decoded: np.ndarray, source: np.ndarray) -> list[float]:
    return [
        float(np.corrcoef(decoded[..., c].ravel(), source[..., c].ravel())[0, 1]) for c in range(3)
    ]


@pytest.fixture
def dng_96x128(tmp_path):
    rgb = _smooth_rgb(96, 128)
    return raw.write_dng(tmp_path / "smooth.dng", rgb), rgb


def test_extensions():
    assert len(set(raw.RAW_EXTENSIONS)) == len(raw.RAW_EXTENSIONS)
    for ext in (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".x3f", ".mos"):
        assert ext in raw.RAW_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in raw.RAW_EXTENSIONS)
    assert raw.is_raw_path("IMG_0001.CR2")
    assert raw.is_raw_path("a/b/photo.dng")
    assert not raw.is_raw_path("photo.png")
    assert not raw.is_raw_path("dng")


@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 128)])
def test_roundtrip_colours(tmp_path, height, width):
    rgb = _smooth_rgb(height, width)
    path = raw.write_dng(tmp_path / "x.dng", rgb)
    assert path.exists()
    image, _ = raw.read_raw(path, use_camera_wb=True)
    assert image.shape == (height, width, 3)
    assert image.dtype == np.uint8
    assert min(_correlations(image, rgb)) > 0.9
    # Auto-brightening shifts levels a little; the channel means must still be close.
    np.testing.assert_allclose(image.mean(axis=(0, 1)), rgb.mean(axis=(0, 1)), atol=25)


def test_exact_levels_with_srgb_gamma(dng_96x128):
    path, rgb = dng_96x128
    image, _ = raw.read_raw(path, no_auto_bright=True, gamma=(2.4, 12.92))
    np.testing.assert_allclose(image.mean(axis=(0, 1)), rgb.mean(axis=(0, 1)), atol=4)


def test_sixteen_bit_and_half_size(dng_96x128):
    path, rgb = dng_96x128
    image, meta = raw.read_raw(path, output_bits=16, half_size=True)
    assert image.dtype == np.uint16
    assert image.shape == (48, 64, 3)
    assert image.max() > 255
    assert min(_correlations(image, rgb[::2, ::2])) > 0.9
    assert meta["settings"]["output_bits"] == 16
    assert meta["settings"]["half_size"] is True


def test_metadata(dng_96x128):
    path, _ = dng_96x128
    _, meta = raw.read_raw(path)
    json.dumps(meta, allow_nan=False)  # JSON-safe
    assert meta["settings"] == {
        "output_bits": 8,
        "half_size": False,
        "use_camera_wb": True,
        "use_auto_wb": False,
        "no_auto_bright": False,
        "gamma": None,
        "output_color": "sRGB",
    }
    camera = meta["camera"]
    assert camera["sizes"]["raw_width"] == 128
    assert camera["sizes"]["raw_height"] == 96
    assert camera["color_desc"] == "RGBG"
    assert camera["white_level"] == 4095
    assert camera["black_level_per_channel"] == [0, 0, 0, 0]
    assert camera["camera_whitebalance"][:3] == [1.0, 1.0, 1.0]
    assert camera["make"] == "napari-svd-compress"
    assert meta["shape"] == [96, 128, 3]


@pytest.mark.parametrize("pattern", ["BGGR", "GRBG", "gbrg"])
def test_other_patterns_and_bits(tmp_path, pattern):
    rgb = _smooth_rgb(64, 96).astype(np.float64) / 255
    path = raw.write_dng(tmp_path / "p.dng", rgb, pattern=pattern, bits=14)
    image, meta = raw.read_raw(path)
    assert meta["camera"]["white_level"] == 2**14 - 1
    assert min(_correlations(image, rgb)) > 0.9


def test_sample_dng(tmp_path):
    path = raw.make_sample_dng(tmp_path / "sample.dng")
    assert raw.sniff_raw(path)
    image, _ = raw.read_raw(path, half_size=True)
    assert image.shape == (256, 256, 3)


def test_write_is_atomic_and_overwrites(tmp_path):
    dest = tmp_path / "over.dng"
    dest.write_bytes(b"old")
    raw.write_dng(dest, _smooth_rgb(32, 32))
    assert raw.sniff_raw(dest)
    assert [p.name for p in tmp_path.iterdir()] == ["over.dng"]  # no temp files left


def test_write_bad_input(tmp_path):
    with pytest.raises(ImageError):
        raw.write_dng(tmp_path / "a.dng", np.zeros((16, 16, 3), np.uint8))  # LibRaw minimum
    with pytest.raises(ImageError):
        raw.write_dng(tmp_path / "a.dng", np.zeros((64, 64, 2), np.uint8))
    with pytest.raises(ImageError):
        raw.write_dng(tmp_path / "a.dng", np.zeros((64, 64, 3), np.int32))
    with pytest.raises(ImageError):
        raw.write_dng(tmp_path / "a.dng", np.full((64, 64, 3), np.nan))
    with pytest.raises(ParameterError):
        raw.write_dng(tmp_path / "a.dng", _smooth_rgb(64, 64), pattern="RGBG")
    with pytest.raises(ParameterError):
        raw.write_dng(tmp_path / "a.dng", _smooth_rgb(64, 64), bits=20)
    with pytest.raises(RawError):
        raw.write_dng(tmp_path / "missing" / "a.dng", _smooth_rgb(64, 64))
    assert list(tmp_path.iterdir()) == []


def test_sniff(tmp_path, dng_96x128):
    path, _ = dng_96x128
    assert raw.sniff_raw(path)
    assert raw.sniff_raw(str(path))
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    text = tmp_path / "a.txt"
    text.write_text("hello, this is not a raw file\n")
    empty = tmp_path / "empty.dng"
    empty.write_bytes(b"")
    assert not raw.sniff_raw(png)
    assert not raw.sniff_raw(text)
    assert not raw.sniff_raw(empty)
    assert not raw.sniff_raw(tmp_path / "missing.dng")
    assert not raw.sniff_raw(tmp_path)  # a folder
    for head in (b"FUJIFILMCCD-RAW 0201", b"IIRO\x08\0\0\0", b"IIU\0", b"\0\0\0\x18ftypcrx "):
        other = tmp_path / "other.raw"
        other.write_bytes(head + b"\0" * 32)
        assert raw.sniff_raw(other), head


def test_read_bad_files(tmp_path, dng_96x128):
    path, _ = dng_96x128
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    cases = {
        "corrupt.dng": b"II*\x00\x08\x00\x00\x00" + rng.bytes(4000),
        "truncated.dng": data[: len(data) // 2],
        "header_only.dng": data[:300],
        "empty.dng": b"",
        "text.nef": b"not a raw file\n" * 20,
    }
    for name, content in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(RawError, match=re.escape(name)):
            raw.read_raw(bad)
    with pytest.raises(RawError, match=r"missing\.dng"):
        raw.read_raw(tmp_path / "missing.dng")
    with pytest.raises(RawError):
        raw.read_raw(tmp_path)


@pytest.mark.parametrize(
    "options",
    [
        {"output_bits": 12},
        {"output_bits": True},
        {"output_bits": "8"},
        {"half_size": "yes"},
        {"use_camera_wb": 1},
        {"gamma": (2.2,)},
        {"gamma": (0, 4.5)},
        {"gamma": "2.2"},
        {"gamma": (float("nan"), 1.0)},
    ],
)
def test_read_bad_options(dng_96x128, options):
    path, _ = dng_96x128
    with pytest.raises(RawError):
        raw.read_raw(path, **options)


def test_mutated_dng_only_raises_raw_error(tmp_path, dng_96x128):
    path, _ = dng_96x128
    base = path.read_bytes()
    rng = np.random.default_rng(3)
    bad = tmp_path / "mutated.dng"
    for _ in range(40):
        blob = bytearray(base)
        for pos in rng.integers(0, 600, size=3):  # the header and tags
            blob[int(pos)] = int(rng.integers(256))
        bad.write_bytes(bytes(blob))
        try:
            image, _meta = raw.read_raw(bad)
        except RawError:
            continue
        assert image.ndim == 3 and image.shape[2] == 3


@pytest.mark.parametrize(
    "content",
    ["corrupt", "truncated", "header_only", "empty", "png_named_nef", "tag_sizes"],
)
def test_bad_raw_is_a_one_line_cli_error(tmp_path, dng_96x128, capfd, content):
    # capfd: what LibRaw itself prints to file descriptor 2 counts too.
    from napari_svd_compress.cli import main

    path, _ = dng_96x128
    data = path.read_bytes()
    if content == "png_named_nef":
        from PIL import Image

        bad = tmp_path / "photo.nef"
        Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(bad, format="PNG")
    else:
        blob = {
            "corrupt": b"II*\x00\x08\x00\x00\x00" + bytes(range(256)) * 16,
            "truncated": data[: len(data) // 3],
            "header_only": data[:200],
            "empty": b"",
            # ImageWidth and ImageLength of the first IFD set to 2**32 - 1
            "tag_sizes": _with_tag(data, {256: 0xFFFFFFFF, 257: 0xFFFFFFFF}),
        }[content]
        bad = tmp_path / f"{content}.dng"
        bad.write_bytes(blob)
    capfd.readouterr()
    code = main(["compress", str(bad), "-o", str(tmp_path / "out.svdz")])
    _out, err = capfd.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-svd-compress: error:") and bad.name in lines[0]
    assert not (tmp_path / "out.svdz").exists()


def _with_tag(data: bytes, values: dict[int, int]) -> bytes:
    """``data`` (a little-endian TIFF) with some LONG or SHORT tags of IFD0 replaced."""
    import struct

    buf = bytearray(data)
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, _kind = struct.unpack("<HH", data[at : at + 4])
        if tag in values:
            buf[at + 2 : at + 8] = struct.pack("<HI", 4, 1)  # one LONG
            buf[at + 8 : at + 12] = struct.pack("<I", values[tag])
    return bytes(buf)
