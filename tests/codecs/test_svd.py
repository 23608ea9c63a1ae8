"""The SVD codec: rank rules, dtypes, channels, alpha, quantisation figures."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, metrics, transform

import napari_svd_compress as nsc
from napari_svd_compress.codecs import _linalg, svd


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    # 256x256 keeps the suite fast while leaving a realistic spectrum.
    img = transform.resize(data.astronaut(), (256, 256), anti_aliasing=True)
    return (img * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def gray(photo) -> np.ndarray:
    return data.camera()[::2, ::2].copy()


def rank5(h: int = 96, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(1)
    left = rng.random((h, 5))
    # A zero row puts the minimum at exactly 0: mapping a float image into [0, 1]
    # subtracts its minimum, which would otherwise add a rank-one constant.
    left[0] = 0
    return (left @ rng.random((5, w))) / 5.0


def ranks(result) -> list[int]:
    return [c["rank"] for c in result.info["channels"]]


def test_rank_rule_recovers_exact_rank_five():
    x = rank5()
    for rule in ({"energy": 1 - 1e-9}, {"percent": 1 - 1e-5}):
        r = nsc.compress(x, "svd", **rule)
        assert ranks(r) == [5], rule
    r = nsc.compress(x, "svd", rank=5)
    # A rank-5 float image is reproduced to quantisation precision.
    assert r.psnr > 80


def test_percent_rule_matches_hand_computation(gray):
    s = np.linalg.svd(gray.astype(np.float64), compute_uv=False)
    for p in (0.5, 0.75, 0.9):
        expected = int(np.flatnonzero(np.cumsum(s) >= p * s.sum())[0]) + 1
        assert svd.percent_rank(_linalg.spectrum(gray.astype(np.float32) / 255), p) == expected
        assert ranks(nsc.compress(gray, "svd", percent=p)) == [expected]


def test_energy_rule_matches_hand_computation(gray):
    s2 = np.linalg.svd(gray.astype(np.float64), compute_uv=False) ** 2
    expected = int(np.flatnonzero(np.cumsum(s2) >= 0.999 * s2.sum())[0]) + 1
    assert ranks(nsc.compress(gray, "svd", energy=0.999)) == [expected]


def test_target_psnr_picks_the_smallest_passing_rank(gray):
    r = nsc.compress(gray, "svd", target_psnr=30)
    k = ranks(r)[0]
    assert r.psnr >= 30
    assert nsc.compress(gray, "svd", rank=k - 1).psnr < 30


def test_target_bpp_picks_the_largest_fitting_rank(photo):
    r = nsc.compress(photo, "svd", target_bpp=0.5)
    assert r.bpp <= 0.5
    k = ranks(r)[0]
    assert nsc.compress(photo, "svd", rank=k + 1).bpp > 0.5 * 0.98


def test_unreachable_target_is_flagged(gray):
    r = nsc.compress(gray, "svd", target_bpp=0.001)
    assert r.info["target_met"] is False
    assert ranks(r) == [1]


def test_rank_is_monotone_in_rate_and_quality(photo):
    results = [nsc.compress(photo, "svd", rank=k) for k in (2, 8, 32, 96)]
    assert all(a.nbytes < b.nbytes for a, b in zip(results, results[1:]))
    assert all(a.psnr < b.psnr for a, b in zip(results, results[1:]))


def test_ycbcr_chroma_rank_is_lower(photo):
    r = nsc.compress(photo, "svd", rank=40, color="ycbcr", chroma=0.25)
    assert ranks(r) == [40, 10, 10]
    assert ranks(nsc.compress(photo, "svd", rank=40, color="rgb")) == [40, 40, 40]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64", "int16", "bool"])
def test_dtypes_round_trip(dtype, gray):
    if dtype == "bool":
        img = gray > 128
    elif dtype.startswith("float"):
        img = (gray / 255.0 * 3.0 - 1.0).astype(dtype)  # a range that is not [0, 1]
    elif dtype == "int16":
        img = (gray.astype(np.int16) - 128) * 50
    else:
        img = (gray.astype(dtype) * (257 if dtype == "uint16" else 1)).astype(dtype)
    r = nsc.compress(img, "svd", rank=60)
    expected_dtype = np.uint8 if dtype == "bool" else np.dtype(dtype)
    assert r.image.dtype == expected_dtype and r.image.shape == img.shape
    out = nsc.decompress(r.bundle)
    np.testing.assert_array_equal(out, r.image)
    if dtype.startswith("float"):
        rng = float(img.max()) - float(img.min())
    else:
        rng = {"bool": 1, "uint8": 255, "uint16": 65535, "int16": 65535}[dtype]
    ref = metrics.peak_signal_noise_ratio(
        img.astype(np.float64), r.image.astype(np.float64), data_range=rng
    )
    assert r.psnr == pytest.approx(ref, abs=1e-6)
    assert r.psnr > 25


def test_uint16_uses_full_dtype_range(gray):
    img = gray.astype(np.uint16) * 257
    r = nsc.compress(img, "svd", rank=30)
    expected = metrics.peak_signal_noise_ratio(img, r.image, data_range=65535)
    assert r.psnr == pytest.approx(expected, abs=1e-9)


def test_reconstruction_saturates_instead_of_wrapping():
    # A hard edge at 255 next to 0: low-rank ringing overshoots above 255.
    img = np.zeros((64, 64), np.uint8)
    img[:, 32:] = 255
    img[20:40, 10:20] = 255
    r = nsc.compress(img, "svd", rank=1)
    overshoot = r.image[:, 32:]
    assert overshoot.min() > 100  # a wrapped value would be near 0


@pytest.mark.parametrize("channels", [3, 4])
def test_rgb_and_rgba_alpha_exact(photo, channels):
    img = photo
    if channels == 4:
        alpha = np.zeros(photo.shape[:2], np.uint8)
        alpha[32:200, 50:220] = 255
        alpha[100:120] = 77
        img = np.dstack([photo, alpha])
    r = nsc.compress(img, "svd", rank=30)
    assert r.image.shape == img.shape
    if channels == 4:
        np.testing.assert_array_equal(r.image[..., 3], img[..., 3])


def test_quantised_bundle_is_much_smaller_than_float_factors(photo):
    r = nsc.compress(photo, "svd", rank=50, color="rgb")
    floats = sum((photo.shape[0] + photo.shape[1] + 1) * k * 4 for k in ranks(r))
    assert r.nbytes < floats / 4
    # Exact truncation of the same channels, no quantisation.
    x = photo.astype(np.float64) / 255
    exact = np.empty_like(x)
    for c in range(3):
        u, s, vt = np.linalg.svd(x[..., c], full_matrices=False)
        exact[..., c] = (u[:, :50] * s[:50]) @ vt[:50]
    exact8 = np.clip(np.rint(exact * 255), 0, 255).astype(np.uint8)
    loss = metrics.peak_signal_noise_ratio(photo, exact8) - r.psnr
    assert loss < 0.2


def test_randomized_svd_matches_exact_truncation():
    x = data.camera().astype(np.float32) / 255
    u, s, vt = _linalg.truncated_svd(x, 30, method="randomized")
    assert u.shape == (512, 30) and vt.shape == (30, 512)
    ue, se, vte = _linalg.truncated_svd(x, 30, method="exact")
    np.testing.assert_allclose(s[:10], se[:10], rtol=1e-4)
    err_r = np.mean((x - (u * s) @ vt) ** 2)
    err_e = np.mean((x - (ue * se) @ vte) ** 2)
    assert 10 * np.log10(err_r / err_e) < 0.05  # within 0.05 dB of the exact truncation


def test_rank_larger_than_image_is_clipped():
    img = np.arange(40 * 30, dtype=np.uint8).reshape(40, 30)
    r = nsc.compress(img, "svd", rank=1000)
    assert ranks(r)[0] <= 30


def test_stack_compresses_plane_by_plane(gray):
    stack = np.stack([gray, gray[::-1], gray[:, ::-1]])
    r = nsc.compress(stack, "svd", rank=20)
    assert r.image.shape == stack.shape
    single = nsc.compress(gray[::-1], "svd", rank=20)
    np.testing.assert_array_equal(r.image[1], single.image)
    np.testing.assert_array_equal(nsc.decompress(r.bundle), r.image)
    lazy = nsc.decompress(r.bundle, lazy=True)
    np.testing.assert_array_equal(np.asarray(lazy[2]), r.image[2])


def test_public_factor_decoding_matches_decode(gray):
    """check_entry and decode_factors: what decompress_large reads a channel with."""
    from napari_svd_compress.errors import BundleContentError
    from napari_svd_compress.format.bundle import open_bundle

    opened = open_bundle(nsc.compress(gray, "svd", rank=12).bundle)
    meta, data_ = opened.manifest["planes"][0], opened.payloads["svd"]
    h, w = gray.shape
    (entry,) = meta["channels"]
    assert svd.check_entry(entry, min(h, w))[0] == 12
    qu, qv, amp, step = svd.decode_factors(entry, data_, (h, w))
    assert qu.shape == (12, h) and qv.shape == (12, w) and amp.shape == (12,)
    whole = svd.decode(meta, {"svd": data_}, (h, w, 1))[..., 0]
    shift = entry["shift"]
    np.testing.assert_array_equal(svd.reconstruct_rows(qu, qv, amp, step, shift=shift), whole)
    np.testing.assert_array_equal(
        svd.reconstruct_rows(qu, qv, amp, step, 10, 30, shift=shift), whole[10:30]
    )
    with pytest.raises(BundleContentError, match="lengths"):
        svd.decode_factors(entry, data_[:-1], (h, w))
    with pytest.raises(BundleContentError, match="out of range"):
        svd.check_entry({**entry, "rank": min(h, w) + 1}, min(h, w))
    with pytest.raises(BundleContentError, match="malformed"):
        svd.check_entry({"rank": 3}, min(h, w))


def test_version2_sum_is_exact_integer_arithmetic(gray, monkeypatch):
    """Format version 2: the reconstruction is the exact integer sum of the products
    scaled by 2^-shift, then rounded once to float32 (no BLAS order in it), and any tile
    of it has the bits of the whole plane."""
    from napari_svd_compress.errors import BundleContentError
    from napari_svd_compress.format.bundle import open_bundle

    opened = open_bundle(nsc.compress(gray, "svd", rank=20, qloss=0.01).bundle)
    meta, data_ = opened.manifest["planes"][0], opened.payloads["svd"]
    h, w = gray.shape
    (entry,) = meta["channels"]
    qu, qv, amp, step = svd.decode_factors(entry, data_, (h, w))
    shift = entry["shift"]
    m = [int(v) for v in np.rint(np.ldexp(step * step / amp.astype(np.float64), shift))]
    bound = sum(
        a * int(np.abs(u).max()) * int(np.abs(v).max()) for a, u, v in zip(m, qu, qv, strict=True)
    )
    assert 2**51 < bound <= 2**53  # (nearly) the largest shift that keeps the sum exact
    exact = sum(
        (mi * u.astype(np.int64))[:, None] * v.astype(np.int64)[None, :]
        for mi, u, v in zip(m, qu, qv, strict=True)
    )
    want = np.ldexp(exact.astype(np.float64), -shift).astype(np.float32)
    whole = svd.decode(meta, {"svd": data_}, (h, w, 1))[..., 0]
    np.testing.assert_array_equal(whole, want)
    region = svd.decode_region(meta, {"svd": data_}, (h, w, 1))
    np.testing.assert_array_equal(region(5, 40, 7, 33, 1)[..., 0], want[5:40, 7:33])
    # Bands of one row or of one per component (taller bands for many components): the
    # same bits.
    monkeypatch.setattr(svd, "_DECODE_BAND_VALUES", 1)
    for per_row in (10**9, 1):
        monkeypatch.setattr(svd, "_DECODE_RANK_PER_ROW", per_row)
        np.testing.assert_array_equal(svd.reconstruct_rows(qu, qv, amp, step, shift=shift), want)
    monkeypatch.undo()
    # Scaling by 2^-shift after the sum (where the shift is too negative to fold into the
    # weights) gives the same bits as folding it.
    monkeypatch.setattr(svd, "_FOLD_MIN_SHIFT", shift + 1)
    np.testing.assert_array_equal(svd.reconstruct_rows(qu, qv, amp, step, shift=shift), want)
    # A shift whose weights could carry the sum past 2^53 is refused.
    bad = {**entry, "shift": shift + 2}
    with pytest.raises(BundleContentError, match="exact sum"):
        svd.decode_factors(bad, data_, (h, w))


def test_channels_split_band_by_band_equal_whole_plane():
    # The banded colour conversion gives the very values of the whole-plane one.
    from napari_svd_compress.codecs.color import to_space

    plane = np.random.default_rng(3).random((301, 700, 3), dtype=np.float32)
    for space in ("ycbcr", "rgb"):
        whole = to_space(plane, space)
        for i, ch in enumerate(svd._channels(plane, space)):
            assert ch.x.flags.c_contiguous
            np.testing.assert_array_equal(ch.x, whole[..., i])
