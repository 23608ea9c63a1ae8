"""Freed memory kept in the process while a sweep runs, and given back after.

A 24-megapixel image makes temporaries of 100-300 MB.  glibc's allocator maps every block
over 32 MB afresh and unmaps it when it is freed, so each such temporary is paid for again
in page faults: on the virtual machines these figures were measured on (their host takes
freed pages back) a fresh 288 MB costs 0.5-3 s, more than the arithmetic done in it.
Inside :func:`retained`, freed blocks go back to the allocator's heap, where the next
point of a sweep finds them; at the end of the outermost one the allocator's settings
are restored and the free memory is returned to the system (``malloc_trim``).

Sweeps use it (:func:`~napari_svd_compress.api.compress_many`): on a 24-megapixel photo
the eight k-means points took 0.81x the time, at the same peak memory.  A single
``compress()`` does not: its temporaries have many sizes, and taken from the heap they
cost more than they save (1.2-1.5x the time, up to 270 MB more at the peak).

Only glibc (Linux) is touched, and only where the process was not started with allocator
settings of its own (``MALLOC_*`` or ``GLIBC_TUNABLES``); elsewhere :func:`retained` does
nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["retained"]

# mallopt parameters (malloc.h) and glibc's defaults, restored at the end.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
# The largest trim threshold mallopt takes (an int).
_NO_TRIM = (1 << 31) - 1

_lock = threading.Lock()
_depth = 0


@cache
def _glibc() -> Any:
    """glibc's allocator functions, or None (another C library or platform, or a
    process started with allocator settings of its own)."""
    if not sys.platform.startswith("linux"):
        return None
    if _tuned_at_start():
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only; musl has mallopt too)
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def _tuned_at_start() -> bool:
    """Whether the process started with glibc allocator settings in its environment.

    ``/proc/self/environ`` is the environment the process started with, the one glibc
    read (a library may set such variables later for processes it spawns: dask does).
    """
    try:
        start = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(v.startswith((b"MALLOC_", b"GLIBC_TUNABLES=")) for v in start)


def active() -> bool:
    """Whether freed memory is being kept now (inside :func:`retained`, on glibc)."""
    return _depth > 0  # counted only where there is glibc to tell


@contextlib.contextmanager
def retained() -> Iterator[None]:
    """Keep freed memory in the process until the outermost ``retained()`` ends.

    Re-entrant and thread-safe: nested or concurrent uses share one retention, which
    ends with the last of them.
    """
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, 0)  # large blocks from the heap, reused when freed
            libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
