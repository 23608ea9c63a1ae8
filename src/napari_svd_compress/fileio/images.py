"""Reading input images of any kind, and writing 8-bit JPEG/PNG previews."""

from __future__ import annotations

import io
import os
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..api import decompress
from ..errors import BundleError, ImageError, LegacyError, RawError
from ..format import native
from ..format.bundle import open_bundle
from . import raw
from .atomic import atomic_write
from .legacy import load_legacy

MAX_PIXELS = 1 << 31

__all__ = ["read_image", "to_uint8", "write_jpeg", "write_png"]


def read_image(path: str | PathLike[str], **raw_options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an image file into an array, whatever it holds.

    Camera RAW files go through :func:`napari_svd_compress.fileio.raw.read_raw` (``raw_options``
    are passed on), ``.svdz`` bundles and baseline files are decoded, TIFF through
    tifffile (16-bit and float kept), JPEG XL (``.jxl``) and JPEG 2000 (``.jp2``,
    ``.j2k``, ...) through imagecodecs (16-bit kept), ``.npy`` without pickles, ``.pkl``
    through the restricted legacy reader, everything else through Pillow.

    Returns
    -------
    image : ndarray
    meta : dict
        What the reader knows about the file (RAW settings, bundle manifest, ...).

    Raises
    ------
    ImageError, RawError, BundleError, LegacyError
        With a message naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a directory")
    suffix = p.suffix.lower()
    if suffix == ".svdz":
        opened = open_bundle(p)
        return decompress(opened), {"manifest": opened.manifest, "figures": opened.figures}
    if suffix == ".pkl":
        return load_legacy(p), {"legacy": True}
    if raw.is_raw_path(p) and suffix not in (".tif", ".tiff"):
        return raw.read_raw(p, **raw_options)
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(p)), {}
        if suffix == ".npy":
            return np.load(p, allow_pickle=False), {}
        if suffix in _IMAGECODECS_SUFFIXES:
            return _read_imagecodecs(p)
        return _read_pillow(p.read_bytes()), {}
    except (ImageError, RawError, BundleError, LegacyError):
        raise
    except Exception as exc:  # readers raise many types for broken files
        raise ImageError(f"{p}: cannot read the image ({exc})") from None


#: JPEG XL and JPEG 2000 files, decoded through imagecodecs (the ``formats`` extra).
_IMAGECODECS_SUFFIXES = tuple(ext for exts in native.EXTENSIONS.values() for ext in exts)


def _read_imagecodecs(p: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A JPEG XL or JPEG 2000 file at its own precision (8 or 16 bits, or float JPEG XL)."""
    data = p.read_bytes()
    fmt = native.sniff(data)
    if fmt is None:
        return _read_pillow(data), {}
    try:
        return native.decode_native(data), {"format": fmt}
    except BundleError as exc:
        raise type(exc)(f"{p}: {exc}") from None


def _read_pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{im.width}x{im.height} pixels is beyond the limit")
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LA", "1"):
                im = im.convert(
                    "RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB"
                )
            return np.asarray(im).copy()


def to_uint8(image: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
    """Scale an image to uint8 for display formats.

    uint8 passes through; other dtypes are scaled linearly from ``limits`` (e.g. a
    napari layer's contrast limits), by default the dtype's range for integers and
    the data's range for floats.
    """
    if image.dtype == np.uint8 and limits is None:
        return image
    if limits is None:
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            limits = (float(info.min), float(info.max))
        else:
            limits = (float(np.nanmin(image)), float(np.nanmax(image)))
    lo, hi = limits
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = (image.astype(np.float32) - np.float32(lo)) * np.float32(scale)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _encode_pillow(
    image: np.ndarray, fmt: str, limits: tuple[float, float] | None, **save: Any
) -> bytes:
    from PIL import Image

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ImageError(f"cannot write an image of shape {image.shape} as {fmt}")
    if fmt == "JPEG" and image.ndim == 3 and image.shape[-1] == 4:
        warnings.warn("JPEG has no alpha channel: alpha dropped", UserWarning, stacklevel=3)
        image = image[..., :3]
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image, limits)).save(buf, format=fmt, **save)
    return buf.getvalue()


def write_jpeg(
    path: str | PathLike[str],
    image: np.ndarray,
    *,
    quality: int = 95,
    limits: tuple[float, float] | None = None,
) -> Path:
    """Write a 2-D grayscale or RGB(A) image as JPEG, atomically (alpha dropped with a warning)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    data = _encode_pillow(image, "JPEG", limits, quality=int(quality))
    return atomic_write(path, data)


def write_png(
    path: str | PathLike[str], image: np.ndarray, *, limits: tuple[float, float] | None = None
) -> Path:
    """Write an image as PNG, atomically (16-bit grayscale is kept; others scaled to 8 bits)."""
    if image.dtype == np.uint16 and image.ndim == 2 and limits is None:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return atomic_write(path, buf.getvalue())
    return atomic_write(path, _encode_pillow(image, "PNG", limits))


def default_output(path: str | PathLike[str], suffix: str) -> Path:
    """``photo.nef`` -> ``photo.svdz`` beside it (suffix includes the dot)."""
    p = Path(path)
    return p.with_name(p.stem + suffix)


def display_available() -> bool:
    """Whether a GUI display is reachable (X11/Wayland on Linux; assume yes elsewhere)."""
    if os.name != "posix" or os.uname().sysname == "Darwin":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
