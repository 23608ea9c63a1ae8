"""napari sample data: a small camera RAW (DNG) and a photograph, both from scikit-image.

Nothing is downloaded: the DNG is made at first use from scikit-image's bundled astronaut
photograph with :func:`napari_svd_compress.fileio.raw.make_sample_dng` and cached in the user's
cache folder (or the temporary folder when that is not writable).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["sample_dng_path", "sample_photo", "sample_raw"]

_SAMPLE_NAME = "astronaut-sample.dng"


def _cache_dirs() -> list[Path]:
    dirs = []
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        if base:
            dirs.append(Path(base) / "napari-svd-compress" / "Cache")
    elif sys.platform == "darwin":
        dirs.append(Path.home() / "Library" / "Caches" / "napari-svd-compress")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        dirs.append(Path(base) / "napari-svd-compress")
    dirs.append(Path(tempfile.gettempdir()) / "napari-svd-compress")
    return dirs


def sample_dng_path() -> Path:
    """Path of the sample DNG, writing it on first use.

    Returns
    -------
    pathlib.Path
        A 512x512 12-bit Bayer DNG of the astronaut photograph.

    Raises
    ------
    OSError
        When no cache folder is writable.
    """
    from ..fileio import raw

    last: Exception | None = None
    for folder in _cache_dirs():
        path = folder / _SAMPLE_NAME
        if path.is_file() and raw.sniff_raw(path):
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # make_sample_dng writes atomically, so concurrent first uses cannot see half a file.
            return Path(raw.make_sample_dng(path))
        except (OSError, raw.RawError) as exc:
            last = exc
    raise OSError(f"cannot write the sample DNG in any cache folder ({last})")


def sample_raw() -> list[tuple[Any, dict[str, Any], str]]:
    """The sample DNG decoded with rawpy, as an RGB image layer with its decode metadata."""
    from ..fileio import raw
    from .writer import META_KEY, json_safe

    path = sample_dng_path()
    image, meta = raw.read_raw(path)
    meta["path"] = str(path)
    metadata = {META_KEY: json_safe({"raw": meta})}
    return [(image, {"name": "astronaut (RAW)", "rgb": True, "metadata": metadata}, "image")]


def sample_photo() -> list[tuple[Any, dict[str, Any], str]]:
    """scikit-image's astronaut photograph (512x512 RGB, uint8) as an image layer."""
    from skimage import data

    return [(data.astronaut(), {"name": "astronaut", "rgb": True}, "image")]
