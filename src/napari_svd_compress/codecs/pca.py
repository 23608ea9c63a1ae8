"""Principal component analysis: a transform learned from the image itself.

Two modes:

``blocks`` (default)
    The image (RGB by default, see the ``color`` parameter) is cut into non-overlapping
    ``b x b`` patches of all channels together (edge-padded to whole blocks); each patch
    is a sample of dimension ``b*b*C``.  The eigenvectors of the patch covariance (a
    ``d x d`` eigenproblem, 192 x 192 for 8 x 8 colour blocks, accumulated over bands of
    blocks so no copy of the image is made) are the transform, like JPEG's DCT but
    fitted to the picture.  The coefficients are quantised (per-component steps,
    rate-distortion optimised) and coded by :mod:`~napari_svd_compress._block_context`
    (component by component, with a model that follows the activity of each block's
    neighbourhood; smooth components as residuals of a median prediction).
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
2001).  The encoder measures its figures on the filtered image.

Payloads: ``mean`` (int, float32 mean scaled), ``basis`` and ``coef`` (integers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.fft
import scipy.linalg as sla

from .. import _block_context
from .._entropy import decode_ints, encode_ints, laplace_bits
from ..color import COLOR_SPACES, from_space, to_space
from ..errors import BundleContentError
from ..metrics import squared_error
from ..registry import Codec, Encoded, Param, register

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
_MIN_SCALE = 0.05
# Finest automatic step (8-bit levels) of encode_patches.
_MIN_STEP = 0.25
# Deblocking: block offsets averaged (a square number) and the coefficient magnitude, in
# steps, below which a re-projected coefficient is dropped.  On the photos of
# docs/rate-distortion.md, 16 offsets and 0.2 measured best per unit of decode time
# (BD-rate 12.4% -> -0.3%; 64 offsets -1.0% at 4x the time).
DEBLOCK_CHOICES = (0, 4, 16, 64)
_DEBLOCK_THRESHOLD = 0.2
# Pixels on which the encoder measures whether the filter helps.
_DEBLOCK_SAMPLE = 1 << 21

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
        "Principal components kept (0 = all; the step then decides what survives).",
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
    quantiser at the step, ``ln 2 / 6`` step^2 per bit, times ``_RDO_LAMBDA``)."""
    # Distortion in units of the base step^2: a row with a coarser step weighs more.
    lam = _RDO_LAMBDA * math.log(2) / 6 / wt2[:, None]
    nearer = q - np.sign(q)
    best = q
    cost = (c - q) ** 2 + lam * laplace_bits(np.abs(q), scale[:, None])
    for cand in (nearer, np.zeros_like(q)):
        cc = (c - cand) ** 2 + lam * laplace_bits(np.abs(cand), scale[:, None])
        better = cc < cost
        best = np.where(better, cand, best)
        cost = np.where(better, cc, cost)
    return best.astype(np.int32)


# --- blocks -----------------------------------------------------------------------


def _block_rows(x: np.ndarray, b: int, r0: int, r1: int) -> np.ndarray:
    """Patches of block rows ``r0:r1`` of the padded plane, one per row, in raster order."""
    band = x[r0 * b : r1 * b]
    nr, nc, c = r1 - r0, x.shape[1] // b, x.shape[2]
    return band.reshape(nr, b, nc, b, c).transpose(0, 2, 1, 3, 4).reshape(nr * nc, b * b * c)


def _bands(n_rows: int, per_row: int) -> list[tuple[int, int]]:
    step = max(1, _BAND_BLOCKS // max(per_row, 1))
    return [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]


def _encode_blocks(
    x: np.ndarray,
    b: int,
    choose_k: Callable[[np.ndarray], int],
    step: float | Callable[[np.ndarray, int], float],
    progress: Callable[[float], None],
    deblock: int = 0,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Code plane ``x`` (already in its colour space) in ``b x b`` blocks.

    ``choose_k(eigenvalues)`` gives the number of components; ``step`` is the
    coefficient step, or a function ``step(eigenvalues, k)``; ``deblock`` the number
    of offsets of the decoder's deblocking filter.
    """
    h, w, c = x.shape
    hp, wp = -(-h // b) * b, -(-w // b) * b
    if (hp, wp) != (h, w):
        # Edge padding adds no new structure for the transform to spend bits on.
        x = np.pad(x, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    nr, nc = hp // b, wp // b
    d = b * b * c
    bands = _bands(nr, nc)
    total = np.zeros(d, np.float64)
    gram = np.zeros((d, d), np.float64)
    for i, (r0, r1) in enumerate(bands):
        p = _block_rows(x, b, r0, r1).astype(np.float64)
        total += p.sum(axis=0)
        gram += p.T @ p
        progress(0.4 * (i + 1) / len(bands))
    n = nr * nc
    mean = total / n
    cov = gram / n - np.outer(mean, mean)
    eig, vec = sla.eigh(cov, check_finite=False)
    eig, vec = eig[::-1], vec[:, ::-1]
    k = max(1, min(int(choose_k(eig)), d))
    vec = vec[:, :k]
    if callable(step):
        step = float(step(eig, k))
    qmean = np.rint(mean * _MEAN_SCALE).astype(np.int32)
    mean_q = qmean / _MEAN_SCALE
    rms_all = np.sqrt(np.maximum(eig[:k], 0))
    # Per-component steps, in 1/_WEIGHT_UNIT of ``step``: see _step_weights.
    wq = _step_weights(rms_all, step)
    steps = (step * wq / _WEIGHT_UNIT).astype(np.float32)
    coef = np.empty((k, n), np.int32)
    vec32, mean32 = vec.astype(np.float32), mean_q.astype(np.float32)
    for i, (r0, r1) in enumerate(bands):
        p = _block_rows(x, b, r0, r1).astype(np.float32) - mean32
        coef[:, r0 * nc : r1 * nc] = _deadzone((p @ vec32) / steps, 1.0).T
        progress(0.4 + 0.2 * (i + 1) / len(bands))
    if _RDO_PASSES:
        # Rate-distortion optimised quantisation against the per-row Laplace models
        # the entropy coder will fit: a second pass with the first pass's statistics.
        # The first component is left alone: the coder codes it as differences.
        scales = np.maximum(np.mean(np.abs(coef), axis=1, dtype=np.float64), _MIN_SCALE)
        for i, (r0, r1) in enumerate(bands):
            p = _block_rows(x, b, r0, r1).astype(np.float32) - mean32
            sl = slice(r0 * nc, r1 * nc)
            c = ((p @ vec32[:, 1:]) / steps[1:]).T
            coef[1:, sl] = _rdo(c, coef[1:, sl], scales[1:], (steps[1:] / step) ** 2)
            progress(0.6 + 0.2 * (i + 1) / len(bands))
    # Components whose coefficients all quantised to zero need no basis vector.
    used = np.flatnonzero(np.any(coef != 0, axis=1))
    coef = coef[used]
    ref = _reference(b, x.shape[2])
    qbasis, gains = _quantise_basis(ref @ vec[:, used], rms_all[used], step)
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
    if deblock and len(used):
        # The filter assumes the basis codes the picture at any offset; fine steps (that
        # keep detail it cannot re-project) and tiny images (a basis fitted to a few
        # blocks) break that, so it is kept only where it measures better.
        if _deblock_helps(x[:h, :w], coef, qbasis, gains, steps[used], mean_q, b, deblock):
            meta["deblock"] = [deblock, _DEBLOCK_THRESHOLD]
        progress(0.95)
    payloads = {
        "mean": encode_ints(qmean),
        "basis": basis[0],
        "coef": _block_context.encode(coef, nr, nc),
    }
    progress(1.0)
    return meta, payloads


def _deblock_helps(x, coef, qbasis, gains, steps, mean, b: int, offsets: int) -> bool:
    """Whether deblocking lowers the squared error of plane ``x`` (unpadded), measured
    on up to four strips of about ``_DEBLOCK_SAMPLE`` pixels in all on large planes."""
    h, w, c = x.shape
    nr, nc = -(-h // b), -(-w // b)
    vec = _basis_vectors(qbasis, gains.astype(np.float64), b, c)
    mean32 = mean.astype(np.float32)
    per_strip = max(1, _DEBLOCK_SAMPLE // (4 * nc * b * b))
    if 4 * per_strip >= nr:
        strips = [(0, nr)]
    else:
        strips = [(r, r + per_strip) for r in np.linspace(0, nr - per_strip, 4).astype(int)]
    gain = 0.0
    for r0, r1 in strips:
        plain = _reconstruct(
            coef[:, r0 * nc : r1 * nc], vec, steps, mean, ((r1 - r0) * b, nc * b, c), b
        )
        smooth = _deblock(plain, vec, steps, mean32, b, offsets, _DEBLOCK_THRESHOLD)
        ref = x[r0 * b : r1 * b]
        hh = ref.shape[0]
        gain += squared_error(plain[:hh, :w], ref) - squared_error(smooth[:hh, :w], ref)
    return gain > 0


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
) -> np.ndarray:
    """Average the re-projections of the decoded plane ``out`` (whole blocks) cut at
    ``offsets`` block offsets; coefficients under ``threshold`` steps are dropped.

    Blocking edges are not in the span of the basis at other offsets, so they
    average out, while the picture, which the basis codes well at any offset, stays.
    Band by band, so the memory is a few bands' worth.
    """
    hp, wp, c = out.shape
    g = max(1, min(math.isqrt(offsets), b))
    shifts = [(i * b // g, j * b // g) for i in range(g) for j in range(g)][1:]
    proj = np.linalg.pinv(vec.astype(np.float64)).astype(np.float32)  # (d, k)
    inv_steps = (1.0 / steps).astype(np.float32)
    nr, nc = hp // b, wp // b
    # Reflected indices of the plane extended by one block on every side.
    cols = _reflect(np.arange(-b, wp + b), wp)
    res = out.copy()
    for r0, r1 in _bands(nr, nc + 1):
        rows = _reflect(np.arange(r0 * b - b, r1 * b + b), hp)
        slab = out[rows][:, cols]
        hb = (r1 - r0) * b
        for dy, dx in shifts:
            z = slab[dy : dy + hb + b, dx : dx + wp + b]
            p = _block_rows(z, b, 0, r1 - r0 + 1) - mean
            co = (p @ proj) * inv_steps
            co[np.abs(co) < threshold] = 0.0
            rec = (co * steps) @ vec + mean
            rec = rec.reshape(r1 - r0 + 1, nc + 1, b, b, c).transpose(0, 2, 1, 3, 4)
            rec = rec.reshape(hb + b, wp + b, c)
            res[r0 * b : r1 * b] += rec[b - dy : b - dy + hb, b - dx : b - dx + wp]
    res *= np.float32(1.0 / (len(shifts) + 1))
    return res


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
    mean = decode_ints(_get(payloads, "mean"), shape=(d,), dtype=np.int32) / _MEAN_SCALE
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
    steps = (step * wq / _WEIGHT_UNIT).astype(np.float32)
    coef = _block_context.decode(_get(payloads, "coef"), k, nr, nc)
    vec = _basis_vectors(basis, gains, b, c)
    out = _reconstruct(coef, vec, steps, mean, (hp, wp, c), b)
    if deblock[0] and k:
        out = _deblock(out, vec, steps, mean.astype(np.float32), b, deblock[0], deblock[1])
    return out[:h, :w]


def _basis_vectors(qbasis: np.ndarray, gains: np.ndarray, b: int, c: int) -> np.ndarray:
    """The decoder's basis, ``(k, d)`` float32, from the quantised DCT coordinates."""
    return ((qbasis / gains[:, None]) @ _reference(b, c)).astype(np.float32)


def _reconstruct(
    coef: np.ndarray, vec: np.ndarray, steps: np.ndarray, mean: np.ndarray, shape, b: int
) -> np.ndarray:
    """The padded plane ``shape`` from quantised coefficients ``(k, blocks)``."""
    hp, wp, c = shape
    nr, nc = hp // b, wp // b
    out = np.empty(shape, np.float32)
    mean32 = mean.astype(np.float32)
    for r0, r1 in _bands(nr, nc):
        p = (coef[:, r0 * nc : r1 * nc].T.astype(np.float32) * steps) @ vec + mean32
        out[r0 * b : r1 * b] = (
            p.reshape(r1 - r0, nc, b, b, c).transpose(0, 2, 1, 3, 4).reshape((r1 - r0) * b, wp, c)
        )
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
        means.append(qmean)
        bases.append(encode_ints(qbasis))
        coefs.append(encode_ints(coef[used], methods=("raw", "laplace")))
        metas.append({"components": len(used), "gains": gains.tolist()})
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
    mean = decode_ints(_get(payloads, "mean"), shape=(c, w), dtype=np.int32) / _MEAN_SCALE
    out = np.empty((h, w, c), np.float32)
    for ch, entry in enumerate(chans):
        if not isinstance(entry, dict):
            raise BundleContentError("pca: a channel entry is malformed")
        k, step, gains = _check_common({**entry, "step": meta.get("step")}, min(h, w))
        basis = decode_ints(_get(payloads, f"basis{ch}"), shape=(k, w), dtype=np.int32)
        coef = decode_ints(_get(payloads, f"coef{ch}"), shape=(k, h), dtype=np.int32)
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
        or not np.all(gains > 0)
    ):
        raise BundleContentError("pca: the plane's meta is out of range")
    return k, step, gains


def encode(plane: np.ndarray, params: dict[str, Any], progress: Callable[[float], None]) -> Encoded:
    c = plane.shape[2]
    space = params["color"] if c == 3 else "gray"
    x = to_space(plane, space) if c == 3 else plane
    step = float(params["step"]) * _LEVEL
    if params["mode"] == "blocks":
        meta, payloads = _encode_blocks(
            x,
            params["block"],
            lambda eig: _choose_k(eig, params),
            step,
            progress,
            params["deblock"],
        )
    else:
        meta, payloads = _encode_rows(x, params, step, progress)
    meta["space"] = space
    return Encoded(meta=meta, payloads=payloads)


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

    meta, payloads = _encode_blocks(x, block, choose_rank, step, progress, deblock)
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


CODEC = register(
    Codec(
        name="pca",
        label="PCA (learned block transform)",
        description=(
            "Principal components of the image's b x b blocks (all channels together) "
            "or of its rows; the basis and the quantised, context-coded coefficients "
            "are stored, and blocks are smoothed by a deblocking filter on decoding."
        ),
        params=PARAMS,
        encode=encode,
        decode=decode,
        sweep=("step", (400.0, 280.0, 200.0, 140.0, 96.0, 64.0, 44.0, 30.0, 20.0, 14.0, 10.0, 7.0)),
        short=_short,
    )
)
