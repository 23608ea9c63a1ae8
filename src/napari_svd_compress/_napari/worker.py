"""What runs off napari's main thread: typed job outcomes, and a helper process that runs
:func:`napari_svd_compress.compress` for the Compress widget.

:class:`JobOutcome` is what every widget job ends with (:mod:`.widgets.job` runs the jobs);
it lives here because the helper process returns it too, and imports no Qt.

Why a process and not only a thread: some of the C code a compression runs keeps the GIL
for a long time (constriction's ANS coder and SciPy's LAPACK wrappers hold it for whole
calls, over a second on a 24-megapixel plane), and while it does, napari's event loop
cannot run.  In a separate process nothing the codecs do can freeze the viewer.

The process is a fresh interpreter started once and reused; jobs are sent over a pipe,
progress comes back over another, and a "cancel" message sets a flag that the job's
progress callback checks.  This module imports neither napari nor Qt.

Big arrays do not go through the pipe: pickling a 24-megapixel RGB image (72 MB) and the
decoded result back costs about half a second and two extra copies in each process.  The
parent creates two shared-memory segments (:class:`multiprocessing.shared_memory.SharedMemory`),
copies the image into one, and the child compresses straight from it and copies the decoded
image into the other; only the parameters, the figures and the bundle's bytes (a few MB at
most) are pickled.  The parent owns the segments: it unlinks them when the job ends,
however it ends (done, failed, cancelled, the child killed or dead), and at exit; the child
only attaches to them.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import os
import pickle
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..api import compress
from ..errors import Cancelled, SVDCompressError

log = logging.getLogger(__name__)

__all__ = ["CannotSend", "CompressProcess", "JobOutcome", "outcome_of", "run_job", "shared"]

OutcomeKind = Literal["done", "cancelled", "failed"]
_KINDS = ("done", "cancelled", "failed")


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended.

    Attributes
    ----------
    kind : {"done", "cancelled", "failed"}
        ``done``: ``value`` is the job's result; ``cancelled``: the user stopped it;
        ``failed``: ``error`` says why, in words for a notification.
    value : object
        The result of a ``done`` job, else None.
    error : str or None
        The reason of a ``failed`` job, else None.
    """

    kind: OutcomeKind
    value: Any = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if (self.kind == "failed") != (self.error is not None):
            raise ValueError("a failed outcome, and only a failed one, has an error")

    @classmethod
    def done(cls, value: Any = None) -> JobOutcome:
        """A finished job and its result."""
        return cls("done", value)

    @classmethod
    def cancelled(cls) -> JobOutcome:
        """A job the user stopped."""
        return cls("cancelled")

    @classmethod
    def failed(cls, error: str) -> JobOutcome:
        """A job that could not finish, and why."""
        return cls("failed", error=str(error))

    @property
    def ok(self) -> bool:
        """Whether the job finished (``kind == "done"``)."""
        return self.kind == "done"


def outcome_of(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JobOutcome:
    """Call ``fn``; its result, or what stopped it, as a :class:`JobOutcome`.

    Library errors, running out of memory and :class:`~napari_svd_compress.errors.Cancelled`
    are expected outcomes; any other exception is a bug, reported the same way and logged
    with its traceback.  A ``fn`` that returns a JobOutcome itself has it passed on.
    """
    try:
        value = fn(*args, **kwargs)
    except Cancelled:
        return JobOutcome.cancelled()
    except MemoryError:
        return JobOutcome.failed("not enough memory")
    except SVDCompressError as exc:
        return JobOutcome.failed(str(exc))
    except Exception as exc:
        log.exception("a job failed")
        return JobOutcome.failed(f"{type(exc).__name__}: {exc}")
    return value if isinstance(value, JobOutcome) else JobOutcome.done(value)


class CannotSend(Exception):
    """The image cannot be sent to another process (e.g. a dask graph of local functions)."""


#: Seconds between progress messages from the child (the widget polls every 50 ms).
_PROGRESS_EVERY = 0.05
#: Seconds a cancelled job may take to stop by itself before its process is killed.
_CANCEL_GRACE = 1.5
#: Arrays of at least this many bytes go through shared memory rather than the pipe.
SHARED_MIN_BYTES = 1 << 20
#: The names of this process's shared-memory segments start with this (then the pid).
SEGMENT_PREFIX = "nsc_"
#: Where POSIX shared memory lives on Linux (a tmpfs whose size limits the segments).
_SHM_DIR = "/dev/shm"


def run_job(
    image: Any,
    method: str,
    rgb: bool,
    params: dict[str, Any],
    progress: Callable[[float], None],
) -> JobOutcome:
    """Run one compression; its :class:`~napari_svd_compress.Result` as a :class:`JobOutcome`.

    Library errors are expected outcomes (``failed``), not exceptions.
    """
    return outcome_of(compress, image, method, rgb=rgb, progress=progress, **params)


class _Segment:
    """A shared-memory segment created by the parent for one job.

    :meth:`unlink` removes its name (idempotent, from any thread: the memory lives on
    while mapped); :meth:`close` unmaps it once no view of it is left.
    """

    def __init__(self, nbytes: int) -> None:
        from multiprocessing import shared_memory

        nbytes = max(int(nbytes), 1)
        if os.path.isdir(_SHM_DIR):
            # A full tmpfs would not fail here but later, with SIGBUS on the first write
            # to a missing page (Docker's default /dev/shm is 64 MB): check the room first.
            st = os.statvfs(_SHM_DIR)
            if st.f_bavail * st.f_frsize < nbytes + (16 << 20):
                raise OSError(f"not enough room in {_SHM_DIR} for {nbytes} bytes")
        name = f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
        self.shm = shared_memory.SharedMemory(name=name, create=True, size=nbytes)
        self.name = self.shm.name
        self._lock = threading.Lock()
        self._unlinked = False
        fd = getattr(self.shm, "_fd", -1)
        if hasattr(os, "posix_fallocate") and fd >= 0:
            try:  # reserve the pages now, so that no write can meet a full tmpfs
                os.posix_fallocate(fd, 0, nbytes)
            except OSError:
                self.release()
                raise

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf)

    def unlink(self) -> None:
        with self._lock:
            if self._unlinked:
                return
            self._unlinked = True
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        try:
            self.shm.close()
        except BufferError:  # a view is still alive somewhere: unmapped when it dies
            log.debug("shared memory %s still in use", self.name)

    def release(self) -> None:
        self.unlink()
        self.close()


def _attach(name: str) -> Any:
    """Open the parent's segment ``name`` without adopting it (in the child).

    Python < 3.13 registers every attached segment with a resource tracker of the
    attaching process, which unlinks it when that process exits: the child must not.
    """
    from multiprocessing import resource_tracker, shared_memory

    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def _shareable(shape: Any, dtype: Any) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """``(shape, dtype, nbytes)`` of an array worth sharing, else None."""
    if shape is None or dtype is None:
        return None
    try:
        shape = tuple(int(n) for n in shape)
        dtype = np.dtype(dtype)
    except (TypeError, ValueError):
        return None
    if dtype.hasobject or not shape or dtype.itemsize == 0:
        return None
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return (shape, dtype, nbytes) if nbytes >= SHARED_MIN_BYTES else None


def _release_mapping(shm: Any) -> None:
    """Close the child's mapping of a segment, once no array views it."""
    for _ in range(2):
        try:
            shm.close()
            return
        except BufferError:
            gc.collect()
    log.warning("shared memory %s is still in use; it is unmapped at exit", shm.name)
    _STUCK.append(shm)


#: Segments the child could not unmap (an array of a job still refers to them).
_STUCK: list[Any] = []


def _serve(conn_in: Any, conn_out: Any) -> None:
    """The child's loop: jobs one at a time until the parent closes its pipe.

    A reader thread takes messages as they come, so that a "cancel" arrives while a job
    runs; the job's progress callback checks it.
    """
    import queue

    jobs: queue.Queue[Any] = queue.Queue()
    cancelled = {"job": -1}

    def read() -> None:
        while True:
            try:
                data = conn_in.recv_bytes()
            except (EOFError, OSError):
                jobs.put(None)
                return
            try:
                message = pickle.loads(data)
            except Exception as exc:
                # E.g. a dask graph of functions of the parent's own script, which pickle
                # by name but do not exist here: the parent computes it itself.
                jobs.put(("unreadable", f"{type(exc).__name__}: {exc}"))
                continue
            finally:
                del data
            if message[0] == "cancel":
                cancelled["job"] = message[1]
            else:
                jobs.put(message)

    threading.Thread(target=read, name="job reader", daemon=True).start()
    while (message := jobs.get()) is not None:
        if message[0] == "unreadable":
            conn_out.send(("unreadable", None, message[1]))
            continue
        _, job, image, method, rgb, params, out = message
        del message
        started = time.perf_counter()
        last = [0.0]

        def progress(fraction: float, job: int = job, last: list[float] = last) -> None:
            if cancelled["job"] == job:
                raise Cancelled("cancelled")
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_EVERY:
                last[0] = now
                conn_out.send(("progress", job, float(fraction)))

        mapped = []
        try:
            if isinstance(image, tuple) and image[:1] == ("shm",):
                # ("shm", name, shape, dtype): the parent's copy of the image, read-only.
                mapped.append(_attach(image[1]))
                image = np.ndarray(image[2], dtype=image[3], buffer=mapped[-1].buf)
                image.flags.writeable = False
            t0 = time.perf_counter()
            outcome = run_job(image, method, rgb, params, progress)
            compress_s = time.perf_counter() - t0
            del image
            value, shared = outcome.value, False
            decoded = getattr(value, "image", None)
            if (
                out is not None
                and isinstance(decoded, np.ndarray)
                and decoded.shape == tuple(out[2])
                and decoded.dtype == np.dtype(out[3])
            ):
                mapped.append(_attach(out[1]))
                target = np.ndarray(out[2], dtype=out[3], buffer=mapped[-1].buf)
                np.copyto(target, decoded)
                del target
                value, shared = dataclasses.replace(value, image=None), True
            del decoded
        except Exception as exc:  # a segment vanished (the parent gave up on this job)
            image = None
            outcome, value, shared = JobOutcome.failed(f"shared memory: {exc}"), None, False
            compress_s = 0.0
        finally:
            for shm in mapped:
                _release_mapping(shm)
            del mapped
        timing = {"compress_s": compress_s, "child_s": time.perf_counter() - started}
        # Plain fields on the wire: this module is __main__ in the child, so its own
        # JobOutcome would not unpickle as the parent's.
        try:
            conn_out.send(("done", job, outcome.kind, value, outcome.error, shared, timing))
        except (EOFError, OSError):
            return
        except Exception as exc:  # an unpicklable result: report it rather than hang
            error = f"cannot return the result ({exc})"
            conn_out.send(("done", job, "failed", None, error, False, timing))
        del outcome, value


class CompressProcess:
    """A reusable child process running compressions one at a time.

    The child is a fresh interpreter (``python -m napari_svd_compress._napari.worker``)
    talking over two pipes: unlike multiprocessing's ``spawn`` it never re-imports the
    parent's main script, which for a napari user script would open a second viewer.
    :meth:`run` blocks (call it from a worker thread); jobs from several threads are
    serialised.  Images of :data:`SHARED_MIN_BYTES` or more and their decoded results go
    through shared memory (see the module's docstring).

    Attributes
    ----------
    use_shared_memory : bool
        False sends every array through the pipe, pickled.
    last_timing : dict
        Seconds of the last job: ``to_child_s`` (copying or pickling the image and
        sending it), ``compress_s`` (:func:`~napari_svd_compress.compress` in the
        child), ``from_child_s`` (receiving the result, copying the decoded image out),
        ``total_s`` (the whole :meth:`run`); ``shared`` says whether the arrays went
        through shared memory.
    """

    use_shared_memory: bool = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Any = None
        self._recv: Any = None
        self._next_job = 0
        self._segments: set[_Segment] = set()
        self._segments_lock = threading.Lock()
        self.last_timing: dict[str, Any] = {}

    @staticmethod
    def supported() -> bool:
        """Whether a helper process can be used here (it needs ``pass_fds``: POSIX)."""
        return os.name == "posix"

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ensure_started(self) -> None:
        if self._alive():
            return
        from multiprocessing.connection import Connection

        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        env = dict(os.environ)
        # The child must import this very package, installed or not.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(to_child_r), str(to_parent_w)],
                pass_fds=(to_child_r, to_parent_w),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(to_child_r)
            os.close(to_parent_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(to_parent_r, writable=False)

    def _drop(self) -> None:
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._send = self._recv = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    # -- shared memory --------------------------------------------------------------------

    def _segment(self, nbytes: int, segments: list[_Segment]) -> _Segment:
        segment = _Segment(nbytes)
        segments.append(segment)
        with self._segments_lock:
            self._segments.add(segment)
        return segment

    def _release(self, segments: list[_Segment]) -> None:
        for segment in segments:
            segment.release()
            with self._segments_lock:
                self._segments.discard(segment)
        segments.clear()

    def segment_names(self) -> list[str]:
        """The names of the shared-memory segments of the job now running (for tests)."""
        with self._segments_lock:
            return sorted(s.name for s in self._segments)

    def _share(self, image: Any, segments: list[_Segment]) -> tuple[Any, Any]:
        """What to send for ``image``, and the segment for the decoded result (or None)."""
        if not self.use_shared_memory:
            return image, None
        src = _shareable(image.shape, image.dtype) if isinstance(image, np.ndarray) else None
        dst = _shareable(getattr(image, "shape", None), getattr(image, "dtype", None))
        sent, out = image, None
        try:
            if src is not None:
                segment = self._segment(src[2], segments)
                view = segment.view(src[0], src[1])
                np.copyto(view, image)
                del view
                sent = ("shm", segment.name, src[0], src[1])
            if dst is not None:
                out = ("shm", self._segment(dst[2], segments).name, dst[0], dst[1])
        except OSError as exc:
            log.info("no shared memory (%s): the arrays go through the pipe", exc)
            self._release(segments)
            return image, None
        return sent, out

    # -- jobs -----------------------------------------------------------------------------

    def run(
        self,
        image: Any,
        method: str,
        rgb: bool,
        params: dict[str, Any],
        progress: Callable[[float], None],
        cancelled: Callable[[], bool],
    ) -> JobOutcome:
        """Compress in the child; the same outcomes as :func:`run_job`.

        Raises
        ------
        CannotSend
            When ``image`` cannot be sent to another process (e.g. a dask graph built
            from local functions, or from functions of the parent's ``__main__``); the
            caller then compresses in its own thread.
        """
        with self._lock:
            segments: list[_Segment] = []
            try:
                return self._run(image, method, rgb, params, progress, cancelled, segments)
            finally:
                # However the job ended (done, failed, cancelled, the child killed or
                # dead, an exception here): the segments' names go now.
                self._release(segments)

    def _run(
        self,
        image: Any,
        method: str,
        rgb: bool,
        params: dict[str, Any],
        progress: Callable[[float], None],
        cancelled: Callable[[], bool],
        segments: list[_Segment],
    ) -> JobOutcome:
        started = time.perf_counter()
        self.last_timing = {}
        job = self._next_job = self._next_job + 1
        sent, out = self._share(image, segments)
        # Pickled here, once: an image that cannot cross to another process raises
        # before anything is started or sent.
        try:
            payload = pickle.dumps(
                ("compress", job, sent, method, rgb, params, out),
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise CannotSend(str(exc)) from None
        del sent
        try:
            self._ensure_started()
            self._send.send_bytes(payload)
        except OSError as exc:
            self._drop()
            return JobOutcome.failed(f"cannot start the compression process ({exc})")
        del payload
        to_child_s = time.perf_counter() - started
        cancel_sent: float | None = None
        while True:
            if cancel_sent is None and cancelled():
                cancel_sent = time.monotonic()
                try:
                    self._send.send(("cancel", job))
                except OSError:
                    pass
            elif cancel_sent is not None and time.monotonic() - cancel_sent > _CANCEL_GRACE:
                # The codec has not reached a progress report in time (some steps are
                # long): stop the process; the next job starts a fresh one.
                self._drop()
                return JobOutcome.cancelled()
            received = None
            try:
                if self._recv.poll(0.05):
                    received = time.perf_counter()
                    message = self._recv.recv()
                else:
                    message = None
            except (EOFError, OSError):
                message = None
                self._proc.wait(timeout=5)
            if message is not None:
                if message[0] == "unreadable":  # only a job waits for an answer: this one
                    raise CannotSend(
                        f"the compression process cannot read the image ({message[2]})"
                    )
                if message[1] != job:
                    continue  # a late message of an earlier job
                if message[0] == "progress":
                    progress(message[2])
                    continue
                _, _, kind, value, error, shared, timing = message
                del message
                if shared:
                    # The decoded image, copied out of its segment (which goes at once).
                    segment = next(s for s in segments if s.name == out[1])
                    view = segment.view(out[2], out[3])
                    value = dataclasses.replace(value, image=np.array(view))
                    del view, segment
                finished = time.perf_counter()
                self.last_timing = {
                    "to_child_s": to_child_s,
                    "compress_s": timing.get("compress_s", 0.0),
                    "from_child_s": finished - received,
                    "total_s": finished - started,
                    "shared": bool(segments),
                }
                return JobOutcome(kind, value, error)
            if not self._alive():
                code = self._proc.returncode if self._proc is not None else None
                self._drop()
                return JobOutcome.failed(
                    f"the compression process stopped unexpectedly (exit code {code}; "
                    "out of memory?)"
                )

    def start(self) -> None:
        """Start the child now (it imports the codecs), so the first job does not wait."""
        with self._lock:
            try:
                self._ensure_started()
            except OSError as exc:
                log.warning("cannot start the compression process: %s", exc)

    def close(self) -> None:
        """Stop the child process and remove any shared memory of a running job.

        It does not wait for a running job: the child is killed, the job returns
        ``failed``.  (The child also stops when napari exits: its pipe closes.)
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        with self._segments_lock:
            segments = list(self._segments)
        for segment in segments:
            segment.unlink()  # the running job unmaps them when it returns
        if self._lock.acquire(timeout=5):
            try:
                self._drop()
            finally:
                self._lock.release()


_shared: CompressProcess | None = None
_shared_lock = threading.Lock()


def shared() -> CompressProcess:
    """The process shared by every widget of this napari session."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = CompressProcess()
            # Reap the child at exit rather than leaving it to the closing pipe.
            atexit.register(_shared.close)
        return _shared


def _main(argv: list[str]) -> int:
    from multiprocessing.connection import Connection

    conn_in = Connection(int(argv[0]), writable=False)
    conn_out = Connection(int(argv[1]), readable=False)
    # Import the library and register its codecs before the first job arrives.
    from napari_svd_compress import api, registry  # noqa: F401

    registry.available()
    _serve(conn_in, conn_out)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
