"""Rate-distortion sweeps: the library table, the plot and the command line."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data, transform

from napari_svd_compress.sweep import COLUMNS, plot_rd, sweep


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


def test_default_points_and_csv(rgb8, tmp_path):
    done = []
    table = sweep(rgb8, methods=("jpeg", "kmeans"), progress=done.append)
    assert table.methods == ["jpeg", "kmeans"]
    assert done[-1] == 1.0 and len(done) == len(table)
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
    root = Path(__file__).resolve().parents[1] / "src"
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
