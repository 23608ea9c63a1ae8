"""k-means colour quantisation codec."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from skimage import data, transform

import napari_svd_compress as nsc
from napari_svd_compress.codecs.kmeans import kmeans_fit, nearest
from napari_svd_compress.errors import BundleError


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
