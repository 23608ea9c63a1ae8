"""Truncated SVD per channel, with quantised and entropy-coded factors.

Each channel ``X`` (H x W, optionally after RGB -> YCbCr) is factored as
``X ~ sum_i a_i * u_i v_i^T`` with ``u_i, v_i`` scaled to unit RMS and ``a_i`` the
RMS pixel contribution of component ``i`` (``s_i / sqrt(H W)``).  Both vectors are
multiplied by ``a_i / step`` and rounded to integers: every component then adds the
same quantisation error (``step^2 / 6`` per pixel), which is the classic
equal-distortion rule of transform coding, and components much weaker than the step
cost almost nothing.  ``step`` is set so that quantisation costs ``qloss`` dB of PSNR
against the exact truncation.  The integer rows are coded by
:func:`~napari_svd_compress.format.entropy.encode_ints` (ANS with a Laplace model per row).

Payload ``svd``: per channel, ``k`` float32 amplitudes then the two coded integer
arrays (``k x H`` and ``k x W``); their byte lengths are in the plane's meta, with the
``shift`` that makes the decoder's sum exact (format version 2; see
:func:`reconstruct_rows` and docs/bundle-format.md, section 6).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .. import metrics
from .._image import from_unit, inspect, to_unit
from ..errors import BundleContentError, ImageError, ParameterError
from ..format.bundle import member_overhead
from ..format.entropy import decode_ints, encode_ints
from ..registry import Codec, Container, Encoded, Param, register
from . import _blocks, _linalg
from .color import COLOR_SPACES, from_space, rgb_to_ycbcr_into, to_space, ycbcr_planes_to_rgb

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
        self._vectors: np.ndarray | None = None
        self.wanted = 0  # the largest rank a sweep will ask for (see encode_many)

    @property
    def max_rank(self) -> int:
        return min(self.h, self.w)

    @property
    def _large(self) -> bool:
        return self.max_rank > _linalg.EXACT_MAX_DIM

    def spectrum(self) -> np.ndarray:
        if self._spectrum is None:
            if self._large:
                # The rules that need the whole spectrum keep many components; the
                # eigenvectors of the same Gram matrix then give them (see factors).
                self._spectrum, self._vectors = _linalg.gram_eig(self.x)
            else:
                self._spectrum = _linalg.spectrum(self.x)
        return self._spectrum

    def factors(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(k, self.max_rank)
        if self.s is None or len(self.s) < k:
            if not self._large:
                # A direct SVD costs the same whatever k: keep all of it for later searches.
                self.u, self.s, self.vt = _linalg.truncated_svd(self.x, self.max_rank)
            elif self._vectors is not None or k > _linalg.RANDOMIZED_MAX_FRACTION * self.max_rank:
                self.spectrum()
                self.u, self.s, self.vt = _linalg.svd_from_gram(
                    self.x, self._spectrum, self._vectors, k
                )
            else:
                self.u, self.s, self.vt = _linalg.truncated_svd(self.x, k)
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
    shift = choose_shift(qu, qv, amp, step)
    meta = {"rank": k, "step": step, "lengths": [len(p) for p in parts], "shift": shift}
    return b"".join(parts), meta, qu, qv, amp, step


# Format version 2 sums the components exactly (docs/bundle-format.md, section 6.2): the
# weights step^2 / a_i become integers m_i = rint(step^2 / a_i * 2^shift), and while every
# partial sum of integers stays within 2^53 float64 adds them exactly, in any order, so
# BLAS's blocking and thread count cannot change a bit.
_EXACT_LIMIT = 1 << 53
_MAX_SHIFT = 1000


def _weights(amp: np.ndarray, step: float, shift: int) -> np.ndarray:
    """The integer weights ``m_i`` (as float64) of a version-2 channel."""
    return np.rint(np.ldexp(step * step / amp.astype(np.float64), shift))


def _exact_bound(m: np.ndarray, qu: np.ndarray, qv: np.ndarray) -> int:
    """``sum_i m_i max|qu_i| max|qv_i|`` in exact integer arithmetic: a bound on every
    partial sum of the reconstruction's products."""
    if not len(m):
        return 0
    mu = np.abs(qu.astype(np.int64)).max(axis=1, initial=0).tolist()
    mv = np.abs(qv.astype(np.int64)).max(axis=1, initial=0).tolist()
    return sum(int(a) * b * c for a, b, c in zip(m.tolist(), mu, mv, strict=True))


def choose_shift(qu: np.ndarray, qv: np.ndarray, amp: np.ndarray, step: float) -> int:
    """The largest ``shift`` whose integer weights keep the exact sum within 2^53."""
    if not len(amp):
        return 0
    g = step * step / amp.astype(np.float64)
    mu = np.abs(qu).max(axis=1, initial=0).astype(np.float64)
    mv = np.abs(qv).max(axis=1, initial=0).astype(np.float64)
    bound = float(np.sum(g * mu * mv))
    shift = _MAX_SHIFT if bound <= 0 else min(_MAX_SHIFT, 53 - math.ceil(math.log2(bound)))
    while shift > -_MAX_SHIFT and _exact_bound(_weights(amp, step, shift), qu, qv) > _EXACT_LIMIT:
        shift -= 1
    return max(shift, -_MAX_SHIFT)


def reconstruct_rows(
    qu: np.ndarray,
    qv: np.ndarray,
    amp: np.ndarray,
    step: float,
    r0: int = 0,
    r1: int | None = None,
    *,
    shift: int | None = None,
    c0: int = 0,
    c1: int | None = None,
) -> np.ndarray:
    """Rows ``r0:r1`` (columns ``c0:c1``) of a channel decoded from its quantised factors
    (float32).

    ``s_i u_i v_i^T = a_i sqrt(hw) * (step qu_i / (a_i sqrt(h))) * (step qv_i / (a_i sqrt(w)))``.
    With ``shift`` (format version 2) the weights ``step^2 / a_i`` are the integers
    ``m_i`` times ``2^-shift`` and the sum is exact (see :func:`choose_shift`): the same
    bits on any machine.  Without (version 1) the products are summed in float64 in
    BLAS's order, then rounded to float32.
    """
    r1 = qu.shape[1] if r1 is None else r1
    c1 = qv.shape[1] if c1 is None else c1
    if len(amp) == 0:
        return np.zeros((r1 - r0, c1 - c0), np.float32)
    out = np.empty((r1 - r0, c1 - c0), np.float32)
    exponent = 0  # of the power of two applied to each band after the sum
    if shift is None:
        weights = step * step / amp.astype(np.float64)
    elif shift >= _FOLD_MIN_SHIFT:
        # 2^-shift folded into the weights: every product and partial sum is the exact
        # integer times 2^-shift, still a normal float64, so the sum is the same bits as
        # scaling afterwards (np.ldexp, a libm call per value, was most of the decode).
        weights = np.ldexp(_weights(amp, step, shift), -shift)
    else:
        weights, exponent = _weights(amp, step, shift), -shift
    left = qu[:, r0:r1].T.astype(np.float64) * weights
    right = qv[:, c0:c1].astype(np.float64)
    # Bands of a few MB: the float64 band is cast to float32 while still in cache.  Each
    # band's product packs the whole right factor again, so many components take taller
    # bands (the 24 MP percent=0.9 bundle, 1100-2100 components: 7.4 -> 6.5 s).  Version
    # 1 keeps the bands it was written with: its rounding may depend on them.
    if shift is None:
        rows = _DECODE_ROWS
    else:
        rows = max(1, _DECODE_BAND_VALUES // max(c1 - c0, 1), len(amp) // _DECODE_RANK_PER_ROW)
    for start in range(0, r1 - r0, rows):
        band = left[start : start + rows] @ right
        out[start : start + rows] = np.ldexp(band, exponent) if exponent else band
    return out


# Below this shift, 2^-shift times 2^53 would overflow float64 (see reconstruct_rows).
_FOLD_MIN_SHIFT = 53 - 1023
_DECODE_BAND_VALUES = 1 << 19
# Components per row of a band, at least (see reconstruct_rows).
_DECODE_RANK_PER_ROW = 4


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


class _KnownSpectrum:
    """A channel known only by its singular values: what :func:`_ranks_for` reads of one."""

    def __init__(self, s: np.ndarray) -> None:
        self._s = s

    @property
    def max_rank(self) -> int:
        return len(self._s)

    def spectrum(self) -> np.ndarray:
        return self._s


def choose_ranks(
    params: Mapping[str, Any],
    spectra: Sequence[np.ndarray],
    *,
    space: str | None = None,
) -> list[int]:
    """The rank per channel that :func:`encode` keeps for ``params``, given the spectra.

    Parameters
    ----------
    params : mapping
        SVD parameters, any subset (the others take their defaults; ``None`` means
        unset): the rank rule (``rank``, ``percent`` or ``energy``), ``color`` and
        ``chroma``.
    spectra : sequence of ndarray
        Each channel's singular values, descending, as :func:`singular_values` returns
        them; a channel's length, ``min(H, W)``, is the largest rank it can keep.
    space : {"gray", "rgb", "ycbcr"}, optional
        Colour space of the channels; by default ``params["color"]`` for three channels
        and ``"gray"`` for one.  In YCbCr the ``rank`` rule gives the two chroma
        channels ``chroma`` times the luma rank.

    Returns
    -------
    list of int
        One rank per channel, each in ``[1, len(spectrum)]``.

    Raises
    ------
    ParameterError
        Invalid parameters; the ``target_psnr`` and ``target_bpp`` rules (they search
        by trial compressions, which a spectrum cannot answer); patch SVD (it factors
        the matrix of patches, not the channels).

    Examples
    --------
    >>> s = np.array([4.0, 2.0, 1.0, 1.0])
    >>> choose_ranks({"percent": 0.75}, [s])
    [2]
    >>> choose_ranks({"rank": 3, "chroma": 0.5}, [s, s, s], space="ycbcr")
    [3, 2, 2]
    """
    resolved = CODEC.resolve({k: v for k, v in params.items() if v is not None})
    if resolved["patch"]:
        raise ParameterError("choose_ranks: patch SVD factors patches, not channels")
    rule, value = rule_of(resolved)
    if rule not in ("rank", "percent", "energy"):
        raise ParameterError(f"choose_ranks: the {rule} rule needs trial compressions")
    if not spectra or any(len(s) == 0 for s in spectra):
        raise ValueError("choose_ranks needs a non-empty spectrum per channel")
    if space is None:
        space = resolved["color"] if len(spectra) == 3 else "gray"
    ycc = space == "ycbcr" and len(spectra) == 3
    chans = [_KnownSpectrum(np.asarray(s, dtype=np.float64)) for s in spectra]
    return _ranks_for(rule, value, chans, resolved["chroma"], ycc)  # type: ignore[arg-type]


def unit_range(image: Any, *, rgb: bool | None = None) -> tuple[float, float]:
    """The values that :func:`~napari_svd_compress.compress` maps onto 0 and 1.

    Parameters
    ----------
    image : array_like
        A plane or a stack, as :func:`~napari_svd_compress.compress` takes it.
    rgb : bool, optional
        Whether the last axis holds colour channels (by default napari's rule).

    Returns
    -------
    (float, float)
        The dtype's range for integers; the minimum and maximum of the whole image for
        floating-point data (which reads all of it).
    """
    return inspect(image, rgb=rgb).value_range


def singular_values(
    image: Any,
    *,
    rgb: bool | None = None,
    color: str = "ycbcr",
    index: tuple[int, ...] = (),
    value_range: tuple[float, float] | None = None,
) -> list[np.ndarray]:
    """Each channel's singular values of one image plane, as :func:`encode` factors it.

    The plane is scaled into ``[0, 1]`` as :func:`~napari_svd_compress.compress` scales
    it and a colour plane is converted to ``color`` first, so :func:`choose_ranks` on
    the result gives the ranks the codec keeps.

    Parameters
    ----------
    image : array_like
        ``(..., H, W)`` grayscale or ``(..., H, W, 3|4)`` colour (alpha is ignored): one
        plane or a stack of them (of a lazy array only plane ``index`` is read).
    rgb : bool, optional
        Whether the last axis holds colour channels (by default napari's rule).
    color : {"rgb", "ycbcr"}
        Colour space of a colour plane; grayscale ignores it.
    index : tuple of int
        The plane of a stack; ``()`` for a single plane.
    value_range : (float, float), optional
        The values mapped onto 0 and 1; by default :func:`unit_range` of the whole
        image.  For a floating-point stack pass it, to spare a pass over the whole
        stack for every plane.

    Returns
    -------
    list of ndarray
        One float64 array of ``min(H, W)`` values per channel (gray; R, G, B; or Y, Cb,
        Cr), descending.

    Raises
    ------
    ImageError
        Unusable image, or ``index`` does not fit its stack.
    ParameterError
        Unknown ``color``.
    """
    if color not in COLOR_SPACES:
        raise ParameterError(f"color must be one of {', '.join(COLOR_SPACES)}; got {color!r}")
    _, _, unit, _ = _unit_plane(image, rgb, index, value_range)
    x = to_space(unit, color) if unit.shape[-1] == 3 else unit
    return [_linalg.spectrum(np.ascontiguousarray(x[..., i])) for i in range(x.shape[-1])]


def _unit_plane(
    image: Any,
    rgb: bool | None,
    index: tuple[int, ...],
    value_range: tuple[float, float] | None,
) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray | None]:
    """Plane ``index`` of ``image`` as the API reads it, its ImageSpec (with the value range
    in force), and the plane in unit range with alpha split off (see :func:`singular_values`)."""
    if getattr(image, "shape", None) is None:
        image = np.asarray(image)
    shape = tuple(int(n) for n in image.shape)
    if rgb is None:
        rgb = len(shape) >= 3 and shape[-1] in (3, 4)
    if len(index) != len(shape) - (3 if rgb else 2):
        raise ImageError(f"plane index {index} does not fit an image of shape {shape}")
    plane = np.asarray(image[index] if index else image)
    spec = inspect(plane, rgb=rgb)  # checks the plane; scans only it for a float range
    if value_range is None:
        value_range = unit_range(image, rgb=rgb) if index else spec.value_range
    lo, hi = float(value_range[0]), float(value_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ImageError(f"value_range must be finite with high > low, got {value_range}")
    spec = replace(spec, value_range=(lo, hi))
    plane = spec.plane(plane, ())
    unit, alpha = to_unit(plane, spec)
    return plane, spec, unit, alpha


# -- previews at any rank ------------------------------------------------------------------

#: The largest rank :func:`factorise` computes by default when the plane's smaller side is
#: over 1024 pixels (below that a full SVD costs the same as a truncated one, and every
#: rank is kept).
PREVIEW_MAX_RANK = 500


def factorise(
    image: Any,
    *,
    rgb: bool | None = None,
    color: str = "ycbcr",
    chroma: float = 0.5,
    qloss: float = 0.1,
    index: tuple[int, ...] = (),
    value_range: tuple[float, float] | None = None,
    max_rank: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> Factorisation:
    """Factor one image plane once, to reconstruct it at any rank up to ``max_rank``.

    The plane is scaled into ``[0, 1]`` and converted to ``color`` as :func:`encode` does,
    and each channel's truncated SVD is computed once, up to the largest rank the
    ``rank`` rule can ask of it (the chroma channels of YCbCr keep ``chroma`` times the
    luma rank).  What then costs little, for any ``k``, is what a rank slider needs:
    the rank-``k`` reconstruction ``U_k S_k V_k^T`` (:meth:`Factorisation.reconstruct`,
    one matrix product per channel), its PSNR, and the size of the bundle that
    ``compress(image, "svd", rank=k, ...)`` would write (:meth:`Factorisation.bundle_nbytes`).

    Parameters
    ----------
    image : array_like
        ``(..., H, W)`` grayscale or ``(..., H, W, 3|4)`` colour (alpha is kept as it
        is): one plane or a stack (of a lazy array only plane ``index`` is read).
    rgb : bool, optional
        Whether the last axis holds colour channels (by default napari's rule).
    color : {"rgb", "ycbcr"}
        Colour space of a colour plane; grayscale ignores it.
    chroma : float
        Rank of the chroma channels as a fraction of the luma rank (YCbCr only), as the
        codec's ``chroma`` parameter.
    qloss : float
        The codec's ``qloss`` (for :meth:`Factorisation.bundle_nbytes`).
    index : tuple of int
        The plane of a stack; ``()`` for a single plane.
    value_range : (float, float), optional
        The values mapped onto 0 and 1; by default :func:`unit_range` of the whole image.
    max_rank : int, optional
        The largest rank wanted (clipped to ``min(H, W)``).  By default ``min(H, W)``
        when that is at most 1024, else :data:`PREVIEW_MAX_RANK`: on a 24-megapixel
        plane a randomized SVD of 500 components takes seconds, all of them minutes.
    progress : callable, optional
        Called with the fraction done after each channel; may raise
        :class:`~napari_svd_compress.errors.Cancelled` to stop.

    Returns
    -------
    Factorisation

    Raises
    ------
    ImageError
        Unusable image, or ``index`` does not fit its stack.
    ParameterError
        Invalid ``color``, ``chroma``, ``qloss`` or ``max_rank``.

    Examples
    --------
    >>> from skimage import data
    >>> f = factorise(data.camera())
    >>> f.max_rank, f.reconstruct(20).dtype
    (512, dtype('uint8'))
    """
    resolved = CODEC.resolve({"rank": 1, "color": color, "chroma": chroma, "qloss": qloss})
    if max_rank is not None and int(max_rank) < 1:
        raise ParameterError(f"max_rank must be at least 1, got {max_rank}")
    plane, spec, unit, alpha = _unit_plane(image, rgb, index, value_range)
    h, w, c = unit.shape
    if max_rank is None:
        max_rank = min(h, w) if min(h, w) <= _linalg.EXACT_MAX_DIM else PREVIEW_MAX_RANK
    space = resolved["color"] if c == 3 else "gray"
    report = progress or (lambda f: None)
    report(0.0)
    chans = _channels(unit, space)
    del unit
    top = min(int(max_rank), h, w)
    wanted = _scaled_ranks(top, chans, resolved["chroma"], space == "ycbcr")
    for i, (ch, k) in enumerate(zip(chans, wanted, strict=True)):
        ch.factors(k)
        ch.wanted = k
        ch.x = None  # the factors are all a preview needs; the plane is large
        report((i + 1) / c)
    return Factorisation(plane, spec, alpha, space, resolved, chans, top)


class Factorisation:
    """One image plane's channels, factored once: reconstructions and sizes at any rank.

    Made by :func:`factorise`; see there.  Thread-safe for readers: nothing changes
    after construction, so a worker thread may reconstruct while another reads.

    Attributes
    ----------
    space : {"gray", "rgb", "ycbcr"}
        The colour space of the channels.
    params : dict
        The SVD parameters whose ``rank`` rule this previews (``color``, ``chroma``,
        ``qloss``; ``rank`` is set per call).
    max_rank : int
        The largest luma rank available.
    shape : tuple of int
        The plane's shape, as :meth:`reconstruct` returns it.
    dtype : numpy.dtype
        The plane's dtype.
    spec : ImageSpec
        The plane as the API sees it (its value range is the one in force), for
        :func:`napari_svd_compress.api.container_for`.
    """

    def __init__(
        self,
        plane: np.ndarray,
        spec: Any,
        alpha: np.ndarray | None,
        space: str,
        params: dict[str, Any],
        chans: list[_Channel],
        max_rank: int,
    ) -> None:
        self._plane = plane
        self.spec = spec
        self._alpha = alpha
        self._chans = chans
        self.space = space
        self.params = dict(params)
        self.max_rank = max_rank
        self.shape = tuple(plane.shape)
        self.dtype = plane.dtype

    def ranks(self, k: int) -> list[int]:
        """The rank per channel at luma rank ``k`` (as :func:`encode`'s ``rank`` rule)."""
        k = int(k)
        if not 1 <= k <= self.max_rank:
            raise ParameterError(f"rank must be in [1, {self.max_rank}], got {k}")
        ranks = _scaled_ranks(k, self._chans, self.params["chroma"], self.space == "ycbcr")
        return [min(r, ch.wanted) for r, ch in zip(ranks, self._chans, strict=True)]

    def reconstruct(self, k: int, *, step: int = 1) -> np.ndarray:
        """The plane rebuilt from each channel's leading singular triplets at rank ``k``.

        ``U_k S_k V_k^T`` per channel (no quantisation), back in the plane's colour
        space, range and dtype: clipped, and rounded for integers, as a decoder does.
        Computed band by band of rows, the colour transform and the scaling fused so that
        each band is converted while in cache: at 24 megapixels the matrix products
        are then most of the time.

        Parameters
        ----------
        k : int
            The luma rank, in ``[1, max_rank]``.
        step : int
            Reconstruct every ``step``-th row and column only (``U_k[::step] S_k
            V_k^T[:, ::step]``, ``step**2`` times cheaper): a draft of a large plane.

        Returns
        -------
        ndarray
            The plane's shape (its height and width divided by ``step``, rounded up)
            and dtype; alpha, if any, is the original's.
        """
        step = int(step)
        if step < 1:
            raise ParameterError(f"step must be at least 1, got {step}")
        factors = []
        for ch, r in zip(self._chans, self.ranks(k), strict=True):
            u, s, vt = ch.factors(r)
            factors.append((u[::step] * s.astype(u.dtype), np.ascontiguousarray(vt[:, ::step])))
        h, w = factors[0][0].shape[0], factors[0][1].shape[1]
        c = len(factors)
        alpha = None if self._alpha is None else self._alpha[::step, ::step]
        spec = self.spec
        out = np.empty((h, w, c + (alpha is not None)) if spec.rgb else (h, w), spec.dtype)
        if alpha is not None:
            out[..., c] = alpha
        rows = max(16, min(h, _PREVIEW_BAND // max(w, 1)))
        planes = [np.empty((rows, w), np.float32) for _ in range(c)]
        if spec.dtype.kind == "f":
            for r0 in range(0, h, rows):
                r1 = min(r0 + rows, h)
                for (us, vt), p in zip(factors, planes, strict=True):
                    np.matmul(us[r0:r1], vt, out=p[: r1 - r0])
                band = from_space(np.stack([p[: r1 - r0] for p in planes], -1), self.space)
                part = alpha[r0:r1] if alpha is not None else None
                out[r0:r1] = from_unit(band, spec, part)
            return out
        # Integers: out_j = rint(clip(sum_i mix[j, i] plane_i + bias[j])), the colour
        # transform and the scaling onto the dtype's range in one affine map.
        lo, hi = spec.value_range
        mix, bias = _affine(self.space, c)
        mix, bias = mix * (hi - lo), bias * (hi - lo) + lo
        acc, tmp = np.empty((rows, w), np.float32), np.empty((rows, w), np.float32)
        for r0 in range(0, h, rows):
            r1 = min(r0 + rows, h)
            n = r1 - r0
            for (us, vt), p in zip(factors, planes, strict=True):
                np.matmul(us[r0:r1], vt, out=p[:n])
            a, t = acc[:n], tmp[:n]
            for j in range(c):
                a.fill(bias[j])
                for i in range(c):
                    if mix[j, i] != 0.0:
                        np.multiply(planes[i][:n], np.float32(mix[j, i]), out=t)
                        a += t
                np.rint(a, out=a)
                np.clip(a, lo, hi, out=a)
                if spec.rgb:
                    out[r0:r1, :, j] = a
                else:
                    out[r0:r1] = a
        return out

    def psnr(self, reconstruction: np.ndarray) -> float:
        """PSNR (dB) of ``reconstruction`` (from :meth:`reconstruct`) against the plane,
        with the data range the API's figures use."""
        if reconstruction.shape != self.shape:
            raise ValueError(f"expected shape {self.shape}, got {reconstruction.shape}")
        mse = metrics.squared_error(self._plane, reconstruction) / max(self._plane.size, 1)
        return metrics.psnr_from_mse(mse, self.spec.data_range)

    def bundle_nbytes(
        self,
        k: int,
        container: Container | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> int | None:
        """Bytes of the bundle that :func:`encode` would write for this plane at rank ``k``.

        The factors are quantised and entropy coded as :func:`encode` codes them, and
        the payload's ZIP member and the plane's meta are counted.  From factors computed
        up to :attr:`max_rank` rather than at ``k``: exact when the plane's smaller side
        is at most 1024 (a full SVD either way), within about 0.1 % otherwise (see
        :func:`encode_many`).

        Parameters
        ----------
        k : int
            The luma rank, in ``[1, max_rank]``.
        container : Container, optional
            What the API puts around the plane's encoding (its ``overhead``: manifest and
            ZIP directory; see :func:`napari_svd_compress.api.container_for`); without it
            those bytes are not counted.
        cancelled : callable, optional
            Checked between channels: when it returns True, stop and return None.

        Returns
        -------
        int or None
        """
        blobs, metas = [], []
        for ch, r in zip(self._chans, self.ranks(k), strict=True):
            if cancelled is not None and cancelled():
                return None
            blob, meta, *_ = quantise_factors(*ch.factors(r), ch.energy, self.params["qloss"])
            blobs.append(blob)
            metas.append(meta)
        meta = {"space": self.space, "channels": metas, "target_met": True}
        return _bundle_nbytes(blobs, meta, container)


#: Floats per channel in one band of :meth:`Factorisation.reconstruct` (2 MB: in cache).
_PREVIEW_BAND = 1 << 19


def _affine(space: str, c: int) -> tuple[np.ndarray, np.ndarray]:
    """``from_space`` as an affine map: ``out_j = sum_i mix[j, i] in_i + bias[j]``."""
    if space != "ycbcr":
        return np.eye(c), np.zeros(c)
    basis = np.zeros((1, 4, 3), np.float32)
    basis[0, 1:] = np.eye(3, dtype=np.float32)
    image = from_space(basis, space).astype(np.float64)[0]
    bias = image[0]
    return (image[1:] - bias).T, bias


def _bundle_nbytes(
    blobs: Sequence[bytes], meta: dict[str, Any], container: Container | None
) -> int:
    """Bytes of a whole-channel SVD plane in its bundle: the payload, its ZIP member, the
    plane's meta in the manifest (the ``target_bpp`` search and the preview count this)."""
    overhead = container.overhead if container is not None else 0
    return int(
        sum(len(b) for b in blobs)
        + overhead
        + member_overhead("svd")
        + len(json.dumps(meta, separators=(",", ":")))
        + 2
    )


def encode(
    plane: np.ndarray,
    params: dict[str, Any],
    progress: Callable[[float], None],
    container: Container,
) -> Encoded:
    """Encode one plane (see :mod:`napari_svd_compress.registry`).

    ``container`` makes the ``target_psnr`` search round as the output dtype will and
    the ``target_bpp`` search count the bundle's bytes around the payload.
    """
    if params.get("patch"):
        return _encode_patch(plane, params, progress, container)
    space = params["color"] if plane.shape[2] == 3 else "gray"
    return _encode_channels(plane, _channels(plane, space), params, progress, container)


def encode_many(
    plane: np.ndarray,
    param_sets: list[dict[str, Any]],
    progress: Callable[[float], None],
    containers: list[Container],
) -> Iterator[Encoded]:
    """Encode one plane at several parameter sets, factorising each colour space once.

    The factorisation is computed before the first set at the largest rank asked for,
    and sliced for the others (the spectrum rules share the Gram eigenvectors), so a
    rank sweep costs one factorisation.  A slice of a randomized SVD is not bit for bit
    the smaller randomized SVD that :func:`encode` computes alone, so bundles may
    differ from :func:`encode`'s in their last bits; PSNR and size agree to about
    0.01 dB and 0.1 %.
    """
    channels: dict[str, list[_Channel]] = {}
    for params in param_sets:
        if params.get("patch"):
            continue
        space = params["color"] if plane.shape[2] == 3 else "gray"
        chans = channels.setdefault(space, _channels(plane, space))
        rule, value = rule_of(params)
        if rule == "rank":
            ranks = _scaled_ranks(int(value), chans, params["chroma"], space == "ycbcr")
            for ch, k in zip(chans, ranks, strict=True):
                ch.wanted = max(ch.wanted, k)
    # The largest rank of each channel first: the smaller ones are its slices.
    for chans in channels.values():
        for ch in chans:
            if ch.wanted:
                ch.factors(ch.wanted)
    for n, params in enumerate(param_sets):
        report = _scaled(progress, n / len(param_sets), 1 / len(param_sets))
        if params.get("patch"):
            yield _encode_patch(plane, params, report, containers[n])
        else:
            space = params["color"] if plane.shape[2] == 3 else "gray"
            yield _encode_channels(plane, channels[space], params, report, containers[n])


def _scaled(progress: Callable[[float], None], start: float, width: float):
    return lambda f: progress(start + width * f)


def _channels(plane: np.ndarray, space: str) -> list[_Channel]:
    # Straight into contiguous channel planes: a whole-plane YCbCr copy and three strided
    # gathers from it cost more than the factorisation's first product.
    h, w, c = plane.shape
    out = [np.empty((h, w), np.float32) for _ in range(c)]
    if space == "ycbcr":
        rgb_to_ycbcr_into(plane, out)
    else:
        for i, x in enumerate(out):
            x[...] = plane[..., i]
    return [_Channel(x) for x in out]


def _encode_channels(
    plane: np.ndarray,
    chans: list[_Channel],
    params: dict[str, Any],
    progress: Callable[[float], None],
    container: Container,
) -> Encoded:
    h, w, c = plane.shape
    space = params["color"] if c == 3 else "gray"
    ycc = space == "ycbcr"
    qloss = params["qloss"]
    rule, value = rule_of(params)
    progress(0.05)

    def build(ranks: list[int]) -> tuple[list[bytes], list[dict[str, Any]], list[tuple]]:
        # The quantised factors are kept, not the planes: only a PSNR search needs the
        # reconstruction, and the API decodes the bundle anyway.
        blobs, metas, factors = [], [], []
        for i, (ch, k) in enumerate(zip(chans, ranks, strict=True)):
            blob, meta, *quantised = quantise_factors(*ch.factors(k), ch.energy, qloss)
            blobs.append(blob)
            metas.append(meta)
            factors.append(quantised)
            progress(0.1 + 0.8 * (i + 1) / c)
        return blobs, metas, factors

    if rule in ("target_psnr", "target_bpp"):
        quantum = container.quantum

        def score(k: int) -> tuple[bool, Any]:
            built = build(_scaled_ranks(k, chans, params["chroma"], ycc))
            if rule == "target_bpp":
                meta = {"space": space, "channels": built[1], "target_met": True}
                nbytes = _bundle_nbytes(built[0], meta, container)
                return nbytes * 8 / (h * w) <= value, built
            planes = [
                reconstruct_rows(*f, shift=m["shift"])
                for f, m in zip(built[2], built[1], strict=True)
            ]
            rec = from_space(np.stack(planes, axis=-1), space if space != "gray" else "rgb")
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
    plane: np.ndarray,
    params: dict[str, Any],
    progress: Callable[[float], None],
    container: Container,
) -> Encoded:
    """Patch SVD (arXiv 2408.12691): the matrix of vectorised p x p patches (all
    channels) is factored; its left singular vectors are the eigenvectors of the patch
    covariance, so :func:`._blocks.encode_patches` does the work (mean-centred, quantised
    basis, rate-distortion optimised coefficients)."""
    p = int(params["patch"])
    if p < 2:
        raise ParameterError("patch must be 0 (whole image) or at least 2")
    h, w, c = plane.shape
    rule, value = rule_of(params)

    def run(choose: Callable[[np.ndarray], int], report=progress) -> Encoded:
        enc = _blocks.encode_patches(
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
        quantum = container.quantum

        def score(k: int) -> tuple[bool, Any]:
            enc = run(lambda eig: k, lambda f: progress(0.5 * f))
            if rule == "target_bpp":
                nbytes = sum(len(b) + member_overhead(n) for n, b in enc.payloads.items())
                # With the flag the result will carry ("false": the longer spelling).
                meta = {**enc.meta, "target_met": False}
                nbytes += container.overhead + len(json.dumps(meta)) + 2
                return nbytes * 8 / (h * w) <= value, enc
            rec = _blocks.decode(enc.meta, enc.payloads, plane.shape)
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
        if meta.get("patch") != meta.get("block") or meta.get("mode") != "blocks":
            raise BundleContentError("svd: inconsistent patch entry")
        return _blocks.decode(meta, payloads, shape)
    h, w, c = shape
    region = _region(meta, payloads, shape)
    # Band by band, so the channels are interleaved and converted while still in cache
    # (the bands are those of reconstruct_rows: the same products, the same bits).
    out = np.empty((h, w, c), np.float32)
    for r0 in range(0, h, _DECODE_ROWS):
        r1 = min(r0 + _DECODE_ROWS, h)
        region(r0, r1, 0, w, 1, out=out[r0:r1])
    return out


def decode_region(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
) -> Callable[[int, int, int, int, int], np.ndarray] | None:
    """A decoder of parts of a plane (see ``decode_region`` in
    :class:`~napari_svd_compress.registry.Codec`); None for patch SVD.

    ``region(r0, r1, c0, c1, step)`` reconstructs only those rows and columns from the
    factors, so a plane far larger than memory can be shown tile by tile; with
    ``step > 1`` the factors are averaged over ``step`` rows (columns) first, which
    gives the plane averaged over ``step x step`` blocks at the cost of a smaller one
    (a pyramid level for napari).  ``region(r0, r1, 0, W, 1)`` is bit for bit what
    :func:`decode` gives for those rows.
    """
    if "patch" in meta:
        return None
    return _region(meta, payloads, shape)


def _region(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
) -> Callable[[int, int, int, int, int], np.ndarray]:
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
    factors = []
    shifts: list[int | None] = []
    pos = 0
    for entry in chans:
        _, _, lengths = check_entry(entry, min(h, w))
        end = pos + sum(lengths)
        if end > len(data):
            raise BundleContentError("svd: payload lengths do not match the manifest")
        factors.append(decode_factors(entry, data[pos:end], (h, w)))
        shifts.append(entry.get("shift"))
        pos = end
    if pos != len(data):
        raise BundleContentError("svd: payload has trailing bytes")
    coarse: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def scaled(step: int) -> list[tuple[np.ndarray, np.ndarray]]:
        # Per channel, (k, H/step) left and (k, W/step) right factors averaged over blocks.
        if step not in coarse:
            coarse[step] = [
                (
                    _block_mean(
                        qu.astype(np.float64) * (st * st / amp.astype(np.float64))[:, None], step
                    ),
                    _block_mean(qv.astype(np.float64), step),
                )
                for qu, qv, amp, st in factors
            ]
        return coarse[step]

    def region(
        r0: int, r1: int, c0: int, c1: int, step: int = 1, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        if out is None:
            out = np.empty((r1 - r0, c1 - c0, c), np.float32)
        if step == 1 and ((c0, c1) == (0, w) or shifts[0] is not None):
            # Version 2 sums exactly: any tile has the bits of the whole plane.
            planes = [
                reconstruct_rows(*f, r0, r1, shift=shifts[i], c0=c0, c1=c1)
                for i, f in enumerate(factors)
            ]
        else:
            planes = [left[:, r0:r1].T @ right[:, c0:c1] for left, right in scaled(step)]
        if space == "ycbcr":
            # From the contiguous planes, interleaved as written (per-pixel arithmetic).
            ycbcr_planes_to_rgb(*planes, out)
        else:
            for i, p in enumerate(planes):
                out[..., i] = p
        return out

    return region


def _block_mean(a: np.ndarray, step: int) -> np.ndarray:
    """Means of ``a`` over blocks of ``step`` columns (the last block may be shorter)."""
    if step == 1:
        return a
    n = a.shape[1]
    starts = np.arange(0, n, step)
    if a.shape[0] == 0:
        return np.zeros((0, len(starts)))
    counts = np.minimum(starts + step, n) - starts
    return np.add.reduceat(a, starts, axis=1) / counts


def check_entry(entry: Any, max_rank: int) -> tuple[int, float, list[int]]:
    """Validate one channel's entry of an ``svd`` plane meta.

    Parameters
    ----------
    entry : object
        The entry as read from a manifest: a mapping with ``rank``, ``step`` and
        ``lengths`` (the byte lengths of the amplitudes and of the two coded factors).
    max_rank : int
        The largest rank the channel can have, ``min(H, W)``.

    Returns
    -------
    rank : int
    step : float
    lengths : list of int

    Raises
    ------
    BundleContentError
        When the entry is malformed or out of range.
    """
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
    shift = entry.get("shift")
    if shift is not None and (
        not isinstance(shift, int) or isinstance(shift, bool) or abs(shift) > _MAX_SHIFT
    ):
        raise BundleContentError("svd: a channel's shift is out of range")
    return k, step, lengths


def decode_factors(
    entry: Any, data: bytes, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The quantised factors of one channel, from its meta entry and its bytes.

    What :func:`decode` does for each channel before :func:`reconstruct_rows`; for
    callers that reconstruct a channel band by band (see
    :func:`napari_svd_compress.pipelines.large.decompress_large`).

    Parameters
    ----------
    entry : object
        The channel's entry of the plane meta (see :func:`check_entry`).
    data : bytes
        Exactly the channel's part of the ``svd`` payload (``sum(entry["lengths"])``
        bytes; a grayscale plane's whole payload).
    shape : (int, int)
        The channel's ``(H, W)``.

    Returns
    -------
    qu : ndarray of int32, (k, H)
    qv : ndarray of int32, (k, W)
    amp : ndarray of float32, (k,)
    step : float
        The arguments of :func:`reconstruct_rows`.

    Raises
    ------
    BundleContentError
        When the entry, the lengths or the coded data are inconsistent.
    """
    h, w = shape
    k, step, lengths = check_entry(entry, min(h, w))
    if sum(lengths) != len(data) or lengths[0] != 4 * k:
        raise BundleContentError("svd: payload lengths do not match the manifest")
    amp = np.frombuffer(data[: lengths[0]], "<f4")
    if k and not (np.all(np.isfinite(amp)) and np.all(amp > 0)):
        raise BundleContentError("svd: amplitudes must be positive and finite")
    pos = lengths[0]
    qu = decode_ints(data[pos : pos + lengths[1]], shape=(k, h), dtype=np.int32)
    pos += lengths[1]
    qv = decode_ints(data[pos : pos + lengths[2]], shape=(k, w), dtype=np.int32)
    shift = entry.get("shift")
    if shift is not None and _exact_bound(_weights(amp, step, shift), qu, qv) > _EXACT_LIMIT:
        raise BundleContentError("svd: the channel's weights overflow the exact sum")
    return qu, qv, amp, step


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
        encode_many=encode_many,
        decode_region=decode_region,
        # Whole-image SVD of a 768 x 512 photograph: about 0.03 to 2 bpp.
        sweep=("rank", (2, 4, 8, 12, 16, 24, 32, 48, 64, 80)),
        short=_short,
    )
)
