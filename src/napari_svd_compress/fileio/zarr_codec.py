"""Our codecs inside zarr: a numcodecs codec with the id ``"svdz"``.

Each zarr chunk is compressed by any registered method into the bytes of a ``.svdz``
bundle (or, for the file-format baselines, the format's own file) and decoded back::

    import zarr
    from napari_svd_compress.fileio.zarr_codec import SVDZ

    z = zarr.create_array(
        "cells.zarr", shape=(20, 2048, 2048), chunks=(1, 2048, 2048), dtype="uint16",
        zarr_format=2, compressors=SVDZ(method="pca", step=8),
    )

The codec's configuration names the method and its parameters,
``{"id": "svdz", "method": "pca", "step": 8, ...}`` (all parameters, defaults filled
in, so that a later version with other defaults writes the same chunks).  numcodecs
finds the codec through the ``numcodecs.codecs`` entry point, so any program with this
package installed reads the array; zarr-python 3 arrays of format 3 use the
array-to-bytes codec ``"numcodecs.svdz"`` (:func:`zarr3_codec`, found through the
``zarr.codecs`` entry point) with the same configuration.

A chunk is a 2-D plane, a stack of planes (every axis but the last two is a stack
axis, compressed plane by plane) or, with ``rgb=True``, colour planes ``(..., Y, X,
3)``.  Bad chunks raise the library's errors: a chunk that is not a bundle a
:class:`~napari_svd_compress.errors.BundleError`, a chunk the method cannot take an
:class:`~napari_svd_compress.errors.ImageError` or
:class:`~napari_svd_compress.errors.ParameterError`.  See docs/formats.md for the chunk
shapes that work well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_ndarray_like

from .. import registry
from .._image import SUPPORTED_DTYPES
from ..api import compress, decompress
from ..errors import BundleContentError, ImageError, ParameterError

__all__ = ["CODEC_ID", "SVDZ", "ZARR3_NAME", "register", "zarr3_codec"]

CODEC_ID = "svdz"
#: The name of the array-to-bytes codec in zarr format 3 metadata (zarr-python's
#: convention for numcodecs codecs).
ZARR3_NAME = "numcodecs.svdz"

#: The dtypes the file-format baselines decode to: an 8-bit format's file is uint8, a
#: 16-bit one's (jpegxl, jpeg2000, htj2k) uint16.  Other chunk dtypes need a .svdz method.
_NATIVE_DTYPES = {"jpegxl": ("uint8", "uint16"), "jpeg2000": ("uint8", "uint16")}
_NATIVE_DTYPES["htj2k"] = _NATIVE_DTYPES["jpegxl"]


class SVDZ(Codec):
    """A numcodecs codec that compresses each chunk with a registered method.

    Parameters
    ----------
    method : str
        A registry name (``"pca"``, ``"svd"``, ``"jpegxl"``, ...).
    rgb : bool, optional
        Whether a chunk's last axis holds colour channels (napari's rule when None: a
        last axis of 3 or 4).  In OME-Zarr, channels are an axis of their own and chunks
        are grey planes: leave it None or False.
    **params
        The method's parameters; checked now (ParameterError).
    """

    codec_id = CODEC_ID

    def __init__(self, method: str = "pca", rgb: bool | None = None, **params: Any) -> None:
        codec = registry.get(method)
        resolved = codec.resolve(params)
        self.method = codec.name
        self.rgb = None if rgb is None else bool(rgb)
        self.params = {k: v for k, v in resolved.items() if v is not None}
        self._native = codec.native is not None

    def get_config(self) -> dict[str, Any]:
        """``{"id": "svdz", "method": ..., **params}`` (JSON-safe)."""
        config: dict[str, Any] = {"id": CODEC_ID, "method": self.method, **self.params}
        if self.rgb is not None:
            config["rgb"] = self.rgb
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SVDZ:
        """The codec of a configuration written by :meth:`get_config`."""
        config = dict(config)
        config.pop("id", None)
        return cls(**config)

    def check_dtype(self, dtype: Any) -> None:
        """Raise ParameterError if chunks of ``dtype`` cannot be stored by this method."""
        name = np.dtype(dtype).name
        if name not in SUPPORTED_DTYPES:
            raise ParameterError(f"svdz cannot store {name} chunks")
        if self._native:
            allowed = _NATIVE_DTYPES.get(self.method, ("uint8",))
            if name not in allowed:
                raise ParameterError(
                    f"method {self.method!r} writes files that decode to "
                    f"{' or '.join(allowed)}, not {name}: use a .svdz method (svd, pca, "
                    "kmeans) or, for 16 bits, jpegxl, jpeg2000 or htj2k"
                )

    def encode(self, buf: Any) -> bytes:
        """Compress one chunk (an array with its shape) to the bytes of a bundle."""
        chunk = ensure_ndarray_like(buf)
        if not isinstance(chunk, np.ndarray):
            chunk = np.asarray(chunk)
        if chunk.ndim < 2:
            raise ImageError(
                f"svdz compresses 2-D chunks or stacks of planes; got a chunk of shape "
                f"{chunk.shape} (a flat buffer has no shape)"
            )
        self.check_dtype(chunk.dtype)
        if self._native:
            # A baseline file holds one plane: drop the chunk's unit stack axes.
            lead = chunk.ndim - (3 if self._is_rgb(chunk) else 2)
            if any(n != 1 for n in chunk.shape[:lead]):
                raise ImageError(
                    f"method {self.method!r} writes one image file per chunk; chunks of shape "
                    f"{chunk.shape} hold several planes (use chunks of one plane)"
                )
            chunk = chunk.reshape(chunk.shape[lead:])
        return compress(chunk, self.method, rgb=self.rgb, **self.params).bundle

    def _is_rgb(self, chunk: np.ndarray) -> bool:
        if self.rgb is not None:
            return self.rgb
        return chunk.ndim >= 3 and chunk.shape[-1] in (3, 4)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        """Decode the bytes of a chunk; BundleError if they are not a bundle."""
        image = np.asarray(decompress(ensure_bytes(buf)))
        if out is None:
            return image
        target = ensure_ndarray_like(out)
        if target.dtype == np.uint8 and target.nbytes == image.nbytes:  # a raw buffer
            target.reshape(-1)[...] = np.ascontiguousarray(image).reshape(-1).view(np.uint8)
        elif target.dtype == image.dtype and target.size == image.size:
            target.reshape(-1)[...] = image.reshape(-1)
        else:
            raise BundleContentError(
                f"the chunk decodes to {image.shape} {image.dtype}, not {target.shape} "
                f"{target.dtype}"
            )
        return out

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        rgb = "" if self.rgb is None else f", rgb={self.rgb}"
        return f"SVDZ(method={self.method!r}{rgb}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SVDZ) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(CODEC_ID)


def register() -> None:
    """Register the codec with numcodecs (and zarr 3) in this process.

    The entry points do this for an installed package; this is for a source tree.
    """
    import numcodecs

    numcodecs.register_codec(SVDZ)
    try:
        from zarr.registry import register_codec
    except ImportError:
        return
    register_codec(ZARR3_NAME, _zarr3_class())


_ZARR3_CLASS: type | None = None


def _zarr3_class() -> type:
    """The zarr-python 3 array-to-bytes codec class (made on first use: zarr is imported
    only by programs that use it)."""
    global _ZARR3_CLASS
    if _ZARR3_CLASS is not None:
        return _ZARR3_CLASS
    from zarr.abc.codec import ArrayBytesCodec

    @dataclass(frozen=True)
    class SVDZCodec(ArrayBytesCodec):
        """zarr format 3 array-to-bytes codec ``"numcodecs.svdz"``: :class:`SVDZ` per chunk."""

        is_fixed_size = False
        configuration: dict[str, Any]

        def __init__(self, **configuration: Any) -> None:
            configuration.pop("id", None)
            config = SVDZ.from_config(configuration).get_config()
            config.pop("id")
            object.__setattr__(self, "configuration", config)

        @property
        def numcodec(self) -> SVDZ:
            return SVDZ.from_config(self.configuration)

        @classmethod
        def from_dict(cls, data: dict[str, Any]) -> SVDZCodec:
            if data.get("name") != ZARR3_NAME:
                raise ParameterError(f"not a {ZARR3_NAME} codec: {data.get('name')!r}")
            return cls(**dict(data.get("configuration") or {}))

        def to_dict(self) -> dict[str, Any]:
            return {"name": ZARR3_NAME, "configuration": dict(self.configuration)}

        def validate(self, *, shape: Any, dtype: Any, chunk_grid: Any) -> None:
            self.numcodec.check_dtype(dtype.to_native_dtype())

        async def _encode_single(self, chunk_array: Any, chunk_spec: Any) -> Any:
            chunk = chunk_array.as_ndarray_like()
            data = await asyncio.to_thread(self.numcodec.encode, chunk)
            return chunk_spec.prototype.buffer.from_bytes(data)

        async def _decode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
            image = await asyncio.to_thread(self.numcodec.decode, chunk_bytes.to_bytes())
            dtype = chunk_spec.dtype.to_native_dtype()
            if image.size != int(np.prod(chunk_spec.shape)) or image.dtype != dtype:
                raise BundleContentError(
                    f"the chunk decodes to {image.shape} {image.dtype}, not "
                    f"{tuple(chunk_spec.shape)} {dtype}"
                )
            return chunk_spec.prototype.nd_buffer.from_ndarray_like(image.reshape(chunk_spec.shape))

        def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
            raise NotImplementedError

        def __hash__(self) -> int:
            return hash(ZARR3_NAME)

    SVDZCodec.__module__ = __name__
    SVDZCodec.__qualname__ = "SVDZCodec"
    _ZARR3_CLASS = SVDZCodec
    return SVDZCodec


def zarr3_codec(method: str = "pca", rgb: bool | None = None, **params: Any) -> Any:
    """The zarr format 3 serializer for ``method``: pass it as ``serializer=`` to
    ``zarr.create_array(..., zarr_format=3)`` (with ``compressors=None``)."""
    config = {"method": method, **params}
    if rgb is not None:
        config["rgb"] = rgb
    return _zarr3_class()(**config)


def __getattr__(name: str) -> Any:
    # ``SVDZCodec`` is what the ``zarr.codecs`` entry point names; made on first access.
    if name == "SVDZCodec":
        return _zarr3_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
