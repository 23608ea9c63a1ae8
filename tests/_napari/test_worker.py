"""The helper process of the Compress widget: results, shared memory, and its cleanup.

Big arrays go to the process and back through shared-memory segments the parent creates;
whatever ends a job (done, failed, cancelled, the child killed, ``close``, the parent
exiting or killed), no segment may be left in /dev/shm.  No display needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import napari_svd_compress as nsc
from conftest import synthetic_rgb
from napari_svd_compress._napari import worker
from napari_svd_compress._napari.worker import SEGMENT_PREFIX, CannotSend, CompressProcess

SHM = Path("/dev/shm")
needs_shm = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm (Linux)")
SRC = str(Path(nsc.__file__).resolve().parent.parent)


def segments(pid: int | None = None) -> list[str]:
    """The names of the shared-memory segments of process ``pid`` (this one by default)."""
    prefix = f"{SEGMENT_PREFIX}{os.getpid() if pid is None else pid}_"
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(prefix))


def big_image() -> np.ndarray:
    """1.9 MB: over the shared-memory threshold."""
    return synthetic_rgb(640, 1024)


def long_image() -> np.ndarray:
    """Noise, 1024 x 1536 RGB: 256-colour k-means takes many seconds on it."""
    return np.random.default_rng(0).integers(0, 256, (1024, 1536, 3), dtype=np.uint8)


def never() -> bool:
    return False


@pytest.fixture(scope="module")
def process():
    proc = CompressProcess()
    proc.start()
    yield proc
    proc.close()


@pytest.fixture(autouse=True)
def _shared_memory_on(process):
    process.use_shared_memory = True
    yield
    process.use_shared_memory = True


class Running:
    """A job running in a thread, for the tests that stop it midway."""

    def __init__(self, process: CompressProcess, cancelled=never, **params) -> None:
        self.process = process
        self.outcome = None
        self.progressed = threading.Event()
        params = params or {"colors": 256}
        self.thread = threading.Thread(
            target=self._run, args=(long_image(), params, cancelled), daemon=True
        )
        self.thread.start()

    def _run(self, image, params, cancelled) -> None:
        self.outcome = self.process.run(
            image, "kmeans", True, params, lambda f: self.progressed.set(), cancelled
        )

    def wait_for_segments(self) -> list[str]:
        """Wait until the child reports progress; the job's segments."""
        assert self.progressed.wait(30), "the job did not start"
        names = self.process.segment_names()
        assert len(names) == 2, "the job should have an input and an output segment"
        return names

    def join(self, timeout: float = 30):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the job did not return"
        return self.outcome


@needs_shm
def test_big_arrays_go_through_shared_memory(process):
    image = big_image()
    outcome = process.run(image, "jpeg", True, {"quality": 70}, lambda f: None, never)
    assert outcome.ok and process.last_timing["shared"]
    expected = nsc.compress(image, "jpeg", quality=70)
    result = outcome.value
    assert result.bundle == expected.bundle
    np.testing.assert_array_equal(result.image, expected.image)
    assert result.image.flags.writeable and result.image.flags.owndata  # not the segment's
    assert (result.psnr, result.ssim) == (pytest.approx(expected.psnr), expected.ssim)
    timing = process.last_timing
    assert 0 < timing["to_child_s"] < timing["total_s"] and timing["compress_s"] > 0
    assert process.segment_names() == [] and segments() == []


def test_the_pipe_gives_the_same_result(process):
    image = big_image()
    process.use_shared_memory = False
    outcome = process.run(image, "jpeg", True, {"quality": 70}, lambda f: None, never)
    assert outcome.ok and not process.last_timing["shared"]
    expected = nsc.compress(image, "jpeg", quality=70)
    assert outcome.value.bundle == expected.bundle
    np.testing.assert_array_equal(outcome.value.image, expected.image)


def test_small_and_lazy_images(process):
    import dask.array as da

    small = synthetic_rgb(64, 80)
    outcome = process.run(small, "jpeg", True, {}, lambda f: None, never)
    assert outcome.ok and not process.last_timing["shared"]  # the pipe: under 1 MiB
    np.testing.assert_array_equal(outcome.value.image, nsc.compress(small, "jpeg").image)
    # A dask stack is pickled (read plane by plane there); its result comes back shared.
    stack = np.stack([synthetic_rgb(400, 500)[..., c] for c in range(3)] * 2)
    lazy = da.from_array(stack, chunks=(1, 400, 500))
    outcome = process.run(lazy, "pca", False, {}, lambda f: None, never)
    assert outcome.ok and process.last_timing["shared"] == (SHM.is_dir())
    expected = nsc.compress(stack, "pca")
    assert outcome.value.bundle == expected.bundle
    np.testing.assert_array_equal(outcome.value.image, expected.image)
    assert process.segment_names() == []


def test_a_failed_job_in_shared_memory(process):
    outcome = process.run(big_image(), "svd", True, {"rank": -3}, lambda f: None, never)
    assert outcome.kind == "failed" and "rank" in outcome.error
    assert process.segment_names() == []
    if SHM.is_dir():
        assert segments() == []


@needs_shm
def test_no_room_in_dev_shm_falls_back_to_the_pipe(process, monkeypatch):
    real = os.statvfs

    class Full:
        def __init__(self, path):
            st = real(path)
            self.f_frsize, self.f_bavail = st.f_frsize, 1

    monkeypatch.setattr(worker.os, "statvfs", Full)
    image = big_image()
    outcome = process.run(image, "jpeg", True, {}, lambda f: None, never)
    assert outcome.ok and not process.last_timing["shared"]
    np.testing.assert_array_equal(outcome.value.image, nsc.compress(image, "jpeg").image)
    assert segments() == []


@needs_shm
def test_cancel_removes_the_segments(process):
    flag = threading.Event()
    job = Running(process, cancelled=flag.is_set)
    names = job.wait_for_segments()
    assert names == segments()  # in /dev/shm while the job runs
    flag.set()
    assert job.join().kind == "cancelled"
    assert segments() == [] and process.segment_names() == []
    # The process (or a fresh one) takes the next job.
    assert process.run(big_image(), "jpeg", True, {}, lambda f: None, never).ok


@needs_shm
def test_a_killed_child_leaves_no_segment(process):
    job = Running(process)
    job.wait_for_segments()
    os.kill(process._proc.pid, signal.SIGKILL)
    outcome = job.join()
    assert outcome.kind == "failed" and "stopped unexpectedly" in outcome.error
    assert segments() == []
    assert process.run(big_image(), "jpeg", True, {}, lambda f: None, never).ok  # a fresh one
    assert segments() == []


@needs_shm
def test_close_during_a_job(process):
    job = Running(process)
    job.wait_for_segments()
    started = time.monotonic()
    process.close()
    assert time.monotonic() - started < 10  # close does not wait for the job
    assert job.join().kind == "failed"
    assert segments() == []
    assert process.run(big_image(), "jpeg", True, {}, lambda f: None, never).ok  # restarts


def test_the_child_does_not_adopt_the_segments(monkeypatch):
    """Attaching must not register the segment with a resource tracker of the child's
    own, which would unlink it when the child exits (Python < 3.13)."""
    from multiprocessing import resource_tracker, shared_memory

    owner = shared_memory.SharedMemory(create=True, size=4096)
    try:
        registered = []
        monkeypatch.setattr(resource_tracker, "register", lambda *a: registered.append(a))
        attached = worker._attach(owner.name)
        attached.buf[0] = 7
        attached.close()
        assert registered == [] and owner.buf[0] == 7
    finally:
        owner.close()
        owner.unlink()


def test_an_image_the_child_cannot_read_raises_cannot_send(process):
    import dask.array as da

    # A dask graph of a function of this test module: it pickles by name, but the child
    # cannot import this module, so the caller must compress it itself.
    lazy = da.from_array(synthetic_rgb(32, 32), chunks=16).map_blocks(_plus_one, dtype=np.uint8)
    with pytest.raises(CannotSend, match="cannot read"):
        process.run(lazy, "jpeg", True, {}, lambda f: None, never)
    assert process.run(synthetic_rgb(32, 32), "jpeg", True, {}, lambda f: None, never).ok


def _plus_one(block):
    return block + 1


_PARENT = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    sys.path.insert(0, {src!r})
    from napari_svd_compress._napari.worker import shared

    proc = shared()  # as the widget: closed by an exit handler
    image = np.random.default_rng(0).integers(0, 256, (1024, 1536, 3), dtype=np.uint8)
    job = threading.Thread(
        target=proc.run,
        args=(image, "kmeans", True, {{"colors": 256}}, lambda f: None, lambda: False),
        daemon=True,
    )
    job.start()
    while len(proc.segment_names()) < 2 or proc._proc is None:
        time.sleep(0.01)
    time.sleep(0.5)  # the job sent
    print(proc._proc.pid, *proc.segment_names(), flush=True)
    {end}
    """
)


def _parent(end: str) -> tuple[subprocess.Popen, int, list[str]]:
    code = _PARENT.format(src=SRC, end=end)
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = parent.stdout.readline().split()
    assert line, parent.communicate(timeout=60)
    child, names = int(line[0]), line[1:]
    return parent, child, names


def _gone(names: list[str], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while any((SHM / n).exists() for n in names) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any((SHM / n).exists() for n in names)


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@needs_shm
def test_exiting_mid_job_leaves_no_segment():
    # The script ends while its job runs: the exit handler stops the child at once and
    # removes the segments.
    parent, child, names = _parent("sys.stdin.readline(); sys.exit(0)")
    try:
        assert all((SHM / n).exists() for n in names)
        _, err = parent.communicate("exit now\n", timeout=30)
        assert _gone(names, timeout=5)
        assert "leaked" not in err  # removed by the exit handler, not the resource tracker
    finally:
        _reap(child)
        parent.kill()


@needs_shm
def test_a_killed_parent_leaves_no_segment():
    # SIGKILL runs no exit handler: multiprocessing's resource tracker, to which the
    # parent registered its segments, removes them when the parent is gone.
    parent, child, names = _parent("time.sleep(60)")
    try:
        assert all((SHM / n).exists() for n in names)
        parent.kill()
        parent.wait(timeout=10)
        assert _gone(names)
    finally:
        _reap(child)
        for pipe in (parent.stdin, parent.stdout, parent.stderr):
            pipe.close()
