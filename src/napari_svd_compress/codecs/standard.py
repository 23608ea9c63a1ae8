"""Baseline codecs through Pillow: JPEG, WebP and AVIF.

The bundle of each is the format's own file (payload ``"file"``), so a result can be
opened by any image viewer; decoding goes through :mod:`.native`, which refuses
decompression bombs.  Planes are scaled from ``[0, 1]`` to 8 bits (the formats'
depth as Pillow writes them), so 16-bit inputs lose their low byte.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._image import ImageSpec, from_unit
from ..errors import BundleContentError
from ..format.native import decode_native, sniff
from ..registry import Codec, Container, Encoded, Param, register

# Pillow's format names and the save options that matter for rate-distortion.
_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    """``clip(rint(plane * 255), 0, 255)`` as uint8, by :func:`from_unit`'s cache-sized
    bands: three whole-plane float temporaries cost a 24-megapixel image 0.4 s."""
    spec = ImageSpec(plane.shape, np.dtype(np.uint8), True, False, (0.0, 255.0))
    return from_unit(plane, spec)


def _make_encode(
    fmt: str,
) -> Callable[[np.ndarray, dict[str, Any], Callable, Container], Encoded]:
    def encode(
        plane: np.ndarray, params: dict[str, Any], progress: Callable, container: Container
    ) -> Encoded:
        """Encode one plane as a file of the format; ``container`` is unused."""
        from PIL import Image

        progress(0.0)
        c = plane.shape[2]
        pixels = _to_uint8(plane)
        im = Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode="L" if c == 1 else "RGB")
        options: dict[str, Any] = {"quality": int(params["quality"])}
        if fmt == "jpeg":
            # Optimised Huffman tables cost nothing in quality and save a few percent
            # (up to half the file at the lowest qualities).
            options["optimize"] = bool(params.get("optimize", True))
        elif fmt == "webp":
            options["method"] = 6
        elif fmt == "avif":
            options["speed"] = 6
        buf = io.BytesIO()
        im.save(buf, format=_FORMATS[fmt], **options)
        progress(1.0)
        return Encoded(meta={"format": fmt}, payloads={"file": buf.getvalue()})

    return encode


def file_decoder(
    name: str, fmt: str
) -> Callable[[Mapping[str, Any], Mapping[str, bytes], tuple], np.ndarray]:
    """The decoder of codec ``name``, whose payload ``file`` is a file of format ``fmt``
    (a :func:`~napari_svd_compress.format.native.sniff` name): 8-bit, 16-bit or float
    samples, to a float32 plane in [0, 1]."""

    def decode(
        meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
    ) -> np.ndarray:
        h, w, c = shape
        data = payloads.get("file")
        if data is None:
            raise BundleContentError(f"{name}: payload 'file' is missing")
        if sniff(data) != fmt:
            raise BundleContentError(f"{name}: the payload is not a {fmt} file")
        image = decode_native(bytes(data))
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[:2] != (h, w):
            raise BundleContentError(f"{name}: the file is {image.shape[1]}x{image.shape[0]}")
        if image.shape[2] != c:
            # A decoder may hand back RGB for a grayscale file or the reverse.
            image = image[..., :1] if c == 1 else np.repeat(image[..., :1], 3, axis=2)
        scale = _SCALES.get(image.dtype.kind + str(image.dtype.itemsize))
        if scale is None:
            raise BundleContentError(f"{name}: the file decodes to {image.dtype}")
        # One pass: the samples are cast to float32 as they are divided.
        return np.divide(image, np.float32(scale), dtype=np.float32).reshape(shape)

    return decode


# The unit of a decoded sample, by dtype kind and size (floats are in [0, 1] already).
_SCALES = {"u1": 255.0, "u2": 65535.0, "f4": 1.0, "f8": 1.0}


# Quality values spanning roughly 0.05 to 2 bits per pixel on photographs.
_SWEEPS = {
    "jpeg": (3, 5, 10, 20, 30, 50, 70, 85, 92),
    "webp": (0, 5, 10, 25, 40, 60, 75, 85, 92),
    "avif": (5, 15, 25, 35, 50, 60, 70, 80, 88),
}
_DEFAULT_QUALITY = {"jpeg": 75, "webp": 75, "avif": 60}
_LABELS = {"jpeg": "JPEG (Pillow)", "webp": "WebP (Pillow)", "avif": "AVIF (Pillow)"}
_EXTRA_PARAMS = {
    "jpeg": (
        Param(
            "optimize",
            bool,
            True,
            "Optimised Huffman tables: the same pixels in a smaller file (off = Pillow's "
            "default tables).",
        ),
    ),
}


def _short(params: Mapping[str, Any]) -> str:
    return f"q={params['quality']}" + ("" if params.get("optimize", True) else " plain")


def _codec(fmt: str) -> Codec:
    return Codec(
        name=fmt,
        label=_LABELS[fmt],
        description=(
            f"Baseline: Pillow's {fmt.upper()} encoder.  The result is a plain .{fmt} "
            "file (8 bits per channel)."
        ),
        params=(
            Param(
                "quality",
                int,
                _DEFAULT_QUALITY[fmt],
                f"{fmt.upper()} quality (0 = smallest file, 100 = best).",
                low=0,
                high=100,
            ),
            *_EXTRA_PARAMS.get(fmt, ()),
        ),
        encode=_make_encode(fmt),
        decode=file_decoder(fmt, fmt),
        sweep=("quality", _SWEEPS[fmt]),
        native=fmt,
        short=_short,
    )


def _available(fmt: str) -> bool:
    from PIL import features

    return fmt != "avif" or bool(features.check("avif"))


JPEG = register(_codec("jpeg"))
WEBP = register(_codec("webp")) if _available("webp") else None
AVIF = register(_codec("avif")) if _available("avif") else None
