"""Freed memory kept in the process while a compression runs (glibc only)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from napari_svd_compress import _memory, compress
from napari_svd_compress.api import compress_many

_BIG = 64 << 20  # over glibc's largest mmap threshold (32 MiB): mapped afresh by default


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mallinfo():
    libc = _memory._glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc >= 2.33 only")
    libc.mallinfo2.restype = _Mallinfo2
    return libc.mallinfo2


def test_large_blocks_reuse_the_heap_inside_and_are_given_back_after():
    info = _mallinfo()
    before = info()
    a = np.ones(_BIG, np.uint8)
    assert info().hblkhd >= before.hblkhd + _BIG  # outside: a fresh mapping
    del a
    with _memory.retained():
        assert _memory.active()
        mapped = info().hblkhd
        a = np.ones(_BIG, np.uint8)
        grown = info().arena
        assert info().hblkhd == mapped and grown >= before.arena + _BIG // 2  # from the heap
        del a
        b = np.ones(_BIG, np.uint8)  # the freed block again: the heap does not grow
        assert info().arena == grown
        del b
    assert not _memory.active()
    assert info().arena < grown - _BIG // 2  # trimmed: the free memory given back
    c = np.ones(_BIG, np.uint8)
    assert info().hblkhd >= mapped + _BIG  # the default behaviour is back
    del c


def test_retention_is_shared_by_nested_and_concurrent_uses():
    if _memory._glibc() is None:
        pytest.skip("glibc only")
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with _memory.retained():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    with _memory.retained():
        t.start()
        entered.wait(10)
        with _memory.retained():
            pass
        assert _memory.active()  # the inner use ended, the outer ones did not
    assert _memory.active()  # the other thread's use still runs
    release.set()
    t.join(10)
    assert not _memory.active()


@pytest.mark.parametrize("env", [{}, {"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "x"}])
def test_an_allocator_the_process_was_started_with_settings_for_is_left_alone(env):
    if _memory._glibc() is None:
        pytest.skip("glibc only")
    code = (
        "import os; from napari_svd_compress import _memory\n"
        "os.environ['MALLOC_TRIM_THRESHOLD_'] = '1'  # set later, as dask does: not read\n"
        "with _memory.retained():\n"
        "    print(_memory.active())\n"
    )
    # Not this process's environment as it is now: dask's LocalCluster adds MALLOC_* to it.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.stdout.split() == [str(not env)], out.stderr


def test_sweeps_keep_memory_while_they_run_and_give_it_back():
    if _memory._glibc() is None:
        pytest.skip("glibc only")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    seen = []
    for _ in compress_many(image, "svd", [{"rank": 2}, {"rank": 4}]):
        seen.append(_memory.active())
    assert seen == [True, True] and not _memory.active()
    compress(image, "svd", rank=4, progress=lambda f: seen.append(_memory.active()))
    assert not any(seen[2:])  # one compress() alone: the allocator as it is
