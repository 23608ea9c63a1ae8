"""napari readers: camera RAW files, .svdz factor bundles, legacy SVD pickles, and the
JPEG XL / JPEG 2000 files of the imagecodecs baselines.

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

from ..errors import SVDCompressError
from .writer import META_KEY, json_safe, layer_entry

__all__ = [
    "get_bundle_reader",
    "get_image_reader",
    "get_legacy_reader",
    "get_raw_reader",
    "read_image_layers",
    "read_raw_preview_layers",
]

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
    return read_raw_layers if _is_raw(path) else None


def _is_raw(path: PathOrPaths) -> bool:
    from ..fileio import raw

    one = _single_path(path)
    return one is not None and raw.is_raw_path(one) and raw.sniff_raw(one)


def read_raw_layers(path: PathOrPaths) -> list[LayerData]:
    """Decode a RAW file to one RGB image layer named after the file.

    The decode settings and camera information go to ``metadata["svd_compress"]["raw"]``.
    A file LibRaw cannot decode gives an error notification and no layer.
    """
    return _raw_layers(path, half_size=False)


def read_raw_preview_layers(path: PathOrPaths) -> list[LayerData]:
    """Like :func:`read_raw_layers` at half size: each 2 x 2 Bayer block becomes one pixel,
    no demosaicing, about four times faster and a quarter of the memory.  The layer is
    named ``<file> (half size)`` and ``metadata["svd_compress"]["raw"]["settings"]
    ["half_size"]`` is True.  napari reaches it through File > IO Utilities (see
    :func:`.menus.open_raw_preview`)."""
    return _raw_layers(path, half_size=True)


def _raw_layers(path: PathOrPaths, *, half_size: bool) -> list[LayerData]:
    from ..fileio import raw

    one = path if isinstance(path, str) else os.fspath(path[0])
    try:
        image, meta = raw.read_raw(one, half_size=half_size)
    except SVDCompressError as exc:
        _notify_error(str(exc))
        return NO_LAYERS
    name = _layer_name(one) + (" (half size)" if half_size else "")
    metadata = {META_KEY: json_safe({"raw": meta})}
    return [(image, {"name": name, "rgb": True, "metadata": metadata}, "image")]


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
    """Decode a bundle to an image layer, lazily where it is large.

    A single plane that fits in memory (half of it, see
    :func:`~napari_svd_compress.api.default_max_bytes`) is decoded now; a stack becomes a
    dask array decoding one plane when napari shows it; a plane beyond the limit becomes
    a multiscale pyramid of dask arrays decoding only the tiles in view (svd bundles;
    other codecs decode whole planes only, and such a bundle is refused with a
    notification naming its size).

    ``metadata["svd_compress"]`` (JSON-safe, see
    :func:`~napari_svd_compress._napari.writer.layer_entry`) holds the ``manifest``
    (codec, parameters, shape), the ``figures`` (bytes, bpp, ratio, PSNR, SSIM), the
    ``source`` path and the bundle itself with the proof that the layer shows its
    pixels, so that saving the layer unchanged as .svdz writes the same file, and
    saving it edited (or a duplicate, edited) compresses the new pixels.
    """
    from .. import api
    from ..format import bundle

    one = path if isinstance(path, str) else os.fspath(path[0])
    name = os.path.basename(one)
    try:
        if _head(one, 4) != _ZIP_MAGIC:
            raise bundle.BundleFormatError("not a .svdz bundle (no ZIP signature)")
        # Read the file once; both the validation and the decoder work from these bytes.
        data = bundle.read_source(one)
        opened = bundle.open_bundle(data)
        spec = opened.spec
        if api.decode_nbytes(spec, 1) > api.default_max_bytes():
            levels = api.decompress_levels(opened)
            image = levels if len(levels) > 1 else levels[0]
        else:
            image = api.decompress(opened, lazy=True)
        level0 = image[0] if isinstance(image, list) else image
        entry = layer_entry(
            data,
            level0,
            manifest=opened.manifest,
            figures=_figures(opened),
            source=one,
        )
    except SVDCompressError as exc:
        _notify_error(f"cannot open {name!r}: {exc}")
        return NO_LAYERS
    except MemoryError:
        _notify_error(f"cannot open {name!r}: not enough memory to decode it")
        return NO_LAYERS
    kwargs: dict[str, Any] = {
        "name": _layer_name(one),
        "rgb": spec.rgb,
        "metadata": {META_KEY: entry},
    }
    if isinstance(image, list):
        kwargs["multiscale"] = True
    if spec.dtype.kind == "f":
        # The manifest knows the float range; napari would otherwise decode planes to find it.
        kwargs["contrast_limits"] = list(spec.value_range)
    return [(image, kwargs, "image")]


def _figures(opened: Any) -> dict[str, Any]:
    """The bundle's figures with the codec and its parameters."""
    manifest = opened.manifest
    return {"method": manifest["codec"], "params": manifest.get("params", {}), **opened.figures}


# --- legacy pickles -------------------------------------------------------------------------


def get_legacy_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return a reader for a legacy ``.pkl`` of the old SVD scripts, or None.

    Only files that start like a pickle are accepted; they are loaded by the restricted
    unpickler of :mod:`napari_svd_compress.fileio.legacy`, which refuses anything that
    would run code.
    """
    from ..fileio import legacy

    one = _single_path(path)
    if one is None or not one.lower().endswith(".pkl") or not legacy.sniff_legacy(one):
        return None
    return read_legacy_layers


def read_legacy_layers(path: PathOrPaths) -> list[LayerData]:
    """Rebuild the image of a legacy pickle as an image layer named after the file."""
    from ..fileio import legacy

    one = path if isinstance(path, str) else os.fspath(path[0])
    try:
        image = legacy.load_legacy(one)
    except SVDCompressError as exc:
        _notify_error(str(exc))
        return NO_LAYERS
    meta = {"legacy": {"source": one, "format": "SVD_image_compression pickle"}}
    return [(image, {"name": _layer_name(one), "rgb": image.ndim == 3, "metadata": meta}, "image")]


# --- JPEG XL and JPEG 2000 -----------------------------------------------------------------
# What the jpegxl, jpeg2000 and htj2k baselines write, at their own precision: a 16-bit file
# opens as a uint16 layer.


def get_image_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return a reader for a ``.jxl``, ``.jp2``, ``.j2k`` (...) file, or None.

    Any existing file with one of those extensions is accepted (a damaged one is then
    reported with a clear message rather than "no reader found").
    """
    from ..format.native import EXTENSIONS

    one = _single_path(path)
    suffixes = {ext for exts in EXTENSIONS.values() for ext in exts}
    if one is None or Path(one).suffix.lower() not in suffixes:
        return None
    return read_image_layers


def read_image_layers(path: PathOrPaths) -> list[LayerData]:
    """Decode a JPEG XL or JPEG 2000 file to one image layer named after the file."""
    from ..fileio.images import read_image

    one = path if isinstance(path, str) else os.fspath(path[0])
    try:
        image, meta = read_image(one)
    except SVDCompressError as exc:
        _notify_error(f"cannot open {os.path.basename(one)!r}: {exc}")
        return NO_LAYERS
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    metadata = {META_KEY: json_safe({"source": one, **meta})}
    kwargs: dict[str, Any] = {"name": Path(one).stem, "rgb": rgb, "metadata": metadata}
    if image.dtype.kind == "f":
        kwargs["contrast_limits"] = [0.0, 1.0]
    return [(image, kwargs, "image")]
