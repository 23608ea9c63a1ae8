"""The allocator's settings while the library works: freed memory kept (glibc), no
huge-page advice (NumPy on Linux)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from napari_svd_compress import _memory, compress, decompress
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


def _hugepage_advice() -> bool:
    switch = _memory._hugepage_switch()
    state = switch(True)
    switch(state)
    return state


_RANKS = [{"rank": 2}, {"rank": 4}]


@pytest.mark.parametrize(
    ("run", "small"),
    [
        (lambda im: list(compress_many(im, "svd", _RANKS, progress=_record)), 0),
        (lambda im: compress(im, "svd", rank=4, progress=_record), 1),
        (lambda im: decompress(compress(im, "svd", rank=4).bundle, progress=_record), 1),
    ],
    ids=["sweep", "compress", "decompress"],
)
def test_the_library_holds_its_settings_while_it_works_and_restores_them(run, small):
    switch = _memory._hugepage_switch()
    if _memory._glibc() is None or switch is None:
        pytest.skip("glibc and NumPy's huge-page advice only")
    before = switch(True)  # NumPy's default on Linux
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _STATES.clear()
    try:
        run(image)
        assert not _memory.active() and _hugepage_advice() is True
    finally:
        switch(before)
    # A sweep keeps freed memory and NumPy's advice; a single job also drops the advice.
    expected = (True, not small)
    assert _STATES and all(s == expected for s in _STATES)


# (freed memory kept, huge-page advice), as the progress callback saw them.
_STATES: list[tuple[bool, bool]] = []


def _record(fraction: float) -> None:
    _STATES.append((_memory.active(), _hugepage_advice()))


@pytest.mark.parametrize("advice", [True, False])
def test_small_pages_turns_numpys_advice_off_and_restores_it(advice):
    switch = _memory._hugepage_switch()
    if switch is None:
        pytest.skip("Linux only")
    before = switch(advice)
    try:
        with _memory.small_pages():
            with _memory.small_pages():
                assert _hugepage_advice() is False
            assert _hugepage_advice() is False  # the outer use has not ended
        assert _hugepage_advice() is advice
    finally:
        switch(before)


def test_numpys_advice_is_left_alone_where_the_process_set_it():
    code = (
        "from numpy._core import multiarray as m\n"
        "from napari_svd_compress import _memory\n"
        "with _memory.small_pages():\n"
        "    print(m._set_madvise_hugepage(True))\n"
    )
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    for env, expected in (({}, "False"), ({"NUMPY_MADVISE_HUGEPAGE": "1"}, "True")):
        clean = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
        out = subprocess.run(
            [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
        )
        assert out.stdout.split() == [expected], out.stderr
