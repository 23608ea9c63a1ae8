"""The numcodecs codec "svdz": alone, and inside zarr arrays of format 2 and 3."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from skimage import data

numcodecs = pytest.importorskip("numcodecs")
zarr = pytest.importorskip("zarr")

import napari_svd_compress as nsc  # noqa: E402
from napari_svd_compress.errors import (  # noqa: E402
    BundleContentError,
    BundleError,
    ImageError,
    ParameterError,
)
from napari_svd_compress.fileio import zarr_codec  # noqa: E402
from napari_svd_compress.fileio.zarr_codec import SVDZ, zarr3_codec  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _registered():
    # The entry points register the codec in an installed package; a source tree may not
    # have them.
    zarr_codec.register()


@pytest.fixture(scope="module")
def stack16() -> np.ndarray:
    """Three 128 x 160 uint16 planes with thousands of levels."""
    cam = data.camera()[::4, ::3][:128, :160].astype(np.float32) / 255
    planes = [cam, cam[::-1], cam[:, ::-1]]
    return np.stack([np.round(p * 60000 + 1000 + 37 * i) for i, p in enumerate(planes)]).astype(
        np.uint16
    )


def test_config_names_the_method_and_every_parameter():
    codec = numcodecs.get_codec({"id": "svdz", "method": "pca", "step": 8})
    assert isinstance(codec, SVDZ)
    config = codec.get_config()
    assert config["id"] == "svdz" and config["method"] == "pca" and config["step"] == 8.0
    assert set(nsc.get_method("pca").resolve({})) >= set(config) - {"id", "method"}
    assert json.loads(json.dumps(config)) == config
    assert numcodecs.get_codec(config) == codec
    assert "pca" in repr(codec)


def test_bad_configuration_is_a_parameter_error():
    with pytest.raises(ParameterError):
        SVDZ(method="nope")
    with pytest.raises(ParameterError):
        SVDZ(method="pca", step=-1)
    with pytest.raises(ParameterError):
        SVDZ(method="pca", rank=3)


@pytest.mark.parametrize("method", ["pca", "svd", "kmeans"])
def test_round_trip_alone(stack16, method):
    codec = SVDZ(method=method)
    blob = codec.encode(stack16)
    assert blob[:4] == b"PK\x03\x04"
    back = codec.decode(blob)
    assert back.dtype == np.uint16 and back.shape == stack16.shape
    np.testing.assert_array_equal(back, nsc.compress(stack16, method).image)
    out = np.empty_like(stack16)
    assert codec.decode(blob, out=out) is out
    np.testing.assert_array_equal(out, back)
    raw = np.empty(stack16.nbytes, np.uint8)
    codec.decode(blob, out=raw)
    np.testing.assert_array_equal(raw.view(np.uint16).reshape(stack16.shape), back)
    with pytest.raises(BundleContentError):
        codec.decode(blob, out=np.empty(5, np.uint16))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_round_trip_keeps_any_dtype(dtype):
    plane = (data.camera()[:64, :96].astype(np.float32) - 100).astype(dtype)
    back = SVDZ(method="pca", step=2).decode(SVDZ(method="pca", step=2).encode(plane))
    assert back.dtype == plane.dtype and back.shape == plane.shape
    np.testing.assert_array_equal(back, nsc.compress(plane, "pca", step=2).image)


def test_rgb_chunks():
    image = data.astronaut()[:96, :128]
    codec = SVDZ(method="pca", rgb=True)
    back = codec.decode(codec.encode(image))
    assert back.shape == image.shape
    assert codec.get_config()["rgb"] is True
    # rgb=False: (96, 128, 3) is a stack of 96 grey planes of 128 x 3.
    grey = SVDZ(method="pca", rgb=False)
    assert grey.decode(grey.encode(image)).shape == image.shape


def test_native_methods_store_one_plane_per_chunk(stack16):
    pytest.importorskip("imagecodecs")
    codec = SVDZ(method="jpegxl", quality=95)
    blob = codec.encode(stack16[:1])
    assert blob[:2] == b"\xff\x0a"  # a plain .jxl file
    back = codec.decode(blob)
    assert back.dtype == np.uint16 and back.shape == stack16.shape[1:]
    with pytest.raises(ImageError, match="one image file per chunk"):
        codec.encode(stack16)
    with pytest.raises(ParameterError, match="uint8"):
        SVDZ(method="jpeg").encode(stack16[:1])
    with pytest.raises(ParameterError):
        SVDZ(method="jpegxl").encode(stack16[:1].astype(np.float32))


def test_flat_buffers_and_unsupported_dtypes_are_refused():
    with pytest.raises(ImageError, match="shape"):
        SVDZ().encode(b"\x00" * 64)
    with pytest.raises(ParameterError):
        SVDZ().encode(np.zeros((8, 8), np.complex64))


@pytest.mark.parametrize(
    "blob",
    [b"", b"garbage", b"PK\x03\x04" + b"\x00" * 60, b"\xff\xd8\xff\xe0" + b"\x00" * 40],
)
def test_a_chunk_that_is_not_a_bundle_is_a_bundle_error(blob):
    with pytest.raises(BundleError):
        SVDZ().decode(blob)


def _store(tmp_path, name):
    return str(tmp_path / name)


def test_inside_a_zarr_format_2_array(tmp_path, stack16):
    path = _store(tmp_path, "a.zarr")
    z = zarr.create_array(
        path,
        shape=stack16.shape,
        chunks=(1, 64, 160),
        dtype=stack16.dtype,
        zarr_format=2,
        compressors=SVDZ(method="pca", step=4),
    )
    z[:] = stack16
    meta = json.loads((tmp_path / "a.zarr" / ".zarray").read_text())
    assert meta["compressor"]["id"] == "svdz" and meta["compressor"]["method"] == "pca"
    back = zarr.open_array(path, mode="r")[:]
    assert back.dtype == np.uint16 and back.shape == stack16.shape
    assert np.abs(back.astype(np.int64) - stack16).mean() < 300
    # Each chunk is a bundle that the library opens on its own.
    chunk = (tmp_path / "a.zarr" / "0.1.0").read_bytes()
    np.testing.assert_array_equal(nsc.decompress(chunk), back[0:1, 64:128])
    # A chunk replaced by something else: our error, through zarr.
    (tmp_path / "a.zarr" / "1.0.0").write_bytes(b"not a bundle")
    with pytest.raises(BundleError):
        zarr.open_array(path, mode="r")[1]


def test_inside_a_zarr_format_3_array(tmp_path, stack16):
    path = _store(tmp_path, "b.zarr")
    z = zarr.create_array(
        path,
        shape=stack16.shape,
        chunks=(1, 128, 160),
        dtype=stack16.dtype,
        zarr_format=3,
        serializer=zarr3_codec("pca", step=4),
        compressors=None,
    )
    z[:] = stack16
    meta = json.loads((tmp_path / "b.zarr" / "zarr.json").read_text())
    (codec,) = meta["codecs"]
    assert codec["name"] == "numcodecs.svdz"
    assert codec["configuration"]["method"] == "pca" and codec["configuration"]["step"] == 4.0
    back = zarr.open_array(path, mode="r")[:]
    expected = nsc.compress(stack16[0], "pca", step=4).image
    np.testing.assert_array_equal(back[0], expected)
    (tmp_path / "b.zarr" / "c" / "2" / "0" / "0").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(BundleError):
        zarr.open_array(path, mode="r")[2]


def test_zarr_3_refuses_dtypes_the_method_cannot_store(tmp_path):
    pytest.importorskip("imagecodecs")
    with pytest.raises(ParameterError):
        zarr.create_array(
            _store(tmp_path, "c.zarr"),
            shape=(64, 64),
            chunks=(64, 64),
            dtype="float32",
            zarr_format=3,
            serializer=zarr3_codec("jpegxl"),
            compressors=None,
        )


def test_zarr_3_codec_round_trips_its_metadata():
    cls = zarr_codec.SVDZCodec
    codec = zarr3_codec("svd", rank=12)
    assert isinstance(codec, cls)
    again = cls.from_dict(codec.to_dict())
    assert again.to_dict() == codec.to_dict()
    with pytest.raises(ParameterError):
        cls.from_dict({"name": "numcodecs.zstd", "configuration": {}})


def test_entry_points_are_declared():
    from importlib.metadata import entry_points

    names = {e.name: e.value for e in entry_points(group="numcodecs.codecs")}
    if "svdz" not in names:
        pytest.skip("the package is not installed with its entry points")
    assert names["svdz"].endswith("zarr_codec:SVDZ")
    zarr3 = {e.name: e.value for e in entry_points(group="zarr.codecs")}
    assert zarr3["numcodecs.svdz"].endswith("zarr_codec:SVDZCodec")


def test_no_warnings_on_the_happy_path(tmp_path, stack16):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codec = SVDZ(method="pca")
        codec.decode(codec.encode(stack16[0]))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_another_program_reads_the_array_through_the_entry_points(tmp_path, stack16, zarr_format):
    """A program that imports only zarr finds the codec (the package being installed)."""
    import os
    import subprocess
    import sys
    from importlib.metadata import entry_points

    group = "numcodecs.codecs" if zarr_format == 2 else "zarr.codecs"
    if not any("svdz" in e.name for e in entry_points(group=group)):
        pytest.skip("the package is not installed with its entry points")
    path = tmp_path / "a.zarr"
    codec = (
        {"compressors": SVDZ(method="pca", step=4)}
        if zarr_format == 2
        else {"serializer": zarr3_codec("pca", step=4), "compressors": None}
    )
    z = zarr.create_array(
        str(path),
        shape=stack16.shape,
        chunks=(1, *stack16.shape[1:]),
        dtype=stack16.dtype,
        zarr_format=zarr_format,
        **codec,
    )
    z[:] = stack16
    script = (
        "import sys, numpy, zarr\n"
        "a = zarr.open_array(sys.argv[1], mode='r')[:]\n"
        "numpy.save(sys.argv[2], a)\n"
        "print('napari' in sys.modules, 'qtpy' in sys.modules)\n"
    )
    out = tmp_path / "back.npy"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run(
        [sys.executable, "-c", script, str(path), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False"]  # the library needs no napari or Qt
    expected = np.stack([nsc.compress(p, "pca", step=4).image for p in stack16])
    np.testing.assert_array_equal(np.load(out), expected)
