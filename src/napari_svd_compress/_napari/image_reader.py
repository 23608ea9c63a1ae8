"""napari reader of JPEG XL and JPEG 2000 files (what the jpegxl, jpeg2000 and htj2k
baselines write), at their own precision: a 16-bit file opens as a uint16 layer.

The hook checks the extension and the file's signature; decoding goes through
:func:`napari_svd_compress.fileio.images.read_image` (imagecodecs, with the header's
size checked before anything is allocated).  A broken file gives an error notification
and no layer, as the other readers of the plugin do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import SVDCompressError

__all__ = ["get_image_reader", "read_image_layers"]

PathOrPaths = str | Sequence[str]
LayerData = tuple[Any, ...]

#: napari's sentinel for "the file was handled, there is no layer to add".
NO_LAYERS: list[LayerData] = [(None,)]


def _single_path(path: PathOrPaths) -> str | None:
    if isinstance(path, str | os.PathLike):
        path = os.fspath(path)
    elif isinstance(path, Sequence) and len(path) == 1:
        path = os.fspath(path[0])
    else:
        return None
    return path if os.path.isfile(path) else None


def get_image_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
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
        from napari.utils.notifications import show_error

        show_error(f"cannot open {os.path.basename(one)!r}: {exc}")
        return NO_LAYERS
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    metadata = {"source": one, **meta}
    kwargs: dict[str, Any] = {"name": Path(one).stem, "rgb": rgb, "metadata": metadata}
    if image.dtype.kind == "f":
        kwargs["contrast_limits"] = [0.0, 1.0]
    return [(image, kwargs, "image")]
