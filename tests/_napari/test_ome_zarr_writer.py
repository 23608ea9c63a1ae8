"""The napari OME-Zarr writers (lossless, and svdz chunks with the Compress widget's
settings) and the JPEG XL / JPEG 2000 reader, through napari's own save and open paths."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

pytest.importorskip("zarr")
pytest.importorskip("numcodecs")

import napari_svd_compress as nsc
from napari_svd_compress._napari.ome_zarr_writer import (
    layer_options,
    widget_settings,
    write_ome_zarr,
    write_ome_zarr_svdz,
)
from napari_svd_compress.fileio.ome_zarr import read_ome_zarr

PLUGIN = "napari-svd-compress"


@pytest.fixture(scope="module")
def zyx16() -> np.ndarray:
    cam = data.camera()[:96, :128].astype(np.float32) / 255
    return np.stack([np.round(cam * 60000 + 400 * z) for z in range(3)]).astype(np.uint16)


def _writer(display_name: str):
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return next(w for w in manifest.contributions.writers if w.display_name == display_name)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.gui
def test_save_and_open_from_napari(make_napari_viewer, tmp_path, zyx16):
    import napari

    viewer = make_napari_viewer()
    layer = viewer.add_image(
        zyx16,
        name="cells",
        scale=(2.0, 0.25, 0.25),
        translate=(0.0, 10.0, 20.0),
        units=("um", "um", "um"),
        axis_labels=("z", "y", "x"),
        contrast_limits=(0, 60000),
    )
    path = tmp_path / "cells.ome.zarr"
    written = napari.save_layers(str(path), [layer], plugin=PLUGIN)
    assert written == [str(path)]
    assert _leftovers(tmp_path) == []
    levels, meta = read_ome_zarr(path)
    assert meta["version"] == "0.4" and meta["name"] == "cells"
    assert [(a["name"], a.get("unit")) for a in meta["axes"]] == [
        ("z", "micrometer"),
        ("y", "micrometer"),
        ("x", "micrometer"),
    ]
    transforms = meta["datasets"][0]["coordinateTransformations"]
    assert transforms[0]["scale"] == [2.0, 0.25, 0.25]
    assert transforms[1]["translation"] == [0.0, 10.0, 20.0]
    np.testing.assert_array_equal(levels[0][:], zyx16)
    # napari opens the store again (its built-in zarr reader): level 0 is the layer.
    opened = viewer.open(str(path), plugin="napari")
    (back,) = opened
    data0 = back.data[0] if back.multiscale else back.data
    np.testing.assert_array_equal(np.asarray(data0), zyx16)


@pytest.mark.gui
def test_rgb_layer_and_pyramid(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    photo = np.tile(data.astronaut(), (3, 3, 1))  # 1536 x 1536: gets a pyramid
    layer = viewer.add_image(photo, name="photo", rgb=True)
    path = tmp_path / "photo.ome.zarr"
    napari.save_layers(str(path), [layer], plugin=PLUGIN)
    levels, meta = read_ome_zarr(path)
    assert [a["name"] for a in meta["axes"]] == ["c", "y", "x"]
    assert [lv.shape for lv in levels] == [(3, 1536, 1536), (3, 768, 768)]
    np.testing.assert_array_equal(np.moveaxis(levels[0][:], 0, -1), photo)
    assert [c["color"] for c in meta["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]


@pytest.mark.gui
def test_svdz_writer_uses_the_compress_widgets_settings(make_napari_viewer, tmp_path, zyx16):
    viewer = make_napari_viewer()
    layer = viewer.add_image(zyx16, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compress")
    widget.set_method("pca")
    widget.set_param("step", 3.0)
    assert widget_settings()[0] == "pca"
    path = tmp_path / "lossy.ome.zarr"
    writer = _writer("OME-Zarr, svdz chunks (Compress widget's method)")
    written = viewer.layers.save(str(path), selected=False, plugin=PLUGIN, _writer=writer)
    assert written == [str(path)]
    levels, _ = read_ome_zarr(path)
    expected = np.stack([nsc.compress(p, "pca", **widget.current_params()).image for p in zyx16])
    np.testing.assert_array_equal(levels[0][:], expected)
    assert layer.data is zyx16  # the layer is not touched


def test_settings_without_a_widget_come_from_the_layer_or_default():
    entry = {"svd_compress": {"manifest": {"codec": "svd", "params": {"rank": 7}}}}
    assert widget_settings(entry) == ("svd", {"rank": 7})
    assert widget_settings({}) == ("pca", {})
    assert widget_settings({"svd_compress": {"manifest": {"codec": "gone"}}}) == ("pca", {})


def test_writer_functions_without_a_viewer(tmp_path, zyx16):
    attributes = {
        "name": "z",
        "rgb": False,
        "scale": (1.0, 0.5, 0.5),
        "translate": (0.0, 0.0, 0.0),
        "units": ("pixel", "pixel", "pixel"),
        "axis_labels": ("axis -3", "axis -2", "axis -1"),  # napari's default names
        "multiscale": False,
        "metadata": {"svd_compress": {"manifest": {"codec": "pca", "params": {"step": 5}}}},
    }
    options = layer_options(zyx16, attributes)
    assert "axes" not in options and options["scale"] == [1.0, 0.5, 0.5]
    path = tmp_path / "a.ome.zarr"
    assert write_ome_zarr(str(path), zyx16, attributes) == [str(path)]
    np.testing.assert_array_equal(read_ome_zarr(path)[0][0][:], zyx16)
    path = tmp_path / "b.ome.zarr"
    write_ome_zarr_svdz(str(path), [zyx16, zyx16[:, ::2, ::2]], {**attributes, "multiscale": True})
    expected = np.stack([nsc.compress(p, "pca", step=5).image for p in zyx16])
    np.testing.assert_array_equal(read_ome_zarr(path)[0][0][:], expected)


@pytest.mark.gui
def test_open_16_bit_jpeg_xl_and_jpeg_2000(make_napari_viewer, tmp_path, zyx16):
    pytest.importorskip("imagecodecs")
    viewer = make_napari_viewer()
    for method, ext in (("jpegxl", "jxl"), ("jpeg2000", "jp2"), ("htj2k", "j2k")):
        r = nsc.compress(zyx16[0], method)
        path = tmp_path / f"plane.{ext}"
        path.write_bytes(r.bundle)
        (layer,) = viewer.open(str(path), plugin=PLUGIN)
        assert layer.data.dtype == np.uint16
        np.testing.assert_array_equal(layer.data, r.image)


@pytest.mark.gui
def test_corrupt_jxl_gives_an_error_notification(make_napari_viewer, tmp_path, notifications):
    pytest.importorskip("imagecodecs")
    viewer = make_napari_viewer()
    path = tmp_path / "bad.jxl"
    path.write_bytes(b"\xff\x0a" + b"\x13" * 40)
    viewer.open(str(path), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    assert any("bad.jxl" in m for m in notifications.messages())
