"""No stale bundle: saving a layer as .svdz writes its current pixels, never old bytes.

napari's "Duplicate Layer" copies ``metadata``, bundle bytes included; a duplicate that is
then edited must not be saved as the bundle of the layer it was copied from.  Also: the
plugin's metadata is JSON-safe and all under its own key, and a bundle larger than the
memory limit opens as a lazy pyramid that decodes only the tiles napari shows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_svd_compress as nsc
from napari_svd_compress._napari.writer import META_KEY, bundle_bytes_for

PLUGIN = "napari-svd-compress"

pytestmark = pytest.mark.gui


def _duplicate(viewer, layer):
    from napari.layers._layer_actions import _duplicate_layer

    viewer.layers.selection = {layer}
    _duplicate_layer(viewer.layers)
    return viewer.layers[viewer.layers.index(layer) + 1]


def _save(layer, path):
    import napari

    assert napari.save_layers(str(path), [layer], plugin=PLUGIN) == [str(path)]
    return path.read_bytes()


def _open(viewer, path):
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    return layer


def test_open_duplicate_edit_save_reopen(make_napari_viewer, tmp_path, rgb_image):
    original = nsc.compress(rgb_image, "svd", rank=9)
    src = tmp_path / "photo.svdz"
    src.write_bytes(original.bundle)
    viewer = make_napari_viewer()
    layer = _open(viewer, src)
    # The plugin's metadata: one key, JSON-safe (bytes as base64, no NaN/Infinity).
    assert set(layer.metadata) == {META_KEY}
    entry = layer.metadata[META_KEY]
    json.dumps(layer.metadata, allow_nan=False)
    assert entry["manifest"]["params"]["rank"] == 9
    assert entry["figures"]["bytes"] == len(original.bundle)

    # Unchanged, the layer is saved as the very file it came from.
    assert _save(layer, tmp_path / "same.svdz") == original.bundle

    # Duplicate (metadata copied), edit the duplicate in place, save, reopen.
    dup = _duplicate(viewer, layer)
    assert dup.metadata[META_KEY]["bundle"] == entry["bundle"]  # napari copied the bytes
    dup.data[10:40, 20:60] = [255, 0, 0]
    dup.refresh()
    saved = _save(dup, tmp_path / "edited.svdz")
    assert saved != original.bundle
    expected = nsc.compress(np.asarray(dup.data), "svd")  # the writer's default settings
    assert saved == expected.bundle
    back = _open(viewer, tmp_path / "edited.svdz")
    np.testing.assert_array_equal(np.asarray(back.data), expected.image)
    assert np.asarray(back.data)[25, 40, 0] > 200  # the edit survived

    # The source layer itself was not touched by editing its duplicate.
    assert _save(layer, tmp_path / "same-again.svdz") == original.bundle


def test_duplicate_given_new_data_is_compressed_again(make_napari_viewer, tmp_path, rgb_image):
    original = nsc.compress(rgb_image, "svd", rank=9)
    src = tmp_path / "photo.svdz"
    src.write_bytes(original.bundle)
    viewer = make_napari_viewer()
    layer = _open(viewer, src)
    dup = _duplicate(viewer, layer)
    assert _save(dup, tmp_path / "dup.svdz") == original.bundle  # same pixels: same file
    dup.data = rgb_image[::-1].copy()  # same shape and dtype, other pixels
    saved = _save(dup, tmp_path / "new.svdz")
    assert saved == nsc.compress(rgb_image[::-1], "svd").bundle


def test_widget_result_duplicated_edited_and_saved(make_napari_viewer, tmp_path, rgb_image):
    from napari.layers import Image

    from napari_svd_compress._napari.widgets.results import add_result

    viewer = make_napari_viewer()
    source = Image(rgb_image, name="photo", rgb=True)
    result = nsc.compress(rgb_image, "svd", rank=7)
    # The result layer as the Compress widget adds it (outside a viewer: what is checked
    # here is its metadata and the writer).
    run, _ = add_result(_LayerSink(), result, source)
    layer = viewer.add_layer(run.layer)
    assert set(layer.metadata) == {META_KEY}
    json.dumps(layer.metadata, allow_nan=False)
    assert layer.metadata[META_KEY]["figures"]["bytes"] == len(result.bundle)
    assert _save(layer, tmp_path / "same.svdz") == result.bundle
    dup = _duplicate(viewer, layer)
    dup.data[0, 0] ^= 1
    assert _save(dup, tmp_path / "edited.svdz") == nsc.compress(dup.data, "svd").bundle


class _LayerSink:
    """Stands in for a viewer in ``add_result``: keeps the layer it is given."""

    def add_layer(self, layer):
        return layer


def test_entry_without_a_proof_is_checked_by_decoding(rgb_image):
    # Entries of older versions kept the raw bytes without a digest: the writer decodes
    # them and compares with the layer's data before trusting them.
    result = nsc.compress(rgb_image, "svd", rank=7)
    meta = {META_KEY: {"bundle": result.bundle, "source_layer": "photo"}}
    assert bundle_bytes_for(result.image, meta) == result.bundle
    edited = result.image.copy()
    edited[0, 0] ^= 1
    assert bundle_bytes_for(edited, meta) is None
    assert bundle_bytes_for(result.image, {META_KEY: {"bundle": "not base64!"}}) is None
    assert bundle_bytes_for(result.image, {META_KEY: {"bundle": b"junk"}}) is None


def test_stack_opened_lazily_then_edited(make_napari_viewer, tmp_path):
    import dask.array as da

    rng = np.random.default_rng(0)
    base = np.linspace(0, 60000, 48 * 40).reshape(48, 40)
    stack = np.clip(np.stack([base + rng.normal(0, 300, base.shape) for _ in range(3)]), 0, 65535)
    original = nsc.compress(stack.astype(np.uint16), "svd", rank=5)
    src = tmp_path / "stack.svdz"
    src.write_bytes(original.bundle)
    viewer = make_napari_viewer()
    layer = _open(viewer, src)
    assert isinstance(layer.data, da.Array)
    json.dumps(layer.metadata, allow_nan=False)
    assert _save(layer, tmp_path / "same.svdz") == original.bundle  # no decode needed
    dup = _duplicate(viewer, layer)
    assert _save(dup, tmp_path / "dup.svdz") == original.bundle
    edited = np.asarray(dup.data).copy()
    edited[1] = 0
    dup.data = edited
    saved = _save(dup, tmp_path / "edited.svdz")
    assert saved == nsc.compress(edited, "svd").bundle
    dask_dup = _duplicate(viewer, layer)
    # A dask edit is a new graph: the proof (the graph's name) no longer holds.
    dask_dup.data = da.where(dask_dup.data > 30000, 0, dask_dup.data).astype(np.uint16)
    assert _save(dask_dup, tmp_path / "dask-edit.svdz") != original.bundle


def test_bundle_beyond_memory_opens_as_a_lazy_pyramid(
    make_napari_viewer, tmp_path, monkeypatch, qtbot
):
    import dask.array as da

    from napari_svd_compress import api

    image = np.tile(np.linspace(0, 255, 3000, dtype=np.float32), (2000, 1)).astype(np.uint8)
    result = nsc.compress(image, "svd", rank=2)
    src = tmp_path / "huge.svdz"
    src.write_bytes(result.bundle)
    # Pretend the machine has 64 MiB: 2000 x 3000 then needs more than the limit.
    monkeypatch.setattr(api, "default_max_bytes", lambda: 32 << 20)
    parts = []
    real_part = api._LazyImage._part

    def counting_part(self, index, r0, r1, c0, c1):
        parts.append((self.step, r1 - r0, c1 - c0))
        return real_part(self, index, r0, r1, c0, c1)

    monkeypatch.setattr(api._LazyImage, "_part", counting_part)
    viewer = make_napari_viewer()
    layer = _open(viewer, src)
    assert layer.multiscale
    levels = list(layer.data)
    assert all(isinstance(lv, da.Array) for lv in levels)
    assert levels[0].shape == image.shape and len(levels) >= 2
    qtbot.wait(500)  # let napari draw what it shows
    decoded = sum(r * c for step, r, c in parts if step == 1)
    assert decoded < image.size  # level 0 was never decoded whole
    json.dumps(layer.metadata, allow_nan=False)
    # Saved unchanged: the original bytes, proven by the dask graph, with no decode.
    parts.clear()
    assert _save(layer, tmp_path / "same.svdz") == result.bundle
    assert parts == []


def test_metadata_is_json_safe_even_for_a_manifest_with_nan(tmp_path, rgb_image):
    import io
    import zipfile

    from napari_svd_compress._napari.reader import read_bundle_layers

    good = nsc.compress(rgb_image, "svd", rank=4).bundle
    src = zipfile.ZipFile(io.BytesIO(good))
    manifest = json.loads(src.read("manifest.json"))
    manifest["params"]["weird"] = float("nan")
    manifest["figures"]["psnr"] = float("inf")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))  # NaN, Infinity: Python's JSON
        zf.writestr("svd", src.read("svd"))
    path = tmp_path / "nan.svdz"
    path.write_bytes(buf.getvalue())
    ((_, kwargs, _),) = read_bundle_layers(str(path))
    text = json.dumps(kwargs["metadata"], allow_nan=False)
    assert '"weird":null' in text.replace(" ", "") and '"psnr":"inf"' in text.replace(" ", "")
