"""The factorisations behind the SVD codec: randomized, exact and from the Gram matrix."""

from __future__ import annotations

import numpy as np
import pytest

from napari_svd_compress.codecs import _linalg


def _matrix(m: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A decaying spectrum with a noise floor, like a photograph's.
    u, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
    v, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
    s = 100.0 * 0.9 ** np.arange(min(m, n)) + 0.01
    return ((u * s) @ v.T).astype(np.float32)


@pytest.mark.parametrize("shape", [(120, 200), (200, 120)])
def test_gram_factors_equal_lapack(shape):
    x = _matrix(*shape)
    s_ref = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    s, vectors = _linalg.gram_eig(x)
    np.testing.assert_allclose(s, s_ref, rtol=1e-6, atol=1e-6 * s_ref[0])
    np.testing.assert_allclose(_linalg.spectrum(x), s_ref, rtol=1e-6, atol=1e-6 * s_ref[0])
    for k in (1, 10, 60):
        u, sk, vt = _linalg.svd_from_gram(x, s, vectors, k)
        assert u.shape == (shape[0], k) and vt.shape == (k, shape[1]) and sk.shape == (k,)
        assert u.dtype == vt.dtype == np.float32
        rec = (u * sk) @ vt
        u0, s0, vt0 = np.linalg.svd(x.astype(np.float64), full_matrices=False)
        best = (u0[:, :k] * s0[:k]) @ vt0[:k]
        # The rank-k truncation itself (Eckart-Young), to float32 precision.
        np.testing.assert_allclose(rec, best, atol=2e-4 * s0[0])
        np.testing.assert_allclose(np.linalg.norm(u, axis=0), 1, atol=1e-4)


def test_gram_factors_of_a_rank_deficient_matrix_have_zero_components():
    x = np.outer(np.arange(1, 51), np.arange(1, 81)).astype(np.float32)  # rank 1
    s, vectors = _linalg.gram_eig(x)
    u, sk, vt = _linalg.svd_from_gram(x, s, vectors, 5)
    assert sk[0] > 0 and np.all(sk[1:] == 0)
    assert np.all(vt[1:] == 0)
    np.testing.assert_allclose((u * sk) @ vt, x, rtol=1e-5)


def test_randomized_matches_exact_on_a_decaying_spectrum():
    x = _matrix(300, 400)
    _, s, _ = _linalg.truncated_svd(x, 20, method="randomized")
    s_ref = np.linalg.svd(x.astype(np.float64), compute_uv=False)[:20]
    np.testing.assert_allclose(s, s_ref, rtol=1e-4)
