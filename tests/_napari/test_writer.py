"""The napari writers: JPEG and .svdz, through napari's own save path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import napari_svd_compress as nsc
from napari_svd_compress._napari.writer import write_jpeg, write_svdz

PLUGIN = "napari-svd-compress"


def _read_jpeg(path):
    with Image.open(path) as im:
        assert im.format == "JPEG"
        return np.asarray(im)


def _only_file(folder):
    # Atomic writes leave no temporary file behind.
    return sorted(p.name for p in folder.iterdir())


def _pil_jpeg(image, quality):
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf))


@pytest.mark.gui
def test_jpeg_rgb_and_gray(make_napari_viewer, tmp_path, rgb_image):
    import napari

    viewer = make_napari_viewer()
    rgb = viewer.add_image(rgb_image, name="rgb")
    gray = viewer.add_image(rgb_image[..., 1], name="gray")
    written = napari.save_layers(str(tmp_path / "rgb.jpg"), [rgb], plugin=PLUGIN)
    assert written == [str(tmp_path / "rgb.jpg")]
    back = _read_jpeg(tmp_path / "rgb.jpg")
    assert back.shape == rgb_image.shape
    np.testing.assert_array_equal(back, _pil_jpeg(rgb_image, 95))  # quality 95
    napari.save_layers(str(tmp_path / "gray.jpg"), [gray], plugin=PLUGIN)
    back = _read_jpeg(tmp_path / "gray.jpg")
    np.testing.assert_array_equal(back, _pil_jpeg(rgb_image[..., 1], 95))
    assert _only_file(tmp_path) == ["gray.jpg", "rgb.jpg"]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_jpeg_scales_by_contrast_limits(tmp_path, dtype):
    image = np.tile(np.linspace(0, 4000, 64, dtype=np.float64), (32, 1)).astype(dtype)
    path = tmp_path / "scaled.jpg"
    assert write_jpeg(str(path), image, {"rgb": False, "contrast_limits": [1000, 3000]}) == [
        str(path)
    ]
    back = _read_jpeg(path).astype(int)
    below = image < 900
    above = image > 3100
    assert back[below].max() <= 3
    assert back[above].min() >= 252
    middle = np.abs(image - 2000) < 40
    assert np.all(np.abs(back[middle] - 127) <= 8)


def test_jpeg_drops_alpha_with_a_warning(tmp_path, rgb_image):
    rgba = np.dstack([rgb_image, np.full(rgb_image.shape[:2], 200, np.uint8)])
    path = tmp_path / "alpha.jpg"
    with pytest.warns(UserWarning, match="alpha"):
        write_jpeg(str(path), rgba, {"rgb": True, "contrast_limits": [0, 255]})
    assert _read_jpeg(path).shape == rgb_image.shape


def test_jpeg_refuses_stacks(tmp_path, rgb_image):
    with pytest.raises(nsc.ImageError, match="svdz"):
        write_jpeg(str(tmp_path / "s.jpg"), np.stack([rgb_image[..., 0]] * 3), {"rgb": False})


@pytest.mark.gui
def test_jpeg_multiscale_uses_full_resolution(make_napari_viewer, tmp_path, rgb_image):
    viewer = make_napari_viewer()
    levels = [rgb_image, rgb_image[::2, ::2]]
    layer = viewer.add_image(levels, multiscale=True, rgb=True, name="pyramid")
    import napari

    napari.save_layers(str(tmp_path / "p.jpg"), [layer], plugin=PLUGIN)
    assert _read_jpeg(tmp_path / "p.jpg").shape == rgb_image.shape


@pytest.mark.gui
def test_svdz_of_a_plain_layer_uses_default_svd(make_napari_viewer, tmp_path, rgb_image):
    import napari

    viewer = make_napari_viewer()
    layer = viewer.add_image(rgb_image, name="plain")
    path = tmp_path / "plain.svdz"
    assert napari.save_layers(str(path), [layer], plugin=PLUGIN) == [str(path)]
    expected = nsc.compress(rgb_image, "svd")
    assert path.read_bytes() == expected.bundle  # deterministic: same settings, same bytes
    (back,) = viewer.open(str(path), plugin=PLUGIN)
    assert back.metadata["svd_compress"]["manifest"]["params"]["rank"] == 50
    np.testing.assert_array_equal(back.data, expected.image)


@pytest.mark.gui
def test_svdz_keeps_the_measured_bundle(make_napari_viewer, tmp_path, rgb_image):
    import napari

    result = nsc.compress(rgb_image, "svd", rank=7)
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        result.image, name="made", metadata={"svd_compress": {"bundle": result.bundle}}
    )
    path = tmp_path / "made.svdz"
    napari.save_layers(str(path), [layer], plugin=PLUGIN)
    assert path.read_bytes() == result.bundle
    assert path.stat().st_size == result.nbytes


def test_svdz_ignores_a_stale_bundle(tmp_path, rgb_image):
    result = nsc.compress(rgb_image, "svd", rank=7)
    other = rgb_image[:64, :64]
    path = tmp_path / "other.svdz"
    write_svdz(
        str(path), other, {"rgb": True, "metadata": {"svd_compress": {"bundle": result.bundle}}}
    )
    assert path.read_bytes() != result.bundle
    assert nsc.decompress(path).shape == other.shape


def test_svdz_of_a_dask_stack(tmp_path):
    import dask.array as da

    planes = np.stack(
        [np.outer(np.arange(40), np.arange(30) + i).astype(np.uint16) for i in range(4)]
    )
    lazy = da.from_array(planes, chunks=(1, 40, 30))
    path = tmp_path / "stack.svdz"
    write_svdz(str(path), lazy, {"rgb": False, "metadata": {}})
    back = nsc.decompress(path)
    assert back.shape == planes.shape and back.dtype == np.uint16
