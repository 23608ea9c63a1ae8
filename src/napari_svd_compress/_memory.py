"""The allocator's settings while the library works on large images, restored after.

A 24-megapixel image makes temporaries of 100-300 MB, and on the virtual machines these
figures were measured on, fresh memory is the largest cost after the arithmetic.  Two
process-wide settings change that while the library works:

- :func:`retained`: glibc's allocator maps every block over 32 MB afresh and unmaps it
  when it is freed, so each such temporary is paid for again in page faults.  Inside,
  freed blocks go back to the allocator's heap, where the next temporary finds them; at
  the end of the outermost use the allocator's settings are restored and the free
  memory is returned to the system (``malloc_trim``).
- :func:`small_pages`: NumPy advises the kernel to back its large arrays with 2 MB huge
  pages.  There, the first huge pages a process touches cost the most: filling a fresh
  288 MB array took 0.84 s with the advice and 0.21 s without (later arrays 0.06 s with
  it, once the process has freed huge pages to reuse).  Inside, NumPy gives no advice.

One job (``compress()``, ``decompress()``, a stack's plane) holds both
(:func:`large_work`): on a 24-megapixel photo the first ``compress()`` of a process took
0.69x (svd rank 50), 0.81x (kmeans) and 0.92x (pca) the time without them, alternated
processes, medians of 4; later calls in the same process about as long as without;
peak memory 50-230 MB more (the learned codec: 170 MB more, no faster).  A sweep
(:func:`~napari_svd_compress.api.compress_many`) holds only :func:`retained`: its
points reuse the same memory, so the pages are touched once, and its pca points ran
6% faster with huge pages than without (medians of 4-5 sweeps, noisy; the eight kmeans points
took 0.81x the time with retention than without).

Each is re-entrant and thread-safe (nested or concurrent uses share one setting, which
ends with the last of them) and is left alone where the process was started with
settings of its own: started with ``MALLOC_*`` or ``GLIBC_TUNABLES`` for glibc (which
alone is touched: elsewhere :func:`retained` does nothing), ``NUMPY_MADVISE_HUGEPAGE`` set
for NumPy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["large_work", "retained", "small_pages"]

# mallopt parameters (malloc.h) and glibc's defaults, restored at the end.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
# The largest trim threshold mallopt takes (an int).
_NO_TRIM = (1 << 31) - 1

_lock = threading.Lock()


class _Shared:
    """A process-wide setting made by the first of its uses and undone by the last.

    ``apply`` makes it and returns its undo, or None where it is not available here
    (then uses are not counted).
    """

    def __init__(self, apply: Callable[[], Callable[[], Any] | None]) -> None:
        self._apply = apply
        self._undo: Callable[[], Any] | None = None
        self.depth = 0

    @contextlib.contextmanager
    def use(self) -> Iterator[None]:
        with _lock:
            if self.depth == 0:
                self._undo = self._apply()
            counted = self._undo is not None
            self.depth += counted
        try:
            yield
        finally:
            if counted:
                with _lock:
                    self.depth -= 1
                    if self.depth == 0:
                        self._undo()
                        self._undo = None


def _started_with(*names: bytes) -> bool:
    """Whether the process started with an environment variable beginning with one of
    ``names``.  Not ``os.environ``: a library may set such variables later for processes
    it spawns (dask sets ``MALLOC_TRIM_THRESHOLD_``); glibc reads them at start-up."""
    try:
        start = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(v.startswith(names) for v in start)


@cache
def _glibc() -> Any:
    """glibc's allocator functions, or None (another C library or platform, or a
    process started with allocator settings of its own)."""
    if not sys.platform.startswith("linux"):
        return None
    if _started_with(b"MALLOC_", b"GLIBC_TUNABLES="):
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


def _keep_freed() -> Callable[[], None] | None:
    libc = _glibc()
    if libc is None:
        return None
    libc.mallopt(_M_MMAP_MAX, 0)  # large blocks from the heap, reused when freed
    libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)

    def give_back() -> None:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)

    return give_back


@cache
def _hugepage_switch() -> Callable[[bool], bool] | None:
    """NumPy's switch of its huge-page advice (returns the previous state), or None
    (not Linux, or ``NUMPY_MADVISE_HUGEPAGE`` set: the process's own choice)."""
    # NumPy reads the variable from os.environ when it is imported.
    if not sys.platform.startswith("linux") or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return None
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, "_set_madvise_hugepage", None)


def _no_huge_pages() -> Callable[[], bool] | None:
    switch = _hugepage_switch()
    if switch is None:
        return None
    before = switch(False)
    return lambda: switch(before)


_retention = _Shared(_keep_freed)
_small_pages = _Shared(_no_huge_pages)


def retained() -> contextlib.AbstractContextManager[None]:
    """Keep freed memory in the process until the outermost ``retained()`` ends."""
    return _retention.use()


def small_pages() -> contextlib.AbstractContextManager[None]:
    """No huge-page advice on NumPy's arrays until the outermost ``small_pages()`` ends."""
    return _small_pages.use()


def active() -> bool:
    """Whether freed memory is being kept now (inside :func:`retained`, on glibc)."""
    return _retention.depth > 0


@contextlib.contextmanager
def large_work() -> Iterator[None]:
    """Both settings: what one job (``compress()``, ``decompress()``) holds."""
    with retained(), small_pages():
        yield
