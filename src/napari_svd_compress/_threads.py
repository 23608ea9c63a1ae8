"""Threads for the NumPy, zlib and BLAS stages that release the GIL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Threads a stage uses at most: more than four buys little for memory-bound passes.
THREADS = max(1, min(4, os.cpu_count() or 1))


def thread_map(
    fn: Callable[..., Any], *iterables: Iterable[Any], workers: int | None = None
) -> list:
    """``[fn(*args) for args in zip(*iterables)]`` on up to ``workers`` threads (default
    :data:`THREADS`), in order (in the calling thread when one is enough)."""
    args = list(zip(*iterables, strict=True))
    workers = min(THREADS if workers is None else workers, len(args))
    if workers <= 1:
        return [fn(*a) for a in args]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, *zip(*args, strict=True)))
