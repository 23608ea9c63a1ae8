"""Truncated SVD per channel, with quantised and entropy-coded factors.

Each channel ``X`` (H x W, optionally after RGB -> YCbCr) is factored as
``X ~ sum_i a_i * u_i v_i^T`` with ``u_i, v_i`` scaled to unit RMS and ``a_i`` the
RMS pixel contribution of component ``i`` (``s_i / sqrt(H W)``).  Both vectors are
multiplied by ``a_i / step`` and rounded to integers: every component then adds the
same quantisation error (``step^2 / 6`` per pixel), which is the classic
equal-distortion rule of transform coding, and components much weaker than the step
cost almost nothing.  ``step`` is set so that quantisation costs ``qloss`` dB of PSNR
against the exact truncation.  The integer rows are coded by
:func:`~napari_svd_compress._entropy.encode_ints` (ANS with a Laplace model per row).

Payload ``svd``: per channel, ``k`` float32 amplitudes then the two coded integer
arrays (``k x H`` and ``k x W``); their byte lengths are in the plane's meta.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import _linalg
from .._entropy import decode_ints, encode_ints
from ..bundle import member_overhead
from ..color import COLOR_SPACES, from_space, to_space
from ..errors import BundleContentError, ParameterError
from ..registry import Codec, Encoded, Param, register

_DECODE_ROWS = 1024
RULES = ("rank", "percent", "energy", "target_psnr", "target_bpp")
_STEP_MIN = 1e-5

PARAMS = (
    Param("rank", int, 50, "Singular values kept per channel.", low=1, high=1 << 20, group="rule"),
    Param(
        "percent",
        float,
        None,
        "Seed scripts' rule: smallest rank whose singular values sum to this fraction of "
        "their total (per channel).",
        low=1e-6,
        high=1.0,
        group="rule",
    ),
    Param(
        "energy",
        float,
        None,
        "Smallest rank keeping this fraction of the squared singular values (per channel).",
        low=1e-6,
        high=1.0,
        group="rule",
    ),
    Param(
        "target_psnr",
        float,
        None,
        "Smallest rank whose decoded image reaches this PSNR (dB).",
        low=1.0,
        high=200.0,
        group="rule",
    ),
    Param(
        "target_bpp",
        float,
        None,
        "Largest rank whose bundle fits in this many bits per pixel.",
        low=1e-4,
        high=256.0,
        group="rule",
    ),
    Param(
        "color",
        str,
        "ycbcr",
        "Colour space of RGB images: YCbCr lets the chroma planes use a lower rank.",
        choices=COLOR_SPACES,
    ),
    Param(
        "chroma",
        float,
        0.5,
        "Rank of the chroma planes as a fraction of the luma rank (YCbCr; rank and target rules).",
        low=0.0,
        high=1.0,
    ),
    Param(
        "patch",
        int,
        0,
        "0: factor each whole channel.  p >= 2: patch SVD, factor the matrix whose "
        "columns are the image's p x p patches (all channels, RGB), which compresses "
        "photographs far better (see docs/rate-distortion.md); color, chroma and qloss "
        "then do not apply.",
        low=0,
        high=32,
    ),
    Param(
        "qloss",
        float,
        0.1,
        "PSNR (dB) that quantising the factors may cost against the exact truncation.",
        low=0.001,
        high=10.0,
    ),
)

_SHORT = {"rank": "r", "percent": "p", "energy": "e", "target_psnr": "psnr", "target_bpp": "bpp"}


def rule_of(params: Mapping[str, Any]) -> tuple[str, Any]:
    """The rank rule in force and its value."""
    for name in RULES:
        if params.get(name) is not None:
            return name, params[name]
    return "rank", 50


def _short(params: Mapping[str, Any]) -> str:
    name, value = rule_of(params)
    text = f"{_SHORT[name]}={value:g}"
    if params.get("color") == "rgb":
        text += " rgb"
    return text


def percent_rank(s: np.ndarray, percent: float) -> int:
    """Seed rule: the smallest k with ``sum(s[:k]) >= percent * sum(s)``."""
    cs = np.cumsum(s, dtype=np.float64)
    if cs[-1] <= 0:
        return 1
    return int(np.argmax(cs >= percent * cs[-1])) + 1


def energy_rank(s: np.ndarray, energy: float) -> int:
    """The smallest k with ``sum(s[:k]**2) >= energy * sum(s**2)``."""
    return percent_rank(np.square(s, dtype=np.float64), energy)


class _Channel:
    """One channel's factors, computed up to some rank and extended on demand."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.h, self.w = x.shape
        self.energy = float(np.einsum("ij,ij->", x, x, dtype=np.float64))
        self.u = self.s = self.vt = None
        self._spectrum: np.ndarray | None = None

    @property
    def max_rank(self) -> int:
        return min(self.h, self.w)

    def spectrum(self) -> np.ndarray:
        if self._spectrum is None:
            self._spectrum = _linalg.spectrum(self.x)
        return self._spectrum

    def factors(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(k, self.max_rank)
        if self.s is None or len(self.s) < k:
            # A direct SVD costs the same whatever k: keep all of it for later searches.
            want = self.max_rank if self.max_rank <= _linalg.EXACT_MAX_DIM else k
            self.u, self.s, self.vt = _linalg.truncated_svd(self.x, want)
        return self.u[:, :k], self.s[:k], self.vt[:k]


def quantise_factors(
    u: np.ndarray, s: np.ndarray, vt: np.ndarray, energy: float, qloss: float
) -> tuple[bytes, dict[str, Any], np.ndarray, np.ndarray, np.ndarray, float]:
    """Quantise and code one channel's truncated SVD.

    ``energy`` is the channel's total squared sum (for the truncation error that sets the
    step).  Returns the payload bytes, the channel meta, the integer factors ``qu``
    (k x H) and ``qv`` (k x W), the amplitudes and the step.
    """
    h, w = u.shape[0], vt.shape[1]
    hw = h * w
    amp = (s / math.sqrt(hw)).astype(np.float32)
    keep = amp > 0
    u, vt, amp = u[:, keep], vt[keep], amp[keep]
    k = len(amp)
    tail = max(energy - float(np.sum(np.square(s, dtype=np.float64))), 0.0) / hw
    mse_q = tail * (10 ** (qloss / 10) - 1)
    step = max(math.sqrt(6 * mse_q / k), _STEP_MIN) if k else 1.0
    gain = (amp / step).astype(np.float64)[:, None]
    qu = np.rint(u.T * math.sqrt(h) * gain).astype(np.int32)
    qv = np.rint(vt * math.sqrt(w) * gain).astype(np.int32)
    parts = [amp.astype("<f4").tobytes(), encode_ints(qu), encode_ints(qv)]
    meta = {"rank": k, "step": step, "lengths": [len(p) for p in parts]}
    return b"".join(parts), meta, qu, qv, amp, step


def _quantise(ch: _Channel, k: int, qloss: float) -> tuple[bytes, dict[str, Any], np.ndarray]:
    """Code channel ``ch`` at rank ``k``; return payload bytes, meta and the decoded plane."""
    blob, meta, qu, qv, amp, step = quantise_factors(*ch.factors(k), ch.energy, qloss)
    return blob, meta, reconstruct_rows(qu, qv, amp, step)


def reconstruct_rows(
    qu: np.ndarray, qv: np.ndarray, amp: np.ndarray, step: float, r0: int = 0, r1: int | None = None
) -> np.ndarray:
    """Rows ``r0:r1`` of a channel decoded from its quantised factors (float32).

    ``s_i u_i v_i^T = a_i sqrt(hw) * (step qu_i / (a_i sqrt(h))) * (step qv_i / (a_i sqrt(w)))``.
    The products are summed in float64: float32 BLAS sums in an order that depends on
    threads and CPU, and a pixel near a rounding boundary would decode differently elsewhere.
    """
    r1 = qu.shape[1] if r1 is None else r1
    out = np.zeros((r1 - r0, qv.shape[1]), np.float32)
    if len(amp) == 0:
        return out
    left = qu[:, r0:r1].T.astype(np.float64) * (step * step / amp.astype(np.float64))
    right = qv.astype(np.float64)
    for start in range(0, r1 - r0, _DECODE_ROWS):
        out[start : start + _DECODE_ROWS] = left[start : start + _DECODE_ROWS] @ right
    return out


def _ranks_for(rule: str, value: Any, chans: list[_Channel], chroma: float, ycc: bool) -> list[int]:
    if rule in ("percent", "energy"):
        fn = percent_rank if rule == "percent" else energy_rank
        return [fn(ch.spectrum(), value) for ch in chans]
    return _scaled_ranks(int(value), chans, chroma, ycc)


def _scaled_ranks(k: int, chans: list[_Channel], chroma: float, ycc: bool) -> list[int]:
    out = []
    for i, ch in enumerate(chans):
        kk = max(1, round(chroma * k)) if (ycc and i > 0) else k
        out.append(min(kk, ch.max_rank))
    return out


def encode(plane: np.ndarray, params: dict[str, Any], progress: Callable[[float], None]) -> Encoded:
    if params.get("patch"):
        return _encode_patch(plane, params, progress)
    h, w, c = plane.shape
    space = params["color"] if c == 3 else "gray"
    x = to_space(plane, space if space != "gray" else "rgb")
    chans = [_Channel(np.ascontiguousarray(x[..., i])) for i in range(c)]
    ycc = space == "ycbcr"
    qloss = params["qloss"]
    rule, value = rule_of(params)
    progress(0.05)

    def build(ranks: list[int]) -> tuple[list[bytes], list[dict[str, Any]], np.ndarray]:
        blobs, metas, planes = [], [], []
        for i, (ch, k) in enumerate(zip(chans, ranks, strict=True)):
            blob, meta, rec = _quantise(ch, k, qloss)
            blobs.append(blob)
            metas.append(meta)
            planes.append(rec)
            progress(0.1 + 0.8 * (i + 1) / c)
        return blobs, metas, np.stack(planes, axis=-1)

    if rule in ("target_psnr", "target_bpp"):
        quantum = params.get("_quantum", 0.0)

        def score(k: int) -> tuple[bool, Any]:
            built = build(_scaled_ranks(k, chans, params["chroma"], ycc))
            if rule == "target_bpp":
                meta = {"space": space, "channels": built[1], "target_met": True}
                nbytes = (
                    sum(len(b) for b in built[0])
                    + params.get("_overhead", 0)
                    + member_overhead("svd")
                    + len(json.dumps(meta, separators=(",", ":")))
                    + 2
                )
                return nbytes * 8 / (h * w) <= value, built
            rec = from_space(built[2], space if space != "gray" else "rgb")
            if quantum:
                rec = np.rint(np.clip(rec, 0, 1) / quantum) * quantum
            mse = float(np.mean(np.square(rec - plane, dtype=np.float64)))
            psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf
            return psnr >= value, built

        best_k, built = _search(score, max(ch.max_rank for ch in chans), rule == "target_bpp")
        target_met = best_k is not None
        if not target_met:
            # Unreachable target: the closest we can do (rank 1 for bpp, full rank for PSNR).
            best_k = 1 if rule == "target_bpp" else max(ch.max_rank for ch in chans)
            built = build(_scaled_ranks(best_k, chans, params["chroma"], ycc))
    else:
        target_met = True
        built = build(_ranks_for(rule, value, chans, params["chroma"], ycc))
    blobs, metas, _ = built
    meta = {"space": space, "channels": metas, "target_met": target_met}
    return Encoded(meta=meta, payloads={"svd": b"".join(blobs)})


# Patch SVD: the coefficient step is this many times the RMS of the last kept
# component (measured on the photos of docs/rate-distortion.md: 2 to 4.5 are within a
# few percent in BD-rate; smaller steps spend bits on components barely kept).
_PATCH_STEP_SCALE = 3.0


def _encode_patch(
    plane: np.ndarray, params: dict[str, Any], progress: Callable[[float], None]
) -> Encoded:
    """Patch SVD (arXiv 2408.12691): the matrix of vectorised p x p patches (all
    channels) is factored; its left singular vectors are the eigenvectors of the patch
    covariance, so :func:`.pca.encode_patches` does the work (mean-centred, quantised
    basis, rate-distortion optimised coefficients)."""
    from . import pca

    p = int(params["patch"])
    if p < 2:
        raise ParameterError("patch must be 0 (whole image) or at least 2")
    h, w, c = plane.shape
    rule, value = rule_of(params)

    def run(choose: Callable[[np.ndarray], int], report=progress) -> Encoded:
        enc = pca.encode_patches(
            plane, block=p, choose_rank=choose, step_scale=_PATCH_STEP_SCALE, progress=report
        )
        enc.meta["patch"] = p
        return enc

    if rule == "rank":
        enc = run(lambda eig: int(value))
    elif rule in ("percent", "energy"):
        fn = percent_rank if rule == "percent" else energy_rank
        enc = run(lambda eig: fn(np.sqrt(np.clip(eig, 0, None)), value))
    else:
        quantum = params.get("_quantum", 0.0)

        def score(k: int) -> tuple[bool, Any]:
            enc = run(lambda eig: k, lambda f: progress(0.5 * f))
            if rule == "target_bpp":
                nbytes = sum(len(b) + member_overhead(n) for n, b in enc.payloads.items())
                # With the flag the result will carry ("false": the longer spelling).
                meta = {**enc.meta, "target_met": False}
                nbytes += params.get("_overhead", 0) + len(json.dumps(meta)) + 2
                return nbytes * 8 / (h * w) <= value, enc
            rec = pca.decode(enc.meta, enc.payloads, plane.shape)
            rec = np.clip(rec, 0, 1)
            if quantum:
                rec = np.rint(rec / quantum) * quantum
            mse = float(np.mean(np.square(rec - plane, dtype=np.float64)))
            return (10 * math.log10(1 / mse) if mse > 0 else math.inf) >= value, enc

        kmax = p * p * c
        best_k, enc = _search(score, kmax, rule == "target_bpp")
        if best_k is None:
            enc = run(lambda eig: 1 if rule == "target_bpp" else kmax)
            enc.meta["target_met"] = False
            return enc
    enc.meta["target_met"] = True
    return enc


def _search(score: Callable[[int], tuple[bool, Any]], kmax: int, larger_is_cheaper: bool):
    """Bisection over rank.  For PSNR find the smallest passing k; for bpp the largest."""
    cache: dict[int, tuple[bool, Any]] = {}

    def ok(k: int) -> bool:
        if k not in cache:
            cache[k] = score(k)
        return cache[k][0]

    # Doubling from k=1 brackets the answer cheaply when it is small (the common case).
    lo, hi = 0, None
    k = 1
    while k < kmax:
        if ok(k) != larger_is_cheaper:
            hi = k
            break
        lo = k
        k *= 2
    if hi is None:
        hi = kmax
        if ok(kmax) != larger_is_cheaper:
            pass
        elif larger_is_cheaper:
            return kmax, cache[kmax][1]
        else:
            return None, None
    # invariant: lo is on the "cheap" side (fails PSNR / fits bpp), hi on the other.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid) != larger_is_cheaper:
            hi = mid
        else:
            lo = mid
    best = lo if larger_is_cheaper else hi
    if best == 0 or not ok(best):
        return None, None
    return best, cache[best][1]


def decode(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
) -> np.ndarray:
    if "patch" in meta:
        from . import pca

        if meta.get("patch") != meta.get("block") or meta.get("mode") != "blocks":
            raise BundleContentError("svd: inconsistent patch entry")
        return pca.decode(meta, payloads, shape)
    h, w, c = shape
    space = meta.get("space")
    if space not in ("gray", *COLOR_SPACES) or (space == "gray") != (c == 1):
        raise BundleContentError(f"svd: colour space {space!r} does not fit {c} channel(s)")
    chans = meta.get("channels")
    if not isinstance(chans, list) or len(chans) != c:
        raise BundleContentError(f"svd: expected {c} channel entries")
    data = payloads.get("svd")
    if data is None:
        raise BundleContentError("svd: payload 'svd' is missing")
    planes = []
    pos = 0
    for entry in chans:
        k, step, lengths = _check_entry(entry, min(h, w))
        if pos + sum(lengths) > len(data) or lengths[0] != 4 * k:
            raise BundleContentError("svd: payload lengths do not match the manifest")
        amp = np.frombuffer(data[pos : pos + lengths[0]], "<f4")
        pos += lengths[0]
        if k and not (np.all(np.isfinite(amp)) and np.all(amp > 0)):
            raise BundleContentError("svd: amplitudes must be positive and finite")
        qu = decode_ints(data[pos : pos + lengths[1]], shape=(k, h), dtype=np.int32)
        pos += lengths[1]
        qv = decode_ints(data[pos : pos + lengths[2]], shape=(k, w), dtype=np.int32)
        pos += lengths[2]
        planes.append(reconstruct_rows(qu, qv, amp, step))
    if pos != len(data):
        raise BundleContentError("svd: payload has trailing bytes")
    out = np.stack(planes, axis=-1)
    return from_space(out, space if space != "gray" else "rgb")


def _check_entry(entry: Any, max_rank: int) -> tuple[int, float, list[int]]:
    try:
        k, step, lengths = int(entry["rank"]), float(entry["step"]), list(entry["lengths"])
    except (KeyError, TypeError, ValueError):
        raise BundleContentError("svd: a channel entry is malformed") from None
    if (
        not 0 <= k <= max_rank
        or not math.isfinite(step)
        or step <= 0
        or len(lengths) != 3
        or not all(isinstance(n, int) and n >= 0 for n in lengths)
    ):
        raise BundleContentError("svd: a channel entry is out of range")
    return k, step, lengths


CODEC = register(
    Codec(
        name="svd",
        label="Truncated SVD",
        description=(
            "Keeps the leading singular vectors of each channel (after an optional "
            "RGB to YCbCr transform), quantised and entropy coded."
        ),
        params=PARAMS,
        encode=encode,
        decode=decode,
        # Whole-image SVD of a 768 x 512 photograph: about 0.03 to 2 bpp.
        sweep=("rank", (2, 4, 8, 12, 16, 24, 32, 48, 64, 80)),
        short=_short,
    )
)
