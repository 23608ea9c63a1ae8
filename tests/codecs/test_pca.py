"""PCA codec: rows and blocks modes, rank rules, and bundle validation."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from skimage import data, transform

import napari_svd_compress as nsc
from napari_svd_compress.codecs import _blocks as _pca
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


# --- the fast paths equal the arithmetic they replaced ------------------------------


def _laplace_bits_v1(a, s):
    p = np.where(a < 0.5, -np.expm1(-0.5 / s), 0.5 * np.exp(-(a - 0.5) / s) * -np.expm1(-1.0 / s))
    return -np.log2(np.maximum(p, 1e-300))


def _rdo_v1(c, q, scale, wt2):
    """``_rdo`` as first written: every value, dense."""
    lam = _pca._RDO_LAMBDA * np.log(2) / 6 / wt2[:, None]
    best = q
    cost = (c - q) ** 2 + lam * _laplace_bits_v1(np.abs(q), scale[:, None])
    for cand in (q - np.sign(q), np.zeros_like(q)):
        cc = (c - cand) ** 2 + lam * _laplace_bits_v1(np.abs(cand), scale[:, None])
        better = cc < cost
        best = np.where(better, cand, best)
        cost = np.where(better, cc, cost)
    return best.astype(np.int32)


@pytest.mark.parametrize("limit", [None, 8])
def test_rdo_equals_the_dense_version(monkeypatch, limit):
    if limit is not None:  # the value-by-value path of the bits table
        monkeypatch.setattr(_pca._BitsTable, "LIMIT", limit)
    rng = np.random.default_rng(5)
    k, n = 9, 4000
    spread = np.linspace(0.2, 30, k)[:, None]
    c = (rng.laplace(0, 1, (k, n)) * spread).astype(np.float32)
    q = _pca._deadzone(c, 1.0)
    q[2] = 0  # a row of zeros
    scale = np.maximum(np.abs(q).mean(axis=1), _pca._MIN_SCALE)
    wt2 = (rng.uniform(0.3, 3, k) ** 2).astype(np.float32)
    got = _pca._rdo(c, q, scale, wt2)
    want = _rdo_v1(c, q, scale, wt2)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    assert (got != q).any()


def _quantise_v1(x, b, vec32, mean32, steps, step):
    """The encoder's quantisation as first written (dense, whole plane)."""
    nr = x.shape[0] // b
    p = _pca._block_rows(x, b, 0, nr).astype(np.float32) - mean32
    coef = _pca._deadzone((p @ vec32) / steps, 1.0).T
    scales = np.maximum(np.mean(np.abs(coef), axis=1, dtype=np.float64), _pca._MIN_SCALE)
    c = ((p @ vec32[:, 1:]) / steps[1:]).T
    coef[1:] = _rdo_v1(c, coef[1:], scales[1:], (steps[1:] / step) ** 2)
    return coef


def test_banded_quantisation_equals_the_dense_version(monkeypatch):
    monkeypatch.setattr(_pca, "_SMALL_BAND", 64)  # many bands, on two threads
    rng = np.random.default_rng(2)
    small = transform.resize(data.astronaut(), (96, 160), anti_aliasing=True)
    x = (small + rng.normal(0, 0.01, small.shape)).astype(np.float32)
    b, d = 8, 192
    vec = np.linalg.qr(rng.standard_normal((d, d)))[0]
    vec32 = vec.astype(np.float32)
    mean32 = np.tile(x.reshape(-1, 3).mean(axis=0), b * b).astype(np.float32)
    step = 0.03
    steps = (step * np.linspace(0.5, 2, d)).astype(np.float32)
    got = _pca._quantise_blocks(x, b, vec32, mean32, steps, step, workers=2)
    np.testing.assert_array_equal(got, _quantise_v1(x, b, vec32, mean32, steps, step))


def _deblock_v1(out, vec, steps, mean, b, offsets, threshold):
    """The deblocking filter as first written: whole bands of ``_bands``."""
    ctx = _pca._DeblockContext(out, vec, steps, mean, b, offsets, threshold)
    res = np.empty_like(out)
    nr, nc = out.shape[0] // b, out.shape[1] // b
    for r0, r1 in _pca._bands(nr, nc + 1):
        _pca._deblock_band_reference(ctx, res, r0, r1)
    return res


def _deblock_case(k, shape=(800, 720), seed=0):
    rng = np.random.default_rng(seed)
    b, c = 8, 3
    small = transform.resize(data.astronaut(), shape, anti_aliasing=True)
    out = (small + rng.normal(0, 0.02, small.shape)).astype(np.float32)
    vec = np.linalg.qr(rng.standard_normal((b * b * c, k)))[0].T.astype(np.float32)
    steps = np.linspace(0.02, 0.1, k).astype(np.float32)
    mean = np.tile(out.reshape(-1, c).mean(axis=0), b * b).astype(np.float32)
    return out, vec, steps, mean, b


@pytest.mark.parametrize("k", [12, 50])
@pytest.mark.parametrize("offsets", [4, 16])
def test_banded_threaded_deblocking_equals_the_first_version(monkeypatch, k, offsets):
    # Small bands: several bands per piece, two pieces, carries between bands.
    monkeypatch.setattr(_pca, "_DEBLOCK_BAND", 1)
    out, vec, steps, mean, b = _deblock_case(k)
    want = _deblock_v1(out, vec, steps, mean, b, offsets, 0.2)
    for workers in (1, 2):
        got = _pca._deblock(out, vec, steps, mean, b, offsets, 0.2, workers=workers)
        np.testing.assert_array_equal(got, want)
    copy = out.copy()
    got = _pca._deblock(copy, vec, steps, mean, b, offsets, 0.2, workers=2, inplace=True)
    assert got is copy
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("k", "shape"), [(1, (160, 200)), (3, (40, 56)), (20, (16, 24))])
def test_deblocking_small_products_as_the_first_version(k, shape):
    # One component or few blocks: BLAS's other kernels; done exactly as before.
    out, vec, steps, mean, b = _deblock_case(k, shape)
    want = _deblock_v1(out, vec, steps, mean, b, 16, 0.2)
    for inplace in (False, True):
        got = _pca._deblock(out.copy(), vec, steps, mean, b, 16, 0.2, inplace=inplace)
        np.testing.assert_array_equal(got, want)


def test_gemm_rounding_does_not_depend_on_the_band():
    # What the banded paths rely on: above _GEMM_SAFE multiply-adds, a row of a float32
    # product rounds the same whatever the other rows (a canary for another BLAS).
    rng = np.random.default_rng(1)
    a = rng.standard_normal((12000, 192)).astype(np.float32)
    for k in (2, 15, 50):
        b = rng.standard_normal((192, k)).astype(np.float32)
        full = a @ b
        rows = -(-(_pca._GEMM_SAFE + 1) // (192 * k))
        for start in (0, 7, 5000):
            part = a[start : start + rows] @ b
            np.testing.assert_array_equal(part, full[start : start + rows])
        v = rng.standard_normal((k, 192)).astype(np.float32)
        mean = rng.standard_normal(192).astype(np.float32)
        co = np.ones((len(full), k + 1), np.float32)
        co[:, :k] = full
        # The mean as a last basis vector rounds as an addition after the product.
        np.testing.assert_array_equal(co @ np.vstack([v, mean]), full @ v + mean)


def test_banded_reconstruction_equals_the_first_version(monkeypatch):
    monkeypatch.setattr(_pca, "_SMALL_BAND", 200)
    rng = np.random.default_rng(4)
    b, c, k, nr, nc = 8, 3, 20, 40, 70
    coef = rng.integers(-20, 20, (k, nr * nc)).astype(np.int32)
    vec = rng.standard_normal((k, b * b * c)).astype(np.float32)
    steps = rng.uniform(0.01, 0.1, k).astype(np.float32)
    mean = rng.uniform(0, 1, b * b * c)
    want = np.empty((nr * b, nc * b, c), np.float32)
    for r0, r1 in _pca._bands(nr, nc):
        p = (coef[:, r0 * nc : r1 * nc].T.astype(np.float32) * steps) @ vec + mean.astype(
            np.float32
        )
        want[r0 * b : r1 * b] = (
            p.reshape(r1 - r0, nc, b, b, c).transpose(0, 2, 1, 3, 4).reshape(-1, nc * b, c)
        )
    got = _pca._reconstruct(coef, vec, steps, mean, want.shape, b, workers=2)
    np.testing.assert_array_equal(got, want)
