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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_orth_is_an_orthonormal_basis_of_the_same_span(dtype):
    a = _matrix(600, 40)[:, :40].astype(dtype)  # condition number about 3e3
    q = _linalg._orth(a)
    assert q.shape == a.shape and q.dtype == a.dtype
    q64 = q.astype(np.float64)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(q64.T @ q64, np.eye(40), atol=tol)
    # a = q (q^T a): the columns of a lie in the span of q.
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(q64 @ (q64.T @ a64), a64, atol=50 * tol * np.abs(a64).max())


def test_orth_of_a_rank_deficient_sample_falls_back_to_the_svd(monkeypatch):
    a = np.outer(np.arange(1, 301), np.ones(12)).astype(np.float32)  # rank 1
    calls = []
    svd = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *x, **k: calls.append(1) or svd(*x, **k))
    q = _linalg._orth(a)
    assert calls  # Cholesky failed or left the basis far from orthonormal
    np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-5)
    calls.clear()
    _linalg._orth(_matrix(300, 12))
    assert not calls  # a well-conditioned sample takes CholeskyQR2
