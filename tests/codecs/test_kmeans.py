"""k-means colour quantisation codec."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from skimage import data, transform

import napari_svd_compress as nsc
from napari_svd_compress import _threads
from napari_svd_compress.codecs import kmeans
from napari_svd_compress.codecs.kmeans import kmeans_fit, nearest
from napari_svd_compress.errors import BundleError
from napari_svd_compress.format.entropy import decode_ints, encode_ints


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    small = transform.resize(data.astronaut(), (96, 128), anti_aliasing=True)
    return np.round(small * 255).astype(np.uint8)


@pytest.mark.parametrize("space", ["lab", "rgb"])
@pytest.mark.parametrize("kind", ["rgb8", "gray8", "rgb16", "gray16"])
def test_round_trip(rgb8, kind, space):
    image = {
        "rgb8": rgb8,
        "gray8": rgb8[..., 0],
        "rgb16": rgb8.astype(np.uint16) * 257,
        "gray16": rgb8[..., 1].astype(np.uint16) * 257,
    }[kind]
    r = nsc.compress(image, "kmeans", colors=16, space=space)
    back = nsc.decompress(r.bundle)
    assert back.shape == image.shape and back.dtype == image.dtype
    np.testing.assert_array_equal(back, r.image)
    flat = r.image.reshape(-1, r.image.shape[-1]) if r.image.ndim == 3 else r.image.ravel()
    assert len(np.unique(flat, axis=0)) <= 16
    assert r.psnr > (30 if image.ndim == 2 else 22)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_two_colours_exact(dtype):
    hi = np.iinfo(dtype).max
    image = np.zeros((40, 50, 3), dtype)
    image[:] = (hi // 5, hi // 3, hi // 7)
    image[10:30, 5:35] = (hi, hi // 2, 0)
    r = nsc.compress(image, "kmeans", colors=2)
    assert r.psnr == float("inf")
    np.testing.assert_array_equal(nsc.decompress(r.bundle), image)


def test_more_colours_better(rgb8):
    psnrs = [nsc.compress(rgb8, "kmeans", colors=k).psnr for k in (2, 8, 64)]
    assert psnrs[0] + 3 < psnrs[1] < psnrs[2] - 2


def test_seed_reproducible(rgb8):
    a = nsc.compress(rgb8, "kmeans", colors=8, sample=500, seed=3)
    b = nsc.compress(rgb8, "kmeans", colors=8, sample=500, seed=3)
    assert a.bundle == b.bundle


def test_fit_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]])
    x = np.concatenate([c + 0.1 * rng.standard_normal((200, 2)) for c in centres])
    fitted = kmeans_fit(x, 3, seed=1)
    order = nearest(centres, fitted)
    np.testing.assert_allclose(fitted[order], centres, atol=0.05)


def test_corrupt_payloads_raise(rgb8):
    r = nsc.compress(rgb8, "kmeans", colors=8)
    zin = zipfile.ZipFile(io.BytesIO(r.bundle))
    members = {n: zin.read(n) for n in zin.namelist()}

    def rebuild(edit):
        m = dict(members)
        edit(m)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for n, d in m.items():
                z.writestr(n, d)
        return out.getvalue()

    index = next(n for n in members if n.endswith("index"))
    palette = next(n for n in members if n.endswith("palette"))

    def truncate(m):
        m[index] = m[index][:20]

    def drop(m):
        del m[palette]

    def colours(m):
        man = json.loads(m["manifest.json"])
        man["planes"][0]["colors"] = 300
        m["manifest.json"] = json.dumps(man).encode()

    def fewer(m):
        man = json.loads(m["manifest.json"])
        man["planes"][0]["colors"] = 3
        m["manifest.json"] = json.dumps(man).encode()

    for edit in (truncate, drop, colours, fewer):
        with pytest.raises(BundleError):
            nsc.decompress(rebuild(edit))


@pytest.fixture(scope="module")
def noisy_large() -> np.ndarray:
    """A 1.1-megapixel photograph with camera-like noise: the lookup-table path and the
    quick index coder (over 1 MiB) are taken."""
    big = transform.resize(data.astronaut(), (1000, 1100), order=1) * 255
    noise = np.random.default_rng(0).normal(0, 3, big.shape)
    return np.clip(np.rint(big + noise), 0, 255).astype(np.uint8)


def test_large_image_round_trip_and_determinism(noisy_large):
    a = nsc.compress(noisy_large, "kmeans", colors=16)
    b = nsc.compress(noisy_large, "kmeans", colors=16)
    assert a.bundle == b.bundle
    np.testing.assert_array_equal(nsc.decompress(a.bundle), a.image)
    assert len(np.unique(a.image.reshape(-1, 3), axis=0)) <= 16


def test_smoothing_never_costs_error_and_saves_bytes(noisy_large, monkeypatch):
    smoothed = nsc.compress(noisy_large, "kmeans", colors=16)
    monkeypatch.setattr(kmeans, "_SMOOTH_PASSES", 0)  # plain nearest-centre labels
    plain = nsc.compress(noisy_large, "kmeans", colors=16)
    assert smoothed.psnr >= plain.psnr
    assert len(smoothed.bundle) < 0.95 * len(plain.bundle)


def test_threads_do_not_change_the_bundle(noisy_large, monkeypatch):
    two = nsc.compress(noisy_large, "kmeans", colors=8).bundle
    monkeypatch.setattr(_threads, "THREADS", 1)
    assert nsc.compress(noisy_large, "kmeans", colors=8).bundle == two


def test_exact_and_general_palette_sums_agree(rgb8):
    # Values that are exactly 8-bit levels take the per-colour sums, others (16-bit)
    # the per-pixel sums: the same labels and, to rounding, the same palette.
    params = dict(colors=16, space="lab", sample=100_000, iterations=50, seed=0)
    p8 = rgb8.astype(np.float32) * np.float32(1 / 255)
    p16 = (rgb8.astype(np.float32) * 257) * np.float32(1 / 65535)
    assert kmeans._all_codes(p8)[1] and not kmeans._all_codes(p16)[1]
    e8, e16 = (kmeans.encode(p, dict(params), lambda f: None, None) for p in (p8, p16))
    assert e8.payloads["index"] == e16.payloads["index"]
    pal8, pal16 = (
        decode_ints(e.payloads["palette"], shape=(16, 3), dtype=np.uint16).astype(int)
        for e in (e8, e16)
    )
    assert np.abs(pal8 - pal16).max() <= 1


def test_codes_and_their_features():
    rng = np.random.default_rng(4)
    levels = rng.integers(0, 256, size=(37, 41, 3))
    plane = levels.astype(np.float32) * np.float32(1 / 255)
    codes, exact = kmeans._all_codes(plane)
    assert exact
    expected = levels[..., 0] | levels[..., 1] << 8 | levels[..., 2] << 16
    np.testing.assert_array_equal(codes, expected.ravel())
    assert not kmeans._all_codes(plane + np.float32(1e-4))[1]
    grey, exact = kmeans._all_codes(plane[..., :1])
    assert exact
    np.testing.assert_array_equal(grey, levels[..., 0].ravel())
    cells = np.unique(codes)
    for space in ("lab", "rgb"):
        np.testing.assert_array_equal(
            kmeans._code_features(cells, 3, space),
            kmeans._to_feature(kmeans._code_colors(cells, 3), space),
        )


def test_two_nearest_agrees_with_nearest():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(70_000, 3))
    centres = rng.normal(size=(9, 3))
    first, second = kmeans._two_nearest(points, centres)
    np.testing.assert_array_equal(first, nearest(points, centres))
    d = ((points[:, None] - centres[None]) ** 2).sum(-1)
    d[np.arange(len(d)), first] = np.inf
    agree = second == np.argmin(d, axis=1)
    assert agree.mean() > 0.999  # float32 distances may break near-ties differently
    one, same = kmeans._two_nearest(points[:5], centres[:1])
    np.testing.assert_array_equal(one, same)


@pytest.mark.parametrize("c", [1, 3])
def test_decode_is_the_palette_lookup(c):
    rng = np.random.default_rng(6)
    k, shape = 11, (1500, 701, c)  # several row blocks
    palette = rng.integers(0, 65536, size=(k, c)).astype(np.uint16)
    index = rng.integers(0, k, size=shape[:2]).astype(np.uint8)
    payloads = {"palette": encode_ints(palette), "index": encode_ints(index)}
    out = kmeans.decode({"colors": k}, payloads, shape)
    colors = (palette.astype(np.float32) / np.float32(65535)).astype(np.float32)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_array_equal(out, colors[index])


def test_fit_with_few_distinct_rows_returns_them():
    x = np.repeat(np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.9, 0.0, 0.1]]), 500, axis=0)
    np.testing.assert_array_equal(kmeans_fit(x, 3), np.unique(x, axis=0))
    assert len(kmeans_fit(x, 2)) == 2
