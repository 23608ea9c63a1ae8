"""The command line's new formats: ``compress --method jpegxl`` (16-bit kept) and
``export IMAGE_OR_BUNDLE out.ome.zarr``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

import napari_svd_compress as nsc
from napari_svd_compress.cli import export as export_cmd
from napari_svd_compress.cli import main

tifffile = pytest.importorskip("tifffile")


@pytest.fixture(scope="module")
def stack16(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A uint16 z-stack TIFF with thousands of levels."""
    cam = data.camera()[:96, :128].astype(np.float32) / 255
    image = np.stack([np.round(cam * 60000 + 500 * z) for z in range(3)]).astype(np.uint16)
    path = tmp_path_factory.mktemp("export") / "cells.tif"
    tifffile.imwrite(path, image, photometric="minisblack")
    return path, image


@pytest.fixture
def plane16(stack16, tmp_path) -> tuple[Path, np.ndarray]:
    _, image = stack16
    path = tmp_path / "plane.tif"
    tifffile.imwrite(path, image[0])
    return path, image[0]


@pytest.mark.parametrize(("method", "ext"), [("jpegxl", ".jxl"), ("jpeg2000", ".jp2")])
def test_compress_with_a_16_bit_baseline_writes_its_own_file(
    plane16, tmp_path, monkeypatch, capsys, method, ext
):
    pytest.importorskip("imagecodecs")
    src, _ = plane16
    monkeypatch.chdir(tmp_path)
    code = main(["compress", str(src), "--method", method, "--json"])
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    out = tmp_path / f"plane{ext}"
    assert figures["written"] == [str(out)] and out.exists()
    back = nsc.decompress(out)
    assert back.dtype == np.uint16 and len(np.unique(back)) > 1000
    assert figures["psnr"] > 30
    # decompress reads the file back to a 16-bit TIFF
    assert main(["decompress", str(out), "-o", str(tmp_path / "back.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "back.tif"), back)


def test_compress_jpegxl_quality_flag(plane16, tmp_path, capsys):
    pytest.importorskip("imagecodecs")
    src, _ = plane16
    sizes = []
    for q in ("30", "95"):
        out = tmp_path / f"q{q}.jxl"
        assert main(["compress", str(src), "-m", "jpegxl", "--quality", q, "-o", str(out)]) == 0
        sizes.append(out.stat().st_size)
    assert sizes[0] < sizes[1]
    assert "jpegxl q=30" in capsys.readouterr().out


def test_export_lossless(stack16, tmp_path, capsys):
    pytest.importorskip("zarr")
    from napari_svd_compress.fileio.ome_zarr import read_ome_zarr

    src, image = stack16
    out = tmp_path / "cells.ome.zarr"
    code = main(
        ["export", str(src), str(out), "--axes", "zyx", "--scale", "2,0.3,0.3", "--units", "um"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "axes zyx" in text and "blosc" in text
    levels, meta = read_ome_zarr(out)
    np.testing.assert_array_equal(levels[0][:], image)
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.3, 0.3]
    assert {a["unit"] for a in meta["axes"]} == {"micrometer"}


def test_export_with_svdz_chunks(stack16, tmp_path, capsys):
    pytest.importorskip("zarr")
    from napari_svd_compress.fileio.ome_zarr import read_ome_zarr

    src, image = stack16
    out = tmp_path / "lossy.ome.zarr"
    code = main(
        [
            "export",
            str(src),
            str(out),
            "--codec",
            "svdz",
            "--method",
            "pca",
            "--step",
            "4",
            "--ngff",
            "0.5",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "pca" and report["params"]["step"] == 4.0
    assert report["ngff"] == "0.5" and report["levels"] == [[3, 96, 128]]
    levels, _ = read_ome_zarr(out)
    expected = np.stack([nsc.compress(p, "pca", step=4).image for p in image])
    np.testing.assert_array_equal(levels[0][:], expected)
    assert report["bpp"] < 8


def test_export_a_bundle_reuses_its_method(stack16, tmp_path, capsys):
    pytest.importorskip("zarr")
    from napari_svd_compress.fileio.ome_zarr import read_ome_zarr

    _, image = stack16
    bundle = tmp_path / "cells.svdz"
    bundle.write_bytes(nsc.compress(image, "pca", step=6).bundle)
    out = tmp_path / "b.ome.zarr"
    assert main(["export", str(bundle), str(out), "--codec", "svdz", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "pca" and report["params"]["step"] == 6.0
    levels, _ = read_ome_zarr(out)
    assert levels[0].shape == image.shape
    # and a lossless export of a bundle stores its decoded pixels
    out2 = tmp_path / "c.ome.zarr"
    assert main(["export", str(bundle), str(out2)]) == 0
    np.testing.assert_array_equal(read_ome_zarr(out2)[0][0][:], nsc.decompress(bundle))


def test_export_rgb_photo(tmp_path):
    pytest.importorskip("zarr")
    from PIL import Image

    from napari_svd_compress.fileio.ome_zarr import read_ome_zarr

    src = tmp_path / "photo.png"
    Image.fromarray(data.astronaut()[::4, ::4]).save(src)
    out = tmp_path / "photo.ome.zarr"
    assert main(["export", str(src), str(out)]) == 0
    levels, meta = read_ome_zarr(out)
    assert [a["name"] for a in meta["axes"]] == ["c", "y", "x"]
    np.testing.assert_array_equal(np.moveaxis(levels[0][:], 0, -1), data.astronaut()[::4, ::4])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rank", "4"], "--codec svdz only"),
        (["--method", "pca"], "--codec svdz only"),
        (["--scale", "1,x,1"], "comma-separated numbers"),
        (["--scale", "1,1"], "scale needs 3"),
        (["--axes", "qyx"], "OME-NGFF axes"),
        (["--codec", "svdz", "--method", "jpeg"], "uint8"),
    ],
)
def test_export_errors_are_one_clean_line(stack16, tmp_path, capsys, extra, message):
    pytest.importorskip("zarr")
    src, _ = stack16
    out = tmp_path / "e.ome.zarr"
    assert main(["export", str(src), str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_export_refuses_to_replace_without_overwrite(stack16, tmp_path, capsys):
    pytest.importorskip("zarr")
    src, _ = stack16
    out = tmp_path / "x.ome.zarr"
    assert main(["export", str(src), str(out)]) == 0
    assert main(["export", str(src), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(src), str(out), "--overwrite", "--no-pyramid"]) == 0


def test_export_help_and_constants(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert "--codec" in text and "--method" in text and "--step" in text
    pytest.importorskip("zarr")
    from napari_svd_compress.fileio import ome_zarr

    assert export_cmd.COMPRESSIONS == ome_zarr.COMPRESSIONS
    assert export_cmd.NGFF_VERSIONS == ome_zarr.NGFF_VERSIONS
