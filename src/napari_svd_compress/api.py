"""The public entry points: :func:`compress` and :func:`decompress`.

The API owns everything that is the same for every codec: dtype and value-range
handling, alpha, stacks of planes, progress and cancellation, the bundle container
and the figures.  Codecs only ever see float32 planes in ``[0, 1]`` (see
:mod:`napari_svd_compress.registry`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from . import codecs as _codecs  # noqa: F401  (importing registers the built-in codecs)
from . import metrics, registry
from ._image import ImageSpec, from_unit, inspect, to_unit
from ._memory import large_work, retained
from ._threads import THREADS
from .errors import (
    BundleContentError,
    BundleLimitError,
    BundleVersionError,
    Cancelled,
    ImageError,
    ParameterError,
    refuse_failures,
)
from .format import bundle as _bundle
from .format.entropy import decode_ints, encode_ints

__all__ = ["Result", "compress", "compress_many", "decompress", "decompress_levels"]

ProgressFn = Callable[[float], None]


@dataclass
class Result:
    """A compressed image, its bundle and its figures.

    Attributes
    ----------
    image : ndarray
        ``decompress(bundle)``: same shape and dtype as the input.
    bundle : bytes
        The bytes of the file that would be written (.svdz, or the codec's own
        file for the JPEG/WebP/AVIF baselines).
    method : str
        Registry name of the codec.
    params : dict
        The parameters used, defaults filled in.
    psnr, ssim : float
        Peak signal-to-noise ratio (dB) and structural similarity of ``image``
        against the input, with the data range of the input dtype (see
        :func:`napari_svd_compress.metrics.data_range`).  For stacks, PSNR is over
        the whole stack and SSIM the mean over planes.
    encode_s, decode_s : float
        Wall-clock seconds spent encoding and decoding.
    pixels : int
        Pixels of one channel of the whole input (``H*W`` times the number of planes).
    raw_nbytes : int
        ``input.nbytes``: the size of the uncompressed array.
    info : dict
        Codec-specific details (e.g. the ranks chosen), as stored in the bundle.
    """

    image: Any
    bundle: bytes
    method: str
    params: dict[str, Any]
    psnr: float
    ssim: float
    encode_s: float
    decode_s: float
    pixels: int
    raw_nbytes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Size of the bundle in bytes."""
        return len(self.bundle)

    @property
    def bpp(self) -> float:
        """Bundle bits per pixel of one plane: ``nbytes * 8 / (H * W * planes)``."""
        return self.nbytes * 8 / self.pixels

    @property
    def ratio(self) -> float:
        """Compression ratio: raw array bytes / bundle bytes."""
        return self.raw_nbytes / self.nbytes

    @property
    def label(self) -> str:
        """``"svd r=50"``-style summary for layer names."""
        text = registry.get(self.method).label_for(self.params)
        return f"{self.method} {text}".strip()

    def summary(self) -> str:
        """One line of figures, as the command line prints them."""
        return (
            f"{self.label}: {self.nbytes:,} bytes, {self.bpp:.3f} bpp, "
            f"ratio {self.ratio:.1f}:1, PSNR {self.psnr:.2f} dB, SSIM {self.ssim:.4f}, "
            f"encode {self.encode_s:.2f} s, decode {self.decode_s:.2f} s"
        )

    def figures(self) -> dict[str, Any]:
        """The figures as a JSON-safe dict (what the widget puts in layer metadata)."""
        return {
            "method": self.method,
            "params": dict(self.params),
            "bytes": self.nbytes,
            "bpp": self.bpp,
            "ratio": self.ratio,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "encode_s": self.encode_s,
            "decode_s": self.decode_s,
        }


def _planes(spec: ImageSpec) -> Iterator[tuple[int, tuple[int, ...]]]:
    yield from enumerate(np.ndindex(*spec.stack_shape))


def _scaled_progress(progress: ProgressFn | None, start: float, width: float) -> ProgressFn:
    def report(fraction: float) -> None:
        if progress is not None:
            progress(start + width * min(max(float(fraction), 0.0), 1.0))

    return report


@dataclass
class PlaneFigures:
    """One plane's bytes and figures, without its pixels: what :func:`make_result` takes.

    Attributes
    ----------
    payloads : dict of str to bytes
        The codec's payloads (and ``"alpha"``), without the ``p{i}/`` prefix of stacks.
    meta : dict
        The codec's JSON-safe plane meta.
    sq_err : float
        Sum of squared errors of the decoded plane, in the input dtype's units.
    ssim : float
        SSIM of the decoded plane (NaN when not measured).
    encode_s, decode_s : float
        Wall-clock seconds spent encoding and decoding the plane.
    """

    payloads: dict[str, bytes]
    meta: dict[str, Any]
    sq_err: float
    ssim: float
    encode_s: float
    decode_s: float


@dataclass
class PlaneResult(PlaneFigures):
    """One plane encoded, decoded back and measured (see :func:`compress_plane`).

    Attributes
    ----------
    decoded : ndarray
        The decoded plane, in the input dtype (besides :class:`PlaneFigures`' fields).
    """

    decoded: np.ndarray

    def figures(self) -> PlaneFigures:
        """The plane without its pixels (what a dask task sends back)."""
        return PlaneFigures(
            payloads=self.payloads,
            meta=self.meta,
            sq_err=self.sq_err,
            ssim=self.ssim,
            encode_s=self.encode_s,
            decode_s=self.decode_s,
        )


def _measure(
    original: np.ndarray,
    unit_shape: tuple[int, ...],
    spec: ImageSpec,
    codec: registry.Codec,
    encoded: registry.Encoded,
    alpha: np.ndarray | None,
    enc_s: float,
) -> PlaneResult:
    """Decode an encoded plane as a reader would and measure it against ``original``."""
    if alpha is not None:
        encoded.payloads["alpha"] = encode_ints(_alpha_ints(alpha.astype(spec.dtype, copy=False)))
    t0 = time.perf_counter()
    out_unit = codec.decode(encoded.meta, encoded.payloads, unit_shape)
    back = from_unit(out_unit, spec, _decode_alpha(encoded.payloads, spec))
    del out_unit  # a plane of float32 less at the peak, while SSIM runs
    dec_s = time.perf_counter() - t0
    return PlaneResult(
        payloads=encoded.payloads,
        meta=encoded.meta,
        decoded=back,
        sq_err=metrics.squared_error(original, back),
        ssim=metrics.ssim(original, back, spec),
        encode_s=enc_s,
        decode_s=dec_s,
    )


def compress_plane(
    original: np.ndarray,
    spec: ImageSpec,
    codec: registry.Codec,
    resolved: dict[str, Any],
    progress: ProgressFn | None = None,
) -> PlaneResult:
    """Encode one plane of an image described by ``spec``, decode it and measure it.

    The unit of work of :func:`compress`; :mod:`napari_svd_compress.pipelines.stack`
    runs it as one dask task per plane.

    Parameters
    ----------
    original : ndarray
        The plane, in the input dtype (``spec.plane_shape``).
    spec : ImageSpec
        The whole image's description.
    codec : Codec
        The codec to encode with.
    resolved : dict
        Its parameters, resolved (:meth:`~napari_svd_compress.registry.Codec.resolve`).
    progress : callable, optional
        Passed on to the codec.

    Returns
    -------
    PlaneResult
        ``payloads`` have no ``p{i}/`` prefix yet.
    """
    unit, alpha = to_unit(original, spec)
    t0 = time.perf_counter()
    container = container_for(codec, resolved, spec)
    encoded = codec.encode(unit, dict(resolved), progress or (lambda f: None), container)
    enc_s, shape = time.perf_counter() - t0, unit.shape
    del unit  # freed before the decoder allocates its plane: one float32 plane less at the peak
    return _measure(original, shape, spec, codec, encoded, alpha, enc_s)


def compress(
    image: Any,
    method: str = "svd",
    *,
    rgb: bool | None = None,
    progress: ProgressFn | None = None,
    **params: Any,
) -> Result:
    """Compress an image with a registered method and measure the result.

    Parameters
    ----------
    image : array_like
        2-D grayscale ``(H, W)``, colour ``(H, W, 3)`` or ``(H, W, 4)`` (alpha is
        kept losslessly), or a stack of either with leading axes (time, z, ...),
        which is compressed plane by plane.  Any integer, boolean or floating dtype;
        NumPy, dask or any array with ``__array__`` (stacks are read one plane at
        a time).
    method : str
        A registry name: see :func:`napari_svd_compress.available_methods`.
    rgb : bool, optional
        Whether the last axis holds colour channels.  By default it does when the
        array has at least 3 dimensions and the last has length 3 or 4 (napari's rule).
    progress : callable, optional
        Called with the fraction done in ``[0, 1]``; may raise
        :class:`~napari_svd_compress.errors.Cancelled` to stop the job.
    **params
        The method's parameters (see its registry entry).

    Returns
    -------
    Result

    Raises
    ------
    ImageError
        Empty, non-finite, or otherwise unusable input.
    ParameterError
        Unknown method or invalid parameter.
    Cancelled
        When ``progress`` raised it.

    Examples
    --------
    >>> from skimage import data
    >>> r = compress(data.camera(), "svd", rank=40)
    >>> r.image.shape, r.image.dtype
    ((512, 512), dtype('uint8'))
    """
    codec = registry.get(method)
    resolved = codec.resolve(params)
    spec = inspect(image, rgb=rgb, codec=codec)
    report = progress or (lambda f: None)
    n = spec.n_planes
    if codec.native and n > 1:
        raise ImageError(f"method {method!r} writes one image file; it cannot hold a stack")
    planes: list[PlaneResult] = []
    with large_work():  # the allocator's settings for large temporaries (see _memory)
        report(0.0)
        for i, idx in _planes(spec):
            planes.append(
                compress_plane(
                    spec.plane(image, idx),
                    spec,
                    codec,
                    resolved,
                    _scaled_progress(report, i / n, 0.9 / n),
                )
            )
            report((i + 1) / n)
        decoded = _assemble([p.decoded for p in planes], spec)
    return make_result(codec, resolved, spec, planes, image=decoded)


def compress_many(
    image: Any,
    method: str,
    param_sets: Sequence[Mapping[str, Any]],
    *,
    rgb: bool | None = None,
    progress: ProgressFn | None = None,
) -> Iterator[Result]:
    """Compress one image at several parameter sets of a method, sharing work.

    Yields, in order, what :func:`compress` would return for each set.  The image is
    converted once, a codec with ``encode_many`` (svd, pca) shares its
    factorisation or block transform between the sets, and baseline file
    encoders (one thread each) encode the next sets on other threads while a result is
    measured; every result is still decoded from its own bundle and measured on the
    whole image, with the bundle's real size.  Stacks are compressed set by set.

    Parameters
    ----------
    image : array_like
        Anything :func:`compress` takes.
    method : str
        A registry name.
    param_sets : sequence of dict
        The parameter sets.
    rgb : bool, optional
        As for :func:`compress`.
    progress : callable, optional
        Called with the fraction done; may raise :class:`Cancelled`.

    Yields
    ------
    Result
    """
    codec = registry.get(method)
    resolved = [codec.resolve(p) for p in param_sets]
    report = progress or (lambda f: None)
    spec = inspect(image, rgb=rgb, codec=codec)
    # Freed memory kept for the whole sweep (see _memory): each point's temporaries
    # reuse the last one's instead of faulting in fresh pages.  NumPy's huge-page
    # advice stays: the pages are touched once for all points, and then used by each.
    with retained():
        if spec.n_planes > 1 or len(resolved) < 2:
            for i, params in enumerate(resolved):
                yield compress(
                    image,
                    method,
                    rgb=rgb,
                    progress=_scaled_progress(report, i / len(resolved), 1 / len(resolved)),
                    **params,
                )
            return
        original = spec.plane(image, ())
        unit, alpha = to_unit(original, spec)
        containers = [container_for(codec, p, spec) for p in resolved]
        sets = [dict(p) for p in resolved]
        if codec.encode_many is not None:
            encoded_sets = _timed(codec.encode_many(unit, sets, report, containers))
        else:
            encoded_sets = _encode_each(codec, unit, sets, containers, report)
        for params, (encoded, enc_s) in zip(resolved, encoded_sets, strict=True):
            plane = _measure(original, unit.shape, spec, codec, encoded, alpha, enc_s)
            yield make_result(codec, params, spec, [plane], image=plane.decoded)


def _timed(encoded: Iterator[registry.Encoded]) -> Iterator[tuple[registry.Encoded, float]]:
    """Each item with the seconds spent producing it (not those the consumer spends)."""
    t0 = time.perf_counter()
    for item in encoded:
        yield item, time.perf_counter() - t0
        t0 = time.perf_counter()


def _encode_each(
    codec: registry.Codec,
    unit: np.ndarray,
    sets: list[dict[str, Any]],
    containers: list[registry.Container],
    report: ProgressFn,
) -> Iterator[tuple[registry.Encoded, float]]:
    """The sets encoded one by one, with their encoding seconds, in order.

    Baseline file encoders (libjpeg, libwebp, ...) run on one thread and release the
    GIL: those encode the next sets on other threads while a result is measured.
    """
    workers = min(THREADS, len(sets)) if codec.native else 1

    def one(i: int) -> tuple[registry.Encoded, float]:
        t0 = time.perf_counter()
        encoded = codec.encode(unit, sets[i], lambda f: None, containers[i])
        return encoded, time.perf_counter() - t0

    if workers == 1:
        for i in range(len(sets)):
            yield one(i)
            report((i + 1) / len(sets))
        return
    pool = ThreadPoolExecutor(workers)
    try:
        futures = [pool.submit(one, i) for i in range(len(sets))]
        for i, future in enumerate(futures):
            yield future.result()
            report((i + 1) / len(sets))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def make_result(
    codec: registry.Codec,
    params: dict[str, Any],
    spec: ImageSpec,
    planes: Sequence[PlaneFigures],
    *,
    image: Any = None,
    result_type: type[Result] = Result,
    **fields: Any,
) -> Result:
    """The :class:`Result` of a compressed image, from its planes in stack order.

    The one place where a result's bundle and figures are put together:
    :func:`compress`, :func:`~napari_svd_compress.pipelines.stack.compress_stack` and
    :func:`~napari_svd_compress.pipelines.large.compress_large` all end here, so the same
    planes give the same bytes and figures whichever way they were computed.

    Parameters
    ----------
    codec : Codec
        The codec that encoded the planes.
    params : dict
        Its resolved parameters (stored in the manifest).
    spec : ImageSpec
        The input image's description.
    planes : sequence of PlaneFigures
        One per plane, in C order over the stack axes (a :class:`PlaneResult` will do).
    image : array_like, optional
        The decoded image to put in the result (None when the caller has none, or sets
        it afterwards).
    result_type : type, optional
        :class:`Result` or a subclass of it.
    **fields
        The subclass's extra fields.

    Returns
    -------
    Result
        Timings are the sums over the planes; PSNR is over all pixels and SSIM the mean
        over the planes.
    """
    data, info, psnr, ssim = assemble(codec, params, spec, planes)
    return result_type(
        image=image,
        bundle=data,
        method=codec.name,
        params=params,
        psnr=psnr,
        ssim=ssim,
        encode_s=sum(p.encode_s for p in planes),
        decode_s=sum(p.decode_s for p in planes),
        pixels=spec.pixels,
        raw_nbytes=spec.raw_nbytes,
        info=info,
        **fields,
    )


def assemble(
    codec: registry.Codec, params: dict[str, Any], spec: ImageSpec, planes: Sequence[PlaneFigures]
) -> tuple[bytes, dict[str, Any], float, float]:
    """The file and figures of a compressed image from its planes, in stack order.

    Returns the bundle bytes (a baseline codec's own file), the info dict, PSNR and
    SSIM.  See :func:`make_result`, which builds a :class:`Result` from them.
    """
    n = spec.n_planes
    psnr = metrics.psnr_from_mse(sum(p.sq_err for p in planes) / max(spec.size, 1), spec.data_range)
    ssim = float(np.mean([p.ssim for p in planes]))
    entries = [p.meta for p in planes]
    if codec.native:
        return planes[0].payloads["file"], dict(entries[0]), psnr, ssim
    payloads = {
        (f"p{i}/" if n > 1 else "") + name: data
        for i, p in enumerate(planes)
        for name, data in p.payloads.items()
    }
    manifest = _bundle.make_manifest(
        codec=codec.name,
        params=params,
        spec=spec,
        planes=entries,
        figures={"psnr": psnr, "ssim": ssim},
    )
    info = {"planes": entries} if n > 1 else dict(entries[0])
    return _bundle.write_bytes(manifest, payloads), info, psnr, ssim


def container_for(
    codec: registry.Codec, params: dict[str, Any], spec: ImageSpec
) -> registry.Container:
    """What the API will put around one plane's encoding (see :class:`~.registry.Container`).

    ``quantum`` is the step of the output dtype in unit range (0 for floats), so a PSNR
    search can round as the API will.  ``overhead`` is the plane's share of the bundle
    around its payloads and meta (manifest and ZIP directory, measured on a manifest
    with the longest figures), plus the alpha payload's member header, so a size search
    can hit a bits-per-pixel target on the real file size.

    Parameters
    ----------
    codec : Codec
        The codec about to encode.
    params : dict
        Its resolved parameters.
    spec : ImageSpec
        The image being compressed.

    Returns
    -------
    Container
    """
    quantum = 0.0 if spec.dtype.kind == "f" else 1.0 / spec.data_range
    skeleton = _bundle.make_manifest(
        codec=codec.name,
        params=params,
        spec=spec,
        planes=[{}] * spec.n_planes,
        figures={"psnr": 99.99999999999999, "ssim": 0.9999999999999999},
    )
    overhead = len(_bundle.write_bytes(skeleton, {})) / spec.n_planes
    if spec.alpha:
        overhead += _bundle.member_overhead("alpha")
    return registry.Container(quantum=quantum, overhead=overhead)


# Float alpha is stored exactly as the integers of its IEEE-754 bits.
_ALPHA_BITS = {"float32": np.dtype("int32"), "float64": np.dtype("int64")}


def _alpha_ints(alpha: np.ndarray) -> np.ndarray:
    bits = _ALPHA_BITS.get(alpha.dtype.name)
    return alpha if bits is None else alpha.view(bits)


def _decode_alpha(payloads: dict[str, bytes] | Any, spec: ImageSpec) -> np.ndarray | None:
    if not spec.alpha:
        return None
    if "alpha" not in payloads:
        raise BundleContentError("the bundle declares an alpha channel but has no 'alpha' payload")
    bits = _ALPHA_BITS.get(spec.dtype.name)
    if bits is None:
        return decode_ints(payloads["alpha"], shape=spec.plane_shape[:2], dtype=spec.dtype)
    return decode_ints(payloads["alpha"], shape=spec.plane_shape[:2], dtype=bits).view(spec.dtype)


def _assemble(planes: list[np.ndarray], spec: ImageSpec) -> np.ndarray:
    if len(planes) == 1 and not spec.stack_shape:
        return planes[0]
    out = np.empty(spec.shape, dtype=spec.dtype)
    for (_, idx), plane in zip(_planes(spec), planes, strict=True):
        out[idx] = plane
    return out


def codec_of(opened: _bundle.Bundle) -> registry.Codec:
    """The registered codec that wrote an opened bundle."""
    name = opened.manifest["codec"]
    try:
        return registry.get(name)
    except ParameterError:
        raise BundleVersionError(f"the bundle uses an unknown codec {name!r}") from None


def default_max_bytes() -> int:
    """The default memory limit of :func:`decompress`: half of the physical memory.

    Half of the address-space limit instead, when the process has a lower one
    (``ulimit -v``, :data:`resource.RLIMIT_AS`).
    """
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        try:
            import psutil

            total = int(psutil.virtual_memory().total)
        except Exception:  # no way to ask: assume a small machine
            total = 8 << 30
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and 0 < soft < total:
            total = soft
    except (ImportError, OSError, ValueError):
        pass
    return max(total // 2, 1)


def decode_nbytes(spec: ImageSpec, planes: int | None = None) -> int:
    """Bytes that decoding ``planes`` planes (all by default) at once needs, about.

    The image in its dtype, plus the float32 plane a codec decodes to and as much
    again for the codec's own work (the API then converts the plane band by band).
    """
    h, w, cu = spec.unit_shape
    n = spec.n_planes if planes is None else planes
    plane_out = spec.raw_nbytes // max(spec.n_planes, 1)
    return n * plane_out + 8 * h * w * cu


def _limit_error(spec: ImageSpec, need: int, limit: int, hint: str) -> BundleLimitError:
    shape = " x ".join(map(str, spec.shape))
    return BundleLimitError(
        f"decoding this {shape} {spec.dtype} image needs about {_size(need)} "
        f"({need:,} bytes), more than the limit of {_size(limit)} (max_bytes; by default "
        f"half the physical memory){hint}"
    )


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def decode_plane(opened: _bundle.Bundle, index: int) -> np.ndarray:
    """Decode plane ``index`` (in C order over the stack axes) of an opened bundle.

    Raises only :class:`BundleError`: this is the safety net around every codec's
    decoder (see :func:`~napari_svd_compress.errors.refuse_failures`), so whatever a
    codec or a library under it raises on hostile data becomes a
    :class:`~napari_svd_compress.errors.BundleDecodeError`.
    """
    spec = opened.spec
    codec = codec_of(opened)
    prefix = f"p{index}/" if spec.n_planes > 1 else ""
    payloads = opened.payloads_with_prefix(prefix)
    meta = opened.manifest["planes"][index]
    unit_shape = spec.unit_shape
    with refuse_failures(f"codec {codec.name!r}, plane {index}"):
        out = codec.decode(meta, payloads, unit_shape)
        return from_unit(_checked(out, codec, unit_shape), spec, _decode_alpha(payloads, spec))


def _checked(out: Any, codec: registry.Codec, shape: tuple[int, ...]) -> np.ndarray:
    """A codec's output as finite floats of the expected shape."""
    if not isinstance(out, np.ndarray) or out.shape != shape:
        raise BundleContentError(
            f"codec {codec.name!r} decoded a plane of shape {getattr(out, 'shape', None)}, "
            f"expected {shape}"
        )
    if out.dtype.kind != "f":
        out = out.astype(np.float32)
    if not np.isfinite(out).all():  # hostile factors can overflow; never pass NaN on
        out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return out


def decompress(
    source: bytes | str | PathLike[str] | _bundle.Bundle,
    *,
    lazy: bool = False,
    max_bytes: int | None = None,
    progress: ProgressFn | None = None,
) -> Any:
    """Decode a bundle (or a JPEG/WebP/AVIF file written by a baseline codec).

    Parameters
    ----------
    source : bytes, path or Bundle
        The bundle's bytes, a path to it, or a bundle already opened with
        :func:`napari_svd_compress.format.bundle.open_bundle` (not read again).
    lazy : bool
        Return a dask array that decodes parts of the image when they are read (what
        the napari reader does) instead of decoding everything now: for a stack, one
        chunk per plane; for a plane beyond ``max_bytes``, tiles decoded from the
        factors (codecs that can decode part of a plane only: ``svd`` without
        ``patch``).  A single plane within the limit is decoded now.
    max_bytes : int, optional
        The memory that decoding may take (see :func:`decode_nbytes`); by default
        :func:`default_max_bytes`, half of the physical memory.  A bundle that needs
        more is refused with a :class:`~napari_svd_compress.errors.BundleLimitError`
        naming the size, unless ``lazy`` (then each chunk must fit).
    progress : callable, optional
        Called with the fraction of planes decoded.

    Returns
    -------
    ndarray or dask.array.Array
        The image, with the shape and dtype the bundle records.

    Raises
    ------
    BundleError
        For any malformed, truncated, hostile or unsupported file, and for one that
        needs more memory than ``max_bytes``.
    """
    opened = source if isinstance(source, _bundle.Bundle) else _bundle.open_bundle(source)
    if opened.native is not None:
        return opened.native
    codec_of(opened)
    spec = opened.spec
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    need = decode_nbytes(spec)
    if lazy and (spec.n_planes > 1 or need > limit):
        return _lazy(opened, 1, limit)
    if need > limit:
        raise _limit_error(spec, need, limit, "; decompress(..., lazy=True) decodes it on demand")
    decoded = []
    with large_work():
        for i, _ in _planes(spec):
            decoded.append(decode_plane(opened, i))
            if progress is not None:
                progress((i + 1) / spec.n_planes)
        with refuse_failures("assembling the planes"):
            return _assemble(decoded, spec)


def decompress_levels(
    source: bytes | str | PathLike[str] | _bundle.Bundle,
    *,
    max_bytes: int | None = None,
    smallest: int = 2048,
) -> list[Any]:
    """A bundle as a lazy multiscale pyramid: what napari needs to show a huge plane.

    Level 0 is ``decompress(source, lazy=True)``; each further level halves the height
    and width (the plane averaged over 2 x 2, 4 x 4, ... blocks, decoded straight from
    the factors, so no level costs more than its own pixels) until the longer side is
    at most ``smallest``.  Codecs that cannot decode parts of a plane give level 0 only.

    Parameters
    ----------
    source : bytes, path or Bundle
        As for :func:`decompress`.
    max_bytes : int, optional
        As for :func:`decompress`: the memory one chunk may take.
    smallest : int
        Stop once a level's longer side is at most this.

    Returns
    -------
    list of dask.array.Array
        Largest first; a single level when the plane is small or the codec decodes
        only whole planes.
    """
    opened = source if isinstance(source, _bundle.Bundle) else _bundle.open_bundle(source)
    if opened.native is not None:
        return [opened.native]
    codec_of(opened)
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    levels = [_lazy(opened, 1, limit)]
    h, w = opened.spec.plane_shape[:2]
    step = 2
    while max(h, w) > smallest * (step // 2) and _region_decoder(opened, 0) is not None:
        levels.append(_lazy(opened, step, limit))
        step *= 2
    return levels


def _region_decoder(opened: _bundle.Bundle, index: int) -> Callable[..., np.ndarray] | None:
    """The codec's decoder of parts of plane ``index`` (None if it has none); made once
    per opened bundle and plane."""
    codec = codec_of(opened)
    if codec.decode_region is None:
        return None
    cache = opened.region_decoders
    if index not in cache:
        spec = opened.spec
        prefix = f"p{index}/" if spec.n_planes > 1 else ""
        meta = opened.manifest["planes"][index]
        with refuse_failures(f"codec {codec.name!r}, plane {index}"):
            cache[index] = codec.decode_region(
                meta, opened.payloads_with_prefix(prefix), spec.unit_shape
            )
    return cache[index]


_TILE = 1024


def _lazy(opened: _bundle.Bundle, step: int, limit: int) -> Any:
    """The image (averaged over ``step`` x ``step`` blocks) as a dask array."""
    import dask.array as da

    lazy = _LazyImage(opened, step, limit)
    return da.from_array(
        lazy,
        chunks=lazy.chunks,
        name=f"svdz-{uuid.uuid4().hex}",
        asarray=False,
        lock=False,
        meta=np.empty((0,) * lazy.ndim, dtype=lazy.dtype),
    )


class _LazyImage:
    """What :func:`dask.array.from_array` slices: decodes the chunks it is asked for.

    A chunk is a whole plane (decoded by the codec's own decoder, bit for bit what
    :func:`decompress` gives) when the plane fits in the memory limit at full
    resolution, otherwise a tile decoded by the codec's region decoder.
    """

    def __init__(self, opened: _bundle.Bundle, step: int, limit: int) -> None:
        spec = opened.spec
        self.opened, self.spec, self.step = opened, spec, step
        h, w = spec.plane_shape[:2]
        self.hw = (-(-h // step), -(-w // step))
        tail = spec.plane_shape[2:]
        self.shape = (*spec.stack_shape, *self.hw, *tail)
        self.dtype = spec.dtype
        self.ndim = len(self.shape)
        self._alpha: dict[int, np.ndarray] = {}
        _, _, cu = spec.unit_shape
        per_pixel = 12 * cu + spec.dtype.itemsize * (tail[0] if tail else 1)
        if step == 1 and decode_nbytes(spec, 1) <= limit:
            self.tile = None  # whole planes
            plane_chunks: tuple[tuple[int, ...], ...] = ((h,), (w,))
        else:
            if _region_decoder(opened, 0) is None:
                need = decode_nbytes(spec, 1)
                raise _limit_error(
                    spec,
                    need,
                    limit,
                    f"; codec {opened.manifest['codec']!r} decodes only whole planes, "
                    "so it cannot be decoded lazily either",
                )
            tile = _TILE
            while tile > 16 and tile * tile * per_pixel > limit:
                tile //= 2
            if tile * tile * per_pixel > limit:
                raise _limit_error(spec, tile * tile * per_pixel, limit, "")
            self.tile = tile
            plane_chunks = tuple(_split(n, tile) for n in self.hw)
        self.chunks = (
            *((1,) * len(spec.stack_shape)),
            *plane_chunks,
            *((t,) for t in tail),
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        # dask asks for chunks with slices, and may fuse later indexing into the key
        # (integers, strided slices): decode the box that covers it, then index that.
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis or k is None for k in key) or len(key) > self.ndim:
            return self[(slice(None),) * self.ndim][key]
        key = key + (slice(None),) * (self.ndim - len(key))
        box, local = [], []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, slice):
                start, stop, stride = k.indices(n)
                if stride < 0 or stop <= start:
                    return np.empty((0,) * self.ndim, self.dtype)[key]
                box.append((start, stop))
                local.append(slice(0, stop - start, stride))
            else:
                i = int(k) + (n if int(k) < 0 else 0)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for size {n}")
                box.append((i, i + 1))
                local.append(0)
        return self._box(box)[tuple(local)]

    def _box(self, box: list[tuple[int, int]]) -> np.ndarray:
        spec = self.spec
        nstack = len(spec.stack_shape)
        (r0, r1), (c0, c1) = box[nstack : nstack + 2]
        stack_ranges = box[:nstack]
        out = np.empty(
            (*(b - a for a, b in stack_ranges), r1 - r0, c1 - c0, *spec.plane_shape[2:]),
            dtype=self.dtype,
        )
        for local in np.ndindex(*out.shape[:nstack]):
            idx = tuple(a + i for (a, _), i in zip(stack_ranges, local, strict=True))
            index = int(np.ravel_multi_index(idx, spec.stack_shape)) if nstack else 0
            out[local] = self._part(index, r0, r1, c0, c1)
        return out

    def _part(self, index: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        spec = self.spec
        if self.tile is None:
            return decode_plane(self.opened, index)[r0:r1, c0:c1]
        region = _region_decoder(self.opened, index)
        if region is None:
            raise BundleContentError(f"plane {index} cannot be decoded by parts")
        name = self.opened.manifest["codec"]
        with refuse_failures(f"codec {name!r}, plane {index}"):
            unit = _checked(
                region(r0, r1, c0, c1, self.step),
                codec_of(self.opened),
                (r1 - r0, c1 - c0, spec.unit_shape[2]),
            )
            alpha = None
            if spec.alpha:
                if index not in self._alpha:
                    prefix = f"p{index}/" if spec.n_planes > 1 else ""
                    full = _decode_alpha(self.opened.payloads_with_prefix(prefix), spec)
                    self._alpha[index] = full[:: self.step, :: self.step]
                alpha = self._alpha[index][r0:r1, c0:c1]
            return from_unit(unit, spec, alpha)


def _split(n: int, size: int) -> tuple[int, ...]:
    return tuple(min(size, n - i) for i in range(0, n, size))


def check_cancel(flag: Callable[[], bool]) -> ProgressFn:
    """A progress callback that raises :class:`Cancelled` once ``flag()`` is true."""

    def report(_: float) -> None:
        if flag():
            raise Cancelled("cancelled")

    return report
