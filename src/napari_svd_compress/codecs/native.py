"""Reading the files of the baseline codecs (JPEG, WebP, AVIF, PNG) as bundles."""

from __future__ import annotations

import io
import warnings

import numpy as np

from .._image import ImageSpec
from ..errors import BundleFormatError, BundleLimitError

MAX_PIXELS = 1 << 30

_SIGNATURES = {
    "jpeg": lambda d: d[:3] == b"\xff\xd8\xff",
    "webp": lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP",
    "avif": lambda d: d[4:8] == b"ftyp" and d[8:12] in (b"avif", b"avis"),
    "png": lambda d: d[:8] == b"\x89PNG\r\n\x1a\n",
}


def sniff(data: bytes) -> str | None:
    """The baseline format whose signature ``data`` starts with, or None."""
    for name, test in _SIGNATURES.items():
        if test(data):
            return name
    return None


def decode_native(data: bytes) -> np.ndarray:
    """Decode a JPEG/WebP/AVIF/PNG file with Pillow, refusing decompression bombs."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise BundleLimitError(f"{im.width}x{im.height} pixels is beyond the limit")
                if im.mode not in ("L", "RGB", "RGBA", "I;16"):
                    im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                return np.asarray(im).copy()
    except BundleLimitError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise BundleFormatError(f"cannot decode the image file ({exc})") from None


def open_native(data: bytes):
    """A :class:`~napari_svd_compress.bundle.Bundle` for a baseline file, or None."""
    from ..bundle import Bundle

    fmt = sniff(data)
    if fmt is None:
        return None
    image = decode_native(data)
    rgb = image.ndim == 3
    hi = 65535.0 if image.dtype == np.uint16 else 255.0
    spec = ImageSpec(
        shape=image.shape,
        dtype=image.dtype,
        rgb=rgb,
        alpha=rgb and image.shape[-1] == 4,
        value_range=(0.0, hi),
    )
    manifest = {"format": fmt, "codec": fmt, "shape": list(image.shape), "planes": [{}]}
    return Bundle(manifest=manifest, payloads={}, spec=spec, nbytes=len(data), native=image)
