"""Rate-distortion sweeps: the library table, the plot and the command line."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data, transform

from napari_svd_compress.pipelines.sweep import COLUMNS, plot_rd, sweep


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    small = transform.resize(data.astronaut(), (64, 96), anti_aliasing=True)
    return np.round(small * 255).astype(np.uint8)


def test_svd_rank_sweep_is_monotone(rgb8):
    table = sweep(rgb8, methods=["svd"], points={"svd": [1, 2, 4, 8, 16, 32]})
    assert table.columns == COLUMNS
    assert [r["param"] for r in table] == [f"rank={k}" for k in (1, 2, 4, 8, 16, 32)]
    sizes = [r["bytes"] for r in table]
    psnrs = [r["psnr"] for r in table]
    assert all(a < b for a, b in zip(sizes, sizes[1:]))
    assert all(a < b for a, b in zip(psnrs, psnrs[1:]))
    for r in table:
        assert r["bpp"] == pytest.approx(r["bytes"] * 8 / (64 * 96))
        assert 0 < r["ssim"] <= 1 and r["seconds"] >= 0


def test_sweep_rows_equal_independent_compress_calls(rgb8):
    """Shared work changes nothing: each row is what compress() alone gives (exactly,
    where the factorisation is the exact SVD, as on images up to 1024 px)."""
    from napari_svd_compress import compress

    points = {"svd": [2, 8, 24, {"percent": 0.6}, {"rank": 5, "color": "rgb"}], "kmeans": [4, 16]}
    table = sweep(rgb8, methods=("svd", "kmeans"), points=points)
    for row, (method, p) in zip(
        table, [("svd", v) for v in points["svd"]] + [("kmeans", v) for v in points["kmeans"]]
    ):
        params = p if isinstance(p, dict) else {"rank" if method == "svd" else "colors": p}
        alone = compress(rgb8, method, **params)
        assert row["bytes"] == alone.nbytes
        assert row["psnr"] == alone.psnr and row["ssim"] == alone.ssim


def test_svd_sweep_factorises_once_on_large_images(monkeypatch):
    """Above 1024 px the randomized SVD runs once, at the largest rank; the other ranks
    are its slices, within 0.02 dB and 0.5 % of compress() alone."""
    from napari_svd_compress import api, compress
    from napari_svd_compress.codecs import _linalg

    rng = np.random.default_rng(0)
    img = transform.resize(data.camera(), (1100, 1300))
    img = np.clip(img * 255 + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    calls = []
    real = _linalg.truncated_svd
    monkeypatch.setattr(
        _linalg, "truncated_svd", lambda x, k, **kw: calls.append(k) or real(x, k, **kw)
    )
    results = list(api.compress_many(img, "svd", [{"rank": 4}, {"rank": 16}, {"rank": 8}]))
    assert calls == [16]
    monkeypatch.setattr(_linalg, "truncated_svd", real)
    for k, shared in zip((4, 16, 8), results):
        alone = compress(img, "svd", rank=k)
        assert shared.params == alone.params
        assert shared.psnr == pytest.approx(alone.psnr, abs=0.02)
        assert shared.nbytes == pytest.approx(alone.nbytes, rel=0.005)
        np.testing.assert_array_equal(api.decompress(shared.bundle), shared.image)


def test_pca_sweep_shares_the_block_transform_and_equals_compress(rgb8, monkeypatch):
    """A pca sweep computes the block covariance once per colour space and block size,
    and every bundle is byte for byte the one compress() writes alone."""
    from napari_svd_compress import api, compress
    from napari_svd_compress.codecs import _blocks

    sets = [
        {"step": 64.0},
        {"step": 14.0},
        {"step": 30.0, "deblock": 0},
        {"step": 20.0, "block": 4},
    ]
    made = []
    real = _blocks._BlockStats.__init__

    def counting(self, x, b, progress):
        made.append(b)
        real(self, x, b, progress)

    monkeypatch.setattr(_blocks._BlockStats, "__init__", counting)
    results = list(api.compress_many(rgb8, "pca", sets))
    assert sorted(made) == [4, 8]
    monkeypatch.setattr(_blocks._BlockStats, "__init__", real)
    for params, shared in zip(sets, results, strict=True):
        alone = compress(rgb8, "pca", **params)
        assert shared.bundle == alone.bundle
        assert shared.psnr == alone.psnr and shared.ssim == alone.ssim
        np.testing.assert_array_equal(shared.image, alone.image)


@pytest.mark.parametrize("size", [(64, 96), (1100, 1000)])
def test_kmeans_sweep_codes_the_colours_once_and_equals_compress(size, monkeypatch):
    """A kmeans sweep computes the pixels' colour codes, their cells and features once
    (the small path sorts the codes, the large one fills lookup tables), and every
    bundle is byte for byte the one compress() writes alone, over both spaces, two
    seeds and a smaller sample."""
    from napari_svd_compress import api, compress
    from napari_svd_compress.codecs import kmeans

    image = transform.resize(data.astronaut(), size, order=1) * 255
    image += np.random.default_rng(1).normal(0, 3, image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    sets = [
        {"colors": 4},
        {"colors": 32},
        {"colors": 8, "space": "rgb"},
        {"colors": 8, "seed": 3, "sample": 5000},
    ]
    coded = []
    real = kmeans._all_codes
    monkeypatch.setattr(kmeans, "_all_codes", lambda plane: coded.append(1) or real(plane))
    results = list(api.compress_many(image, "kmeans", sets))
    assert len(coded) == 1
    monkeypatch.undo()
    for params, shared in zip(sets, results, strict=True):
        alone = compress(image, "kmeans", **params)
        assert shared.bundle == alone.bundle
        assert shared.psnr == alone.psnr and shared.ssim == alone.ssim
        np.testing.assert_array_equal(shared.image, alone.image)


def test_region_is_kept_and_shown(rgb8, tmp_path):
    table = sweep(rgb8, methods=["jpeg"], points={"jpeg": [50]}, region="visible region")
    assert table.region == "visible region"
    fig = plot_rd(table, tmp_path / "rd.png", title="astronaut")
    assert "visible region" in fig._suptitle.get_text()


def test_default_points_and_csv(rgb8, tmp_path):
    done = []
    table = sweep(rgb8, methods=("jpeg", "kmeans"), progress=done.append)
    assert table.methods == ["jpeg", "kmeans"]
    assert done[-1] == 1.0 and len(done) >= len(table)
    assert all(a <= b + 1e-9 for a, b in zip(done, done[1:]))
    path = tmp_path / "t.csv"
    table.to_csv(path)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0].keys()) == COLUMNS
    assert len(rows) == len(table)
    assert float(rows[0]["bpp"]) == pytest.approx(table[0]["bpp"], rel=1e-5)
    bpp, psnr = table.curve("jpeg")
    assert bpp == sorted(bpp) and psnr[-1] > psnr[0] + 5


def test_plot_to_axes_and_file(rgb8, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = sweep(rgb8, methods=["jpeg"], points={"jpeg": [10, 50, 90]})
    fig, axes = plt.subplots(1, 2)
    plot_rd(table, axes)
    assert len(axes[0].lines) == 1 and len(axes[0].lines[0].get_xdata()) == 3
    plt.close(fig)
    out = tmp_path / "rd.png"
    plot_rd(table.rows, out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300


def test_command_line_writes_png_and_csv(rgb8, tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(rgb8).save(src)
    png, table = tmp_path / "rd.png", tmp_path / "rd.csv"
    root = Path(__file__).resolve().parents[2] / "src"
    args = [sys.executable, "-m", "napari_svd_compress.cli", "sweep", str(src)]
    args += ["--methods", "svd,jpeg"]
    args += ["--plot", str(png), "--csv", str(table), "--quiet"]
    done = subprocess.run(args, capture_output=True, text=True, env={"PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    with Image.open(png) as im:
        im.load()
        assert im.size[0] > 300
    rows = list(csv.DictReader(table.open()))
    assert {r["method"] for r in rows} == {"svd", "jpeg"}
    assert all(float(r["bytes"]) > 0 for r in rows)
    bad = subprocess.run(
        [sys.executable, "-m", "napari_svd_compress.cli", "sweep", str(src), "--methods", "x"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root)},
    )
    assert bad.returncode != 0


@pytest.mark.parametrize("method", ["jpeg", "webp", "learned"])
def test_sets_encoded_each_alone_equal_compress(rgb8, method, monkeypatch):
    """Codecs without encode_many: the image converted once and, for baseline files,
    the sets encoded on threads; each row is still what compress() alone gives."""
    from napari_svd_compress import api, compress, registry

    codec = registry.get(method)
    name, values = codec.sweep
    sets = [{name: v} for v in values[:3]]
    threads = set()
    encode = codec.encode

    def spy(*args):
        threads.add(threading.get_ident())
        return encode(*args)

    spied = dataclasses.replace(codec, encode=spy)
    monkeypatch.setattr(registry, "get", lambda name: spied if name == method else codec)
    done = []
    rows = list(api.compress_many(rgb8, method, sets, progress=done.append))
    monkeypatch.undo()
    assert done[-1] == 1.0
    for row, params in zip(rows, sets, strict=True):
        alone = compress(rgb8, method, **params)
        assert row.bundle == alone.bundle
        assert row.psnr == alone.psnr and row.ssim == alone.ssim
        assert row.encode_s > 0
    main = threading.get_ident()
    assert (main not in threads) == (codec.native is not None and api.THREADS > 1)
