"""File output that never leaves a partial or clobbered file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

__all__ = ["atomic_target", "atomic_write"]


@contextmanager
def atomic_target(path: str | PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    Readers see either the old file or the complete new one. If the block raises, the
    temporary file is removed and ``path`` is untouched. For writers that need a path
    (tifffile, memory maps, ZIP archives) rather than bytes.

    Parameters
    ----------
    path : path-like
        Destination.
    overwrite : bool
        If False, raise FileExistsError when ``path`` exists.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists (not overwriting)")
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600; give the file the permissions of a normal new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write(path: str | PathLike[str], data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (flushed and fsync'ed before the rename).

    Parameters
    ----------
    path : path-like
        Destination.
    data : bytes
        Full contents.
    overwrite : bool
        If False, raise FileExistsError when ``path`` exists.
    """
    with atomic_target(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)
