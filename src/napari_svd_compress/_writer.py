"""napari writers: an image layer as JPEG, or as a ``.svdz`` factor bundle.

Both write atomically (a temporary file renamed over the destination) and return the list
of paths written, as npe2 single-layer writers do.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from .errors import BundleError, ImageError

__all__ = ["bundle_bytes_for", "write_jpeg", "write_svdz"]

#: The key of this plugin's entry in ``layer.metadata``.
META_KEY = "svd_compress"


def _full_resolution(data: Any, attributes: dict[str, Any]) -> Any:
    """Level 0 of a multiscale layer, the data itself otherwise."""
    if attributes.get("multiscale") or isinstance(data, list | tuple):
        return data[0]
    return data


def write_jpeg(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an image layer as an 8-bit JPEG (quality 95).

    Parameters
    ----------
    path : str
        Destination (``.jpg`` or ``.jpeg``).
    data : array_like
        The layer data: 2-D grayscale or RGB(A); level 0 of a multiscale layer.
    attributes : dict
        The layer attributes; ``contrast_limits`` scale uint16 and float data to 8 bits
        (what the viewer shows is what the file holds), ``rgb`` tells colour from a stack.

    Returns
    -------
    list of str
        ``[path]``.

    Raises
    ------
    ImageError
        For stacks and other shapes JPEG cannot hold.
    """
    image = np.asarray(_full_resolution(data, attributes))
    rgb = bool(attributes.get("rgb", image.ndim == 3 and image.shape[-1] in (3, 4)))
    if image.ndim != (3 if rgb else 2):
        raise ImageError(
            f"JPEG holds one 2-D grayscale or RGB image; this layer has shape {image.shape} "
            "(save stacks as .svdz)"
        )
    limits = None
    if image.dtype != np.uint8:
        cl = attributes.get("contrast_limits")
        limits = (float(cl[0]), float(cl[1])) if cl is not None else None
    from .images import write_jpeg as _write

    with warnings.catch_warnings():
        # The library warns "alpha dropped"; re-issue it from here so napari shows it once.
        warnings.simplefilter("ignore", UserWarning)
        written = _write(path, image, quality=95, limits=limits)
    if rgb and image.shape[-1] == 4:
        warnings.warn("JPEG has no alpha channel: alpha dropped", UserWarning, stacklevel=2)
    return [os.fspath(written)]


def bundle_bytes_for(data: Any, metadata: dict[str, Any] | None) -> bytes | None:
    """The bundle bytes a layer was made from, if its metadata holds them and they match.

    The widget and the .svdz reader keep the exact bundle in ``metadata["svd_compress"]``;
    it is used only while the layer's shape and dtype still agree with it.
    """
    entry = (metadata or {}).get(META_KEY) or {}
    blob = entry.get("bundle")
    if not isinstance(blob, bytes | bytearray):
        return None
    from .bundle import open_bundle

    try:
        spec = open_bundle(bytes(blob)).spec
    except BundleError:
        return None
    shape = tuple(getattr(data, "shape", ()))
    if spec.shape != shape or np.dtype(spec.dtype) != np.dtype(getattr(data, "dtype", None)):
        return None
    return bytes(blob)


def write_svdz(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an image layer as a ``.svdz`` bundle.

    A layer made by the Compress widget (or opened from a bundle) is written with the very
    bundle bytes it was measured with, so the file on disk has the size the widget showed.
    Any other image layer is compressed with the default SVD settings (stacks plane by
    plane, dask arrays read one plane at a time).

    Parameters
    ----------
    path : str
        Destination.
    data : array_like
        Layer data (level 0 of a multiscale layer is used).
    attributes : dict
        Layer attributes (``metadata``, ``rgb``, ``multiscale``).

    Returns
    -------
    list of str
        ``[path]``.
    """
    from .atomic import atomic_write

    image = _full_resolution(data, attributes)
    blob = bundle_bytes_for(image, attributes.get("metadata"))
    if blob is None:
        from .api import compress

        blob = compress(image, "svd", rgb=bool(attributes.get("rgb", False))).bundle
    return [os.fspath(atomic_write(path, blob))]
