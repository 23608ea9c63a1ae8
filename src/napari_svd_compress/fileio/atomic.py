"""File output that never leaves a partial or clobbered file behind.

A file is written to a temporary file beside its destination, flushed to disk, and
renamed over the destination: a process killed at any moment (even by SIGKILL) leaves
either the old file or the complete new one, never a mix.  What a kill can leave is the
temporary file, ``.NAME.HOST-PID.RANDOM.tmp``; the next write to the same destination
removes those of processes that are gone (and readers skip them: they are dot files).
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

__all__ = ["atomic_target", "atomic_write", "remove_stale_temporaries"]

#: A temporary file whose writer cannot be checked (another host) is stale after this.
STALE_AFTER_S = 24 * 3600


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (owned by someone else), or we cannot tell
    return True


def remove_stale_temporaries(path: str | PathLike[str]) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it.

    A temporary file is removed when the process that made it (named in the file name)
    no longer runs on this host, or, made on another host, when it is older than
    :data:`STALE_AFTER_S`.  Never raises.

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    host = _host_tag()
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for tmp in candidates:
        middle = tmp.name[len(prefix) :]
        if not middle.endswith(".tmp"):
            continue
        owner = middle[: -len(".tmp")].split(".")[0]
        tag, _, pid = owner.partition("-")
        try:
            if tag == host and pid.isdigit():
                stale = not _alive(int(pid))
            else:
                stale = time.time() - tmp.stat().st_mtime > STALE_AFTER_S
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
    return removed


@contextmanager
def atomic_target(path: str | PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    Readers see either the old file or the complete new one. If the block raises, the
    temporary file is removed and ``path`` is untouched. For writers that need a path
    (tifffile, memory maps, ZIP archives) rather than bytes.  Temporary files that
    killed writers of ``path`` left are removed first (see
    :func:`remove_stale_temporaries`).

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
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.", suffix=".tmp", dir=folder
    )
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
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    """Flush the rename to disk too (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
