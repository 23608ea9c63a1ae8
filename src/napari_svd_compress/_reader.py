"""napari readers: camera RAW files, .svdz factor bundles and legacy SVD pickles.

Each ``get_*_reader`` hook is cheap (an extension check plus a few leading bytes) and returns
``None`` for files it cannot read, so napari can try other plugins.  The read functions turn
the library's errors (:class:`~napari_svd_compress.errors.SVDCompressError`) into a napari
error notification and return napari's "no layers" sentinel ``[(None,)]``: a broken file
gives a clear message, never a traceback dialog.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import SVDCompressError

__all__ = ["get_bundle_reader", "get_legacy_reader", "get_raw_reader"]

PathOrPaths = str | Sequence[str]
LayerData = tuple[Any, ...]
ReaderFunction = Callable[[PathOrPaths], list[LayerData]]

#: napari's sentinel for "the file was handled, there is no layer to add".
NO_LAYERS: list[LayerData] = [(None,)]

_ZIP_MAGIC = b"PK\x03\x04"


def _single_path(path: PathOrPaths) -> str | None:
    """The one file path napari asks about, or None (stacks of files are not handled here)."""
    if isinstance(path, str | os.PathLike):
        path = os.fspath(path)
    elif isinstance(path, Sequence) and len(path) == 1:
        path = os.fspath(path[0])
    else:
        return None
    return path if os.path.isfile(path) else None


def _notify_error(message: str) -> None:
    # Imported here so that importing this module (npe2 validation) stays light.
    from napari.utils.notifications import show_error

    show_error(message)


def _layer_name(path: str) -> str:
    return Path(path).stem


# --- camera RAW -----------------------------------------------------------------------------


def get_raw_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return a reader for a camera RAW file, or None if ``path`` is not one.

    Parameters
    ----------
    path : str or list of str
        What napari asks about.  Only a single existing file with a RAW extension and a
        RAW container signature in its first bytes is accepted.

    Returns
    -------
    callable or None
        :func:`read_raw_layers`, or None (never raises).
    """
    from . import raw

    one = _single_path(path)
    if one is None or not raw.is_raw_path(one) or not raw.sniff_raw(one):
        return None
    return read_raw_layers


def read_raw_layers(path: PathOrPaths) -> list[LayerData]:
    """Decode a RAW file to one RGB image layer named after the file.

    The decode settings and camera information go to ``metadata["raw"]``.  A file LibRaw
    cannot decode gives an error notification and no layer.
    """
    from . import raw

    one = path if isinstance(path, str) else os.fspath(path[0])
    try:
        image, meta = raw.read_raw(one)
    except SVDCompressError as exc:
        _notify_error(str(exc))
        return NO_LAYERS
    return [(image, {"name": _layer_name(one), "rgb": True, "metadata": {"raw": meta}}, "image")]


# --- .svdz bundles --------------------------------------------------------------------------


def _head(path: str, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def get_bundle_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return a reader for a ``.svdz`` bundle, or None if ``path`` is not one.

    Any existing file named ``*.svdz`` is accepted, so that a damaged bundle is reported
    with a clear message rather than "no reader found".
    """
    one = _single_path(path)
    if one is None or not one.lower().endswith(".svdz"):
        return None
    return read_bundle_layers


def read_bundle_layers(path: PathOrPaths) -> list[LayerData]:
    """Decode a bundle to an image layer (lazy dask array for stacks).

    ``metadata`` holds the ``manifest`` (codec, parameters, shape), the ``figures`` (bytes,
    bpp, ratio, PSNR, SSIM) and, under ``svd_compress``, the bundle bytes themselves, so that
    saving the layer again as .svdz writes the same file instead of compressing twice.
    """
    from . import api, bundle

    one = path if isinstance(path, str) else os.fspath(path[0])
    name = os.path.basename(one)
    try:
        if _head(one, 4) != _ZIP_MAGIC:
            raise bundle.BundleFormatError("not a .svdz bundle (no ZIP signature)")
        # Read the file once; both the validation and the decoder work from these bytes.
        data = bundle.read_source(one)
        opened = bundle.open_bundle(data)
        image = api.decompress(opened, lazy=True)
    except SVDCompressError as exc:
        _notify_error(f"cannot open {name!r}: {exc}")
        return NO_LAYERS
    except MemoryError:
        _notify_error(f"cannot open {name!r}: not enough memory to decode it")
        return NO_LAYERS
    manifest = opened.manifest
    spec = opened.spec
    figures = {"method": manifest["codec"], "params": manifest.get("params", {})}
    # JSON has no infinity: the manifest spells a lossless PSNR "inf".
    figures |= {k: float(v) if v in ("inf", "-inf") else v for k, v in opened.figures.items()}
    kwargs: dict[str, Any] = {
        "name": _layer_name(one),
        "rgb": spec.rgb,
        "metadata": {
            "manifest": manifest,
            "figures": figures,
            "svd_compress": {"bundle": data, "source": one},
        },
    }
    if spec.dtype.kind == "f":
        # The manifest knows the float range; napari would otherwise decode planes to find it.
        kwargs["contrast_limits"] = list(spec.value_range)
    return [(image, kwargs, "image")]


# --- legacy pickles -------------------------------------------------------------------------


def get_legacy_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return a reader for a legacy ``.pkl`` of the old SVD scripts, or None.

    Only files that start like a pickle are accepted; they are loaded by the restricted
    unpickler of :mod:`napari_svd_compress.legacy`, which refuses anything that would run code.
    """
    from . import legacy

    one = _single_path(path)
    if one is None or not one.lower().endswith(".pkl") or not legacy.sniff_legacy(one):
        return None
    return read_legacy_layers


def read_legacy_layers(path: PathOrPaths) -> list[LayerData]:
    """Rebuild the image of a legacy pickle as an image layer named after the file."""
    from . import legacy

    one = path if isinstance(path, str) else os.fspath(path[0])
    try:
        image = legacy.load_legacy(one)
    except SVDCompressError as exc:
        _notify_error(str(exc))
        return NO_LAYERS
    meta = {"legacy": {"source": one, "format": "SVD_image_compression pickle"}}
    return [(image, {"name": _layer_name(one), "rgb": image.ndim == 3, "metadata": meta}, "image")]
