"""Format version 3 arithmetic of ``pca`` and patch ``svd``: decoding that is exact by
construction (docs/bundle-format.md §8.5-8.7).

Every product that BLAS sums is of integers held in float64, and the reader checks,
before it multiplies, that the absolute values of all terms of every sum add up to at
most 2^53: then every partial sum is an integer float64 holds exactly, and the result
does not depend on the order of summation, BLAS's blocking, kernels or threads.  The
only roundings are elementwise IEEE-754 operations in a stated order.

Fixed-point units (powers of two, so that changing unit is exact):

* the reference DCT table: ``2^-REF_BITS``;
* the plane the deblocking filter reads: ``2^-PLANE_BITS`` (clipped to [0, 1]);
* re-projected coefficients: ``2^-COEF_BITS`` steps;
* basis vectors times their step: ``2^-e`` (``e`` chosen by the writer, in the meta);
* the deblocking projection: ``2^-(PLANE_BITS + g)`` steps (``g`` likewise).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import BundleContentError

REF_BITS = 26
PLANE_BITS = 20
COEF_BITS = 8
MEAN_BITS = 12
LIMIT = 1 << 53
# Exponents a reader accepts (the writer's are about 25..45).
E_RANGE = (MEAN_BITS, 200)
G_RANGE = (-200, 200)
# A basis row whose absolute values add up to more than this could pass 2^53 when
# multiplied by the reference table (entries at most 2^REF_BITS).
_MAX_Q_L1 = 1 << (53 - REF_BITS)
# Blocks per band of the reconstruction and rows per band of the filter.
_BAND_BLOCKS = 4096
_DEBLOCK_BAND = 3000


def _refuse(what: str) -> BundleContentError:
    return BundleContentError(f"pca: {what} could exceed 2^53 (exact decoding)")


def _pow2(n: int) -> float:
    return math.ldexp(1.0, n)


@functools.lru_cache(maxsize=4)
def reference_table(b: int, c: int) -> np.ndarray:
    """``rint(2^REF_BITS R)``: the orthonormal reference basis (block DCT-II times the
    opponent colour vectors) as integers, float64, read-only.

    Exact arithmetic would give the same integers: no scaled entry of any block size
    2..32 lies within 1e-4 of a half-integer (tests/codecs/test_pca.py), far more
    than the error of any libm's ``cos``/``sqrt``.
    """
    n = np.arange(b)
    dct = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * b)) * math.sqrt(2.0 / b)
    dct[0] = 1.0 / math.sqrt(b)
    if c == 3:
        col = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]])
        col /= np.sqrt(np.array([3.0, 2.0, 6.0]))[:, None]
    else:
        col = np.eye(c)
    table = np.rint(np.kron(np.kron(dct, dct), col) * _pow2(REF_BITS))
    table.flags.writeable = False
    return table


def _check_range(value: Any, lo_hi: tuple[int, int], what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo_hi[0] <= value <= lo_hi[1]:
        raise BundleContentError(f"pca: bad exact-decoding exponent {what}")
    return value


def row_max(a: np.ndarray) -> list[int]:
    """Per row, the largest magnitude as a Python int (``a`` holds integers)."""
    if a.size == 0:
        return [0] * a.shape[0]
    # The largest and the smallest, not abs(): no temporary as large as ``a``.
    return [max(int(t), -int(u)) for t, u in zip(a.max(axis=1), a.min(axis=1), strict=True)]


def _max_int(a: np.ndarray) -> int:
    return int(np.abs(a).max()) if a.size else 0


def basis_integers(qbasis: np.ndarray, b: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, X)``: ``A = q R``, the quantised coordinates times the integer reference
    table (float64 integers, exact: every row of ``q`` is checked to keep the sum below
    2^53), and ``X = H^-1 A`` with ``H = q q^T`` (exact integers), by :func:`_solve`."""
    q = np.asarray(qbasis, np.int64)
    d = b * b * c
    if not q.shape[0]:
        return np.zeros((0, d)), np.zeros((0, d))
    l1 = np.abs(q).sum(axis=1)
    if int(l1.max()) > _MAX_Q_L1 or int(l1.max()) * int(np.abs(q).max()) > LIMIT:
        raise _refuse("a basis vector's coordinates")
    qf = q.astype(np.float64)
    a = qf @ reference_table(b, c)
    return a, _solve(qf @ qf.T, a)


def _solve(h: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``H^-1 A`` by Gauss-Jordan elimination without pivoting, in elementwise float64
    operations in a fixed order (so the same bits everywhere; ``H`` is symmetric
    positive definite when the basis has full rank).  A pivot below ``2^-40`` of its
    diagonal entry drops that component (its row is zero), as a pseudo-inverse would.

    With ``V = q R / gain`` the decoded basis, ``pinv(V)^T = diag(gain) H^-1 q R``
    (``R`` orthonormal): the deblocking filter's projection is ``X`` times the gains.
    """
    k = h.shape[0]
    aug = np.concatenate([h, a], axis=1)
    diag = np.diag(h).copy()
    for j in range(k):
        piv = aug[j, j]
        if not piv > diag[j] * 2.0**-40:
            aug[j, j:] = 0.0
            continue
        row = aug[j, j:] / piv
        aug[j, j:] = row
        f = aug[:, j].copy()
        f[j] = 0.0
        aug[:, j:] -= f[:, None] * row[None, :]
    return aug[:, k:]


class BlocksPlan:
    """The integers of one ``blocks`` plane: basis times step ``U`` (``k x d``, units
    ``2^-e``), the mean, and, for the deblocking filter, the projection ``Pt``
    (``d x k``, the basis transpose over the step, units ``2^-(PLANE_BITS + g)``),
    from ``basis`` = :func:`basis_integers`.

    Raises :class:`BundleContentError` when a sum could exceed 2^53.
    """

    def __init__(
        self,
        basis: tuple[np.ndarray, np.ndarray],
        gains: np.ndarray,
        wq: np.ndarray,
        step: float,
        qmean: np.ndarray,
        b: int,
        c: int,
        e: int,
        g: int,
    ) -> None:
        a, x = basis
        self.b, self.c, self.d = b, c, b * b * c
        self.e = _check_range(e, E_RANGE, "e")
        self.g = _check_range(g, G_RANGE, "g")
        self.k = a.shape[0]
        # Steps: f64(step w) / 64 (an exact division); the gains are integers.
        gains = np.asarray(gains, np.float64)
        self.steps = step * np.asarray(wq, np.float64) / 64.0
        # U = rint(A f64(s / gain) 2^(e - REF_BITS)): one rounded product, an exact scaling.
        self.u = np.rint(np.ldexp(a * (self.steps / gains)[:, None], e - REF_BITS))
        # The projection is the pseudo-inverse's, not the transpose: weak components
        # have coarse vectors, neither unit nor orthogonal.  Pt = rint(f64(X f64(gain /
        # s)) 2^(g - REF_BITS)), transposed.
        pt = np.rint(np.ldexp(x * (gains / self.steps)[:, None], g - REF_BITS))
        self.pt = np.ascontiguousarray(pt.T)
        self.qmean = np.asarray(qmean, np.int64)
        self.mq = _max_int(self.qmean)
        if not (np.all(np.abs(self.u) <= LIMIT) and np.all(np.abs(self.pt) <= LIMIT)):
            raise _refuse("the basis")
        self.mu = row_max(self.u)

    def check_reconstruction(self, coef_max: list[int]) -> None:
        """Refuse unless ``sum_i max|coef_i| max|U_i| + max|qmean| 2^(e-12) <= 2^53``;
        ``coef_max`` is :func:`row_max` of the coefficients (one pass over them, however
        many exponents are tried)."""
        bound = sum(x * y for x, y in zip(coef_max, self.mu, strict=True))
        if bound + (self.mq << (self.e - MEAN_BITS)) > LIMIT:
            raise _refuse("the reconstruction")

    def check_deblock(self, shifts: int) -> None:
        """Refuse unless the filter's projections and its sum stay below 2^53 (spec §8.6)."""
        pmax = (1 << PLANE_BITS) + (self.mq << (PLANE_BITS - MEAN_BITS))
        # Entries of a passing Pt are at most 2^33, so int64 column sums are exact.
        if self.pt.size and np.abs(self.pt).max() > LIMIT // pmax:
            raise _refuse("the deblocking projection")
        l1 = [int(v) for v in np.abs(self.pt).astype(np.int64).sum(axis=0)]
        if any(pmax * v > LIMIT for v in l1):
            raise _refuse("the deblocking projection")
        down = MEAN_BITS + self.g  # c' = rint(C 2^-(PLANE_BITS + g - COEF_BITS))
        if down >= 0:
            cmax = [-(-(pmax * v) >> down) for v in l1]
        else:
            cmax = [(pmax * v) << -down for v in l1]
        rec = sum(x * y for x, y in zip(cmax, self.mu, strict=True))
        big_e = self.e + COEF_BITS
        total = (1 << big_e) + shifts * (rec + (self.mq << (big_e - MEAN_BITS)))
        if total > LIMIT:
            raise _refuse("the deblocking filter's sum")


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """The largest ``x`` in ``[lo, hi]`` with ``ok(x)`` (``ok`` monotone: true up to
    some point); ``ValueError`` if ``ok(lo)`` is false."""
    if not ok(lo):
        raise ValueError("pca: no exponent keeps the exact sums below 2^53")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _passes(check: Callable[[], None]) -> bool:
    try:
        check()
    except BundleContentError:
        return False
    return True


def choose_exponents(
    basis: tuple[np.ndarray, np.ndarray],
    gains: np.ndarray,
    wq: np.ndarray,
    step: float,
    qmean: np.ndarray,
    coef: np.ndarray,
    b: int,
    c: int,
    shifts: int,
) -> tuple[int, int]:
    """The writer's ``(e, g)``: the largest that pass the reader's checks (``shifts``:
    the deblocking filter's offsets besides the plane itself; 0 without it).  ``g``
    first (its checks barely depend on ``e``), then ``e``."""

    def plan(e: int, g: int) -> BlocksPlan:
        return BlocksPlan(basis, gains, wq, step, qmean, b, c, e, g)

    def g_ok(g: int) -> bool:
        return _passes(lambda: plan(E_RANGE[0], g).check_deblock(0))

    g = _largest(-60, 60, g_ok)
    coef_max = row_max(np.asarray(coef))

    def e_check(e: int) -> None:
        p = plan(e, g)
        p.check_reconstruction(coef_max)
        if shifts:
            p.check_deblock(shifts)

    def e_ok(e: int) -> bool:
        return _passes(lambda: e_check(e))

    return _largest(E_RANGE[0], 120, e_ok), g


def reconstruct(
    plan: BlocksPlan,
    coef: np.ndarray,
    shape: tuple[int, int, int],
    run: Callable[[Callable[[Any], None], list[Any]], None],
) -> np.ndarray:
    """The padded plane, float32: per block ``f32((coef U + qmean 2^(e-12)) 2^-e)``.

    ``run(fn, items)`` maps ``fn`` over the bands (on threads): any banding gives the
    same bits.
    """
    hp, wp, c = shape
    b, e = plan.b, plan.e
    nr, nc = hp // b, wp // b
    out = np.empty(shape, np.float32)
    mterm = plan.qmean.astype(np.float64) * _pow2(e - MEAN_BITS)
    scale = _pow2(-e)
    rows = max(1, _BAND_BLOCKS // max(nc, 1))
    bands = [(r, min(r + rows, nr)) for r in range(0, nr, rows)]

    def band(rr: tuple[int, int]) -> None:
        r0, r1 = rr
        if plan.k:
            s = np.matmul(coef[:, r0 * nc : r1 * nc].T.astype(np.float64), plan.u)
            s += mterm
        else:
            s = np.broadcast_to(mterm, ((r1 - r0) * nc, plan.d)).copy()
        s *= scale
        s5 = s.reshape(r1 - r0, nc, b, b, c).transpose(0, 2, 1, 3, 4)
        out[r0 * b : r1 * b].reshape(r1 - r0, b, nc, b, c)[...] = s5

    run(band, bands)
    return out


def deblock(
    plan: BlocksPlan,
    plane: np.ndarray,
    offsets: int,
    threshold: float,
    workers: int,
    run: Callable[[Callable[[Any], None], list[Any]], None],
    fill: Callable[..., None],
    reflect: Callable[[np.ndarray, int], np.ndarray],
) -> np.ndarray:
    """The version-3 deblocking filter (spec §8.6) of the padded float32 ``plane``,
    in place (the result is written over ``plane`` and returned).

    Every shifted block's coefficients are exact integer sums of the fixed-point plane
    times ``Pt``; those under ``threshold`` steps are dropped by an exact comparison,
    the rest rounded to ``2^-COEF_BITS`` steps, and the re-projections summed exactly
    with the plane; one scaling at the end.  Because no sum depends on its order, the
    plane is split into one piece per thread, each done in bands whose last shifted
    block row is computed once and carried to the next band.
    """
    b, c, d, k = plan.b, plan.c, plan.d, plan.k
    hp, wp, _ = plane.shape
    nr, nc = hp // b, wp // b
    ncb = nc + 1
    gg = max(1, min(math.isqrt(offsets), b))
    shifts = [(i * b // gg, j * b // gg) for i in range(gg) for j in range(gg)][1:]
    plan.check_deblock(len(shifts))
    count = len(shifts) + 1
    big_e = plan.e + COEF_BITS
    mean_fix = plan.qmean.astype(np.float64) * _pow2(PLANE_BITS - MEAN_BITS)
    mproj = mean_fix @ plan.pt  # exact: bounded by check_deblock
    thr = float(threshold) * _pow2(PLANE_BITS + plan.g)
    down = _pow2(COEF_BITS - PLANE_BITS - plan.g)
    # The shifts' mean terms, summed once: at shift (dy, dx) pixel (y, x) is at
    # position ((y - dy) mod b, (x - dx) mod b) of its block.
    m5 = plan.qmean.reshape(b, b, c).astype(np.float64)
    mpat = np.zeros_like(m5)
    for dy, dx in shifts:
        mpat += np.roll(m5, (dy, dx), axis=(0, 1))
    mpat *= _pow2(big_e - MEAN_BITS)
    mpat = np.tile(mpat, (1, nc, 1))  # (b, wp, c)
    yscale = _pow2(big_e - PLANE_BITS)
    out_scale = _pow2(-big_e)
    cols = reflect(np.arange(-b, wp + b), wp)
    # The shifts grouped by horizontal offset (the order of exact sums is free).
    groups: dict[int, list[int]] = {}
    for dy, dx in shifts:
        groups.setdefault(dx, []).append(dy)
    by_dx = list(groups.items())
    rows = max(1, _DEBLOCK_BAND // ncb)
    pieces = max(1, min(workers, nr // max(2 * rows, 1) or 1))
    cuts = np.linspace(0, nr, pieces + 1).round().astype(int)
    tasks = [(int(a), int(z)) for a, z in zip(cuts[:-1], cuts[1:], strict=True) if z > a]
    # Each piece reads one block row beyond its ends: kept before anything is written.
    halos = {
        (s0, s1): (
            plane[s0 * b - b : s0 * b].copy() if s0 else None,
            plane[s1 * b : s1 * b + b].copy() if s1 < nr else None,
        )
        for s0, s1 in tasks
    }

    def piece(task: tuple[int, int]) -> None:
        s0, s1 = task
        rmax = min(rows, s1 - s0)
        slab32 = np.empty(((rmax + 2) * b, wp + 2 * b, c), np.float32)
        fix = np.empty(slab32.shape, np.float64)
        # Two accumulators: a band is written back only after the next has read its
        # slab (the plane is the output).
        accs = [np.empty_like(fix), np.empty_like(fix)]
        # Scratch reused by every shift (large temporaries would be mapped afresh).
        # The slab cut into columns of blocks at one horizontal offset: (column, row,
        # b * c), so that a shifted block is d contiguous values and a row of shifted
        # blocks a strided matrix BLAS reads in place (one transpose per horizontal
        # offset rather than a gather per shift).
        sbuf = np.empty((ncb, (rmax + 2) * b, b * c), np.float64)
        rbuf = np.empty(((rmax + 1) * ncb, d), np.float64)
        cbuf = np.empty(((rmax + 1) * ncb, k), np.float64)
        tbuf = np.empty_like(cbuf)
        kbuf = np.empty(cbuf.shape, bool)
        carry: np.ndarray | None = None
        pending: tuple[np.ndarray, int, int] | None = None
        for i, r0 in enumerate(range(s0, s1, rows)):
            r1 = min(r0 + rows, s1)
            nrow, hb = r1 - r0, (r1 - r0) * b
            sl32, fx, ac = slab32[: hb + 2 * b], fix[: hb + 2 * b], accs[i % 2][: hb + 2 * b]
            fill(plane, sl32, r0 * b - b, b, cols, (s0 * b, s1 * b), halos[task])
            if pending is not None:
                _write(*pending)
                pending = None
            # The fixed-point plane: rint(clip(x, 0, 1) 2^PLANE_BITS), exact steps.
            np.clip(sl32, 0.0, 1.0, out=sl32)
            np.multiply(sl32, _pow2(PLANE_BITS), out=fx, dtype=np.float64)
            np.rint(fx, out=fx)
            ac.fill(0.0)
            if carry is not None:
                ac[b : 2 * b] = carry
            for dx, dys in by_dx:
                sd = sbuf[:, : hb + 2 * b]
                cut = fx[:, dx : dx + ncb * b].reshape(hb + 2 * b, ncb, b * c)
                np.copyto(sd, cut.transpose(1, 0, 2))
                for dy in dys:
                    # Shifted block rows r0..r1; row r0 lies above the band when
                    # dy == 0 and was carried from the previous band otherwise.
                    first = 1 if (dy == 0 or carry is not None) else 0
                    nm = nrow + 1 - first
                    if nm <= 0:
                        continue
                    y0 = dy + first * b
                    blocks = sd[:, y0 : y0 + nm * b].reshape(ncb, nm, d).transpose(1, 0, 2)
                    co = cbuf[: nm * ncb]
                    np.matmul(blocks, plan.pt, out=co.reshape(nm, ncb, k))
                    co -= mproj
                    keep = np.abs(co, out=tbuf[: nm * ncb])
                    keep = np.greater_equal(keep, thr, out=kbuf[: nm * ncb])
                    co *= down
                    np.rint(co, out=co)
                    co *= keep  # exact: times 1 or 0
                    # Components with no coefficient left in this band add nothing.
                    live = np.flatnonzero(keep.any(axis=0))
                    if not live.size:
                        continue
                    rec = rbuf[: nm * ncb]
                    if live.size < k:
                        np.matmul(co[:, live], plan.u[live], out=rec)
                    else:
                        np.matmul(co, plan.u, out=rec)
                    view = ac[y0 : y0 + nm * b, dx : dx + ncb * b].reshape(nm, b, ncb, b, c)
                    view += rec.reshape(nm, ncb, b, b, c).transpose(0, 2, 1, 3, 4)
            carry = ac[b + hb : 2 * b + hb].copy()
            inner = ac[b : b + hb, b : b + wp]
            inner += fx[b : b + hb, b : b + wp] * yscale
            inner.reshape(nrow, b, wp, c)[...] += mpat
            inner *= out_scale
            inner /= count
            pending = (inner, r0, r1)
        if pending is not None:
            _write(*pending)

    def _write(values: np.ndarray, r0: int, r1: int) -> None:
        plane[r0 * b : r1 * b] = values

    run(piece, tasks)
    return plane


# --- rows ---------------------------------------------------------------------------


def rows_plane(
    basis: np.ndarray,
    gains: np.ndarray,
    coef: np.ndarray,
    step: float,
    qmean: np.ndarray,
    e: int,
) -> np.ndarray:
    """One channel of ``rows`` mode: ``f32((coef^T U + qmean 2^(e-12)) 2^-e)`` with
    ``U = rint(basis f64(step / gain) 2^e)``; refuses sums that could pass 2^53."""
    _check_range(e, E_RANGE, "e")
    u = rows_basis(basis, gains, step, e)
    check_rows(u, row_max(np.asarray(coef)), qmean, e)
    s = coef.T.astype(np.float64) @ u
    s += np.asarray(qmean, np.float64) * _pow2(e - MEAN_BITS)
    s *= _pow2(-e)
    return s.astype(np.float32)


def rows_basis(basis: np.ndarray, gains: np.ndarray, step: float, e: int) -> np.ndarray:
    t = step / np.asarray(gains, np.float64)
    return np.rint(np.ldexp(np.asarray(basis, np.float64) * t[:, None], e))


def check_rows(u: np.ndarray, coef_max: list[int], qmean: np.ndarray, e: int) -> None:
    """Refuse a ``rows`` channel whose exact sum could pass 2^53 (``coef_max``:
    :func:`row_max` of its coefficients)."""
    if not np.all(np.abs(u) <= LIMIT):
        raise _refuse("the basis")
    bound = sum(x * y for x, y in zip(coef_max, row_max(u), strict=True))
    if bound + (_max_int(np.asarray(qmean)) << (e - MEAN_BITS)) > LIMIT:
        raise _refuse("the reconstruction")


def choose_rows_exponent(
    basis: np.ndarray, gains: np.ndarray, coef: np.ndarray, step: float, qmean: np.ndarray
) -> int:
    """The writer's ``e`` of a ``rows`` channel: the largest passing :func:`check_rows`."""

    coef_max = row_max(np.asarray(coef))

    def ok(e: int) -> bool:
        return _passes(lambda: check_rows(rows_basis(basis, gains, step, e), coef_max, qmean, e))

    return _largest(E_RANGE[0], 120, ok)
