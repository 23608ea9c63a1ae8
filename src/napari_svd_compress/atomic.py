"""File output that never leaves a partial or clobbered file behind."""

from __future__ import annotations

import os
import tempfile
from os import PathLike
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | PathLike[str], data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The temporary file is flushed and fsync'ed, then renamed over ``path``, so readers
    see either the old file or the complete new one, and a crash leaves at most a
    ``.tmp`` file that is removed on the next error path.

    Parameters
    ----------
    path : path-like
        Destination.
    data : bytes
        Full contents.
    overwrite : bool
        If False, raise FileExistsError when ``path`` exists.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists (not overwriting)")
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
