"""Huge planes (banded randomized SVD) and dask-backed stacks (one task per plane)."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from napari_svd_compress import compress, decompress
from napari_svd_compress.cli import main
from napari_svd_compress.errors import ImageError, ParameterError
from napari_svd_compress.format.bundle import open_bundle
from napari_svd_compress.pipelines.large import (
    compress_large,
    decompress_large,
    is_large_input,
    wants_large,
)
from napari_svd_compress.pipelines.stack import compress_stack

da = pytest.importorskip("dask.array")
tifffile = pytest.importorskip("tifffile")


def _mosaic(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A tiled 'photo' with noise, uint16: the structure of a stitched mosaic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:256] / 256.0
    tile = 0.5 + 0.2 * np.sin(12 * x + 3 * y) + 0.2 * np.cos(5 * x * y * 7) + 0.1 * (x > y)
    plane = np.tile(tile, (h // 256 + 1, w // 256 + 1))[:h, :w]
    plane = plane * 50000 + rng.normal(0, 400, (h, w))
    return np.clip(plane, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def plane():
    # Above _linalg.EXACT_MAX_DIM in both sides, so the in-memory codec is randomized too.
    return _mosaic(1536, 2048)


@pytest.fixture(scope="module")
def reference(plane):
    return compress(plane, "svd", rank=60)


def test_large_matches_in_memory_svd(tmp_path, plane, reference):
    path = tmp_path / "plane.npy"
    np.save(path, plane)
    out = tmp_path / "plane.svdz"
    result = compress_large(path, rank=60, out=out, ssim=True)
    assert result.path == out and out.read_bytes() == result.bundle
    # Same algorithm and random test matrix: equal up to float32 rounding.
    assert result.psnr == pytest.approx(reference.psnr, abs=0.02)
    assert result.ssim == pytest.approx(reference.ssim, abs=1e-3)
    assert abs(result.nbytes - reference.nbytes) < 0.01 * reference.nbytes
    assert result.info["channels"][0]["rank"] == 60
    decoded = decompress(out)
    assert decoded.shape == plane.shape and decoded.dtype == np.uint16
    err = np.mean((decoded.astype(np.float64) - plane) ** 2)
    assert 10 * np.log10(65535.0**2 / err) == pytest.approx(result.psnr, abs=1e-9)
    opened = open_bundle(out)
    assert opened.manifest["codec"] == "svd" and opened.manifest["params"]["rank"] == 60
    assert opened.figures["psnr"] == pytest.approx(result.psnr)
    # The banded decoder writes the same pixels to a .npy file, up to float32 rounding
    # of the band-sized products (a few values off by one level).
    banded = np.load(decompress_large(out, tmp_path / "decoded.npy", band_mb=1))
    diff = np.abs(banded.astype(np.int64) - decoded)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 1e-3 * diff.size


@pytest.mark.parametrize("kind", ["tiff", "tiff-zlib", "memmap", "dask", "float"])
def test_large_sources(tmp_path, kind):
    img = _mosaic(300, 420, seed=2)
    if kind == "tiff":
        source = tmp_path / "m.tif"
        tifffile.imwrite(source, img)
    elif kind == "tiff-zlib":  # not memory-mappable: decoded to a temporary map
        source = tmp_path / "m.tif"
        tifffile.imwrite(source, img, compression="zlib")
    elif kind == "memmap":
        np.save(tmp_path / "m.npy", img)
        source = np.load(tmp_path / "m.npy", mmap_mode="r")
    elif kind == "dask":
        source = da.from_array(img, chunks=(64, 420))
    else:
        img = img.astype(np.float32) / 7.0
        source = img
    result = compress_large(source, rank=12, band_mb=0.1)
    decoded = decompress(result.bundle)
    assert decoded.dtype == img.dtype and decoded.shape == img.shape
    mse = np.mean((decoded.astype(np.float64) - img) ** 2)
    span = 65535.0 if img.dtype == np.uint16 else float(img.max() - img.min())
    assert 10 * np.log10(span**2 / mse) == pytest.approx(result.psnr, abs=1e-6)
    # Close to the in-memory codec (exact SVD below 1024 pixels, randomized here).
    assert result.psnr == pytest.approx(compress(img, "svd", rank=12).psnr, abs=0.05)


def test_large_memory_is_bounded(tmp_path, monkeypatch):
    from napari_svd_compress.codecs import svd
    from napari_svd_compress.format import entropy as _entropy

    # LZMA's fixed ~95 MB of match-finder tables (tried on small factor arrays) would
    # hide what this test measures: the memory that scales with the plane.
    monkeypatch.setattr(
        svd, "encode_ints", lambda a: _entropy.encode_ints(a, ("raw", "zlib", "laplace"))
    )
    img = _mosaic(1024, 1536, seed=1)
    path = tmp_path / "m.npy"
    np.save(path, img)
    del img
    tracemalloc.start()
    try:
        compress_large(path, rank=20, band_mb=0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The plane as float32 would be 6.3 MB, as float64 12.6 MB: never allocated.
    assert peak < 4.5e6, peak


def test_large_rejects_and_detects(tmp_path):
    with pytest.raises(ImageError, match="2-D grayscale"):
        compress_large(np.zeros((40, 50, 3), np.uint8), rank=3)
    with pytest.raises(ImageError, match="no such file"):
        compress_large(tmp_path / "missing.npy", rank=3)
    np.save(tmp_path / "small.npy", np.zeros((40, 50), np.uint16))
    assert not is_large_input(tmp_path / "small.npy")
    assert is_large_input(tmp_path / "small.npy", threshold=2000)
    np.save(tmp_path / "stack.npy", np.zeros((2, 40, 50), np.uint16))
    assert not is_large_input(tmp_path / "stack.npy", threshold=10)
    assert not is_large_input(tmp_path / "x.png", threshold=10)


def test_wants_large(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((40, 50), np.uint16))
    src = tmp_path / "m.npy"
    assert wants_large("svd", src, {"rank": 8}, force=True)
    assert wants_large("svd", src, {"qloss": 0.2}, threshold=2000)
    # Not large and not forced, another method, or parameters it does not take: no.
    assert not wants_large("svd", src, {"rank": 8})
    assert not wants_large("pca", src, {}, force=True)
    assert not wants_large("svd", src, {"target_psnr": 30.0}, threshold=2000)
    with pytest.raises(ParameterError, match="rank and qloss only, not target_psnr"):
        wants_large("svd", src, {"target_psnr": 30.0}, force=True)


def test_cli_large(tmp_path, capsys):
    img = _mosaic(200, 260)
    np.save(tmp_path / "m.npy", img)
    out = tmp_path / "m.svdz"
    assert main(["compress", str(tmp_path / "m.npy"), "--large", "--rank=8", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "bpp" in text
    assert decompress(out).shape == img.shape
    assert open_bundle(out).manifest["params"]["rank"] == 8
    # --json, and the flags the large path does not take.
    argv = ["compress", str(tmp_path / "m.npy"), "--large", "--no-bundle", "--json"]
    assert main(argv) == 0
    fig = json.loads(capsys.readouterr().out)
    assert fig["method"] == "svd" and fig["written"] == [] and fig["info"]["space"] == "gray"
    assert main([*argv, "--target-psnr", "30"]) == 1
    assert "--large takes --rank and --qloss only, not --target_psnr" in capsys.readouterr().err


def test_large_result_equals_a_plane_through_the_api(tmp_path):
    """compress_large builds its result with api.make_result: figures match the bundle."""
    img = _mosaic(120, 150)
    res = compress_large(img, rank=6)
    assert res.image is None and res.path is None
    assert res.pixels == img.size and res.raw_nbytes == img.nbytes
    figures = open_bundle(res.bundle).figures
    assert figures["psnr"] == pytest.approx(res.psnr)
    assert figures["bytes"] == res.nbytes
    res = compress_large(img, rank=6, out=tmp_path / "x.svdz")
    assert res.path == tmp_path / "x.svdz" and res.path.read_bytes() == res.bundle


def test_decompress_large_rejects_other_bundles(tmp_path):
    rgb = compress(np.zeros((32, 40, 3), np.uint8), "svd", rank=2).bundle
    with pytest.raises(ParameterError, match="single-plane grayscale"):
        decompress_large(rgb, tmp_path / "x.npy")
    patch = compress(_mosaic(64, 64), "svd", patch=4, rank=3).bundle
    with pytest.raises(ParameterError, match="patch"):
        decompress_large(patch, tmp_path / "x.npy")


def test_dask_stack_plane_by_plane():
    from dask import delayed

    rng = np.random.default_rng(0)
    data = (rng.random((2, 3, 48, 64, 3)) * 255).astype(np.uint8)
    loads: list[tuple[int, int]] = []

    def load(i: int, j: int) -> np.ndarray:
        loads.append((i, j))
        return data[i, j]

    lazy = da.stack(
        [
            da.stack(
                [
                    da.from_delayed(delayed(load)(i, j), shape=data.shape[2:], dtype=data.dtype)
                    for j in range(3)
                ]
            )
            for i in range(2)
        ]
    )
    fractions: list[float] = []
    got = compress_stack(lazy, "svd", rank=5, progress=fractions.append)
    expect = compress(data, "svd", rank=5)
    # One read per plane, each a single plane; the same bundle and figures as the API.
    assert sorted(loads) == [(i, j) for i in range(2) for j in range(3)]
    assert got.bundle == expect.bundle
    assert got.psnr == expect.psnr and got.ssim == expect.ssim
    assert got.pixels == expect.pixels and got.info == expect.info
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and len(fractions) == 7
    # The decoded stack is lazy too.
    assert isinstance(got.image, da.Array)
    np.testing.assert_array_equal(got.image[1, 2].compute(), expect.image[1, 2])


def test_stack_single_plane_and_native():
    img = (np.random.default_rng(1).random((40, 52)) * 255).astype(np.uint8)
    assert compress_stack(img, "svd", rank=3).bundle == compress(img, "svd", rank=3).bundle
    assert (
        compress_stack(img, "jpeg", quality=50).bundle == compress(img, "jpeg", quality=50).bundle
    )
    with pytest.raises(ImageError, match="cannot hold a stack"):
        compress_stack(np.stack([img, img]), "jpeg")
