"""SVD of one very large 2-D plane (stitched mosaics) in bounded memory.

:func:`compress` holds a plane as float32 (plus the codec's copies): a 30000 x 30000
mosaic would need well over 10 GB.  :func:`compress_large` never holds more than a
band of rows: it runs the same randomized SVD as the in-memory codec (Halko et al.,
with the same random test matrix, oversampling and power iterations, see
:func:`napari_svd_compress.codecs._linalg.truncated_svd`) as a sequence of passes over row
bands read from disk, then quantises and codes the factors exactly as the ``svd``
codec does, so the bundle is an ordinary single-plane ``svd`` bundle that
:func:`~napari_svd_compress.decompress` reads.

Memory: the factors are small (``(H + W) x (k + p)`` float32, 36 MB for 30000 x 30000
at rank 100), and a band of rows is about ``band_mb`` MB as float32 (64 by default),
so the peak is a few hundred MB whatever the plane size.  Bands are read with plain
file reads (``numpy.fromfile`` at an offset) from ``.npy`` files and uncompressed
TIFFs, so that the mapped file does not count as resident memory either; other
sources (in-memory arrays, ``numpy.memmap``, dask arrays, compressed TIFFs decoded
to a temporary memory map) are sliced band by band.

Cost: ``2 * power_iterations + 2`` passes over the plane for the factors, one more
for the PSNR (and SSIM when asked), each a matrix product of ``H x W x (k + p)``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg as sla

from .. import metrics, registry
from .._image import SUPPORTED_DTYPES, ImageSpec, dtype_range, from_unit, to_unit
from ..api import PlaneFigures, Result, make_result
from ..codecs.svd import decode_factors, quantise_factors, reconstruct_rows
from ..errors import BundleContentError, ImageError, ParameterError
from ..fileio.atomic import atomic_target, atomic_write
from ..fileio.images import read_image
from ..format.bundle import open_bundle

__all__ = [
    "LARGE_PARAMS",
    "LARGE_PLANE_PIXELS",
    "LargeResult",
    "compress_large",
    "decompress_large",
    "is_large_input",
    "wants_large",
]

#: Planes of at least this many pixels go through :func:`compress_large` on the
#: command line (``compress`` of a TIFF or NPY with ``--method svd``).  At 2**27
#: (134 Mpixel) the in-memory path needs several GB of float32 copies.
LARGE_PLANE_PIXELS = 1 << 27

#: The svd parameters :func:`compress_large` takes (the rank rule and ``qloss``).
LARGE_PARAMS = ("rank", "qloss")

ProgressFn = Callable[[float], None]


@dataclass
class LargeResult(Result):
    """The outcome of :func:`compress_large`.

    A :class:`~napari_svd_compress.Result` whose ``image`` is None (the decoded plane
    would not fit).  ``decode_s`` is the time of the measuring pass, which decodes the
    plane band by band; SSIM is NaN unless asked for.

    Attributes
    ----------
    path : Path or None
        Where the bundle was written (None when no ``out`` was given).
    """

    path: Path | None = None


class _Rows:
    """Row bands of a 2-D plane from a file or an array, read one band at a time."""

    def __init__(self, source: Any) -> None:
        self._file: str | None = None
        self._offset = 0
        self._array: Any = None
        self._tmp: str | None = None
        if isinstance(source, str | PathLike):
            self._open_path(Path(source))
        else:
            self._array = source
            self.shape = tuple(int(s) for s in source.shape)
            self.file_dtype = np.dtype(source.dtype)
        if len(self.shape) != 2:
            raise ImageError(
                f"compress_large takes one 2-D grayscale plane, got shape {self.shape}; "
                "use compress() or compress_stack() for colour images and stacks"
            )
        if self.file_dtype.newbyteorder("=").name not in SUPPORTED_DTYPES:
            raise ImageError(f"unsupported image dtype {self.file_dtype}")
        self.dtype = self.file_dtype.newbyteorder("=")
        if self.dtype in (np.bool_, np.float16):
            self.dtype = np.dtype(np.uint8 if self.dtype == np.bool_ else np.float32)

    def _open_path(self, path: Path) -> None:
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                # Maps the file without touching it: only the header is read.
                mm = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise ImageError(f"{path}: cannot read the array ({exc})") from None
            self.shape, self.file_dtype = tuple(mm.shape), mm.dtype
            if mm.ndim == 2 and not mm.flags.c_contiguous:  # Fortran order: slice the map
                self._array = mm
            else:
                self._file, self._offset = os.fspath(path), int(mm.offset)
                del mm
            return
        if suffix in (".tif", ".tiff"):
            import tifffile

            try:
                mm = tifffile.memmap(path, mode="r")
                self.shape, self.file_dtype = tuple(mm.shape), mm.dtype
                self._file, self._offset = os.fspath(path), int(mm.offset)
                del mm
            except ValueError:
                # Compressed or tiled: decode once into a temporary memory map on disk.
                fd, self._tmp = tempfile.mkstemp(suffix=".mmap")
                os.close(fd)
                self._array = tifffile.imread(path, out=self._tmp)
                self.shape, self.file_dtype = tuple(self._array.shape), self._array.dtype
            return
        self._array, _ = read_image(path)
        self.shape, self.file_dtype = tuple(self._array.shape), self._array.dtype

    def read(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` as a native-endian array (bool and float16 widened)."""
        if self._file is not None:
            w = self.shape[1]
            block = np.fromfile(
                self._file,
                dtype=self.file_dtype,
                count=(r1 - r0) * w,
                offset=self._offset + r0 * w * self.file_dtype.itemsize,
            ).reshape(r1 - r0, w)
        else:
            block = np.asarray(self._array[r0:r1])
        if block.dtype != self.dtype:
            block = block.astype(self.dtype)
        return block

    def bands(self, rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(r0, r1, rows r0:r1)`` for consecutive bands of ``rows`` rows."""
        h = self.shape[0]
        for r0 in range(0, h, rows):
            r1 = min(r0 + rows, h)
            yield r0, r1, self.read(r0, r1)

    def close(self) -> None:
        """Drop the source and remove the temporary memory map, if any."""
        self._array = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None


def _spec_for(rows: _Rows, band: int) -> ImageSpec:
    vr = dtype_range(rows.dtype)
    if vr is None:  # floats: the data's range, in one pass
        lo, hi = math.inf, -math.inf
        for _, _, b in rows.bands(band):
            if not np.isfinite(b).all():
                raise ImageError("the image contains NaN or infinite values")
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
        vr = (lo, hi if hi > lo else lo + 1.0)
    return ImageSpec(shape=rows.shape, dtype=rows.dtype, rgb=False, alpha=False, value_range=vr)


def _one_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-image's stack
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def _orth(a: np.ndarray) -> np.ndarray:
    # Tall-skinny QR is memory-bound; with threaded OpenBLAS on a loaded machine it was
    # measured 10 to 300 times slower than on one thread (spinning threads).
    with _one_thread():
        q, _ = sla.qr(a, mode="economic", overwrite_a=True, check_finite=False)
    return q


def blocked_randomized_svd(
    bands: Callable[[], Iterator[tuple[int, int, np.ndarray]]],
    shape: tuple[int, int],
    k: int,
    *,
    oversample: int | None = None,
    power_iterations: int = 3,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Randomized SVD of a matrix seen only as row bands.

    ``bands()`` must yield ``(r0, r1, X[r0:r1])`` (float32) over the whole matrix each
    time it is called.  The algorithm and its defaults are those of
    :func:`napari_svd_compress.codecs._linalg.truncated_svd` (``oversample = max(10, k // 2)``,
    three power iterations with re-orthonormalisation, seed 0), so the result matches
    the in-memory codec's up to float32 rounding.

    Returns
    -------
    u : (m, k), s : (k,), vt : (k, n), energy : float
        The factors and the squared Frobenius norm of the matrix (float64).
    """
    m, n = shape
    k = int(min(max(k, 1), m, n))
    p = max(10, k // 2) if oversample is None else oversample
    width = min(k + p, m, n)
    omega = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    report = progress or (lambda f: None)
    passes = 2 * power_iterations + 2
    y = np.empty((m, width), np.float32)
    energy = 0.0
    for r0, r1, x in bands():
        y[r0:r1] = x @ omega
        energy += float(np.einsum("ij,ij->", x, x, dtype=np.float64))
    report(1 / passes)
    del omega
    q = _orth(y)
    for it in range(power_iterations):
        z = np.zeros((n, width), np.float64)
        for r0, r1, x in bands():
            z += x.T @ q[r0:r1]
        qz = _orth(z.astype(np.float32))
        del z
        for r0, r1, x in bands():
            y[r0:r1] = x @ qz
        q = _orth(y)
        report((2 * it + 3) / passes)
    b = np.zeros((width, n), np.float64)
    for r0, r1, x in bands():
        b += q[r0:r1].T @ x
    ub, s, vt = sla.svd(
        b.astype(np.float32), full_matrices=False, lapack_driver="gesdd", check_finite=False
    )
    report(1.0)
    return q @ ub[:, :k], s[:k], vt[:k], energy


def _band_rows(width: int, band_mb: float) -> int:
    return max(8, int(band_mb * (1 << 20) // (4 * width)))


def compress_large(
    source: str | PathLike[str] | Any,
    rank: int = 50,
    out: str | PathLike[str] | None = None,
    *,
    qloss: float = 0.1,
    oversample: int | None = None,
    power_iterations: int = 3,
    seed: int = 0,
    band_mb: float = 64.0,
    ssim: bool = False,
    progress: ProgressFn | None = None,
) -> LargeResult:
    """Compress one huge 2-D plane with truncated SVD, reading it band by band.

    Parameters
    ----------
    source : path or array
        A ``.npy`` or TIFF file (read with plain file reads when uncompressed, else
        decoded once into a temporary memory map), any other image file (read whole),
        or a 2-D array (NumPy, ``numpy.memmap``, dask), sliced by row bands.
    rank : int
        Singular values kept (the svd codec's ``rank`` rule).
    out : path, optional
        Write the bundle there, atomically.
    qloss : float
        As the svd codec's: PSNR (dB) the quantisation may cost.
    oversample, power_iterations, seed
        Randomized SVD settings (defaults as the in-memory codec).
    band_mb : float
        Size of a band of rows as float32, in MB: the unit of memory.
    ssim : bool
        Also measure SSIM (in bands; slow on huge planes).
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    LargeResult
        The bundle is a standard single-plane ``svd`` bundle.
    """
    codec = registry.get("svd")
    params = codec.resolve({"rank": rank, "qloss": qloss})
    report = progress or (lambda f: None)
    rows = _Rows(source)
    try:
        h, w = rows.shape
        band = _band_rows(w, band_mb)
        spec = _spec_for(rows, band)
        t0 = time.perf_counter()

        def unit_bands() -> Iterator[tuple[int, int, np.ndarray]]:
            for r0, r1, b in rows.bands(band):
                yield r0, r1, to_unit(b, spec)[0][..., 0]

        u, s, vt, energy = blocked_randomized_svd(
            unit_bands,
            (h, w),
            params["rank"],
            oversample=oversample,
            power_iterations=power_iterations,
            seed=seed,
            progress=lambda f: report(0.85 * f),
        )
        blob, meta, qu, qv, amp, step = quantise_factors(u, s, vt, energy, params["qloss"])
        del u, vt
        # The meta and payload the svd codec writes for a grayscale plane at this rank.
        plane_meta = {"space": "gray", "channels": [meta], "target_met": True}
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sq_err, ssim_value = _measure(rows, spec, band, (qu, qv, amp, step, meta["shift"]), ssim)
        plane = PlaneFigures(
            payloads={"svd": blob},
            meta=plane_meta,
            sq_err=sq_err,
            ssim=ssim_value,
            encode_s=encode_s,
            decode_s=time.perf_counter() - t0,
        )
    finally:
        rows.close()
    result = make_result(codec, params, spec, [plane], result_type=LargeResult)
    if out is not None:
        result.path = atomic_write(out, result.bundle)
    report(1.0)
    return result


def _measure(
    rows: _Rows,
    spec: ImageSpec,
    band: int,
    factors: tuple[np.ndarray, np.ndarray, np.ndarray, float, int | None],
    with_ssim: bool,
) -> tuple[float, float]:
    """The sum of squared errors of the decoded plane and its SSIM (NaN when not asked);
    ``factors``: ``qu, qv, amp, step, shift`` (see :func:`reconstruct_rows`)."""
    qu, qv, amp, step, shift = factors
    h = spec.shape[0]
    sq_err = 0.0
    total = 0.0
    count = 0
    pad = metrics.SSIM_RADIUS
    for r0, r1, orig in rows.bands(band):
        back = from_unit(reconstruct_rows(qu, qv, amp, step, r0, r1, shift=shift)[..., None], spec)
        sq_err += metrics.squared_error(orig, back)
        if with_ssim and min(spec.shape) >= 7:
            # SSIM's 7x7 window needs `pad` rows beyond the band on each side.
            lo, hi = max(r0 - pad, 0), min(r1 + pad, h)
            ref = rows.read(lo, hi)
            test = from_unit(
                reconstruct_rows(qu, qv, amp, step, lo, hi, shift=shift)[..., None], spec
            )
            from skimage.metrics import structural_similarity

            _, smap = structural_similarity(ref, test, data_range=spec.data_range, full=True)
            keep_lo, keep_hi = max(r0, pad), min(r1, h - pad)
            if keep_hi > keep_lo:
                part = smap[keep_lo - lo : keep_hi - lo, pad:-pad]
                total += float(part.sum(dtype=np.float64))
                count += part.size
    return sq_err, (total / count if count else float("nan"))


def decompress_large(
    source: bytes | str | PathLike[str], out: str | PathLike[str], *, band_mb: float = 64.0
) -> Path:
    """Decode a single-plane grayscale ``svd`` bundle into a ``.npy`` file, band by band.

    :func:`~napari_svd_compress.decompress` builds the whole float32 plane (and its
    clipped copy) before casting; this writes the output through a memory map in
    bands, so only the output file's pages and one band are ever resident.

    Returns
    -------
    Path
        ``out``, written through a temporary file and renamed when complete.
    """
    opened = open_bundle(source)
    spec = opened.spec
    meta = opened.manifest["planes"][0] if opened.manifest.get("planes") else {}
    if opened.manifest.get("codec") != "svd" or spec.n_planes != 1 or spec.rgb:
        raise ParameterError("decompress_large takes single-plane grayscale svd bundles")
    if "patch" in meta:
        raise ParameterError("decompress_large does not take patch SVD bundles")
    h, w = spec.plane_shape
    channels = meta.get("channels")
    if not isinstance(channels, list) or len(channels) != 1:
        raise BundleContentError("svd: expected 1 channel entry")
    if "svd" not in opened.payloads:
        raise BundleContentError("svd: payload 'svd' is missing")
    qu, qv, amp, step = decode_factors(channels[0], opened.payloads["svd"], (h, w))
    shift = channels[0].get("shift")
    out = Path(out)
    with atomic_target(out) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=spec.dtype, shape=(h, w))
        band = _band_rows(w, band_mb)
        for r0 in range(0, h, band):
            r1 = min(r0 + band, h)
            rec = reconstruct_rows(qu, qv, amp, step, r0, r1, shift=shift)
            mm[r0:r1] = from_unit(rec[..., None], spec)
        mm.flush()
        del mm
    return out


def _plane_shape_of(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of a ``.npy`` or TIFF from its header only (None otherwise)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
            return tuple(mm.shape), mm.dtype
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                series = tf.series[0]
                return tuple(series.shape), np.dtype(series.dtype)
    except Exception:
        return None
    return None


def is_large_input(path: str | PathLike[str], threshold: int = LARGE_PLANE_PIXELS) -> bool:
    """Whether ``path`` is a 2-D ``.npy``/TIFF plane of at least ``threshold`` pixels."""
    found = _plane_shape_of(Path(path))
    if found is None:
        return False
    shape, _ = found
    return len(shape) == 2 and shape[0] * shape[1] >= threshold


def wants_large(
    method: str,
    source: str | PathLike[str],
    params: Mapping[str, Any],
    *,
    force: bool = False,
    threshold: int = LARGE_PLANE_PIXELS,
) -> bool:
    """Whether a ``compress`` job should go through :func:`compress_large`.

    It should when the method is ``svd`` with only :data:`LARGE_PARAMS` given and the
    source is a 2-D ``.npy``/TIFF plane of at least ``threshold`` pixels, or ``force``
    is set.

    Parameters
    ----------
    method : str
        The registry name of the method asked for.
    source : path
        The input file.
    params : mapping
        The codec parameters given (not resolved: only the names matter).
    force : bool
        Use the large-plane path whatever the size (the CLI's ``--large``).
    threshold : int
        Pixels from which a plane counts as large.

    Returns
    -------
    bool

    Raises
    ------
    ParameterError
        When ``force`` is set with parameters the large-plane path does not take.
    """
    if method != "svd" or not (force or is_large_input(source, threshold)):
        return False
    unsupported = sorted(set(params) - set(LARGE_PARAMS))
    if unsupported:
        if force:
            raise ParameterError(
                f"the large-plane path takes {' and '.join(LARGE_PARAMS)} only, "
                f"not {unsupported[0]}"
            )
        return False
    return True
