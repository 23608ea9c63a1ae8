"""PCA codec: rows and blocks modes, rank rules, and bundle validation."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from skimage import data, transform

import napari_svd_compress as nsc
from napari_svd_compress.errors import BundleError, ParameterError


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    # 100 x 130: not a multiple of the block size, so edge padding is exercised.
    small = transform.resize(data.astronaut(), (100, 130), anti_aliasing=True)
    return np.round(small * 255).astype(np.uint8)


def _images(rgb8):
    return {
        "rgb8": rgb8,
        "gray8": rgb8[..., 0],
        "rgb16": rgb8.astype(np.uint16) * 257,
        "gray16": rgb8[..., 2].astype(np.uint16) * 257,
    }


@pytest.mark.parametrize("kind", ["rgb8", "gray8", "rgb16", "gray16"])
@pytest.mark.parametrize("mode", ["blocks", "rows"])
def test_round_trip(rgb8, kind, mode):
    image = _images(rgb8)[kind]
    r = nsc.compress(image, "pca", mode=mode, step=8)
    back = nsc.decompress(r.bundle)
    assert back.shape == image.shape and back.dtype == image.dtype
    np.testing.assert_array_equal(back, r.image)
    assert 25 < r.psnr < 60


def test_all_components_near_lossless(rgb8):
    r = nsc.compress(rgb8, "pca", components=8 * 8 * 3, step=0.2)
    assert r.psnr > 50
    assert r.info["components"] <= 192


def test_step_trades_rate_for_quality(rgb8):
    coarse = nsc.compress(rgb8, "pca", step=40)
    fine = nsc.compress(rgb8, "pca", step=5)
    assert coarse.nbytes < fine.nbytes
    assert coarse.psnr + 5 < fine.psnr


def test_component_rules(rgb8):
    few = nsc.compress(rgb8, "pca", components=4, step=2)
    assert few.info["components"] <= 4
    var = nsc.compress(rgb8, "pca", variance=0.9, step=2)
    assert 1 <= var.info["components"] < 192
    rows = nsc.compress(rgb8[..., 0], "pca", mode="rows", components=5, step=1)
    assert rows.info["channels"][0]["components"] <= 5
    with pytest.raises(ParameterError):
        nsc.compress(rgb8, "pca", components=4, variance=0.5)


def test_block_size_and_colour_space(rgb8):
    for kw in ({"block": 4}, {"block": 16}, {"color": "ycbcr"}):
        r = nsc.compress(rgb8, "pca", step=6, **kw)
        np.testing.assert_array_equal(nsc.decompress(r.bundle), r.image)
        assert r.psnr > 30


def _rewrite(bundle: bytes, edit) -> bytes:
    zin = zipfile.ZipFile(io.BytesIO(bundle))
    members = {n: zin.read(n) for n in zin.namelist()}
    edit(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return out.getvalue()


def _payload_name(members, stem):
    return next(
        n for n in members if n.rsplit("/", 1)[-1].startswith(stem) and n != "manifest.json"
    )


@pytest.mark.parametrize("mode", ["blocks", "rows"])
def test_corrupt_payloads_raise(rgb8, mode):
    r = nsc.compress(rgb8, "pca", mode=mode, step=8)

    def truncate(members):
        name = _payload_name(members, "coef")
        members[name] = members[name][: len(members[name]) // 2]

    def flip(members):
        name = _payload_name(members, "basis")
        data = bytearray(members[name])
        data[3] ^= 0xFF  # the dtype code of the integer stream
        members[name] = bytes(data)

    def drop(members):
        del members[_payload_name(members, "mean")]

    def meta(members):
        man = json.loads(members["manifest.json"])
        plane = man["planes"][0]
        if mode == "blocks":
            plane["components"] = plane["components"] + 3
        else:
            plane["channels"] = plane["channels"][:1]
        members["manifest.json"] = json.dumps(man).encode()

    for edit in (truncate, flip, drop, meta):
        with pytest.raises(BundleError):
            nsc.decompress(_rewrite(r.bundle, edit))


# --- the svd codec's patch mode, which runs on the same block machinery -------------


@pytest.mark.parametrize("kind", ["rgb8", "gray16"])
def test_svd_patch_round_trip(rgb8, kind):
    image = _images(rgb8)[kind]
    r = nsc.compress(image, "svd", patch=8, rank=40)
    back = nsc.decompress(r.bundle)
    assert back.shape == image.shape and back.dtype == image.dtype
    np.testing.assert_array_equal(back, r.image)
    assert r.info["patch"] == 8 and r.info["components"] <= 40
    assert r.psnr > 26


def test_svd_patch_rank_orders_rate_and_beats_whole_image():
    small = transform.resize(data.astronaut(), (256, 256), anti_aliasing=True)
    image = np.round(small * 255).astype(np.uint8)
    sizes = [nsc.compress(image, "svd", patch=8, rank=k).nbytes for k in (2, 8, 32)]
    assert sizes[0] < sizes[1] < sizes[2]
    whole = nsc.compress(image, "svd", rank=24)
    patch = nsc.compress(image, "svd", patch=8, target_bpp=whole.bpp)
    # Measured 28.4 dB against 24.2 dB at 1.36 bpp.
    assert patch.nbytes <= whole.nbytes and patch.psnr > whole.psnr + 3


def test_svd_patch_targets(rgb8):
    r = nsc.compress(rgb8, "svd", patch=8, target_psnr=32.0)
    assert r.psnr >= 32.0 and r.info["target_met"]
    smaller = nsc.compress(rgb8, "svd", patch=8, rank=r.info["components"] - 1)
    assert smaller.psnr < 32.5
    b = nsc.compress(rgb8, "svd", patch=8, target_bpp=1.0)
    assert b.bpp <= 1.0 and b.info["target_met"]
    with pytest.raises(ParameterError):
        nsc.compress(rgb8, "svd", patch=1)


def test_svd_patch_corrupt_meta_raises(rgb8):
    r = nsc.compress(rgb8, "svd", patch=8, rank=6)

    def bad_patch(members):
        man = json.loads(members["manifest.json"])
        man["planes"][0]["patch"] = 4
        members["manifest.json"] = json.dumps(man).encode()

    with pytest.raises(BundleError):
        nsc.decompress(_rewrite(r.bundle, bad_patch))


# --- deblocking and the basis layout ---------------------------------------------


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()[::2, ::2]


def test_deblocking_raises_psnr_at_equal_size(photo):
    off = nsc.compress(photo, "pca", step=96, deblock=0)
    on = nsc.compress(photo, "pca", step=96, deblock=16)
    assert "deblock" not in off.info and on.info["deblock"] == [16, 0.2]
    # The filter is the decoder's: the files differ only in the manifest.
    assert abs(on.nbytes - off.nbytes) <= 24
    # Measured 25.30 dB against 25.11 dB.
    assert on.psnr > off.psnr + 0.1
    np.testing.assert_array_equal(nsc.decompress(on.bundle), on.image)


def test_deblocking_is_dropped_where_it_would_hurt(rgb8):
    # A 16 x 16 basis fitted to 63 blocks cannot re-project the picture at other
    # offsets: the encoder measures that and leaves the filter off.
    r = nsc.compress(rgb8, "pca", step=6, block=16)
    assert "deblock" not in r.info
    assert r.psnr > 50


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("basis", "raw"),
        ("basis", None),
        ("deblock", [5, 0.2]),
        ("deblock", [16, -1]),
        ("deblock", 16),
    ],
)
def test_bad_basis_layout_or_deblocking_raises(photo, key, value):
    r = nsc.compress(photo[:64, :64], "pca", step=64)

    def edit(members):
        man = json.loads(members["manifest.json"])
        man["planes"][0][key] = value
        members["manifest.json"] = json.dumps(man).encode()

    with pytest.raises(BundleError):
        nsc.decompress(_rewrite(r.bundle, edit))
