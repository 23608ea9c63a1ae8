"""Truncated SVD for large matrices: randomized (Halko et al. 2011) or exact LAPACK,
and the singular-value spectrum from the eigenvalues of the smaller Gram matrix."""

from __future__ import annotations

import numpy as np

# numpy.linalg, not scipy.linalg: numpy's LAPACK gufuncs release the GIL and scipy's
# wrappers do not, so a compression running in a worker thread (the napari widget) would
# freeze the event loop for the whole LAPACK call (over a second for the 30 x 6000 SVD of
# a 24-megapixel plane when BLAS threads compete for the cores).  numpy's QR is the
# exception: it holds the GIL too, hence the SVD in _orth.

# Below this many columns in the smaller dimension a direct LAPACK SVD is cheap.
EXACT_MAX_DIM = 1024
# Randomized SVD is used while k is small against min(height, width).
RANDOMIZED_MAX_FRACTION = 0.25


def spectrum(x: np.ndarray) -> np.ndarray:
    """All singular values of ``x``, descending, from ``eigvalsh`` of the smaller Gram matrix.

    Costs one ``m x n x min(m, n)`` product and one symmetric eigenvalue problem of size
    ``min(m, n)``, instead of a full SVD.  The Gram matrix is formed in float64 so that
    small singular values are not drowned in rounding (the seed rule sums all of them).
    """
    x64 = x.astype(np.float64, copy=False)
    gram = x64 @ x64.T if x.shape[0] <= x.shape[1] else x64.T @ x64
    evals = np.linalg.eigvalsh(gram)
    return np.sqrt(np.clip(evals[::-1], 0.0, None))


def gram_eig(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All singular values of ``x`` (descending) and the singular vectors of its smaller side.

    From ``eigh`` of the float64 Gram matrix of the smaller side: one ``m x n x min(m, n)``
    product (numpy computes ``a @ a.T`` with a symmetric rank-k update, half the flops)
    and one symmetric eigenproblem, several times cheaper than LAPACK's SVD of a
    24-megapixel plane.  In float64 the singular values are exact to about
    ``1e-8 * s[0]``, far below what quantisation keeps.

    Returns
    -------
    s : (min(m, n),) float64
    vectors : (min(m, n), min(m, n)) float64
        Left singular vectors (columns) when ``m <= n``, else right singular vectors.
    """
    x64 = x.astype(np.float64, copy=False)
    gram = x64 @ x64.T if x.shape[0] <= x.shape[1] else x64.T @ x64
    del x64
    evals, vectors = np.linalg.eigh(gram)
    return np.sqrt(np.clip(evals[::-1], 0.0, None)), vectors[:, ::-1]


def svd_from_gram(
    x: np.ndarray, s: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leading ``k`` singular triplets of ``x`` from :func:`gram_eig`'s output.

    The other side's vectors are ``x^T u / s`` (or ``x v / s``); components whose
    singular value is below ``1e-7 * s[0]`` (numerically zero in the Gram matrix) are
    returned with ``s = 0`` and zero vectors.
    """
    m, n = x.shape
    s = s[:k].copy()
    s[s < 1e-7 * max(float(s[0]), 1e-300)] = 0.0
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0).astype(x.dtype)
    basis = np.ascontiguousarray(vectors[:, :k], dtype=x.dtype)
    if m <= n:
        return basis, s, (basis.T @ x) * inv[:, None]
    return (x @ basis) * inv, s, np.ascontiguousarray(basis.T)


def truncated_svd(
    x: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    oversample: int | None = None,
    power_iterations: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leading ``k`` singular triplets of a 2-D float array.

    Parameters
    ----------
    x : ndarray, shape (m, n)
        float32 or float64.
    k : int
        Number of components, ``1 <= k <= min(m, n)``.
    method : {"auto", "randomized", "exact"}
        ``auto`` uses the randomized range finder when ``k`` is small against
        ``min(m, n)`` and the matrix is large, and LAPACK's divide-and-conquer SVD
        otherwise.
    oversample, power_iterations, seed
        Randomized SVD settings; the default oversampling is ``max(10, k // 2)``, and
        three power iterations keep the truncation within a few hundredths of a dB of
        the exact one on photographs (whose spectra decay slowly).

    Returns
    -------
    u : (m, k), s : (k,), vt : (k, n)
    """
    m, n = x.shape
    small = min(m, n)
    k = int(min(max(k, 1), small))
    if method == "auto":
        if small <= EXACT_MAX_DIM or k > RANDOMIZED_MAX_FRACTION * small:
            method = "exact"
        else:
            method = "randomized"
    if method == "exact":
        u, s, vt = np.linalg.svd(x, full_matrices=False)  # LAPACK gesdd
        return u[:, :k], s[:k], vt[:k]
    if method != "randomized":
        raise ValueError(f"unknown SVD method {method!r}")
    return _randomized(x, k, oversample, power_iterations, seed)


def _randomized(
    x: np.ndarray, k: int, oversample: int | None, power_iterations: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m, n = x.shape
    p = max(10, k // 2) if oversample is None else oversample
    width = min(k + p, min(m, n))
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((n, width)).astype(x.dtype)
    q = _orth(x @ omega)
    for _ in range(power_iterations):
        # Re-orthonormalising between products keeps float32 from losing the small
        # directions (Halko et al., algorithm 4.4).
        q = _orth(x.T @ q)
        q = _orth(x @ q)
    b = q.T @ x
    ub, s, vt = np.linalg.svd(b, full_matrices=False)  # LAPACK gesdd
    return (q @ ub[:, :k]), s[:k], vt[:k]


def _orth(a: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of a tall ``a`` (``m x l``, ``l`` small).

    CholeskyQR2 in float64 (two passes of ``Q = A L^-T`` with ``L L^T = A^T A``): matrix
    products and an ``l x l`` Cholesky, a quarter of the time of LAPACK's SVD of ``a`` and
    as orthonormal when ``cond(a) < 1e8``.  The second pass starts from a near-orthonormal
    basis; when the first did not get there (a rank-deficient sample, as from a flat
    image), the SVD is used.  Not numpy's QR: that gufunc holds the GIL (see the note at
    the top); its Cholesky and SVD do not.
    """
    q = a.astype(np.float64)
    for second in (False, True):
        gram = q.T @ q
        if second and not np.abs(gram - np.eye(len(gram))).max() < 0.5:
            break
        try:
            low = np.linalg.cholesky(gram)
        except np.linalg.LinAlgError:
            break
        q = q @ np.linalg.inv(low).T
    else:
        return q.astype(a.dtype)
    u, _, _ = np.linalg.svd(a, full_matrices=False)
    return u
