"""PCA codec: rows and blocks modes, rank rules, and bundle validation."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from skimage import data, transform

import napari_svd_compress as nsc
from napari_svd_compress import api, metrics, registry
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
    off = nsc.compress(photo, "pca", step=140, deblock=0)
    on = nsc.compress(photo, "pca", step=140, deblock=16)
    assert "deblock" not in off.info and on.info["deblock"] == [16, 0.2]
    # The filter is the decoder's: the files differ only in the manifest.
    assert abs(on.nbytes - off.nbytes) <= 24
    # Measured 23.07 dB against 22.83 dB.
    assert on.psnr > off.psnr + 0.1
    np.testing.assert_array_equal(nsc.decompress(on.bundle), on.image)


def test_deblocking_is_dropped_where_it_would_hurt(rgb8):
    # A 16 x 16 basis fitted to 63 blocks cannot re-project the picture at other
    # offsets: the encoder measures that and leaves the filter off.
    r = nsc.compress(rgb8, "pca", step=6, block=16)
    assert "deblock" not in r.info
    assert r.psnr > 50


def _decode_unit(encoded, shape, drop_deblock=False):
    meta = dict(encoded.meta)
    if drop_deblock:
        meta.pop("deblock", None)
    return _pca.decode(meta, encoded.payloads, shape)


def _seen_error(unit, decoded):
    return np.sum((np.clip(decoded, 0, 1) - unit) ** 2, dtype=np.float64)


@pytest.mark.parametrize("color", ["rgb", "ycbcr"])
def test_deblocking_is_kept_exactly_where_the_clipped_output_gains(photo, color):
    # Step 30 on this photo: the filter lowers the unclipped error but raises the error
    # of the clipped output that users see (clipping mends more of the plain one).
    unit = (photo / 255).astype(np.float32)
    params = dict(registry.get("pca").resolve({"color": color}))
    for step in (30, 140, 200):
        encoded = _pca.encode(unit, {**params, "step": step}, lambda f: None, None)
        on = _seen_error(unit, _decode_unit(encoded, unit.shape))
        off = _seen_error(unit, _decode_unit(encoded, unit.shape, drop_deblock=True))
        gains = on < (1 - _pca._DEBLOCK_MIN_GAIN) * off
        assert ("deblock" in encoded.meta) == gains, (step, on, off)


def test_deblocking_that_saves_under_one_percent_is_left_off(photo, monkeypatch):
    unit = (photo / 255).astype(np.float32)
    params = {**registry.get("pca").resolve({}), "step": 96}
    on = _pca.encode(unit, params, lambda f: None, None)
    off = _seen_error(unit, _decode_unit(on, unit.shape, drop_deblock=True))
    saved = 1 - _seen_error(unit, _decode_unit(on, unit.shape)) / off
    assert "deblock" in on.meta and 0 < saved < 0.1
    monkeypatch.setattr(_pca, "_DEBLOCK_MIN_GAIN", saved * 1.01)
    assert "deblock" not in _pca.encode(unit, params, lambda f: None, None).meta


def _unpruned(monkeypatch):
    monkeypatch.setattr(_pca, "_worth_keeping", lambda used, worth, qbasis: used >= 0)


def test_components_not_worth_their_bits_are_dropped(monkeypatch):
    # A smooth picture under noise: at fine steps most components code only the
    # noise in a few blocks each.
    rng = np.random.default_rng(0)
    smooth = transform.resize(data.astronaut(), (256, 384), anti_aliasing=True) * 255
    image = np.clip(np.rint(smooth + rng.normal(0, 3, smooth.shape)), 0, 255).astype(np.uint8)
    sets = [{"step": s} for s in (200, 96, 44, 20, 10)]
    pruned = list(api.compress_many(image, "pca", sets))
    _unpruned(monkeypatch)
    every = list(api.compress_many(image, "pca", sets))
    for a, b in zip(pruned, every, strict=True):
        assert a.info["components"] < b.info["components"]
        assert a.nbytes < b.nbytes
    # Fewer bytes at equal PSNR along the curve (measured -0.8%).
    curves = [([r.bpp for r in c], [r.psnr for r in c]) for c in (pruned, every)]
    assert metrics.bd_rate(*curves[0], *curves[1]) < 0
    np.testing.assert_array_equal(nsc.decompress(pruned[-1].bundle), pruned[-1].image)


def test_worth_keeping_weighs_saved_error_against_bits():
    lam = _pca._RDO_LAMBDA * np.log(2) / 6
    qbasis = np.zeros((4, 12), np.int32)  # a free basis: only the coefficients' bits
    used = np.array([0, 3, 5, 9])
    worth = np.zeros((2, 10))
    worth[1, used] = 100.0
    worth[0, used] = [0.0, 100 * lam * 1.01, 100 * lam * 0.99, 1e9]
    np.testing.assert_array_equal(
        _pca._worth_keeping(used, worth, qbasis), [True, True, False, True]
    )
    # A basis vector's bits count against its component.
    qbasis[1] = 40
    assert not _pca._worth_keeping(used, worth, qbasis)[1]


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
    got, _ = _pca._quantise_blocks(x, b, vec32, mean32, steps, step, workers=2)
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
    # In place only on the banded path, which a BLAS that rounds by band does not take.
    assert (got is copy) is _pca._gemm_rows_round_alike()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("k", "shape"), [(1, (160, 200)), (3, (40, 56)), (20, (16, 24))])
def test_deblocking_small_products_as_the_first_version(k, shape):
    # One component or few blocks: BLAS's other kernels; done exactly as before.
    out, vec, steps, mean, b = _deblock_case(k, shape)
    want = _deblock_v1(out, vec, steps, mean, b, 16, 0.2)
    for inplace in (False, True):
        got = _pca._deblock(out.copy(), vec, steps, mean, b, 16, 0.2, inplace=inplace)
        np.testing.assert_array_equal(got, want)


def test_banded_paths_only_where_blas_rounds_rows_alike(monkeypatch):
    # Where the probe finds BLAS rounding rows alike, so it does beyond the probe's own
    # sizes (a canary for another BLAS); where it does not, the first version's bands
    # are used, and give the first version's bits.
    if _pca._gemm_rows_round_alike():
        rng = np.random.default_rng(1)
        a = rng.standard_normal((12000, 192)).astype(np.float32)
        for k in (2, 15, 50):
            b = rng.standard_normal((192, k)).astype(np.float32)
            full = a @ b
            rows = -(-(_pca._GEMM_SAFE + 1) // (192 * k))
            for start in (0, 7, 5000):
                part = a[start : start + rows] @ b
                np.testing.assert_array_equal(part, full[start : start + rows])

    def banded(*args, **kwargs):
        raise AssertionError("the banded path ran")

    monkeypatch.setattr(_pca, "_gemm_rows_round_alike", lambda: False)
    monkeypatch.setattr(_pca, "_deblock_rows", banded)
    out, vec, steps, mean, b = _deblock_case(12)
    got = _pca._deblock(out, vec, steps, mean, b, 4, 0.2, workers=2, inplace=True)
    np.testing.assert_array_equal(got, _deblock_v1(out, vec, steps, mean, b, 4, 0.2))


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


# --- format version 3: exact decoding ---------------------------------------------------

from napari_svd_compress.codecs import _exact  # noqa: E402
from napari_svd_compress.errors import BundleContentError  # noqa: E402


def _reference_decoder():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "conformance" / "reference_decoder.py"
    spec = importlib.util.spec_from_file_location("reference_decoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edit_manifest(bundle: bytes, edit) -> bytes:
    """``bundle`` with ``edit(manifest)`` applied to its manifest."""

    def members(m):
        manifest = json.loads(m["manifest.json"])
        edit(manifest)
        m["manifest.json"] = json.dumps(manifest).encode()

    return _rewrite(bundle, members)


def _plane_meta(bundle: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        return json.loads(zf.read("manifest.json"))["planes"][0]


def test_reference_table_is_far_from_rounding_boundaries():
    """The spec's table is ``rint(2^26 R)`` of real numbers: no scaled entry of any block
    size is within 1e-4 of a half-integer, so any accurate cos/sqrt gives these integers."""
    ref = _reference_decoder()
    for b in range(2, _pca._MAX_BLOCK + 1):
        for c in (1, 3):
            scaled = np.unique(np.abs(ref.dct_reference(b, c))) * 2.0**_exact.REF_BITS
            assert np.abs(scaled - np.floor(scaled) - 0.5).min() > 1e-4
        if b in (2, 3, 8, 13):
            assert np.array_equal(_exact.reference_table(b, 3), ref.dct_table(b, 3))


_V3_CASES = {
    "blocks-rgb": (lambda im: im, {"step": 20}),
    "blocks-ycbcr-b5-64": (
        lambda im: im,
        {"step": 20, "color": "ycbcr", "block": 5, "deblock": 64},
    ),
    "blocks-gray16": (lambda im: im[..., 1].astype(np.uint16) * 257, {"step": 12}),
    "blocks-float": (lambda im: (im / 255).astype(np.float32), {"step": 20, "deblock": 4}),
    "rows-rgb": (lambda im: im, {"mode": "rows", "step": 6}),
}


@pytest.fixture(scope="module")
def v3_bundles(rgb8) -> dict[str, bytes]:
    """Version-3 bundles, the deblocking filter on wherever the mode has it."""
    keep = _pca._deblock_helps
    _pca._deblock_helps = lambda *a: True
    try:
        out = {n: nsc.compress(f(rgb8), "pca", **p).bundle for n, (f, p) in _V3_CASES.items()}
        out["patch"] = nsc.compress(rgb8, "svd", patch=8, rank=20).bundle
    finally:
        _pca._deblock_helps = keep
    return out


def test_v3_bundles_are_marked(v3_bundles):
    for name, bundle in v3_bundles.items():
        meta = _plane_meta(bundle)
        if meta["mode"] == "rows":
            assert all(isinstance(ch["shift"], int) for ch in meta["channels"])
        else:
            e, g = meta["shift"]
            assert 12 <= e <= 200 and -200 <= g <= 200
            assert meta["deblock"][0] > 0, name


@pytest.mark.parametrize("bands", [None, (60, 3)])
@pytest.mark.parametrize("name", [*_V3_CASES, "patch"])
def test_v3_decode_equals_the_reference_decoder(monkeypatch, v3_bundles, name, bands):
    """Bit for bit, also when the plane is cut into small bands on three threads (the
    sums are exact, so the banding cannot change them)."""
    bundle = v3_bundles[name]
    want = _reference_decoder().decode(bundle)
    if bands:
        monkeypatch.setattr(_exact, "_DEBLOCK_BAND", bands[0])
        monkeypatch.setattr(_exact, "_BAND_BLOCKS", bands[0])
        monkeypatch.setattr(_pca, "THREADS", bands[1])
    got = nsc.decompress(bundle)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


_DIGEST = """
import hashlib, sys
import numpy as np
from napari_svd_compress import decompress
for path in sys.argv[1:]:
    print(hashlib.sha256(np.ascontiguousarray(decompress(path)).tobytes()).hexdigest())
"""


def test_v3_decode_does_not_depend_on_blas_threads_or_kernel(tmp_path, v3_bundles):
    """One and two BLAS threads, and OpenBLAS's Haswell kernel instead of the CPU's own
    (another variable does nothing with another BLAS, and the test still holds)."""
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    paths = []
    for name, bundle in v3_bundles.items():
        paths.append(tmp_path / f"{name}.svdz")
        paths[-1].write_bytes(bundle)
    want = [
        hashlib.sha256(np.ascontiguousarray(nsc.decompress(p)).tobytes()).hexdigest() for p in paths
    ]
    src = str(Path(__file__).resolve().parents[2] / "src")
    for extra in (
        {"OPENBLAS_NUM_THREADS": "1"},
        {"OPENBLAS_NUM_THREADS": "2"},
        {
            "OPENBLAS_NUM_THREADS": "2",
            "OPENBLAS_CORETYPE": "Haswell",
        },
    ):
        env = {**os.environ, **extra, "PYTHONPATH": src}
        run = subprocess.run(
            [sys.executable, "-c", _DIGEST, *map(str, paths)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        assert run.stdout.split() == want, extra


def test_v3_filter_is_close_to_the_pseudo_inverse_filter(v3_bundles):
    """The exact filter computes what the version-1 filter (float32, LAPACK pinv) does,
    up to its fixed-point precision and clipping to the unit range."""
    bundle = v3_bundles["blocks-float"]
    plain = _edit_manifest(bundle, lambda m: m["planes"][0].update(deblock=[0, 0]))
    old = _edit_manifest(bundle, lambda m: m["planes"][0].pop("shift"))
    new_f, old_f = nsc.decompress(bundle), nsc.decompress(old)
    base = nsc.decompress(plain)
    assert np.abs(new_f - base).max() > 1e-3  # the filter does something
    # Near 0 and 1 the exact filter reads the clipped plane: compare on average.
    assert np.abs(new_f - old_f).mean() < 1e-3


def test_unmarked_bundles_decode_by_the_old_rules(v3_bundles):
    """Without ``shift`` a plane or rows channel is decoded by the float arithmetic of
    versions 1 and 2 (the conformance bundles hold it to the recorded bytes); here: it
    still decodes, to about what the exact decoding gives."""
    for name in ("blocks-rgb", "rows-rgb", "patch"):
        bundle = v3_bundles[name]

        def strip(m):
            plane = m["planes"][0]
            plane.pop("shift", None)
            for ch in plane.get("channels", []):
                if isinstance(ch, dict):
                    ch.pop("shift", None)

        old = nsc.decompress(_edit_manifest(bundle, strip))
        diff = np.abs(nsc.decompress(bundle).astype(int) - old.astype(int))
        if name.startswith("rows"):
            assert diff.max() <= 1
        else:  # the filters differ a little (see above)
            assert diff.mean() < 1


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        # The writer's exponents are the largest that pass: one more must be refused.
        ("blocks-rgb", lambda meta: meta["shift"].__setitem__(0, meta["shift"][0] + 1)),
        ("blocks-rgb", lambda meta: meta["shift"].__setitem__(1, meta["shift"][1] + 1)),
        ("blocks-rgb", lambda meta: meta["shift"].__setitem__(0, 1000)),
        ("blocks-rgb", lambda meta: meta.update(shift=[40])),
        ("patch", lambda meta: meta["shift"].__setitem__(0, meta["shift"][0] + 1)),
        (
            "rows-rgb",
            lambda meta: meta["channels"][1].update(shift=meta["channels"][1]["shift"] + 1),
        ),
        ("rows-rgb", lambda meta: meta["channels"][0].update(shift=3)),
    ],
)
def test_v3_sums_that_could_pass_2_53_are_refused(v3_bundles, name, edit):
    bad = _edit_manifest(v3_bundles[name], lambda m: edit(m["planes"][0]))
    with pytest.raises(BundleContentError):
        nsc.decompress(bad)
    ref = _reference_decoder()
    with pytest.raises(ref.Refused):
        ref.decode(bad)


def test_gauss_jordan_is_the_pseudo_inverse_and_drops_null_components():
    rng = np.random.default_rng(3)
    q = rng.integers(-50, 50, (6, 27)).astype(np.float64)
    q[4] = 0  # a component with no vector: not projected
    a = q @ _exact.reference_table(3, 3)
    x = _exact._solve(q @ q.T, a)
    assert not np.any(x[4])
    keep = [0, 1, 2, 3, 5]
    v = q[keep] @ _exact.reference_table(3, 3)
    np.testing.assert_allclose(x[keep], np.linalg.pinv(v).T * 2.0**52, rtol=1e-6, atol=1e-3)


def test_row_max_is_the_largest_magnitude_of_each_row():
    from napari_svd_compress.codecs import _exact

    a = np.array([[3, -7, 2], [-(2**31), 5, 0], [0, 0, 0]], np.int32)
    # -2^31 has no int32 absolute value: the bound must still see 2^31.
    assert _exact.row_max(a) == [7, 2**31, 0]
    assert _exact.row_max(np.zeros((2, 0), np.int32)) == [0, 0]
    big = np.random.default_rng(0).integers(-(2**40), 2**40, (3, 1000))
    assert _exact.row_max(big) == [int(v) for v in np.abs(big).max(axis=1)]
