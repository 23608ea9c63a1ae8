"""Running a dock widget's jobs off the main thread: the part the three widgets share.

Each widget owns a :class:`JobRunner` (composition, not a base class: Qt's metaclass does
not mix with :class:`abc.ABC`).  The runner starts a job in a napari thread worker, polls
its progress fraction, cancels it, turns its end into a :class:`JobOutcome` and hands a
finished job's value to the widget one turn of the event loop later.  What the user sees
of it goes through the abstract :class:`JobView`; :class:`JobPanel` is the Qt one (cancel
button, progress bar, status line), which the widget lays out among its own controls.

A job is a function of a :class:`JobContext`: it reports progress and learns of a cancel
through it, returns its value (or a :class:`JobOutcome`), and may raise: a library error
becomes a ``failed`` outcome and :class:`~napari_svd_compress.errors.Cancelled` a
``cancelled`` one (:func:`~napari_svd_compress._napari.worker.outcome_of`).
"""

from __future__ import annotations

import gc
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, QTimer, Slot
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from ...errors import Cancelled
from ..worker import JobOutcome, outcome_of

if TYPE_CHECKING:
    from napari.qt.threading import FunctionWorker

__all__ = [
    "POLL_MS",
    "PROGRESS_STEPS",
    "STEP_MS",
    "JobContext",
    "JobOutcome",
    "JobPanel",
    "JobRunner",
    "JobView",
]

#: Resolution of the progress bar.
PROGRESS_STEPS = 1000
#: Milliseconds between two looks at a running job's progress.
POLL_MS = 50
#: Milliseconds between the steps of handling a result, so the event loop runs in between.
STEP_MS = 15


class JobContext:
    """What a running job sees of the widget: where to report progress, whether to stop.

    Thread-safe in the way it is used: the job (a worker thread) writes ``fraction`` and
    reads the cancel flag; the main thread reads ``fraction`` and sets the flag.
    """

    def __init__(self) -> None:
        self.fraction = 0.0
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether the user asked the job to stop."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop at its next progress report."""
        self._cancel.set()

    def report(self, fraction: float) -> None:
        """Record progress without checking for a cancel (for a job that checks by itself)."""
        self.fraction = float(fraction)

    def progress(self, fraction: float) -> None:
        """Record progress; raise :class:`~napari_svd_compress.errors.Cancelled` if asked to
        stop (the codecs' ``progress`` callback)."""
        self.fraction = float(fraction)
        self.check()

    def check(self) -> None:
        """Raise :class:`~napari_svd_compress.errors.Cancelled` if the user asked to stop."""
        if self._cancel.is_set():
            raise Cancelled("cancelled")


class JobView(ABC):
    """How a :class:`JobRunner` shows its job: the contract a widget's controls fulfil."""

    @abstractmethod
    def bind_cancel(self, cancel: Callable[[], None]) -> None:
        """Call ``cancel`` when the user asks to stop the job."""

    @abstractmethod
    def set_cancellable(self, cancellable: bool) -> None:
        """Offer the cancel action, or not."""

    @abstractmethod
    def show_progress(self, fraction: float) -> None:
        """Show the fraction of the job done, in ``[0, 1]``."""

    @abstractmethod
    def show_status(self, text: str) -> None:
        """Show one line about the job (started, cancelling, failed, its result)."""


class JobPanel(JobView):
    """The Qt :class:`JobView`: a cancel button, a progress bar and a status line.

    The widgets are created here and laid out by the dock widget among its own
    controls; ``cancel=False`` or ``progress=False`` leaves that one out (None).
    """

    def __init__(self, parent: QWidget, *, cancel: bool = True, progress: bool = True) -> None:
        self.cancel_button: QPushButton | None = None
        self.progress_bar: QProgressBar | None = None
        if cancel:
            self.cancel_button = QPushButton("Cancel", parent)
            self.cancel_button.setEnabled(False)
        if progress:
            self.progress_bar = QProgressBar(parent)
            self.progress_bar.setRange(0, PROGRESS_STEPS)
            self.progress_bar.setValue(0)
        self.status_label = QLabel("", parent)
        self.status_label.setWordWrap(True)

    def bind_cancel(self, cancel: Callable[[], None]) -> None:
        if self.cancel_button is not None:
            self.cancel_button.clicked.connect(cancel)

    def set_cancellable(self, cancellable: bool) -> None:
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(cancellable)

    def show_progress(self, fraction: float) -> None:
        if self.progress_bar is not None:
            self.progress_bar.setValue(round(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS))

    def show_status(self, text: str) -> None:
        self.status_label.setText(text)


class JobRunner(QObject):
    """One job at a time for a dock widget, shown through a :class:`JobView`.

    A QObject child of the widget: Qt then drops the worker's connections to it when the
    dock is closed before the job ends, instead of calling into deleted controls.

    Parameters
    ----------
    view : JobView
        Where the job is shown.
    title : str
        The widget's name, which starts its notifications (``"Compress: cancelled"``).
    on_state : callable, optional
        Called with no argument whenever :attr:`running` may have changed (the widget
        enables its buttons).
    parent : QObject, optional
        The widget.
    """

    def __init__(
        self,
        view: JobView,
        title: str,
        on_state: Callable[[], None] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.view = view
        self.title = title
        self._on_state = on_state
        self.worker: FunctionWorker | None = None
        self.context: JobContext | None = None
        self._on_done: Callable[[Any], None] | None = None
        self._what = ""
        self._steps: deque[Callable[[], Any]] = deque()
        self._stepping = False
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._show_progress)
        view.bind_cancel(self.cancel)

    @property
    def running(self) -> bool:
        """Whether a job runs, or its result is still being handled."""
        return self.worker is not None or self._stepping

    def start(
        self,
        job: Callable[[JobContext], Any],
        *,
        on_done: Callable[[Any], None],
        status: str,
        what: str = "",
    ) -> FunctionWorker | None:
        """Run ``job(context)`` in a napari thread worker.

        Parameters
        ----------
        job : callable
            The work; see the module docstring.
        on_done : callable
            Called with the value of a ``done`` job, one turn of the event loop after it
            returned (the viewer first repaints and takes input).  Cancelled and failed
            jobs are shown by the runner.
        status : str
            The status line while the job runs.
        what : str
            What the job does, for the notification of a cancel (``"sweep"`` gives
            ``"Rate-distortion: sweep cancelled"``).

        Returns
        -------
        FunctionWorker or None
            The worker; None if a job is running already.
        """
        from napari.qt.threading import create_worker

        if self.running:
            return None
        context = self.context = JobContext()
        self._on_done = on_done
        self._what = what
        self.worker = worker = create_worker(outcome_of, job, context, _start_thread=False)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.view.show_progress(0.0)
        self.view.show_status(status)
        self._changed()
        self._poll.start()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress report."""
        if self.worker is None or self.context is None or self.context.cancelled:
            return
        self.context.cancel()
        self.view.set_cancellable(False)
        self.view.show_status("cancelling…")

    def later(self, steps: Iterable[Callable[[], Any]]) -> None:
        """Run ``steps`` one per turn of the event loop; :attr:`running` until the last.

        Steps may queue further steps; an exception in one is logged by Qt and the
        rest still run.
        """
        self._steps.extend(steps)
        if self._steps and not self._stepping:
            self._stepping = True
            self._changed()
            QTimer.singleShot(STEP_MS, self._step)

    @Slot()
    def _step(self) -> None:
        # No cyclic garbage collection inside a step: steps are sized to the event loop's
        # budget, and a full collection falling due in one (~100 ms with napari's objects)
        # would double the stall.  It runs in a turn of its own instead.
        collecting = gc.isenabled()
        gc.disable()
        try:
            if self._steps:
                self._steps.popleft()()
        finally:
            if collecting:
                QTimer.singleShot(0, gc.enable)
            if self._steps:
                QTimer.singleShot(STEP_MS, self._step)
            else:
                self._stepping = False
                self._changed()

    @Slot()
    def _show_progress(self) -> None:
        if self.context is not None:
            self.view.show_progress(self.context.fraction)

    @Slot(object)
    def _on_returned(self, outcome: JobOutcome) -> None:
        prefix = f"{self.title}: {self._what} " if self._what else f"{self.title}: "
        if outcome.kind == "cancelled":
            self.view.show_progress(0.0)
            self.view.show_status("cancelled")
            show_info(f"{prefix}cancelled")
        elif outcome.kind == "failed":
            self.view.show_progress(0.0)
            self.view.show_status(f"failed: {outcome.error}")
            show_error(f"{self.title}: {outcome.error}")
        else:
            self.view.show_progress(1.0)
            on_done = self._on_done
            self.later([lambda: on_done(outcome.value)])

    @Slot()
    def _on_finished(self) -> None:
        self._poll.stop()
        self.worker = None
        self._changed()

    def _changed(self) -> None:
        self.view.set_cancellable(
            self.worker is not None and self.context is not None and not self.context.cancelled
        )
        if self._on_state is not None:
            self._on_state()
