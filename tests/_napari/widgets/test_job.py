"""The job base of the dock widgets: typed outcomes, the runner, cancelling, the Qt panel."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest

from napari_svd_compress._napari.widgets.job import (
    JobContext,
    JobOutcome,
    JobPanel,
    JobRunner,
    JobView,
)
from napari_svd_compress._napari.worker import outcome_of
from napari_svd_compress.errors import Cancelled, ImageError

TIMEOUT_MS = 10_000


# --- outcomes (no Qt) -------------------------------------------------------------------


def test_outcome_kinds():
    assert JobOutcome.done(3) == JobOutcome("done", 3) and JobOutcome.done(3).ok
    cancelled = JobOutcome.cancelled()
    assert cancelled.kind == "cancelled" and not cancelled.ok and cancelled.error is None
    failed = JobOutcome.failed("disk full")
    assert (failed.kind, failed.value, failed.error, failed.ok) == (
        "failed",
        None,
        "disk full",
        False,
    )
    with pytest.raises(ValueError, match="kind"):
        JobOutcome("ok")
    with pytest.raises(ValueError, match="error"):
        JobOutcome("failed")
    with pytest.raises(ValueError, match="error"):
        JobOutcome("done", 1, "but also an error")


def test_outcome_of_maps_what_stops_a_job(caplog):
    def raises(exc: BaseException) -> Callable[[], None]:
        def job() -> None:
            raise exc

        return job

    assert outcome_of(lambda: 42) == JobOutcome.done(42)
    assert outcome_of(lambda: JobOutcome.cancelled()) == JobOutcome.cancelled()
    assert outcome_of(raises(Cancelled("stop"))) == JobOutcome.cancelled()
    assert outcome_of(raises(ImageError("bad image"))) == JobOutcome.failed("bad image")
    assert outcome_of(raises(MemoryError())) == JobOutcome.failed("not enough memory")
    bug = outcome_of(raises(KeyError("x")))
    assert bug.kind == "failed" and bug.error == "KeyError: 'x'"
    assert "a job failed" in caplog.text  # a bug is logged with its traceback


def test_context_progress_and_cancel():
    ctx = JobContext()
    ctx.progress(0.25)
    assert ctx.fraction == 0.25 and not ctx.cancelled
    ctx.cancel()
    ctx.report(0.5)  # reporting alone never raises
    assert ctx.fraction == 0.5 and ctx.cancelled
    with pytest.raises(Cancelled):
        ctx.progress(0.6)
    with pytest.raises(Cancelled):
        ctx.check()


def test_the_view_contract_is_abstract():
    with pytest.raises(TypeError):
        JobView()

    class Partial(JobView):
        def show_status(self, text: str) -> None:
            pass

    with pytest.raises(TypeError, match="abstract"):
        Partial()


# --- the runner, with a recording view --------------------------------------------------


class RecordingView(JobView):
    """A JobView that remembers what it was told (no Qt widgets at all)."""

    def __init__(self) -> None:
        self.cancel: Callable[[], None] | None = None
        self.cancellable: list[bool] = []
        self.progress: list[float] = []
        self.status: list[str] = []

    def bind_cancel(self, cancel: Callable[[], None]) -> None:
        self.cancel = cancel

    def set_cancellable(self, cancellable: bool) -> None:
        self.cancellable.append(cancellable)

    def show_progress(self, fraction: float) -> None:
        self.progress.append(fraction)

    def show_status(self, text: str) -> None:
        self.status.append(text)


@pytest.fixture
def runner(qtbot):
    view = RecordingView()
    states: list[bool] = []
    runner = JobRunner(view, "Test", on_state=lambda: states.append(runner.running))
    runner.states = states
    yield runner
    qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)


def _slow(steps: int, nap: float = 0.01) -> Callable[[JobContext], str]:
    def job(ctx: JobContext) -> str:
        for i in range(steps):
            time.sleep(nap)
            ctx.progress((i + 1) / steps)
        return "finished"

    return job


@pytest.mark.gui
def test_a_done_job_hands_its_value_over_later(runner, qtbot):
    got: list[object] = []
    worker = runner.start(_slow(20), on_done=got.append, status="working")
    assert worker is not None and runner.running
    assert runner.start(_slow(1), on_done=got.append, status="again") is None  # one at a time
    assert runner.view.status == ["working"] and runner.view.cancellable[-1] is True
    qtbot.waitUntil(lambda: runner.worker is None, timeout=TIMEOUT_MS)
    assert runner.running and got == []  # the value waits for a turn of the event loop
    qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)
    assert got == ["finished"]
    assert runner.view.progress[0] == 0.0 and runner.view.progress[-1] == 1.0
    assert runner.view.cancellable[-1] is False
    assert runner.states[0] is True and runner.states[-1] is False


@pytest.mark.gui
def test_a_failed_job_is_shown_and_notified(runner, qtbot, notifications):
    got: list[object] = []

    def job(ctx: JobContext) -> None:
        raise ImageError("no such plane")

    runner.start(job, on_done=got.append, status="working")
    qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)
    assert got == []
    assert runner.view.status[-1] == "failed: no such plane"
    assert runner.view.progress[-1] == 0.0
    assert "Test: no such plane" in notifications.messages()


@pytest.mark.gui
def test_cancel_stops_the_job_at_its_next_report(runner, qtbot, notifications):
    got: list[object] = []
    started = time.perf_counter()
    runner.start(_slow(2000), on_done=got.append, status="working", what="sweep")  # 20 s
    qtbot.waitUntil(lambda: runner.context.fraction > 0, timeout=TIMEOUT_MS)
    runner.view.cancel()  # what the view's cancel action calls
    assert runner.view.status[-1] == "cancelling…" and runner.view.cancellable[-1] is False
    runner.cancel()  # a second request changes nothing
    assert runner.view.status.count("cancelling…") == 1
    qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)
    assert time.perf_counter() - started < 5
    assert got == [] and runner.view.status[-1] == "cancelled"
    assert "Test: sweep cancelled" in notifications.messages()
    runner.cancel()  # nothing runs: nothing happens
    assert runner.view.status[-1] == "cancelled"


@pytest.mark.gui
def test_later_runs_steps_one_per_turn_and_keeps_the_runner_busy(runner, qtbot):
    order: list[str] = []

    def second() -> None:
        order.append("second")
        runner.later([lambda: order.append("queued by second")])

    runner.later([lambda: order.append("first"), second])
    assert runner.running and order == []
    qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)
    assert order == ["first", "second", "queued by second"]


@pytest.mark.gui
def test_no_garbage_collection_inside_a_step(runner, qtbot):
    in_step = [False]
    during: list[int] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start" and in_step[0]:
            during.append(info["generation"])

    def step() -> None:
        in_step[0] = True
        junk = [[] for _ in range(20 * gc.get_threshold()[0])]  # many times gen0's threshold
        in_step[0] = False
        del junk

    gc.callbacks.append(on_gc)
    try:
        runner.later([step, step])
        qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)
        qtbot.wait(50)
    finally:
        gc.callbacks.remove(on_gc)
    assert during == []
    assert gc.isenabled()  # collecting again once the steps are done


@pytest.mark.gui
def test_the_qt_panel_cancels_and_shows_progress(qtbot):
    from qtpy.QtWidgets import QWidget

    host = QWidget()
    qtbot.addWidget(host)
    panel = JobPanel(host)
    runner = JobRunner(panel, "Panel", parent=host)
    assert not panel.cancel_button.isEnabled()
    runner.start(_slow(2000), on_done=lambda value: None, status="working")
    assert panel.cancel_button.isEnabled() and panel.status_label.text() == "working"
    qtbot.waitUntil(lambda: panel.progress_bar.value() > 0, timeout=TIMEOUT_MS)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)
    assert panel.status_label.text() == "cancelled" and panel.progress_bar.value() == 0
    assert not panel.cancel_button.isEnabled()
    bare = JobPanel(host, cancel=False, progress=False)  # the spectrum widget's
    assert bare.cancel_button is None and bare.progress_bar is None
    bare.set_cancellable(True)
    bare.show_progress(0.5)
    bare.show_status("only a status line")
    assert bare.status_label.text() == "only a status line"
