"""napari writers: an image layer as JPEG, or as a ``.svdz`` factor bundle.

Both write atomically (a temporary file renamed over the destination) and return the list
of paths written, as npe2 single-layer writers do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import warnings
from typing import Any

import numpy as np

from ..errors import BundleError, ImageError

__all__ = ["bundle_bytes_for", "layer_entry", "pixel_digest", "write_jpeg", "write_svdz"]

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
    from ..fileio.images import write_jpeg as _write

    with warnings.catch_warnings():
        # The library warns "alpha dropped"; re-issue it from here so napari shows it once.
        warnings.simplefilter("ignore", UserWarning)
        written = _write(path, image, quality=95, limits=limits)
    if rgb and image.shape[-1] == 4:
        warnings.warn("JPEG has no alpha channel: alpha dropped", UserWarning, stacklevel=2)
    return [os.fspath(written)]


def pixel_digest(data: Any) -> str:
    """A SHA-256 digest of an image's shape, dtype and pixels.

    Read one plane at a time (a dask stack is never loaded whole); what proves that a
    layer still shows the pixels its bundle decodes to.
    """
    shape = tuple(int(n) for n in data.shape)
    dtype = np.dtype(data.dtype)
    h = hashlib.sha256(json.dumps([list(shape), dtype.str]).encode())
    lead = shape[: max(len(shape) - 3, 0)]
    for idx in np.ndindex(*lead):
        part = np.ascontiguousarray(np.asarray(data[idx] if idx else data))
        h.update(memoryview(part).cast("B"))
    return "sha256:" + h.hexdigest()


def layer_entry(
    bundle: bytes, data: Any, *, digest: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The plugin's entry in ``layer.metadata`` for a layer that shows ``bundle`` decoded.

    JSON-safe: the bundle is base64 text, and it comes with the proof that the layer's
    data are its pixels, which :func:`bundle_bytes_for` checks at write time: the
    dask graph's name for lazy data (napari's "Duplicate Layer" copies it, and any edit
    makes a new graph), otherwise a :func:`pixel_digest` of ``data``.

    Parameters
    ----------
    bundle : bytes
        The bundle the layer was decoded from.
    data : array_like
        The decoded image, as put in the layer (level 0 of a pyramid).
    digest : str, optional
        :func:`pixel_digest` of ``data`` if already computed (off the GUI thread).
    **extra
        More entries (``manifest``, ``figures``, ``source``, ...), made JSON-safe.
    """
    entry: dict[str, Any] = {"bundle": base64.b64encode(bytes(bundle)).decode("ascii")}
    name = _dask_name(data)
    if name is not None:
        entry["dask_name"] = name
    else:
        entry["digest"] = digest or pixel_digest(data)
    entry.update(json_safe(extra))
    return entry


def json_safe(value: Any) -> Any:
    """``value`` with non-finite numbers spelled as the manifest spells them (``"inf"``,
    ``"-inf"``; None for NaN): ``json.loads`` accepts NaN and Infinity, JSON does not."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _dask_name(data: Any) -> str | None:
    name = getattr(data, "name", None)
    if isinstance(name, str) and hasattr(data, "dask") and hasattr(data, "chunks"):
        return name
    return None


def _entry_bytes(entry: dict[str, Any]) -> bytes | None:
    blob = entry.get("bundle")
    if isinstance(blob, str):
        try:
            return base64.b64decode(blob.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            return None
    if isinstance(blob, bytes | bytearray | memoryview):
        return bytes(blob)
    return None


def bundle_bytes_for(data: Any, metadata: dict[str, Any] | None) -> bytes | None:
    """The bundle bytes a layer was made from, if its metadata holds them and they
    provably are its pixels; None otherwise (the writer then compresses the data).

    The .svdz reader and the widgets keep the bundle in ``metadata["svd_compress"]``.
    napari's "Duplicate Layer" copies the metadata, so a layer edited after it was
    duplicated would carry a bundle of other pixels: the bytes are used only when the
    proof recorded with them (:func:`layer_entry`) still holds for ``data``, or, for an
    entry without one, when the bundle decodes to exactly ``data``.
    """
    entry = (metadata or {}).get(META_KEY)
    if not isinstance(entry, dict):
        return None
    blob = _entry_bytes(entry)
    if blob is None:
        return None
    from ..format.bundle import open_bundle

    try:
        opened = open_bundle(blob)
    except BundleError:
        return None
    if opened.native is not None:  # a baseline codec's JPEG/WebP/AVIF is no .svdz
        return None
    shape = tuple(getattr(data, "shape", ()))
    if opened.spec.shape != shape or np.dtype(opened.spec.dtype) != np.dtype(
        getattr(data, "dtype", None)
    ):
        return None
    name = _dask_name(data)
    if name is not None and entry.get("dask_name") == name:
        return blob
    digest = entry.get("digest")
    if isinstance(digest, str):
        return blob if pixel_digest(data) == digest else None
    return blob if _decodes_to(opened, data) else None


def _decodes_to(opened: Any, data: Any) -> bool:
    """Whether the bundle decodes to exactly ``data`` (compared plane by plane)."""
    from ..api import decode_plane

    spec = opened.spec
    try:
        for i, idx in enumerate(np.ndindex(*spec.stack_shape)):
            plane = np.asarray(data[idx] if idx else data)
            if not np.array_equal(decode_plane(opened, i), plane):
                return False
    except BundleError:
        return False
    return True


def write_svdz(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an image layer as a ``.svdz`` bundle.

    A layer made by the Compress widget (or opened from a bundle) is written with the very
    bundle bytes it was measured with, so the file on disk has the size the widget showed,
    as long as the layer still shows that bundle's pixels (see :func:`bundle_bytes_for`).
    Any other image layer, and one edited since, is compressed with the default SVD
    settings (stacks plane by plane, dask arrays read one plane at a time).

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
    from ..fileio.atomic import atomic_write

    image = _full_resolution(data, attributes)
    blob = bundle_bytes_for(image, attributes.get("metadata"))
    if blob is None:
        from ..api import compress

        blob = compress(image, "svd", rgb=bool(attributes.get("rgb", False))).bundle
    return [os.fspath(atomic_write(path, blob))]
