"""Input checking and dtype handling shared by every codec.

Codecs see float32 planes in ``[0, 1]``; this module maps any input dtype into that
range and back (clipping before the cast, so out-of-range reconstructions saturate
instead of wrapping around).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ImageError

#: dtypes an image may have (bool and float16 are widened on the way in).
SUPPORTED_DTYPES = (
    "bool",
    "uint8",
    "uint16",
    "uint32",
    "int8",
    "int16",
    "int32",
    "float16",
    "float32",
    "float64",
)


@dataclass(frozen=True)
class ImageSpec:
    """What the API knows about an input image (and a bundle records about it)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    rgb: bool
    alpha: bool
    value_range: tuple[float, float]

    @property
    def plane_ndim(self) -> int:
        return 3 if self.rgb else 2

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return self.shape[: len(self.shape) - self.plane_ndim]

    @property
    def plane_shape(self) -> tuple[int, ...]:
        return self.shape[len(self.shape) - self.plane_ndim :]

    @property
    def unit_shape(self) -> tuple[int, int, int]:
        """Shape of the float plane a codec sees: alpha removed, channel axis always present."""
        h, w = self.plane_shape[:2]
        return (h, w, 3 if self.rgb else 1)

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.stack_shape, dtype=np.int64))

    @property
    def pixels(self) -> int:
        """Pixels of one channel over the whole stack."""
        h, w = self.plane_shape[:2]
        return h * w * self.n_planes

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def raw_nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def data_range(self) -> float:
        lo, hi = self.value_range
        return float(hi - lo)

    def plane(self, image: Any, index: tuple[int, ...]) -> np.ndarray:
        """Plane ``index`` of ``image`` as a NumPy array (reads only that plane of a lazy array)."""
        plane = np.asarray(image[index] if index else image)
        if plane.dtype == np.float16 or plane.dtype == np.bool_:
            plane = plane.astype(np.float32 if plane.dtype == np.float16 else np.uint8)
        return plane


def dtype_range(dtype: np.dtype) -> tuple[float, float] | None:
    """The nominal value range of an integer or boolean dtype, None for floats."""
    if dtype == np.bool_:
        return (0.0, 1.0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    return None


def inspect(image: Any, *, rgb: bool | None = None, codec: Any = None) -> ImageSpec:
    """Check ``image`` and describe it; raise ImageError for anything unusable."""
    shape = getattr(image, "shape", None)
    if shape is None:
        image = np.asarray(image)
        shape = image.shape
    shape = tuple(int(s) for s in shape)
    try:
        dtype = np.dtype(image.dtype)
    except TypeError:
        raise ImageError(f"unsupported image dtype {image.dtype!r}") from None
    if dtype.name not in SUPPORTED_DTYPES:
        raise ImageError(
            f"unsupported image dtype {dtype}; supported: {', '.join(SUPPORTED_DTYPES)}"
        )
    if len(shape) < 2:
        raise ImageError(f"an image needs at least 2 dimensions, got shape {shape}")
    if rgb is None:
        rgb = len(shape) >= 3 and shape[-1] in (3, 4)
    elif rgb and (len(shape) < 3 or shape[-1] not in (3, 4)):
        raise ImageError(f"rgb=True needs a last axis of length 3 or 4, got shape {shape}")
    if 0 in shape:
        raise ImageError(f"the image is empty (shape {shape})")
    plane_hw = shape[-3:-1] if rgb else shape[-2:]
    if min(plane_hw) < 2:
        raise ImageError(f"planes must be at least 2x2 pixels, got {plane_hw[0]}x{plane_hw[1]}")
    alpha = bool(rgb and shape[-1] == 4)
    if codec is not None and codec.channels is not None:
        channels = 3 if rgb else 1
        if channels not in codec.channels:
            raise ImageError(f"method {codec.name!r} does not take {channels}-channel images")
    if codec is not None and alpha and getattr(codec, "native", None):
        # Its bundle is the format's own file, which would not hold the alpha channel:
        # the figures would describe pixels the file does not have.
        raise ImageError(
            f"method {codec.name!r} writes a plain image file without the alpha channel; "
            "drop the alpha channel first or use a .svdz method (svd, pca, kmeans, learned)"
        )
    out_dtype = np.dtype(np.float32) if dtype == np.float16 else dtype
    if out_dtype == np.bool_:
        out_dtype = np.dtype(np.uint8)
    value_range = dtype_range(dtype)
    if value_range is None:
        value_range = _float_range(image)
    if dtype == np.bool_:
        value_range = (0.0, 1.0)
    return ImageSpec(shape=shape, dtype=out_dtype, rgb=rgb, alpha=alpha, value_range=value_range)


def _float_range(image: Any) -> tuple[float, float]:
    if isinstance(image, np.ndarray):
        lo, hi = float(np.min(image)), float(np.max(image))
    else:  # dask and friends: reduce without materialising the whole array
        import dask.array as da

        arr = da.asarray(image)
        lo, hi = (float(v) for v in da.compute(arr.min(), arr.max()))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageError("the image contains NaN or infinite values")
    if hi <= lo:  # a constant image: any positive range decodes it exactly
        hi = lo + 1.0
    return (lo, hi)


# Rows per band of to_unit and from_unit: about this many pixels, so that their
# temporaries stay in cache (on a 24-megapixel plane, whole-plane temporaries cost more
# in page faults and memory traffic than the arithmetic).
_BAND_PIXELS = 1 << 16


def _row_bands(h: int, w: int) -> list[slice]:
    """Slices of ``h`` rows of ``w`` values each, about ``_BAND_PIXELS`` values a band."""
    rows = max(1, _BAND_PIXELS // max(w, 1))
    return [slice(r, min(r + rows, h)) for r in range(0, h, rows)]


def to_unit(plane: np.ndarray, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Map a plane into float32 ``[0, 1]`` of shape (H, W, C); split off alpha."""
    alpha = None
    if spec.alpha:
        alpha = np.ascontiguousarray(plane[..., 3])
        plane = plane[..., :3]
    lo, hi = spec.value_range
    scale = np.float32(1.0 / (hi - lo))
    plane = np.asarray(plane)
    unit = np.empty(plane.shape, np.float32)
    h, w = plane.shape[:2]
    for sl in _row_bands(h, w):  # the same operations as on the whole plane, band by band
        band = unit[sl]
        np.copyto(band, plane[sl], casting="unsafe")
        if lo != 0.0:
            band -= np.float32(lo)
        band *= scale
    if not spec.rgb:
        unit = unit[..., None]
    if spec.dtype.kind == "f" and not np.isfinite(unit).all():
        raise ImageError("the image contains NaN or infinite values")
    return np.ascontiguousarray(unit), alpha


def from_unit(unit: np.ndarray, spec: ImageSpec, alpha: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`to_unit`: clip to the range, scale back, round and cast."""
    h = unit.shape[0] if unit.ndim else 0
    w = unit.shape[1] if unit.ndim >= 2 else 1
    if h * w <= _BAND_PIXELS:
        return _from_unit(unit, spec, alpha)
    # Band by band (the same values): whole-plane float temporaries cost more than the work.
    out: np.ndarray | None = None
    for sl in _row_bands(h, w):
        part = _from_unit(unit[sl], spec, None if alpha is None else alpha[sl])
        if out is None:
            out = np.empty((h, *part.shape[1:]), part.dtype)
        out[sl] = part
    return out


def _from_unit(unit: np.ndarray, spec: ImageSpec, alpha: np.ndarray | None) -> np.ndarray:
    lo, hi = spec.value_range
    out = np.clip(unit, 0.0, 1.0, dtype=np.float32)
    if spec.dtype.kind == "f":
        out = out.astype(np.float64) * (hi - lo) + lo
        out = np.clip(out, lo, hi).astype(spec.dtype)
    else:
        out *= np.float32(hi - lo)
        if lo != 0.0:
            out += np.float32(lo)
        out = np.clip(np.rint(out), lo, hi).astype(spec.dtype)
    if not spec.rgb:
        out = out[..., 0]
    if spec.alpha:
        if alpha is None:
            raise ValueError("alpha missing")
        out = np.concatenate([out, alpha[..., None].astype(spec.dtype)], axis=-1)
    return out
