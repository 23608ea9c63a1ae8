"""The engine of the ``pca`` codec (and of ``svd`` with patches): a block transform learned
from the image itself.

Two modes:

``blocks`` (default)
    The image (RGB by default, see the ``color`` parameter) is cut into non-overlapping
    ``b x b`` patches of all channels together (edge-padded to whole blocks); each patch
    is a sample of dimension ``b*b*C``.  The eigenvectors of the patch covariance (a
    ``d x d`` eigenproblem, 192 x 192 for 8 x 8 colour blocks, accumulated over bands of
    blocks so no copy of the image is made) are the transform, like JPEG's DCT but
    fitted to the picture.  The coefficients are quantised (per-component steps,
    rate-distortion optimised; in ``pca``, a component whose values do not save lambda
    times their bits and its basis vector's is dropped whole) and coded by
    :mod:`~napari_svd_compress.format.block_context` (component by component, with a
    model that follows the activity of each block's neighbourhood; smooth components as
    residuals of a median prediction).
``rows``
    What the seed notebooks did: the image's rows, per channel, are the samples
    (dimension W), mean-centred; the leading ``k`` components are kept.

In both modes the basis is quantised too, each vector with a step that makes its error
a fraction of the coefficient error (see ``_quantise_basis``), so weak components cost
little for their basis vectors.  In blocks mode the basis vectors travel as their
coordinates in a fixed block DCT (``_reference``): the learned vectors are close to
DCT vectors, so most coordinates round to zero.

Blocks mode decodes with a deblocking filter (``_deblock``): the decoded image is cut
into blocks again at several offsets, projected on the basis, its small coefficients
dropped, and the reconstructions averaged ("re-application" of the codec, Nosratinia
2001).  The encoder keeps it where it saves at least 1% of the squared error of the
clipped output (it costs up to four times the decode time).

Payloads: ``mean`` (int, float32 mean scaled), ``basis`` and ``coef`` (integers).

Format version 3 decodes exactly (:mod:`._exact`, spec §8.5-8.7): integer basis and
projection, sums of integers below 2^53 whatever BLAS does, a plane meta ``shift``.
Planes without it (versions 1 and 2) decode by the float arithmetic below, kept for
the files written so.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import scipy.fft
import scipy.linalg as sla

from .._threads import THREADS, thread_map
from ..errors import BundleContentError
from ..format import block_context as _block_context
from ..format.entropy import decode_ints, encode_ints
from ..metrics import squared_error
from ..registry import Container, Encoded, Param, encode_one
from . import _exact
from .color import COLOR_SPACES, from_space, to_space

MODES = ("blocks", "rows")
# Levels of an 8-bit image: the step is given in these units.
_LEVEL = 1.0 / 255.0
# Rounding offset of the dead-zone quantiser: values below (0.5 + _DEADZONE) steps go
# to zero.  Zero (plain rounding) measures best once _rdo has pruned what costs more
# bits than it buys in PSNR (rows mode has no _rdo).
_DEADZONE = 0.0
# The basis quantisation error is this many times smaller than the coefficient error
# (16 measured best of 8, 16, 32, 64 on the photos of docs/rate-distortion.md).
_BASIS_FINENESS = 16.0
_MEAN_SCALE = 1 << 12
# Blocks per band when accumulating the covariance and projecting.
_BAND_BLOCKS = 1 << 15
_MAX_BLOCK = 32
# Rate-distortion optimised quantisation (see ``_rdo``); the entropy coder's smallest
# Laplace scale.
_RDO_PASSES = 1
_WEIGHT_GAMMA = 0.2
_WEIGHT_MAX = 4.0
_WEIGHT_UNIT = 64
_RDO_LAMBDA = 1.0
# Lambda in step^2 per bit: dD/dR of a uniform quantiser (ln 2 / 6), times _RDO_LAMBDA.
_LAMBDA_PER_BIT = _RDO_LAMBDA * math.log(2) / 6
_MIN_SCALE = 0.05
# Finest automatic step (8-bit levels) of encode_patches.
_MIN_STEP = 0.25
# Deblocking: block offsets averaged (a square number) and the coefficient magnitude, in
# steps, below which a re-projected coefficient is dropped.  On the photos of
# docs/rate-distortion.md, 16 offsets and 0.2 measured best per unit of decode time
# (BD-rate 12.4% -> -0.3%; 64 offsets -1.0% at 4x the time).
DEBLOCK_CHOICES = (0, 4, 16, 64)
_DEBLOCK_THRESHOLD = 0.2
# Pixels on which the encoder measures whether the filter helps, and the fraction of the
# squared error it must save to be kept: it costs up to four times the decode time, and
# at fine steps (many components) it saves a fraction of a percent.
_DEBLOCK_SAMPLE = 1 << 21
_DEBLOCK_MIN_GAIN = 0.01

PARAMS = (
    Param(
        "mode",
        str,
        "blocks",
        "blocks: a transform learned over b x b patches of all channels; rows: the image "
        "rows per channel as samples (the seed notebooks' PCA).",
        choices=MODES,
    ),
    Param(
        "components",
        int,
        0,
        "Most principal components kept (0 = all); the step decides which of them are "
        "worth their bits.",
        low=0,
        high=1 << 20,
        group="rule",
    ),
    Param(
        "variance",
        float,
        None,
        "Keep the fewest components explaining this fraction of the variance.",
        low=1e-6,
        high=1.0,
        group="rule",
    ),
    Param(
        "step",
        float,
        24.0,
        "Quantisation step of the coefficients, in 8-bit grey levels (larger = smaller file).",
        low=0.01,
        high=1000.0,
    ),
    Param(
        "color",
        str,
        "rgb",
        "Colour space of RGB images before the transform.  The learned transform "
        "decorrelates the colours itself, and in RGB its quantisation error is the RGB "
        "error, so rgb gives the better PSNR; ycbcr is what JPEG does.",
        choices=COLOR_SPACES,
    ),
    Param(
        "block",
        int,
        8,
        "Block size b of blocks mode (patches are b x b pixels of all channels).",
        low=2,
        high=_MAX_BLOCK,
    ),
    Param(
        "deblock",
        int,
        16,
        "Deblocking filter of blocks mode: block offsets the decoder averages "
        "(0 = off; more = smoother and slower to decode).",
        choices=DEBLOCK_CHOICES,
    ),
)


def _short(params: Mapping[str, Any]) -> str:
    parts = [params["mode"]]
    if params.get("variance") is not None:
        parts.append(f"v={params['variance']:g}")
    elif params.get("components"):
        parts.append(f"k={params['components']}")
    parts.append(f"q={params['step']:g}")
    if params["mode"] == "blocks" and params["block"] != 8:
        parts.append(f"b={params['block']}")
    if params["mode"] == "blocks" and params.get("deblock", 16) != 16:
        parts.append(f"db={params['deblock']}")
    return " ".join(parts)


def _choose_k(eig: np.ndarray, params: Mapping[str, Any]) -> int:
    d = len(eig)
    if params.get("variance") is not None:
        cs = np.cumsum(np.clip(eig, 0, None))
        if cs[-1] <= 0:
            return 1
        return min(int(np.argmax(cs >= params["variance"] * cs[-1])) + 1, d)
    k = params.get("components") or d
    return max(1, min(int(k), d))


def _deadzone(x: np.ndarray, step: float) -> np.ndarray:
    q = np.floor(np.abs(x) / step + (0.5 - _DEADZONE))
    return (np.sign(x) * np.maximum(q, 0)).astype(np.int32)


def _step_weights(rms: np.ndarray, step: float) -> np.ndarray:
    """Step of each component relative to ``step``, in 1/_WEIGHT_UNIT (integers).

    Strong components get finer steps and weak ones coarser, ``(rms / step)^-gamma``
    (like JPEG's quantisation tables): the entropy coder codes strong rows cheaply
    (smooth ones as residuals of a prediction from neighbouring blocks), and
    weak sparse rows are the most expensive per coefficient.
    """
    ratio = np.maximum(rms, 1e-12) / step
    w = np.clip(ratio ** (-_WEIGHT_GAMMA), 1 / _WEIGHT_MAX, _WEIGHT_MAX)
    return np.maximum(np.rint(w * _WEIGHT_UNIT), 1).astype(np.int32)


def _rdo(c: np.ndarray, q: np.ndarray, scale: np.ndarray, wt2: np.ndarray) -> np.ndarray:
    """Choose among ``q``, ``q`` one step nearer zero and 0 the value minimising
    ``(c - v)^2 + lambda * bits(v)`` (``c`` in steps; lambda = dD/dR of a uniform
    quantiser at the step, ``ln 2 / 6`` step^2 per bit, times ``_RDO_LAMBDA``).

    Rows are components (``scale`` and ``wt2`` per row).  Zeros have no candidate
    nearer zero, so only the nonzero values are looked at (see :func:`_rdo_values`).
    """
    # Distortion in units of the base step^2: a row with a coarser step weighs more.
    lam = _LAMBDA_PER_BIT / wt2
    out = np.array(q, dtype=np.int32)
    rows, cols = np.nonzero(q)
    if rows.size:
        amax = np.zeros(len(scale), np.int64)
        amax[: q.shape[0]] = np.abs(q).max(axis=1, initial=0)
        table = _BitsTable(scale, amax)
        out[rows, cols] = _rdo_values(c[rows, cols], q[rows, cols], rows, lam, table)
    return out


class _BitsTable:
    """:func:`_laplace_bits` of the magnitudes ``0 ... amax[r]`` under ``scale[r]``,
    for every row ``r``, in one flat table (looked up instead of computed: the
    magnitudes are small integers and the scales one per component)."""

    # Beyond this many entries the bits are computed value by value instead.
    LIMIT = 1 << 22

    def __init__(self, scale: np.ndarray, amax: np.ndarray) -> None:
        self.scale = np.asarray(scale, np.float64)
        sizes = np.asarray(amax, np.int64) + 1
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sizes.sum())
        self.table = None
        if total <= self.LIMIT:
            row = np.repeat(np.arange(len(sizes)), sizes)
            a = np.arange(total, dtype=np.int64) - self.start[row]
            self.table = _laplace_bits(a, self.scale[row])

    def bits(self, a: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.table is None:
            return _laplace_bits(a, self.scale[rows])
        return self.table[self.start[rows] + a]


def _rdo_values(
    c: np.ndarray, q: np.ndarray, rows: np.ndarray, lam: np.ndarray, table: _BitsTable
) -> np.ndarray:
    """:func:`_rdo` of nonzero values ``q`` (component ``rows``), one by one: the same
    operations, in the same dtypes, as on whole rows."""
    lam = lam[rows]
    a = np.abs(q)
    cost = (c - q) ** 2 + lam * table.bits(a, rows)
    nearer = q - np.sign(q)
    cc = (c - nearer) ** 2 + lam * table.bits(a - 1, rows)
    better = cc < cost
    best = np.where(better, nearer, q)
    cost = np.where(better, cc, cost)
    cc = (c - np.zeros_like(q)) ** 2 + lam * table.bits(np.zeros_like(a), rows)
    return np.where(cc < cost, 0, best).astype(np.int32)


def _laplace_bits(magnitude: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Bits of a value at distance ``magnitude`` from the centre of a quantised Laplace of
    ``scale`` (the estimate of :func:`~napari_svd_compress.format.entropy.laplace_bits`
    when ``_rdo`` was written, kept here so that the encoder's choices stay put)."""
    a, s = magnitude, scale
    p = np.where(a < 0.5, -np.expm1(-0.5 / s), 0.5 * np.exp(-(a - 0.5) / s) * -np.expm1(-1.0 / s))
    return -np.log2(np.maximum(p, 1e-300))


# --- blocks -----------------------------------------------------------------------


def _block_rows(x: np.ndarray, b: int, r0: int, r1: int) -> np.ndarray:
    """Patches of block rows ``r0:r1`` of the padded plane, one per row, in raster order."""
    band = x[r0 * b : r1 * b]
    nr, nc, c = r1 - r0, x.shape[1] // b, x.shape[2]
    return band.reshape(nr, b, nc, b, c).transpose(0, 2, 1, 3, 4).reshape(nr * nc, b * b * c)


def _block_view(x: np.ndarray, b: int, r0: int, r1: int) -> np.ndarray:
    """Block rows ``r0:r1`` as ``(rows, cols, b, b, c)`` (a view where ``x`` allows)."""
    nc, c = x.shape[1] // b, x.shape[2]
    return x[r0 * b : r1 * b].reshape(r1 - r0, b, nc, b, c).transpose(0, 2, 1, 3, 4)


def _bands(n_rows: int, per_row: int) -> list[tuple[int, int]]:
    step = max(1, _BAND_BLOCKS // max(per_row, 1))
    return [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]


def _small_bands(n_rows: int, per_row: int, k: int, d: int) -> list[tuple[int, int]]:
    """Bands of about ``_SMALL_BAND`` blocks (a few MB, in cache) whose ``(blocks x d) @
    (d x k)`` products stay on BLAS's large-matrix kernel."""
    rows = max(-(-(_GEMM_SAFE + 1) // max(per_row * k * d, 1)), _SMALL_BAND // max(per_row, 1), 1)
    return [(r, min(r + rows, n_rows)) for r in range(0, n_rows, rows)]


class _Band:
    """The quantised coefficients of one band of blocks, for the components that have
    any nonzero one there (``live``): ``q`` and the unrounded ``y``, blocks x live;
    ``worth``, once optimised, the band's share of :func:`_quantise_blocks`'s."""

    def __init__(self, r0: int, r1: int, live: np.ndarray, q: np.ndarray, y: np.ndarray):
        self.r0, self.r1, self.live, self.q, self.y = r0, r1, live, q, y
        self.worth: np.ndarray | None = None


def _centred_patches(x, b, r0, r1, mean32, buf) -> np.ndarray:
    """The patches of block rows ``r0:r1`` minus ``mean32``, float32, in ``buf``."""
    nc, c = x.shape[1] // b, x.shape[2]
    p = buf[: (r1 - r0) * nc]
    p5 = p.reshape(r1 - r0, nc, b, b, c)
    if x.dtype == np.float32:
        np.subtract(_block_view(x, b, r0, r1), mean32.reshape(b, b, c), out=p5)
    else:
        np.copyto(p5, _block_view(x, b, r0, r1))
        p -= mean32
    return p


def _project(x, b, r0, r1, vec32, mean32, steps, buf) -> _Band:
    """Dead-zone quantised coefficients of block rows ``r0:r1`` (see :class:`_Band`)."""
    p = _centred_patches(x, b, r0, r1, mean32, buf)
    y = p @ vec32
    y /= steps
    # Values under 0.49 steps round to zero; the rest are quantised exactly.
    live = np.flatnonzero(np.maximum(y.max(axis=0, initial=0), -y.min(axis=0, initial=0)) >= 0.49)
    y = y[:, live]
    return _Band(r0, r1, live, _deadzone(y, 1.0), y)


class _BlockStats:
    """What :func:`_encode_blocks` computes before it needs the step: the padded plane,
    the quantised mean patch and the eigen-decomposition of the patch covariance.  A
    sweep over steps (:func:`encode_many`) computes it once."""

    def __init__(self, x: np.ndarray, b: int, progress: Callable[[float], None]) -> None:
        h, w, c = x.shape
        hp, wp = -(-h // b) * b, -(-w // b) * b
        if (hp, wp) != (h, w):
            # Edge padding adds no new structure for the transform to spend bits on.
            x = np.pad(x, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
        nr, nc = hp // b, wp // b
        d = b * b * c
        n = nr * nc
        workers = _workers(None)
        # The mean patch, then the covariance of the patches centred on it (as the
        # decoder will centre them, on the quantised mean): float32 products (exact
        # enough once centred, and four times faster than float64) added in float64,
        # band by band on the threads.
        mean = x.reshape(nr, b * wp * c).sum(axis=0, dtype=np.float64)
        mean = mean.reshape(b, nc, b, c).sum(axis=1).reshape(d) / n
        qmean = np.rint(mean * _MEAN_SCALE).astype(np.int32)
        mean_q = qmean / _MEAN_SCALE
        mean32 = mean_q.astype(np.float32)
        bands = _small_bands(nr, nc, d, d)
        parts: list[Any] = [None] * len(bands)
        local = threading.local()
        rows = max(r1 - r0 for r0, r1 in bands)

        def gram_band(i: int) -> None:
            r0, r1 = bands[i]
            if getattr(local, "buf", None) is None:
                local.buf = np.empty((rows * nc, d), np.float32)
            p = _centred_patches(x, b, r0, r1, mean32, local.buf)
            parts[i] = (p.sum(axis=0, dtype=np.float64), (p.T @ p).astype(np.float64))

        _run_threads(gram_band, list(range(len(bands))), workers)
        progress(0.4)
        total = np.zeros(d, np.float64)
        gram = np.zeros((d, d), np.float64)
        for s, g in parts:
            total += s
            gram += g
        parts.clear()
        shift = total / n  # the mean of the centred patches (not quite 0: mean_q is rounded)
        cov = gram / n - np.outer(shift, shift)
        eig, vec = sla.eigh(cov, check_finite=False)
        self.eig, self.vec = eig[::-1], vec[:, ::-1]
        self.x, self.h, self.w, self.b = x, h, w, b
        self.nr, self.nc, self.d, self.workers = nr, nc, d, workers
        self.qmean, self.mean_q, self.mean32 = qmean, mean_q, mean32


def _encode_blocks(
    x: np.ndarray,
    b: int,
    choose_k: Callable[[np.ndarray], int],
    step: float | Callable[[np.ndarray, int], float],
    progress: Callable[[float], None],
    deblock: int = 0,
    stats: _BlockStats | None = None,
    prune: bool = False,
    space: str = "rgb",
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Code plane ``x`` (already in colour ``space``) in ``b x b`` blocks.

    ``choose_k(eigenvalues)`` gives the number of components; ``step`` is the
    coefficient step, or a function ``step(eigenvalues, k)``; ``deblock`` the number
    of offsets of the decoder's deblocking filter; ``stats``, if given, is
    ``_BlockStats(x, b, ...)`` computed before (shared by several steps); ``prune``:
    keep only the components worth their bits (:func:`_worth_keeping`), rather than
    every one with a nonzero coefficient.

    The patches are gathered band by band (cache-sized bands, on ``_workers`` threads)
    and never materialised whole; only the components that quantise to nonzero
    somewhere are kept past the projection.
    """
    if stats is None:
        stats = _BlockStats(x, b, progress)
    progress(0.4)
    x, h, w = stats.x, stats.h, stats.w
    nr, nc, d, workers = stats.nr, stats.nc, stats.d, stats.workers
    qmean, mean32 = stats.qmean, stats.mean32
    eig, vec = stats.eig, stats.vec
    k = max(1, min(int(choose_k(eig)), d))
    vec = vec[:, :k]
    if callable(step):
        step = float(step(eig, k))
    rms_all = np.sqrt(np.maximum(eig[:k], 0))
    # Per-component steps, in 1/_WEIGHT_UNIT of ``step``: see _step_weights.
    wq = _step_weights(rms_all, step)
    steps = (step * wq / _WEIGHT_UNIT).astype(np.float32)
    vec32 = vec.astype(np.float32)
    coef, worth = _quantise_blocks(x, b, vec32, mean32, steps, step, workers)
    progress(0.8)
    # Components whose coefficients all quantised to zero need no basis vector.
    used = np.flatnonzero(np.any(coef != 0, axis=1))
    ref = _reference(b, x.shape[2])
    qbasis, gains = _quantise_basis(ref @ vec[:, used], rms_all[used], step)
    if prune:
        keep = _worth_keeping(used, worth, qbasis)
        if not keep.all():
            used = used[keep]
            qbasis, gains = _quantise_basis(ref @ vec[:, used], rms_all[used], step)
    coef = coef[used]
    meta = {"mode": "blocks", "block": b, "components": len(used), "step": step}
    meta["gains"] = gains.tolist()
    # The step weights travel as the basis array's first column (or row, transposed:
    # one Laplace model per DCT coordinate rather than per component, whichever is
    # shorter; more components favour the transposed layout).
    rows = np.concatenate([wq[used, None], qbasis], axis=1)
    basis = min(
        (encode_ints(rows), "dct"),
        (encode_ints(np.ascontiguousarray(rows.T)), "dct-t"),
        key=lambda t: len(t[0]),
    )
    meta["basis"] = basis[1]
    # Format version 3: exact integer decoding (see _exact), its exponents in the meta.
    c = x.shape[2]
    a = _exact.basis_integers(qbasis, b, c)
    n_shifts = _offset_count(b, deblock) - 1 if deblock else 0
    e, g = _exact.choose_exponents(a, gains, wq[used], step, qmean, coef, b, c, n_shifts)
    meta["shift"] = [e, g]
    if deblock and len(used):
        # The filter assumes the basis codes the picture at any offset; fine steps (that
        # keep detail it cannot re-project) and tiny images (a basis fitted to a few
        # blocks) break that, so it is kept only where it measures better.
        plan = _exact.BlocksPlan(a, gains, wq[used], step, qmean, b, c, e, g)
        if _deblock_helps(x[:h, :w], coef, plan, deblock, space):
            meta["deblock"] = [deblock, _DEBLOCK_THRESHOLD]
        progress(0.95)
    payloads = {
        "mean": encode_ints(qmean),
        "basis": basis[0],
        "coef": _block_context.encode(coef, nr, nc),
    }
    progress(1.0)
    return meta, payloads


def _quantise_blocks(
    x: np.ndarray,
    b: int,
    vec32: np.ndarray,
    mean32: np.ndarray,
    steps: np.ndarray,
    step: float,
    workers: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantised coefficients ``(k, blocks)`` of the padded plane ``x``: dead-zone
    rounding, then (``_RDO_PASSES``) rate-distortion optimisation against the per-row
    Laplace models the entropy coder will fit, with the first pass's statistics.  The
    first component is left alone: the coder codes it as differences.

    Also returns, per component, the squared error its nonzero values save (in
    ``step^2``) and the bits its values cost beyond an absent row's under those models
    (zeros where there is no optimisation), shape ``(2, k)``: see
    :func:`_worth_keeping`."""
    nr, nc = x.shape[0] // b, x.shape[1] // b
    d, k = vec32.shape
    n = nr * nc
    bands = _small_bands(nr, nc, k, d)
    rows = max(r1 - r0 for r0, r1 in bands)
    local = threading.local()
    found: list[_Band | None] = [None] * len(bands)

    def project(i: int) -> None:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((rows * nc, d), np.float32)
        found[i] = _project(x, b, *bands[i], vec32, mean32, steps, buf)

    _run_threads(project, list(range(len(bands))), workers)
    done = [band for band in found if band is not None]
    worth = np.zeros((2, k))
    if _RDO_PASSES:
        # Per component: the mean magnitude (the coder's scale) and the largest.
        mag = np.zeros(k, np.int64)
        amax = np.zeros(k, np.int64)
        for band in done:
            a = np.abs(band.q)
            mag[band.live] += a.sum(axis=0, dtype=np.int64)
            np.maximum.at(amax, band.live, a.max(axis=0, initial=0))
        scales = np.maximum(mag / n, _MIN_SCALE)
        table = _BitsTable(scales, amax)
        wt2 = (steps.astype(np.float64) / step) ** 2
        lam = _LAMBDA_PER_BIT / (steps / step) ** 2

        def optimise(band: _Band) -> None:
            keep = band.live >= 1
            cols = np.flatnonzero(keep)
            band.worth = np.zeros((2, k))
            if not cols.size:
                return
            q = band.q[:, cols]
            blocks, j = np.nonzero(q)
            comp = band.live[cols][j]
            y = band.y[:, cols][blocks, j]
            new = _rdo_values(y, q[blocks, j], comp, lam, table)
            band.q[blocks, cols[j]] = new
            nz = new != 0
            y, new, comp = y[nz], new[nz], comp[nz]
            a = np.abs(new)
            saved = (y * y - (y - new) ** 2) * wt2[comp]
            extra = table.bits(a, comp) - table.bits(np.zeros_like(a), comp)
            band.worth[0] = np.bincount(comp, weights=saved, minlength=k)
            band.worth[1] = np.bincount(comp, weights=extra, minlength=k)

        _run_threads(optimise, done, workers)
        # Added in band order: the sums do not depend on the threads.
        for band in done:
            worth += band.worth
        worth[1] += n * table.bits(np.zeros(k, np.int64), np.arange(k))
    coef = np.zeros((k, n), np.int32)
    for band in done:
        coef[band.live, band.r0 * nc : band.r1 * nc] = band.q.T
    return coef, worth


def _offset_count(b: int, offsets: int) -> int:
    """Offsets the deblocking filter averages, the plane itself included."""
    g = max(1, min(math.isqrt(offsets), b))
    return g * g


def _deblock_helps(x, coef, plan: _exact.BlocksPlan, offsets: int, space: str) -> bool:
    """Whether deblocking lowers the squared error of plane ``x`` (unpadded, in colour
    ``space``) by at least the fraction ``_DEBLOCK_MIN_GAIN``, measured on up to four
    strips of about ``_DEBLOCK_SAMPLE`` pixels in all on large planes, as the decoder's
    output is seen: in RGB, clipped to the range.  (Clipping mends much of a plain
    reconstruction's overshoot at saturated pixels, so the unclipped errors can rank
    the two the wrong way.)"""
    h, w, c = x.shape
    b = plan.b
    nr, nc = -(-h // b), -(-w // b)
    per_strip = max(1, _DEBLOCK_SAMPLE // (4 * nc * b * b))
    if 4 * per_strip >= nr:
        strips = [(0, nr)]
    else:
        strips = [(r, r + per_strip) for r in np.linspace(0, nr - per_strip, 4).astype(int)]
    workers = _workers(None)
    inner = 1 if len(strips) > 1 else workers
    errors: list[tuple[float, float]] = [(0.0, 0.0)] * len(strips)

    def strip(i: int) -> None:
        r0, r1 = strips[i]
        shape = ((r1 - r0) * b, nc * b, c)
        run = _runner(inner)
        plain = _exact.reconstruct(plan, coef[:, r0 * nc : r1 * nc], shape, run)
        smooth = _exact.deblock(
            plan, plain.copy(), offsets, _DEBLOCK_THRESHOLD, inner, run, _fill_slab, _reflect
        )
        ref = from_space(x[r0 * b : r1 * b], space)
        hh = ref.shape[0]
        seen = [np.clip(from_space(p[:hh, :w], space), 0, 1) for p in (plain, smooth)]
        errors[i] = (squared_error(seen[0], ref), squared_error(seen[1], ref))

    # The strips on the threads, their errors added in order.
    _run_threads(strip, list(range(len(strips))), workers)
    plain = smooth = 0.0
    for p, q in errors:
        plain += p
        smooth += q
    return smooth < (1 - _DEBLOCK_MIN_GAIN) * plain


def _worth_keeping(used: np.ndarray, worth: np.ndarray, qbasis: np.ndarray) -> np.ndarray:
    """Which components ``used`` (rows of ``qbasis``) save more squared error than
    lambda times their bits, the same trade as :func:`_rdo`'s per value, here for a
    whole row: its coefficients' bits (``worth``, see :func:`_quantise_blocks`) and its
    basis vector's (a Laplace estimate).  The first component is always kept.

    Weak components that a few blocks use (noise, at fine steps) cost a basis vector
    and sparse values for little; dropping them also makes the deblocking filter, whose
    time grows with the components, re-project onto the basis that codes the picture.
    """
    a = np.abs(qbasis.astype(np.int64))
    scale = np.maximum(a.mean(axis=1), _MIN_SCALE)
    basis_bits = _laplace_bits(a, scale[:, None]).sum(axis=1)
    cost = _LAMBDA_PER_BIT * (worth[1, used] + basis_bits)
    return (worth[0, used] >= cost) | (used == 0)


def _quantise_basis(vec: np.ndarray, rms: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows = components; column ``i`` is scaled by ``gain_i`` and rounded.

    Every element of the reconstruction gets the basis errors of all ``k`` components,
    ``sum_i rms_i^2 / (12 gain_i^2)``; ``gain_i = rms_i sqrt(k F) / step`` makes that
    ``1/F`` of the coefficient quantisation error ``step^2 / 12``.
    """
    k = max(len(rms), 1)
    gains = rms * np.sqrt(k * _BASIS_FINENESS) / step
    # Whole numbers: they travel in the JSON meta, where short integers cost few bytes.
    gains = np.clip(np.rint(gains), 1, 1 << 20).astype(np.int64)
    return np.rint(vec.T * gains[:, None]).astype(np.int32), gains


def _reference(b: int, c: int) -> np.ndarray:
    """Orthonormal ``d x d`` matrix whose rows are the separable block DCT vectors (times
    an opponent colour transform for 3 channels), in the patch layout ``(y, x, channel)``."""
    dct = scipy.fft.dct(np.eye(b), norm="ortho", axis=0)
    if c == 3:
        col = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]])
        col /= np.linalg.norm(col, axis=1, keepdims=True)
    else:
        col = np.eye(c)
    return np.kron(np.kron(dct, dct), col)


def _deblock(
    out: np.ndarray,
    vec: np.ndarray,
    steps: np.ndarray,
    mean: np.ndarray,
    b: int,
    offsets: int,
    threshold: float,
    workers: int | None = None,
    inplace: bool = False,
) -> np.ndarray:
    """Average the re-projections of the decoded plane ``out`` (whole blocks) cut at
    ``offsets`` block offsets; coefficients under ``threshold`` steps are dropped.

    Blocking edges are not in the span of the basis at other offsets, so they
    average out, while the picture, which the basis codes well at any offset, stays.

    The arithmetic is fixed by the bundles already written (see
    :func:`_deblock_band_reference`): every pixel is ``out`` plus the offsets'
    reconstructions in the order of the shifts, times 1 / offsets.  Here it runs in
    cache-sized bands of block rows, on ``workers`` threads (numpy and BLAS release
    the GIL), and each shifted block row is computed once: a band carries the part of
    its last row that falls in the next band.  BLAS rounds a block's products the
    same way in any band as long as the products are large (its small-matrix and
    matrix-vector kernels round differently), so bands whose products the reference
    ran on those kernels are done exactly as it did them.  ``inplace``: overwrite
    ``out`` where that is possible (no new 300 MB for a 24-megapixel plane).
    """
    ctx = _DeblockContext(out, vec, steps, mean, b, offsets, threshold)
    nr, nc = out.shape[0] // b, out.shape[1] // b
    unit = (nc + 1) * ctx.k * ctx.d
    runs: list[list[int]] = []
    banded = ctx.k >= 2 and _gemm_rows_round_alike()
    for r0, r1 in _bands(nr, nc + 1):
        fast = banded and (r1 - r0 + 1) * unit > _GEMM_SAFE
        if fast and runs and runs[-1][0] and runs[-1][2] == r0:
            runs[-1][2] = r1
        else:
            runs.append([int(fast), r0, r1])
    # The fast path's bands: about _DEBLOCK_BAND blocks (in cache), never so few that
    # BLAS changes kernels.
    rmin = -(-(_GEMM_SAFE + 1) // unit) if ctx.k >= 2 else 1
    rows = max(rmin, _DEBLOCK_BAND // (nc + 1), 1)
    workers = _workers(workers)
    tasks: list[tuple[int, int, int]] = []
    for fast, r0, r1 in runs:
        pieces = max(1, min(workers, (r1 - r0) // (4 * rows))) if fast else 1
        cuts = np.linspace(r0, r1, pieces + 1).round().astype(int)
        tasks.extend((fast, int(a), int(z)) for a, z in zip(cuts[:-1], cuts[1:], strict=True))
    if inplace and all(fast for fast, _, _ in tasks):
        # Each piece reads one block row beyond its ends: kept before anything is
        # overwritten (a piece writes a band back only after reading the next one).
        res = out
        halos = {
            (r0, r1): (
                out[r0 * b - b : r0 * b].copy() if r0 else None,
                out[r1 * b : r1 * b + b].copy() if r1 < nr else None,
            )
            for _, r0, r1 in tasks
        }
    else:
        res = np.empty_like(out)
        halos = {}
        # The reference bands with BLAS as it is (its matrix-vector kernel splits rows
        # between threads, which changes roundings); the rest on one BLAS thread each.
        for fast, r0, r1 in tasks:
            if not fast:
                _deblock_band_reference(ctx, res, r0, r1)
    pieces_fast = [(r0, r1) for fast, r0, r1 in tasks if fast]

    def run(piece: tuple[int, int]) -> None:
        _deblock_rows(ctx, res, piece[0], piece[1], rows, rmin, halos.get(piece))

    _run_threads(run, pieces_fast, workers)
    return res


# Products of more multiply-adds than this (m * n * k) stay on OpenBLAS's large-matrix
# kernel, whose rounding of an element does not depend on the other rows; it switches to
# other kernels at 1e6 (measured on Intel: all sizes agree above 1.8e6; where no size does,
# _gemm_rows_round_alike turns the banded paths off).
_GEMM_SAFE = 2_000_000
# Blocks per band of the deblocking filter's fast path (about 2 MB per buffer).
_DEBLOCK_BAND = 3000
# Blocks per band of the encoder's projection.
_SMALL_BAND = 4096


@functools.cache
def _gemm_rows_round_alike() -> bool:
    """Whether this BLAS rounds each row of a float32 product above ``_GEMM_SAFE``
    multiply-adds the same whatever the other rows, and a mean appended as the last basis
    vector as one addition after the product: what the banded decoding paths rely on.

    Measured once per process (about 0.1 s): OpenBLAS on some CPUs (AMD Zen) rounds a
    row by its place in the product's row blocks at every size, and the banded paths
    then give way to the first version's bands, which define the rounding.
    """
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6000, 192)).astype(np.float32)
    for k in (2, 15, 50):
        b = rng.standard_normal((192, k)).astype(np.float32)
        full = a @ b
        rows = -(-(_GEMM_SAFE + 1) // (192 * k))
        for start in (0, 7, 3001):
            if not np.array_equal(a[start : start + rows] @ b, full[start : start + rows]):
                return False
        v = rng.standard_normal((k, 192)).astype(np.float32)
        co = np.ones((len(full), k + 1), np.float32)
        co[:, :k] = full
        if not np.array_equal(co @ np.vstack([v, v[0]]), full @ v + v[0]):
            return False
    return True


def _runner(workers: int) -> Callable[[Callable[[Any], None], list[Any]], None]:
    """``run(fn, items)``: :func:`_run_threads` on ``workers`` threads."""

    def run(fn: Callable[[Any], None], items: list[Any]) -> None:
        _run_threads(fn, items, workers)

    return run


def _workers(workers: int | None) -> int:
    if workers is None:
        workers = THREADS
    return max(1, int(workers))


def _run_threads(fn: Callable[[Any], None], items: list[Any], workers: int) -> None:
    """``fn(item)`` for every item on ``workers`` threads, BLAS on one thread meanwhile.

    BLAS threads on top of ours only compete for the cores; on a loaded machine its
    spinning threads made each band's small products 10 times slower.
    """
    if not items:
        return
    with _blas_one_thread():
        thread_map(fn, items, workers=workers)


_ONE_THREAD_LOCK = threading.Lock()
_ONE_THREAD: dict[str, Any] = {"depth": 0, "restore": None}


class _blas_one_thread:
    """Limit numpy's and scipy's BLAS to one thread while any caller is inside
    (threadpoolctl if present, else OpenBLAS's own setter, else nothing).  The limit
    is process-wide while it lasts; nested and concurrent uses restore it once."""

    def __enter__(self) -> None:
        with _ONE_THREAD_LOCK:
            if _ONE_THREAD["depth"] == 0:
                _ONE_THREAD["restore"] = _limit_blas_threads()
            _ONE_THREAD["depth"] += 1

    def __exit__(self, *exc: object) -> None:
        with _ONE_THREAD_LOCK:
            _ONE_THREAD["depth"] -= 1
            restore = _ONE_THREAD["restore"]
            if _ONE_THREAD["depth"] == 0 and restore is not None:
                _ONE_THREAD["restore"] = None
                restore()


def _limit_blas_threads() -> Callable[[], None] | None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        setters = _openblas_threads()
        if not setters:
            return None
        before = [(put, get()) for get, put in setters]
        for _, put in setters:
            put(1)
        return lambda: [put(n) for put, n in before] and None
    return threadpool_limits(1, user_api="blas").restore_original_limits


_OPENBLAS: list[Any] = []


def _openblas_threads() -> list[tuple[Callable[[], int], Callable[[int], None]]]:
    """Getters and setters of the thread count of the OpenBLAS builds bundled with
    numpy and scipy (what threadpoolctl would find)."""
    if not _OPENBLAS:
        found = []
        try:
            import ctypes
            import glob

            for package in (np, scipy):
                libs = os.path.join(os.path.dirname(package.__file__), os.pardir)
                libs = os.path.join(libs, f"{package.__name__}.libs", "*openblas*")
                for path in sorted(glob.glob(libs)):
                    lib = ctypes.CDLL(path)
                    for name in ("scipy_openblas", "openblas"):
                        for suffix in ("64_", ""):
                            get = getattr(lib, f"{name}_get_num_threads{suffix}", None)
                            put = getattr(lib, f"{name}_set_num_threads{suffix}", None)
                            if get is not None and put is not None:
                                put.argtypes = [ctypes.c_int]
                                found.append((get, put))
                                break
                        else:
                            continue
                        break
        except OSError:
            found = []
        _OPENBLAS.append(found)
    return _OPENBLAS[0]


class _DeblockContext:
    """What every band of :func:`_deblock` shares."""

    def __init__(self, out, vec, steps, mean, b, offsets, threshold) -> None:
        wp, c = out.shape[1:]
        g = max(1, min(math.isqrt(offsets), b))
        self.out, self.vec, self.steps, self.mean, self.b = out, vec, steps, mean, b
        self.threshold = threshold
        self.shifts = [(i * b // g, j * b // g) for i in range(g) for j in range(g)][1:]
        self.proj = np.linalg.pinv(vec.astype(np.float64)).astype(np.float32)  # (d, k)
        self.inv_steps = (1.0 / steps).astype(np.float32)
        self.scale = np.float32(1.0 / (len(self.shifts) + 1))
        self.k, self.d = vec.shape[0], b * b * c
        # The mean as one more basis vector, for a coefficient of 1: BLAS adds it last,
        # in one rounding, as ``rec + mean`` did.
        self.vec_mean = np.ascontiguousarray(np.concatenate([vec, mean[None]]), np.float32)
        # Reflected indices of the plane extended by one block on every side.
        self.cols = _reflect(np.arange(-b, wp + b), wp)

    def reconstruct(self, p: np.ndarray, co: np.ndarray, rec: np.ndarray) -> None:
        """``rec`` = the re-projection of centred patches ``p`` (thresholded
        coefficients times the basis, plus the mean); ``co`` is ``(blocks, k + 1)``
        scratch whose last column is 1."""
        k = self.k
        cv = co[:, :k]
        np.matmul(p, self.proj, out=cv)
        cv *= self.inv_steps
        cv[np.abs(cv) < self.threshold] = 0.0
        cv *= self.steps
        np.matmul(co, self.vec_mean, out=rec)


def _deblock_band_reference(ctx: _DeblockContext, res: np.ndarray, r0: int, r1: int) -> None:
    """Block rows ``r0:r1`` of :func:`_deblock` as its first version computed them (the
    definition of the filter's arithmetic)."""
    out, b = ctx.out, ctx.b
    hp, wp, c = out.shape
    nc = wp // b
    rows = _reflect(np.arange(r0 * b - b, r1 * b + b), hp)
    slab = out[rows][:, ctx.cols]
    hb = (r1 - r0) * b
    band = out[r0 * b : r1 * b].copy()
    for dy, dx in ctx.shifts:
        z = slab[dy : dy + hb + b, dx : dx + wp + b]
        p = _block_rows(z, b, 0, r1 - r0 + 1) - ctx.mean
        co = (p @ ctx.proj) * ctx.inv_steps
        co[np.abs(co) < ctx.threshold] = 0.0
        rec = (co * ctx.steps) @ ctx.vec + ctx.mean
        rec = rec.reshape(r1 - r0 + 1, nc + 1, b, b, c).transpose(0, 2, 1, 3, 4)
        rec = rec.reshape(hb + b, wp + b, c)
        band += rec[b - dy : b - dy + hb, b - dx : b - dx + wp]
    np.multiply(band, ctx.scale, out=res[r0 * b : r1 * b])


def _deblock_rows(
    ctx: _DeblockContext,
    res: np.ndarray,
    s0: int,
    s1: int,
    rows: int,
    rmin: int,
    halos: tuple[np.ndarray | None, np.ndarray | None] | None = None,
) -> None:
    """Block rows ``s0:s1`` of :func:`_deblock`, in bands of about ``rows`` block rows.

    A band's slab (the plane's rows from one block above to one below, reflected at
    the plane's edges, and one block either side) and its accumulator share one
    geometry: shifted block ``(m, j)`` at offset ``(dy, dx)`` is rows
    ``dy + m b ...``, columns ``dx + j b ...`` of both, so a reconstruction is added
    with one strided operation; what falls outside the band lands in the
    accumulator's margin, which is never read.  The part of the last shifted block
    row below the band is kept and added by the next band, in the same order of
    offsets as everything else.  A band is written to ``res`` once the next one has
    read its slab, so ``res`` may be the plane itself; ``halos`` are then the block
    rows just outside ``s0:s1`` as they were before anything was written.
    """
    out, b = ctx.out, ctx.b
    wp, c = out.shape[1:]
    nc = wp // b
    ncb = nc + 1
    n_bands = max(1, (s1 - s0) // rows)
    edges = [s0 + i * rows for i in range(n_bands)] + [s1]
    rmax = max(z - a for a, z in zip(edges[:-1], edges[1:], strict=True))
    slab = np.empty(((rmax + 2) * b, wp + 2 * b, c), np.float32)
    accs = [np.zeros_like(slab), np.zeros_like(slab)]
    pbuf = np.empty(((rmax + 1) * ncb, ctx.d), np.float32)
    rbuf = np.empty_like(pbuf)
    cobuf = np.ones(((rmax + 1) * ncb, ctx.k + 1), np.float32)
    mean5 = ctx.mean.reshape(b, b, c)
    carry: dict[int, np.ndarray] = {}
    pending: tuple[np.ndarray, int, int] | None = None
    for i in range(n_bands):
        r0, r1 = edges[i], edges[i + 1]
        nrow = r1 - r0
        hb = nrow * b
        sl, ac = slab[: hb + 2 * b], accs[i % 2][: hb + 2 * b]
        _fill_slab(out, sl, r0 * b - b, b, ctx.cols, (s0 * b, s1 * b), halos)
        if pending is not None:
            _flush(ctx, res, *pending)
        ac[:b] = 0.0
        ac[hb + b :] = 0.0
        ac[:, :b] = 0.0
        ac[:, b + wp :] = 0.0
        ac[b : b + hb, b : b + wp] = sl[b : b + hb, b : b + wp]
        last = i == n_bands - 1
        for s, (dy, dx) in enumerate(ctx.shifts):
            held = carry.pop(s, None)
            if held is not None:
                view = ac[b : b + dy, dx : dx + ncb * b].reshape(dy, ncb, b, c)
                np.add(view, held.transpose(1, 0, 2, 3), out=view)
            # Shifted block rows 0..nrow; row 0 lies above the band when dy == 0 and was
            # computed by the previous band otherwise.
            m0 = 1 if held is not None or (dy == 0 and nrow >= rmin) else 0
            nm = nrow + 1 - m0
            y0 = dy + m0 * b
            p = pbuf[: nm * ncb]
            src = sl[y0 : y0 + nm * b, dx : dx + ncb * b].reshape(nm, b, ncb, b, c)
            np.subtract(src.transpose(0, 2, 1, 3, 4), mean5, out=p.reshape(nm, ncb, b, b, c))
            rec = rbuf[: nm * ncb]
            ctx.reconstruct(p, cobuf[: nm * ncb], rec)
            rec5 = rec.reshape(nm, ncb, b, b, c)
            view = ac[y0 : y0 + nm * b, dx : dx + ncb * b].reshape(nm, b, ncb, b, c)
            np.add(view, rec5.transpose(0, 2, 1, 3, 4), out=view)
            if dy and not last:
                carry[s] = rec5[-1, :, b - dy :].copy()
        pending = (ac, r0, r1)
    if pending is not None:
        _flush(ctx, res, *pending)


def _flush(ctx: _DeblockContext, res: np.ndarray, ac: np.ndarray, r0: int, r1: int) -> None:
    b, wp = ctx.b, res.shape[1]
    np.multiply(ac[b : b + (r1 - r0) * b, b : b + wp], ctx.scale, out=res[r0 * b : r1 * b])


def _fill_slab(
    out: np.ndarray,
    slab: np.ndarray,
    y0: int,
    b: int,
    cols: np.ndarray,
    own: tuple[int, int],
    halos: tuple[np.ndarray | None, np.ndarray | None] | None,
) -> None:
    """``slab`` = rows ``y0 ...`` and columns ``-b ... w + b`` of ``out``, reflected;
    rows outside ``own`` come from ``halos`` (the ``b`` rows above and below) if given."""
    hp, wp, _ = out.shape
    n = slab.shape[0]
    inner = slab[:, b : b + wp]
    lo, hi = own
    if y0 >= 0 and y0 + n <= hp and (halos is None or (y0 >= lo and y0 + n <= hi)):
        inner[...] = out[y0 : y0 + n]
    else:
        idx = _reflect(np.arange(y0, y0 + n), hp)
        if halos is None:
            inner[...] = out[idx]
        else:
            above, below = halos
            for i, r in enumerate(idx.tolist()):
                if r < lo:
                    inner[i] = above[r - (lo - b)]
                elif r >= hi:
                    inner[i] = below[r - hi]
                else:
                    inner[i] = out[r]
    slab[:, :b] = slab[:, b + cols[:b]]
    slab[:, b + wp :] = slab[:, b + cols[b + wp :]]


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected into ``[0, n)`` (numpy's ``reflect`` padding)."""
    period = max(2 * (n - 1), 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def _decode_blocks(meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape) -> np.ndarray:
    h, w, c = shape
    b = meta.get("block")
    if not isinstance(b, int) or not 2 <= b <= _MAX_BLOCK:
        raise BundleContentError("pca: bad block size")
    d = b * b * c
    k, step, gains = _check_common(meta, d)
    hp, wp = -(-h // b) * b, -(-w // b) * b
    nr, nc = hp // b, wp // b
    deblock = meta.get("deblock", [0, 0.0])
    if (
        not isinstance(deblock, list)
        or len(deblock) != 2
        or deblock[0] not in DEBLOCK_CHOICES
        or not isinstance(deblock[1], int | float)
        or not 0.0 <= deblock[1] <= 100.0
    ):
        raise BundleContentError("pca: bad deblocking setting")
    qmean = decode_ints(_get(payloads, "mean"), shape=(d,), dtype=np.int32)
    mean = qmean / _MEAN_SCALE
    layout = meta.get("basis")
    if layout == "dct":
        basis = decode_ints(_get(payloads, "basis"), shape=(k, d + 1), dtype=np.int32)
    elif layout == "dct-t":
        basis = decode_ints(_get(payloads, "basis"), shape=(d + 1, k), dtype=np.int32).T
    else:
        raise BundleContentError(f"pca: unknown basis layout {layout!r}")
    wq, basis = basis[:, 0], basis[:, 1:]
    if np.any(wq <= 0) or np.any(wq > _WEIGHT_UNIT * _WEIGHT_MAX):
        raise BundleContentError("pca: a component's step weight is out of range")
    shift = meta.get("shift")
    if shift is not None:
        # Version 3: exact integer arithmetic (spec 8.5-8.6).
        if not isinstance(shift, list) or len(shift) != 2:
            raise BundleContentError("pca: bad exact-decoding exponents")
        plan = _exact.BlocksPlan(
            _exact.basis_integers(basis, b, c), gains, wq, step, qmean, b, c, *shift
        )
        coef = _block_context.decode(_get(payloads, "coef"), k, nr, nc)
        plan.check_reconstruction(_exact.row_max(coef))
        workers = _workers(None)
        run = _runner(workers)
        out = _exact.reconstruct(plan, coef, (hp, wp, c), run)
        if deblock[0] and k:
            out = _exact.deblock(
                plan, out, deblock[0], deblock[1], workers, run, _fill_slab, _reflect
            )
        return out[:h, :w]
    # Versions 1 and 2 (no ``shift``): float arithmetic, kept for the files written so.
    steps = (step * wq / _WEIGHT_UNIT).astype(np.float32)
    coef = _block_context.decode(_get(payloads, "coef"), k, nr, nc)
    vec = _basis_vectors(basis, gains, b, c)
    out = _reconstruct(coef, vec, steps, mean, (hp, wp, c), b)
    if deblock[0] and k:
        mean32 = mean.astype(np.float32)
        out = _deblock(out, vec, steps, mean32, b, deblock[0], deblock[1], inplace=True)
    return out[:h, :w]


def _basis_vectors(qbasis: np.ndarray, gains: np.ndarray, b: int, c: int) -> np.ndarray:
    """The decoder's basis, ``(k, d)`` float32, from the quantised DCT coordinates."""
    return ((qbasis / gains[:, None]) @ _reference(b, c)).astype(np.float32)


def _reconstruct(
    coef: np.ndarray,
    vec: np.ndarray,
    steps: np.ndarray,
    mean: np.ndarray,
    shape,
    b: int,
    workers: int | None = None,
) -> np.ndarray:
    """The padded plane ``shape`` from quantised coefficients ``(k, blocks)``.

    In cache-sized bands on ``workers`` threads when every product is large enough to
    round the same in any band (see ``_GEMM_SAFE``); else in the bands of the first
    version, which define the rounding.
    """
    hp, wp, c = shape
    nr, nc = hp // b, wp // b
    k, d = vec.shape
    out = np.empty(shape, np.float32)
    mean32 = mean.astype(np.float32)
    # The mean in the plane's layout (block row, y, block column, x, channel).
    mean5 = mean32.reshape(b, 1, b, c)
    bands = _bands(nr, nc)
    safe = (
        k >= 2
        and all((r1 - r0) * nc * k * d > _GEMM_SAFE for r0, r1 in bands)
        and _gemm_rows_round_alike()
    )
    if safe:
        bands = _small_bands(nr, nc, k, d)

    def band(rows: tuple[int, int]) -> None:
        r0, r1 = rows
        p = (coef[:, r0 * nc : r1 * nc].T.astype(np.float32) * steps) @ vec
        view = out[r0 * b : r1 * b].reshape(r1 - r0, b, nc, b, c)
        np.add(p.reshape(r1 - r0, nc, b, b, c).transpose(0, 2, 1, 3, 4), mean5, out=view)

    if safe:
        _run_threads(band, bands, _workers(workers))
    else:
        for rows in bands:
            band(rows)
    return out


# --- rows -------------------------------------------------------------------------


def _encode_rows(
    x: np.ndarray, params: Mapping[str, Any], step: float, progress: Callable[[float], None]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    h, _, c = x.shape
    means, bases, coefs, metas = [], [], [], []
    for ch in range(c):
        xc = x[..., ch].astype(np.float64)
        mean = xc.mean(axis=0)
        qmean = np.rint(mean * _MEAN_SCALE).astype(np.int32)
        xc -= qmean / _MEAN_SCALE
        # Samples are rows: eigenvectors of the W x W covariance (h rows averaged).
        cov = xc.T @ xc / h
        eig, vec = sla.eigh(cov, check_finite=False)
        eig, vec = eig[::-1], vec[:, ::-1]
        k = min(_choose_k(eig, params), h)
        vec = vec[:, :k]
        coef = _deadzone(xc @ vec, step).T  # (k, h): rows = components
        used = np.flatnonzero(np.any(coef != 0, axis=1))
        qbasis, gains = _quantise_basis(vec[:, used], np.sqrt(np.maximum(eig[used], 0)), step)
        # Format version 3: the exact sum's exponent (see _exact.rows_plane).
        e = _exact.choose_rows_exponent(qbasis, gains, coef[used], step, qmean)
        means.append(qmean)
        bases.append(encode_ints(qbasis))
        coefs.append(encode_ints(coef[used], methods=("raw", "laplace")))
        metas.append({"components": len(used), "gains": gains.tolist(), "shift": e})
        progress(0.9 * (ch + 1) / c)
    meta = {"mode": "rows", "step": step, "channels": metas}
    payloads = {"mean": encode_ints(np.stack(means))}
    for ch in range(c):
        payloads[f"basis{ch}"] = bases[ch]
        payloads[f"coef{ch}"] = coefs[ch]
    return meta, payloads


def _decode_rows(meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape) -> np.ndarray:
    h, w, c = shape
    chans = meta.get("channels")
    if not isinstance(chans, list) or len(chans) != c:
        raise BundleContentError(f"pca: expected {c} channel entries")
    qmean = decode_ints(_get(payloads, "mean"), shape=(c, w), dtype=np.int32)
    mean = qmean / _MEAN_SCALE
    out = np.empty((h, w, c), np.float32)
    for ch, entry in enumerate(chans):
        if not isinstance(entry, dict):
            raise BundleContentError("pca: a channel entry is malformed")
        k, step, gains = _check_common({**entry, "step": meta.get("step")}, min(h, w))
        basis = decode_ints(_get(payloads, f"basis{ch}"), shape=(k, w), dtype=np.int32)
        coef = decode_ints(_get(payloads, f"coef{ch}"), shape=(k, h), dtype=np.int32)
        if "shift" in entry:
            # Version 3: exact integer sum (spec 8.7).
            out[..., ch] = _exact.rows_plane(basis, gains, coef, step, qmean[ch], entry["shift"])
            continue
        vec = (basis / gains[:, None]).astype(np.float32)
        out[..., ch] = (coef.T.astype(np.float32) * np.float32(step)) @ vec + mean[ch]
    return out


# --- shared -----------------------------------------------------------------------


def _get(payloads: Mapping[str, bytes], name: str) -> bytes:
    data = payloads.get(name)
    if data is None:
        raise BundleContentError(f"pca: payload {name!r} is missing")
    return data


def _check_common(meta: Mapping[str, Any], kmax: int) -> tuple[int, float, np.ndarray]:
    try:
        k = int(meta["components"])
        step = float(meta["step"])
        gains = np.asarray(meta["gains"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise BundleContentError("pca: the plane's meta is malformed") from None
    if (
        not 0 <= k <= kmax
        or not math.isfinite(step)
        or step <= 0
        or gains.shape != (k,)
        or not np.all(np.isfinite(gains))
        # The encoder writes integer gains in [1, 2^20] (_quantise_basis); a tiny one makes
        # the basis infinite, and LAPACK's pinv of that in the deblocking never returns.
        or not np.all((gains >= 1) & (gains <= 1 << 20))
    ):
        raise BundleContentError("pca: the plane's meta is out of range")
    return k, step, gains


def encode_many(
    plane: np.ndarray,
    param_sets: list[dict[str, Any]],
    progress: Callable[[float], None],
    containers: list[Container],
) -> Iterator[Encoded]:
    """Encode one plane at several parameter sets (a sweep over ``step``), converting
    the colour space once per space and computing the block covariance and its
    eigenvectors once per space and block size.  Each bundle is byte for byte the one
    :func:`encode` gives for its parameters alone."""
    c = plane.shape[2]
    spaces: dict[str, np.ndarray] = {}
    shared: dict[tuple[str, int], _BlockStats] = {}
    n = len(param_sets)
    for i, params in enumerate(param_sets):

        def report(f: float, i: int = i) -> None:
            progress((i + f) / n)

        space = params["color"] if c == 3 else "gray"
        if space not in spaces:
            spaces[space] = to_space(plane, space) if c == 3 else plane
        x = spaces[space]
        step = float(params["step"]) * _LEVEL
        if params["mode"] == "blocks":
            key = (space, params["block"])
            if key not in shared:
                shared[key] = _BlockStats(x, params["block"], report)
            meta, payloads = _encode_blocks(
                x,
                params["block"],
                lambda eig, params=params: _choose_k(eig, params),
                step,
                report,
                params["deblock"],
                stats=shared[key],
                prune=True,
                space=space,
            )
        else:
            meta, payloads = _encode_rows(x, params, step, report)
        meta["space"] = space
        yield Encoded(meta=meta, payloads=payloads)


# Encode one plane (see :mod:`napari_svd_compress.registry`); ``container`` is unused.
encode = encode_one(encode_many)


def encode_patches(
    plane: np.ndarray,
    *,
    block: int,
    choose_rank: Callable[[np.ndarray], int],
    step_scale: float,
    color: str = "rgb",
    deblock: int = 16,
    progress: Callable[[float], None] = lambda f: None,
) -> Encoded:
    """Patch SVD for the ``svd`` codec's ``patch`` option: the matrix whose columns are the
    image's ``block x block`` patches (all channels), factored and truncated.

    ``choose_rank(eigenvalues)`` returns the rank (eigenvalues of the patch covariance,
    descending, i.e. squared singular values / number of patches).  The coefficient step
    follows the rank: ``step_scale`` times the RMS of the last kept component, so that
    weaker components would quantise to zero anyway and rank alone sets the rate.
    The result decodes with :func:`decode`.
    """
    c = plane.shape[2]
    space = color if c == 3 else "gray"
    x = to_space(plane, space) if c == 3 else plane

    def step(eig: np.ndarray, k: int) -> float:
        return max(step_scale * math.sqrt(max(float(eig[k - 1]), 0.0)), _MIN_STEP * _LEVEL)

    meta, payloads = _encode_blocks(x, block, choose_rank, step, progress, deblock, space=space)
    meta["space"] = space
    return Encoded(meta=meta, payloads=payloads)


def decode(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
) -> np.ndarray:
    c = shape[2]
    space = meta.get("space")
    if space not in ("gray", *COLOR_SPACES) or (space == "gray") != (c == 1):
        raise BundleContentError(f"pca: colour space {space!r} does not fit {c} channel(s)")
    mode = meta.get("mode")
    if mode == "blocks":
        out = _decode_blocks(meta, payloads, shape)
    elif mode == "rows":
        out = _decode_rows(meta, payloads, shape)
    else:
        raise BundleContentError(f"pca: unknown mode {mode!r}")
    return from_space(out, space) if c == 3 else out
