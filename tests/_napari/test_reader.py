"""The napari readers: camera RAW, .svdz bundles and legacy pickles."""

from __future__ import annotations

import base64
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from napari_svd_compress import compress
from napari_svd_compress._napari.reader import (
    NO_LAYERS,
    get_bundle_reader,
    get_legacy_reader,
    get_raw_reader,
    read_raw_preview_layers,
)

PLUGIN = "napari-svd-compress"


# --- get_reader: cheap refusals ---------------------------------------------------------


def test_png_renamed_nef_is_refused(tmp_path, rgb_image):
    path = tmp_path / "photo.nef"
    Image.fromarray(rgb_image).save(path, format="PNG")
    assert get_raw_reader(str(path)) is None


@pytest.mark.parametrize("name", ["missing.nef", "folder.dng"])
def test_missing_files_and_folders_are_refused(tmp_path, name):
    if name.startswith("folder"):
        (tmp_path / name).mkdir()
    assert get_raw_reader(str(tmp_path / name)) is None
    assert get_bundle_reader(str(tmp_path / "missing.svdz")) is None


def test_raw_reader_accepts_upper_case_and_single_item_lists(tmp_path, dng_path):
    upper = dng_path.rename(tmp_path / "SYNTH.DNG")
    assert get_raw_reader(str(upper)) is not None
    assert get_raw_reader([str(upper)]) is not None
    assert get_raw_reader([str(upper), str(upper)]) is None


def test_non_pickle_pkl_is_refused(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_text("hello")
    assert get_legacy_reader(str(path)) is None


# --- through the viewer -----------------------------------------------------------------


@pytest.mark.gui
def test_open_dng(make_napari_viewer, dng_path, rgb_image):
    viewer = make_napari_viewer()
    layers = viewer.open(str(dng_path), plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.name == "synthetic"
    assert layer.rgb
    assert layer.data.shape == rgb_image.shape
    assert layer.data.dtype == np.uint8
    raw_meta = layer.metadata["svd_compress"]["raw"]  # under the plugin's key, JSON-safe
    json.dumps(layer.metadata, allow_nan=False)
    assert raw_meta["settings"]["output_bits"] == 8
    assert "camera" in raw_meta
    # The synthetic sensor reproduces the colours roughly (demosaicing, auto-brightening).
    corr = np.corrcoef(layer.data.astype(float).ravel(), rgb_image.astype(float).ravel())[0, 1]
    assert corr > 0.8


def test_raw_preview_layers_are_half_size(dng_path, rgb_image):
    [(data, kwargs, kind)] = read_raw_preview_layers(str(dng_path))
    assert kind == "image" and kwargs["rgb"] and kwargs["name"] == "synthetic (half size)"
    assert kwargs["metadata"]["svd_compress"]["raw"]["settings"]["half_size"] is True
    h, w = rgb_image.shape[:2]
    assert data.shape == (h // 2, w // 2, 3) and data.dtype == np.uint8


@pytest.mark.gui
def test_open_dng_is_always_the_full_decode_and_the_preview_is_a_menu_item(
    make_napari_viewer, dng_path, rgb_image, notifications
):
    from napari_svd_compress._napari.menus import open_raw_preview

    viewer = make_napari_viewer()
    for _ in range(3):  # one RAW reader: napari has no choice to make
        [full] = viewer.open(str(dng_path), plugin=PLUGIN)
        assert full.data.shape == rgb_image.shape and full.name.startswith("synthetic")
    [half] = open_raw_preview(viewer, str(dng_path))
    assert half in viewer.layers and half.name == "synthetic (half size)"
    assert half.data.shape == (rgb_image.shape[0] // 2, rgb_image.shape[1] // 2, 3)
    broken = dng_path.with_name("broken.dng")
    broken.write_bytes(dng_path.read_bytes()[:16] + b"\x00" * 64)
    assert open_raw_preview(viewer, str(broken)) == []
    assert "broken.dng" in str(notifications.errors()[-1].message)


@pytest.mark.gui
def test_corrupt_raw_gives_an_error_notification(make_napari_viewer, dng_path, notifications):
    data = dng_path.read_bytes()
    broken = dng_path.with_name("broken.dng")
    broken.write_bytes(data[:16] + b"\x00" * 64)  # TIFF signature, nothing behind it
    assert get_raw_reader(str(broken)) is not None  # looks like RAW from its first bytes
    viewer = make_napari_viewer()
    layers = viewer.open(str(broken), plugin=PLUGIN)  # must not raise
    assert layers == []
    assert len(viewer.layers) == 0
    errors = notifications.errors()
    assert errors, notifications.messages()
    assert "broken.dng" in str(errors[-1].message)


@pytest.mark.gui
def test_open_bundle(make_napari_viewer, tmp_path, rgb_image):
    result = compress(rgb_image, "svd", rank=12)
    path = tmp_path / "photo.svdz"
    path.write_bytes(result.bundle)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.name == "photo"
    assert layer.rgb
    np.testing.assert_array_equal(np.asarray(layer.data), result.image)
    meta = layer.metadata["svd_compress"]  # everything under the plugin's key, JSON-safe
    json.dumps(layer.metadata, allow_nan=False)
    assert meta["manifest"]["codec"] == "svd"
    assert meta["manifest"]["params"]["rank"] == 12
    assert meta["figures"]["bytes"] == len(result.bundle)
    assert meta["figures"]["psnr"] == pytest.approx(result.psnr)
    assert base64.b64decode(meta["bundle"]) == result.bundle


@pytest.mark.gui
def test_open_bundle_stack_is_lazy(make_napari_viewer, tmp_path):
    rng = np.random.default_rng(0)
    base = np.linspace(0, 60000, 64 * 48).reshape(64, 48)
    stack = np.stack([base + rng.normal(0, 300, base.shape) for _ in range(3)])
    stack = np.clip(stack, 0, 65535).astype(np.uint16)
    result = compress(stack, "svd", rank=6)
    path = tmp_path / "stack.svdz"
    path.write_bytes(result.bundle)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    import dask.array as da

    assert isinstance(layer.data, da.Array)
    assert layer.data.shape == stack.shape
    np.testing.assert_array_equal(np.asarray(layer.data[2]), result.image[2])


def _hostile_bundle() -> bytes:
    manifest = {
        "format": "svdz",
        "version": 1,
        "codec": "svd",
        "params": {},
        "shape": [1 << 20, 1 << 20],  # a terapixel image from a few hundred bytes
        "dtype": "uint8",
        "rgb": False,
        "alpha": False,
        "value_range": [0, 255],
        "planes": [{}],
        "figures": {},
        "payloads": {},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
    return buf.getvalue()


@pytest.mark.gui
@pytest.mark.parametrize(
    "content", [_hostile_bundle(), b"not a zip at all", b"PK\x03\x04truncated"]
)
def test_broken_bundle_gives_a_clear_error(make_napari_viewer, tmp_path, notifications, content):
    path = tmp_path / "evil.svdz"
    path.write_bytes(content)
    viewer = make_napari_viewer()
    assert viewer.open(str(path), plugin=PLUGIN) == []
    assert len(viewer.layers) == 0
    errors = notifications.errors()
    assert errors and "evil.svdz" in str(errors[-1].message)


# --- legacy pickles ---------------------------------------------------------------------


@pytest.mark.gui
def test_open_legacy_pickle(make_napari_viewer, tmp_path):
    from skimage import data

    camera = data.camera()[::8, ::8].astype(np.float64)  # 64 x 64
    u, s, vt = np.linalg.svd(camera, full_matrices=False)
    entries = [[u[:, :10], s[:10], vt[:10]]]
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps(entries, protocol=2))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.name == "old"
    assert layer.data.shape == (64, 64)
    expected = np.clip(np.rint((u[:, :10] * s[:10]) @ vt[:10]), 0, 255)
    assert np.abs(layer.data.astype(float) - expected).max() <= 1


class _Exploit:
    """Unpickling this would run ``exec`` on the attacker's code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        code = f"open({self.marker!r}, 'w').write('pwned')"
        return (exec, (code,))


@pytest.mark.gui
def test_hostile_pickle_is_refused_and_does_not_run(make_napari_viewer, tmp_path, notifications):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([_Exploit(marker)], protocol=4))
    assert get_legacy_reader(str(path)) is not None  # it starts like a pickle
    viewer = make_napari_viewer()
    assert viewer.open(str(path), plugin=PLUGIN) == []
    assert not marker.exists()
    assert len(viewer.layers) == 0
    errors = notifications.errors()
    assert errors and "refused" in str(errors[-1].message)


def test_reader_functions_return_the_null_sentinel_on_errors(tmp_path):
    from napari_svd_compress._napari.reader import read_bundle_layers

    path = tmp_path / "x.svdz"
    path.write_bytes(b"junk")
    assert read_bundle_layers(str(path)) == NO_LAYERS


@pytest.mark.parametrize("method", ["jpegxl", "jpeg2000"])
def test_open_16_bit_baseline_files(make_napari_viewer, tmp_path, method, notifications):
    # A uint16 image with more than 8 bits of levels opens as uint16 at full precision.
    ramp = np.linspace(0, 65535, 96 * 128).reshape(96, 128).astype(np.uint16)
    result = compress(ramp, method, **({"lossless": True} if method == "jpegxl" else {"psnr": 0}))
    path = tmp_path / ("ramp.jxl" if method == "jpegxl" else "ramp.jp2")
    path.write_bytes(result.bundle)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.dtype == np.uint16 and layer.name == "ramp"
    np.testing.assert_array_equal(layer.data, result.image)
    assert len(np.unique(layer.data)) > 256
    json.dumps(layer.metadata, allow_nan=False)
    broken = tmp_path / ("broken" + path.suffix)
    broken.write_bytes(result.bundle[: len(result.bundle) // 2])
    assert viewer.open(str(broken), plugin=PLUGIN) == []
    assert any("broken" in str(m.message) for m in notifications.errors())
