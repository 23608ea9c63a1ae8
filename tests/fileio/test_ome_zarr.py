"""The OME-Zarr writer: NGFF 0.4 and 0.5, axes, scale, units, pyramids, svdz chunks,
atomic stores; read back with zarr and with ome-zarr-py."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from skimage import data

zarr = pytest.importorskip("zarr")
pytest.importorskip("numcodecs")

import napari_svd_compress as nsc  # noqa: E402
from napari_svd_compress.errors import ImageError, ParameterError  # noqa: E402
from napari_svd_compress.fileio import ome_zarr  # noqa: E402
from napari_svd_compress.fileio.ome_zarr import read_ome_zarr, write_ome_zarr  # noqa: E402


def _ome_zarr_py(path):
    """The first image node as ome-zarr-py reads it (skip when it is not installed)."""
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(path))
    assert location is not None
    nodes = list(Reader(location)())
    return nodes[0]


@pytest.fixture(scope="module")
def zyx16() -> np.ndarray:
    cam = data.camera()[:96, :128].astype(np.float32) / 255
    return np.stack([np.round(cam * 50000 + 300 * z) for z in range(4)]).astype(np.uint16)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_zyx_stack_with_scale_and_units(tmp_path, zyx16, version):
    path = tmp_path / "cells.ome.zarr"
    written = write_ome_zarr(
        path,
        zyx16,
        scale=(2.0, 0.25, 0.25),
        translate=(10.0, 0.0, 5.0),
        units=("um", "micrometer", "µm"),
        version=version,
    )
    assert written == path and path.is_dir()
    levels, meta = read_ome_zarr(path)
    assert meta["version"] == version
    assert meta["name"] == "cells"
    assert [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "micrometer" for a in meta["axes"])
    (ds,) = meta["datasets"]
    assert ds["coordinateTransformations"] == [
        {"type": "scale", "scale": [2.0, 0.25, 0.25]},
        {"type": "translation", "translation": [10.0, 0.0, 5.0]},
    ]
    np.testing.assert_array_equal(levels[0][:], zyx16)
    assert levels[0].dtype == np.uint16
    if version == "0.4":
        attrs = json.loads((path / ".zattrs").read_text())
        assert attrs["multiscales"][0]["version"] == "0.4"
        array = json.loads((path / "0" / ".zarray").read_text())
        assert array["dimension_separator"] == "/"
        assert array["compressor"]["id"] == "blosc"
    else:
        group = json.loads((path / "zarr.json").read_text())
        assert group["attributes"]["ome"]["version"] == "0.5"
        array = json.loads((path / "0" / "zarr.json").read_text())
        assert array["dimension_names"] == ["z", "y", "x"]
    node = _ome_zarr_py(path)
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
    np.testing.assert_array_equal(np.asarray(node.data[0]), zyx16)
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == [2.0, 0.25, 0.25]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_rgb_becomes_a_channel_axis_with_colours(tmp_path, version):
    rgb = data.astronaut()[:64, :80]
    path = tmp_path / "photo.ome.zarr"
    write_ome_zarr(path, rgb, version=version, scale=(0.5, 0.5), units=("mm", "mm"))
    levels, meta = read_ome_zarr(path)
    assert [a["name"] for a in meta["axes"]] == ["c", "y", "x"]
    assert meta["axes"][0] == {"name": "c", "type": "channel"}
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.5, 0.5]
    np.testing.assert_array_equal(np.moveaxis(levels[0][:], 0, -1), rgb)
    channels = meta["omero"]["channels"]
    assert [c["color"] for c in channels] == ["FF0000", "00FF00", "0000FF"]
    assert channels[0]["window"]["end"] == 255
    node = _ome_zarr_py(path)
    assert node.metadata.get("channel_names") == ["red", "green", "blue"]


def test_axes_are_put_in_ngff_order(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3, 2, 20, 24), dtype=np.uint8)  # z, t, y, x
    path = tmp_path / "zt.ome.zarr"
    write_ome_zarr(
        path,
        image,
        axes=("Z", "time", "y", "x"),
        scale=(3.0, 60.0, 1.0, 1.0),
        units=("nm", "s", "nm", "nm"),
    )
    levels, meta = read_ome_zarr(path)
    assert [a["name"] for a in meta["axes"]] == ["t", "z", "y", "x"]
    assert meta["axes"][0] == {"name": "t", "type": "time", "unit": "second"}
    assert meta["axes"][1]["unit"] == "nanometer"
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [60.0, 3.0, 1.0, 1.0]
    np.testing.assert_array_equal(levels[0][:], np.swapaxes(image, 0, 1))


def test_x_before_y_is_transposed(tmp_path):
    image = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    path = tmp_path / "xy.ome.zarr"
    write_ome_zarr(path, image, axes="xy")
    levels, _ = read_ome_zarr(path)
    np.testing.assert_array_equal(levels[0][:], image.T)


def test_five_dimensions_and_dask_input(tmp_path):
    da = pytest.importorskip("dask.array")
    image = da.random.randint(0, 4000, (2, 2, 3, 32, 40), chunks=(1, 1, 1, 32, 40)).astype(
        np.uint16
    )
    path = tmp_path / "five.ome.zarr"
    seen = []
    write_ome_zarr(path, image, progress=seen.append)
    levels, meta = read_ome_zarr(path)
    assert [a["name"] for a in meta["axes"]] == list("tczyx")
    np.testing.assert_array_equal(levels[0][:], image.compute())
    assert len(seen) == 12 and seen[-1] == 1.0
    assert "omero" in meta and len(meta["omero"]["channels"]) == 2


def test_large_planes_get_a_pyramid_of_means(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 60000, (301, 203), dtype=np.uint16)
    path = tmp_path / "big.ome.zarr"
    write_ome_zarr(path, image, smallest=64, scale=(0.5, 0.5), chunk=128)
    levels, meta = read_ome_zarr(path)
    assert [lv.shape for lv in levels] == [(301, 203), (151, 102), (76, 51), (38, 26)]
    scales = [d["coordinateTransformations"][0]["scale"] for d in meta["datasets"]]
    assert scales == [[0.5, 0.5], [1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    # Each mean sits at the centre of the level-0 pixels it averages.
    shifts = [d["coordinateTransformations"][1:] for d in meta["datasets"]]
    assert shifts == [
        [],
        *([{"type": "translation", "translation": [t, t]}] for t in (0.25, 0.75, 1.75)),
    ]
    assert levels[0].chunks == (128, 128)
    padded = np.pad(image, ((0, 1), (0, 1)), mode="edge").astype(np.float64)
    mean = (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]) / 4
    np.testing.assert_array_equal(levels[1][:], np.rint(mean).astype(np.uint16))
    node = _ome_zarr_py(path)
    assert [d.shape for d in node.data] == [lv.shape for lv in levels]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_svdz_chunks(tmp_path, zyx16, version):
    path = tmp_path / "lossy.ome.zarr"
    write_ome_zarr(
        path, zyx16, compression="svdz", method="pca", params={"step": 4}, version=version
    )
    levels, _ = read_ome_zarr(path)
    expected = np.stack([nsc.compress(p, "pca", step=4).image for p in zyx16])
    np.testing.assert_array_equal(levels[0][:], expected)
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert attrs["napari_svd_compress"]["codec"]["method"] == "pca"
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    lossless = tmp_path / "lossless.ome.zarr"
    write_ome_zarr(lossless, zyx16, version=version)
    assert size < 0.5 * sum(f.stat().st_size for f in lossless.rglob("*") if f.is_file())
    node = _ome_zarr_py(path)  # any reader with this package installed decodes the chunks
    np.testing.assert_array_equal(np.asarray(node.data[0]), expected)


def test_svdz_with_a_16_bit_baseline(tmp_path, zyx16):
    pytest.importorskip("imagecodecs")
    path = tmp_path / "jxl.ome.zarr"
    write_ome_zarr(path, zyx16, compression="svdz", method="jpegxl", params={"quality": 95})
    levels, _ = read_ome_zarr(path)
    back = levels[0][:]
    assert back.dtype == np.uint16 and len(np.unique(back)) > 1000


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_other_lossless_compressions(tmp_path, zyx16, compression):
    path = tmp_path / f"{compression}.ome.zarr"
    write_ome_zarr(path, zyx16, compression=compression, version="0.5")
    levels, _ = read_ome_zarr(path)
    np.testing.assert_array_equal(levels[0][:], zyx16)


class Exploding:
    """An array whose third plane cannot be read."""

    shape = (4, 32, 32)
    dtype = np.dtype(np.uint16)
    ndim = 3

    def __getitem__(self, key):
        if key[0] == 2:
            raise RuntimeError("disk on fire")
        return np.full((32, 32), key[0], np.uint16)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_write_leaves_nothing_and_keeps_the_old_store(tmp_path, zyx16):
    path = tmp_path / "x.ome.zarr"
    with pytest.raises(RuntimeError, match="fire"):
        write_ome_zarr(path, Exploding())
    assert not path.exists() and _leftovers(tmp_path) == []
    write_ome_zarr(path, zyx16)
    with pytest.raises(RuntimeError, match="fire"):
        write_ome_zarr(path, Exploding())
    levels, _ = read_ome_zarr(path)  # the old store, whole
    np.testing.assert_array_equal(levels[0][:], zyx16)
    assert _leftovers(tmp_path) == []
    write_ome_zarr(path, zyx16[:2])  # a successful overwrite replaces it
    assert read_ome_zarr(path)[0][0].shape == (2, 96, 128)
    assert _leftovers(tmp_path) == []


def test_temporary_stores_of_dead_writers_are_removed(tmp_path, zyx16):
    path = tmp_path / "y.ome.zarr"
    stale = tmp_path / f".y.ome.zarr.{ome_zarr._host()}-999999999.abc.tmp"
    (stale / "0").mkdir(parents=True)
    alive = tmp_path / f".y.ome.zarr.{ome_zarr._host()}-{os.getpid()}.abc.tmp"
    alive.mkdir()
    write_ome_zarr(path, zyx16[0])
    assert not stale.exists() and alive.exists()


def test_an_old_store_moved_aside_by_a_dead_writer_is_put_back(tmp_path, zyx16):
    path = tmp_path / "w.ome.zarr"
    write_ome_zarr(path, zyx16[0])
    old = tmp_path / f".w.ome.zarr.{ome_zarr._host()}-999999999.old.tmp"
    os.rename(path, old)  # what a writer killed between its two renames leaves
    ome_zarr._remove_stale(path)
    assert not old.exists()
    np.testing.assert_array_equal(read_ome_zarr(path)[0][0][:], zyx16[0])


def test_refuses_to_overwrite_when_asked(tmp_path, zyx16):
    path = tmp_path / "z.ome.zarr"
    write_ome_zarr(path, zyx16[0])
    with pytest.raises(FileExistsError):
        write_ome_zarr(path, zyx16[0], overwrite=False)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": np.zeros(5)}, ImageError),
        ({"data": np.zeros((2,) * 6)}, ImageError),
        ({"data": np.zeros((2, 2, 2, 2, 8, 8, 3), np.uint8)}, ImageError),
        ({"axes": "zyq"}, ParameterError),
        ({"axes": "tzy"}, ParameterError),
        ({"version": "0.3"}, ParameterError),
        ({"compression": "lzma"}, ParameterError),
        ({"scale": (1.0, 1.0)}, ParameterError),
        ({"scale": (1.0, -1.0, 1.0)}, ParameterError),
        ({"compression": "svdz", "method": "nope"}, ParameterError),
        ({"compression": "svdz", "method": "jpeg"}, ParameterError),  # 8-bit file, uint16
        ({"data": np.zeros((8, 8), np.complex64)}, ImageError),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, zyx16, kwargs, error):
    args = {"data": zyx16, **kwargs}
    path = tmp_path / "bad.ome.zarr"
    with pytest.raises(error):
        write_ome_zarr(path, **args)
    assert not path.exists() and _leftovers(tmp_path) == []


def test_units_outside_ngff_warn_and_pixels_are_silent(tmp_path, zyx16):
    path = tmp_path / "u.ome.zarr"
    with pytest.warns(UserWarning, match="furlong"):
        write_ome_zarr(path, zyx16[0], units=("furlong", "pixel"))
    _, meta = read_ome_zarr(path)
    assert all("unit" not in a for a in meta["axes"])


def test_read_refuses_what_is_not_ome_zarr(tmp_path):
    with pytest.raises(ImageError):
        read_ome_zarr(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(ImageError, match="multiscales"):
        read_ome_zarr(tmp_path / "plain.zarr")
