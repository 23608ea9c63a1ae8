"""The public entry points: :func:`compress` and :func:`decompress`.

The API owns everything that is the same for every codec: dtype and value-range
handling, alpha, stacks of planes, progress and cancellation, the bundle container
and the figures.  Codecs only ever see float32 planes in ``[0, 1]`` (see
:mod:`napari_svd_compress.registry`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from . import bundle as _bundle
from . import metrics, registry
from ._entropy import decode_ints, encode_ints
from ._image import (
    ImageSpec,
    from_unit,
    inspect,
    to_unit,
)
from .errors import BundleContentError, Cancelled, ImageError

__all__ = ["Result", "compress", "decompress"]

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
class PlaneResult:
    """One plane encoded, decoded back and measured (see :func:`compress_plane`)."""

    payloads: dict[str, bytes]
    meta: dict[str, Any]
    decoded: np.ndarray
    sq_err: float
    ssim: float
    encode_s: float
    decode_s: float


def compress_plane(
    original: np.ndarray,
    spec: ImageSpec,
    codec: registry.Codec,
    resolved: dict[str, Any],
    progress: ProgressFn | None = None,
) -> PlaneResult:
    """Encode one plane of an image described by ``spec``, decode it and measure it.

    The unit of work of :func:`compress`; :mod:`napari_svd_compress.stack` runs it as
    one dask task per plane.  ``payloads`` have no ``p{i}/`` prefix yet.
    """
    unit, alpha = to_unit(original, spec)
    t0 = time.perf_counter()
    hints = _encoder_hints(codec, resolved, spec)
    encoded = codec.encode(unit, {**resolved, **hints}, progress or (lambda f: None))
    if alpha is not None:
        encoded.payloads["alpha"] = encode_ints(alpha)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out_unit = codec.decode(encoded.meta, encoded.payloads, unit.shape)
    back = from_unit(out_unit, spec, _decode_alpha(encoded.payloads, spec))
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
    data, info, psnr, ssim = assemble(codec, resolved, spec, planes)
    decoded = _assemble([p.decoded for p in planes], spec)
    enc_s = sum(p.encode_s for p in planes)
    dec_s = sum(p.decode_s for p in planes)
    return Result(
        image=decoded,
        bundle=data,
        method=codec.name,
        params=resolved,
        psnr=psnr,
        ssim=ssim,
        encode_s=enc_s,
        decode_s=dec_s,
        pixels=spec.pixels,
        raw_nbytes=spec.raw_nbytes,
        info=info,
    )


def assemble(
    codec: registry.Codec, params: dict[str, Any], spec: ImageSpec, planes: list[Any]
) -> tuple[bytes, dict[str, Any], float, float]:
    """The file and figures of a compressed image from its planes, in stack order.

    ``planes`` hold ``payloads``, ``meta``, ``sq_err`` and ``ssim`` (a
    :class:`PlaneResult`, or a summary of one sent back by a dask task).  Returns the
    bundle bytes (a baseline codec's own file), the info dict, PSNR and SSIM.
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


def _encoder_hints(codec: registry.Codec, params: dict[str, Any], spec: ImageSpec) -> dict:
    """Private parameters that let rate and quality searches measure what the API will.

    ``_quantum``: the step of the output dtype in unit range (0 for floats), so a PSNR
    search can round as the API will.  ``_overhead``: bytes of container around one
    plane's payloads and meta (manifest and ZIP directory), so a size search can hit
    a bits-per-pixel target on the real file size.
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
    return {"_quantum": quantum, "_overhead": overhead}


def _decode_alpha(payloads: dict[str, bytes] | Any, spec: ImageSpec) -> np.ndarray | None:
    if not spec.alpha:
        return None
    if "alpha" not in payloads:
        raise BundleContentError("the bundle declares an alpha channel but has no 'alpha' payload")
    return decode_ints(payloads["alpha"], shape=spec.plane_shape[:2], dtype=spec.dtype)


def _assemble(planes: list[np.ndarray], spec: ImageSpec) -> np.ndarray:
    if len(planes) == 1 and not spec.stack_shape:
        return planes[0]
    out = np.empty(spec.shape, dtype=spec.dtype)
    for (_, idx), plane in zip(_planes(spec), planes, strict=True):
        out[idx] = plane
    return out


def decode_plane(opened: _bundle.Bundle, index: int) -> np.ndarray:
    """Decode plane ``index`` (in C order over the stack axes) of an opened bundle."""
    spec = opened.spec
    codec = registry.get(opened.manifest["codec"])
    prefix = f"p{index}/" if spec.n_planes > 1 else ""
    payloads = opened.payloads_with_prefix(prefix)
    meta = opened.manifest["planes"][index]
    unit_shape = spec.unit_shape
    out = codec.decode(meta, payloads, unit_shape)
    if not isinstance(out, np.ndarray) or out.shape != unit_shape:
        raise BundleContentError(
            f"codec {codec.name!r} decoded a plane of shape {getattr(out, 'shape', None)}, "
            f"expected {unit_shape}"
        )
    return from_unit(out, spec, _decode_alpha(payloads, spec))


def decompress(
    source: bytes | str | PathLike[str] | _bundle.Bundle,
    *,
    lazy: bool = False,
    progress: ProgressFn | None = None,
) -> Any:
    """Decode a bundle (or a JPEG/WebP/AVIF file written by a baseline codec).

    Parameters
    ----------
    source : bytes, path or Bundle
        The bundle's bytes, a path to it, or a bundle already opened with
        :func:`napari_svd_compress.bundle.open_bundle` (not read again).
    lazy : bool
        For stacks, return a dask array that decodes each plane when it is read
        (what the napari reader does), instead of decoding everything now.
    progress : callable, optional
        Called with the fraction of planes decoded.

    Returns
    -------
    ndarray or dask.array.Array
        The image, with the shape and dtype the bundle records.

    Raises
    ------
    BundleError
        For any malformed, truncated, hostile or unsupported file.
    """
    opened = source if isinstance(source, _bundle.Bundle) else _bundle.open_bundle(source)
    if opened.native is not None:
        return opened.native
    spec = opened.spec
    if lazy and spec.n_planes > 1:
        import dask.array as da
        from dask import delayed

        planes = [
            da.from_delayed(
                delayed(decode_plane)(opened, i), shape=spec.plane_shape, dtype=spec.dtype
            )
            for i, _ in _planes(spec)
        ]
        return da.stack(planes).reshape(spec.shape)
    decoded = []
    for i, _ in _planes(spec):
        decoded.append(decode_plane(opened, i))
        if progress is not None:
            progress((i + 1) / spec.n_planes)
    return _assemble(decoded, spec)


def check_cancel(flag: Callable[[], bool]) -> ProgressFn:
    """A progress callback that raises :class:`Cancelled` once ``flag()`` is true."""

    def report(_: float) -> None:
        if flag():
            raise Cancelled("cancelled")

    return report
