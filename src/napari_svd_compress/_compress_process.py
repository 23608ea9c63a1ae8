"""A helper process that runs :func:`napari_svd_compress.compress` for the napari widget.

Why a process and not only a thread: some of the C code a compression runs keeps the GIL
for a long time (constriction's ANS coder and SciPy's LAPACK wrappers hold it for whole
calls, over a second on a 24-megapixel plane), and while it does, napari's event loop
cannot run.  In a separate process nothing the codecs do can freeze the viewer.

The process is a fresh interpreter started once and reused; jobs are sent over a pipe,
progress comes back over another, and a "cancel" message sets a flag that the job's
progress callback checks.  This module imports neither napari nor Qt.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["CannotSend", "CompressProcess", "run_job", "shared"]


class CannotSend(Exception):
    """The image cannot be sent to another process (e.g. a dask graph of local functions)."""


#: Seconds between progress messages from the child (the widget polls every 50 ms).
_PROGRESS_EVERY = 0.05
#: Seconds a cancelled job may take to stop by itself before its process is killed.
_CANCEL_GRACE = 1.5


def run_job(
    image: Any,
    method: str,
    rgb: bool,
    params: dict[str, Any],
    progress: Callable[[float], None],
) -> tuple[str, Any]:
    """Run one compression; return ``("ok", Result)``, ``("cancelled", None)`` or
    ``("error", message)``.  Library errors are expected outcomes, not exceptions."""
    from .api import compress
    from .errors import Cancelled, SVDCompressError

    try:
        return "ok", compress(image, method, rgb=rgb, progress=progress, **params)
    except Cancelled:
        return "cancelled", None
    except MemoryError:
        return "error", "not enough memory"
    except SVDCompressError as exc:
        return "error", str(exc)
    except Exception as exc:  # anything else is a bug: reported, and logged with its traceback
        log.exception("compression failed")
        return "error", f"{type(exc).__name__}: {exc}"


def _serve(conn_in: Any, conn_out: Any) -> None:
    """The child's loop: jobs one at a time until the parent closes its pipe.

    A reader thread takes messages as they come, so that a "cancel" arrives while a job
    runs; the job's progress callback checks it.
    """
    import queue

    from .errors import Cancelled

    jobs: queue.Queue[Any] = queue.Queue()
    cancelled = {"job": -1}

    def read() -> None:
        while True:
            try:
                message = conn_in.recv()
            except (EOFError, OSError):
                jobs.put(None)
                return
            if message[0] == "cancel":
                cancelled["job"] = message[1]
            else:
                jobs.put(message)

    threading.Thread(target=read, name="job reader", daemon=True).start()
    while (message := jobs.get()) is not None:
        _, job, image, method, rgb, params = message
        del message
        last = [0.0]

        def progress(fraction: float, job: int = job, last: list[float] = last) -> None:
            if cancelled["job"] == job:
                raise Cancelled("cancelled")
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_EVERY:
                last[0] = now
                conn_out.send(("progress", job, float(fraction)))

        status, payload = run_job(image, method, rgb, params, progress)
        del image
        try:
            conn_out.send(("done", job, status, payload))
        except (EOFError, OSError):
            return
        except Exception as exc:  # an unpicklable result: report it rather than hang
            conn_out.send(("done", job, "error", f"cannot return the result ({exc})"))


class CompressProcess:
    """A reusable child process running compressions one at a time.

    The child is a fresh interpreter (``python -m napari_svd_compress._compress_process``)
    talking over two pipes: unlike multiprocessing's ``spawn`` it never re-imports the
    parent's main script, which for a napari user script would open a second viewer.
    :meth:`run` blocks (call it from a worker thread); jobs from several threads are
    serialised.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Any = None
        self._recv: Any = None
        self._next_job = 0

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

    def run(
        self,
        image: Any,
        method: str,
        rgb: bool,
        params: dict[str, Any],
        progress: Callable[[float], None],
        cancelled: Callable[[], bool],
    ) -> tuple[str, Any]:
        """Compress in the child; same return values as :func:`run_job`.

        Raises
        ------
        CannotSend
            When ``image`` cannot be sent to another process (e.g. a dask graph built
            from local functions); the caller then compresses in its own thread.
        """
        with self._lock:
            job = self._next_job = self._next_job + 1
            # Pickled here, once: an image that cannot cross to another process raises
            # before anything is started or sent.
            try:
                payload = pickle.dumps(
                    ("compress", job, image, method, rgb, params),
                    protocol=pickle.HIGHEST_PROTOCOL,
                )
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                raise CannotSend(str(exc)) from None
            try:
                self._ensure_started()
                self._send.send_bytes(payload)
            except OSError as exc:
                self._drop()
                return "error", f"cannot start the compression process ({exc})"
            del payload
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
                    return "cancelled", None
                try:
                    message = self._recv.recv() if self._recv.poll(0.05) else None
                except (EOFError, OSError):
                    message = None
                    self._proc.wait(timeout=5)
                if message is not None:
                    if message[1] != job:
                        continue  # a late message of an earlier job
                    if message[0] == "progress":
                        progress(message[2])
                        continue
                    return message[2], message[3]
                if not self._alive():
                    code = self._proc.returncode if self._proc is not None else None
                    self._drop()
                    return "error", (
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
        """Stop the child process (it also stops when napari exits: its pipe closes)."""
        with self._lock:
            self._drop()


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
