"""The SVD codec's preview API: factor once, reconstruct and size at any rank."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

import napari_svd_compress as nsc
from napari_svd_compress import api, registry
from napari_svd_compress.codecs import svd
from napari_svd_compress.errors import Cancelled, ImageError, ParameterError


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[100:220:, 120:280])  # 120 x 160 RGB


def _truncated(x: np.ndarray, k: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


def test_grayscale_reconstruction_is_the_rank_k_truncation():
    image = data.camera()[::4, ::4]  # 128 x 128 uint8
    f = svd.factorise(image)
    assert f.space == "gray" and f.max_rank == 128 and f.shape == image.shape
    for k in (1, 5, 30, 128):
        expected = np.clip(np.rint(_truncated(image / 255.0, k) * 255), 0, 255)
        got = f.reconstruct(k)
        assert got.dtype == np.uint8 and got.shape == image.shape
        # float32 products against float64 LAPACK: a pixel on a rounding boundary may
        # land one level off
        diff = np.abs(got.astype(np.float64) - expected)
        assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3


def test_colour_reconstruction_in_both_spaces(photo):
    unit = photo / 255.0
    f = svd.factorise(photo, color="rgb")
    expected = np.stack([_truncated(unit[..., i], 12) for i in range(3)], axis=-1)
    expected = np.clip(np.rint(expected * 255), 0, 255)
    assert np.abs(f.reconstruct(12).astype(float) - expected).max() <= 1

    f = svd.factorise(photo, color="ycbcr", chroma=0.5)
    assert f.ranks(12) == [12, 6, 6]
    from napari_svd_compress.codecs.color import from_space, to_space

    ycc = to_space(unit.astype(np.float32), "ycbcr")
    parts = [_truncated(ycc[..., i], r) for i, r in zip(range(3), (12, 6, 6), strict=True)]
    rgb = from_space(np.stack(parts, axis=-1).astype(np.float32), "ycbcr")
    expected = np.clip(np.rint(np.clip(rgb, 0, 1) * 255), 0, 255)
    assert np.abs(f.reconstruct(12).astype(float) - expected).max() <= 1


def test_alpha_float_and_16_bit_keep_the_dtype_and_range(photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 77, np.uint8)])
    out = svd.factorise(rgba).reconstruct(8)
    assert out.shape == rgba.shape and np.all(out[..., 3] == 77)
    wide = photo.astype(np.uint16) * 257
    out = svd.factorise(wide).reconstruct(8)
    assert out.dtype == np.uint16
    flt = data.camera()[::4, ::4].astype(np.float32) * 0.01 - 1.0
    f = svd.factorise(flt)
    out = f.reconstruct(f.max_rank)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, flt, atol=1e-4)  # full rank: the image itself


def test_psnr_and_size_agree_with_compress(photo):
    f = svd.factorise(photo)
    codec = registry.get("svd")
    for k in (3, 20):
        result = nsc.compress(photo, "svd", rank=k)
        psnr = f.psnr(f.reconstruct(k))
        # The preview is the exact truncation; the bundle loses qloss = 0.1 dB to
        # quantising the factors.
        assert psnr - 0.2 < result.psnr < psnr
        container = api.container_for(codec, codec.resolve({"rank": k}), f.spec)
        assert abs(f.bundle_nbytes(k, container) - result.nbytes) <= 16
        assert f.bundle_nbytes(k) < f.bundle_nbytes(k, container)  # no container: less
    assert f.bundle_nbytes(3, cancelled=lambda: True) is None


def test_psnr_rejects_another_shape(photo):
    f = svd.factorise(photo)
    with pytest.raises(ValueError, match="shape"):
        f.psnr(photo[:10])


def test_draft_is_every_step_th_pixel(photo):
    f = svd.factorise(photo)
    full = f.reconstruct(15)
    draft = f.reconstruct(15, step=2)
    assert draft.shape == full[::2, ::2].shape
    assert np.abs(draft.astype(int) - full[::2, ::2]).max() <= 1
    with pytest.raises(ParameterError):
        f.reconstruct(15, step=0)


def test_rank_limits_and_the_cap(photo, monkeypatch):
    f = svd.factorise(photo, max_rank=40)
    assert f.max_rank == 40
    for bad in (0, 41):
        with pytest.raises(ParameterError):
            f.reconstruct(bad)
    with pytest.raises(ParameterError):
        svd.factorise(photo, max_rank=0)
    with pytest.raises(ParameterError):
        svd.factorise(photo, color="lab")
    # Over the exact-SVD limit the default cap applies.
    monkeypatch.setattr(svd._linalg, "EXACT_MAX_DIM", 100)
    monkeypatch.setattr(svd, "PREVIEW_MAX_RANK", 30)
    capped = svd.factorise(photo)
    assert capped.max_rank == 30
    assert capped.ranks(30) == [30, 15, 15]


def test_a_plane_of_a_stack_uses_the_stack_range():
    stack = np.stack([np.full((20, 30), 10.0), np.linspace(0, 5, 600).reshape(20, 30)])
    f = svd.factorise(stack, index=(1,), value_range=(0.0, 10.0))
    assert f.shape == (20, 30)
    np.testing.assert_allclose(f.reconstruct(2), stack[1], atol=1e-5)
    with pytest.raises(ImageError):
        svd.factorise(stack, index=())


def test_progress_and_cancel(photo):
    seen = []
    svd.factorise(photo, progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == 4  # once per channel

    def stop(fraction):
        if fraction > 0:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        svd.factorise(photo, progress=stop)
