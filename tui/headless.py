"""Following a run in the terminal (the `--yes` path): its events as a live progress bar, or as plain lines.

The run is a detached child (engine.launch); this is only a reader of its events.jsonl, so the follower
may die or be detached without harm to the run. Ctrl-C is the exception: the first asks the run to stop
cleanly (it saves a checkpoint), the second kills it. What the lines say is tui.format's, shared with the
dashboard; this module only follows and decides the exit code.

Exit codes (engine.exit_codes): OK completed, FAILED failed, USER failed on a config or data problem, STOPPED
stopped or killed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.text import Text

from engine import control, launch
from engine.events import SCHEMA_VERSION, EventTail, RunSummary, summarize
from engine.exit_codes import ExitCode
from engine.run_files import RunDir
from tui.format import ICONS, STYLES, end_reason, event_lines, hms, run_time, step_detail, step_line, summary_lines
from tui.log_reader import read_log_tail
from tui.run_state import LoggedMetrics

PLAIN_STEP_INTERVAL = 5.0  # seconds of run time between step lines when not on a terminal
LOG_TAIL_LINES = 15
STOPPING = "stopping: the run saves a checkpoint and ends; press Ctrl-C again to stop at once"


# ---- displays ---------------------------------------------------------------------------------

class PlainDisplay:
    """One line per event for logs and CI; step lines at most every PLAIN_STEP_INTERVAL seconds of run time.

    The latest unprinted step is printed before any other line and at the end, so the first and last
    steps always show and every eval or checkpoint line has its step's metrics just above it.
    """

    def __init__(self, console: Console, summary: RunSummary | None = None) -> None:
        self.console = console
        # The run as folded so far (its times and pace: the ETA); folded here when the caller does not.
        self.summary = summary if summary is not None else RunSummary()
        self._folds = summary is None
        self.stopping = False  # a stop was asked: no more ETA
        self._printed_at: float | None = None  # run time of the last printed step
        self._pending: tuple[float, str] | None = None  # (time, line) of the latest unprinted step
        self._logged = LoggedMetrics()

    def show(self, event: dict) -> None:
        if self._folds:
            self.summary.update(event)
        if event.get("type") == "step":
            self._step(self._logged.fill(event))
            return
        lines = event_lines(event)
        if lines:
            self._flush_step()
        for text, style in lines:
            self.print(text, style)

    def _step(self, event: dict) -> None:
        now = event.get("time") if isinstance(event.get("time"), (int, float)) else time.time()
        line = step_line(event, None if self.stopping else self.summary.eta)
        due = self._printed_at is None or now - self._printed_at >= PLAIN_STEP_INTERVAL
        if due or event.get("step") == event.get("total_steps"):
            self._pending = None
            self._printed_at = now
            self.print(line)
        else:
            self._pending = (now, line)

    def _flush_step(self) -> None:
        if self._pending is not None:
            (self._printed_at, line), self._pending = self._pending, None
            self.print(line)

    def print(self, text: str, style: str = "") -> None:
        self.console.print(Text(text, style=style), soft_wrap=True)

    def close(self) -> None:
        self._flush_step()


class _TwoLineProgress(Progress):
    """The bar on one line and the details (metrics, or the phase's message) on the next: fits 80 columns."""

    detail: RenderableType = ""

    def get_renderables(self) -> Iterator[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield self.detail


class _SpinnerOrIcon(SpinnerColumn):
    """A spinner while the run goes on; once it has ended, its outcome's icon (the `icon` field)."""

    def render(self, task: Any) -> RenderableType:
        icon = task.fields.get("icon")
        return Text(*icon) if icon else super().render(task)


class LiveDisplay:
    """A redrawn progress bar (the phase before training, then step/total, times, metrics); other events above.
    Once the run has ended: its outcome's icon instead of the spinner, and no ETA."""

    def __init__(self, console: Console, summary: RunSummary | None = None) -> None:
        self.console = console
        self.summary = summary if summary is not None else RunSummary()
        self._folds = summary is None
        self.stopping = False  # a stop was asked: no more ETA
        self.progress = _TwoLineProgress(_SpinnerOrIcon(), TextColumn("[bold]{task.description}"),
                                         BarColumn(bar_width=30), TextColumn("{task.fields[count]}"),
                                         TextColumn("{task.fields[times]}"), console=console, refresh_per_second=4)
        self.task: TaskID = self.progress.add_task("starting", total=None, count="", times="", icon=None)
        self._metrics = Text()
        self._logged = LoggedMetrics()
        self.progress.start()

    def show(self, event: dict) -> None:
        if self._folds:
            self.summary.update(event)
        kind = event.get("type")
        if kind == "status":
            self.progress.update(self.task, description=str(event.get("phase")))
            self.progress.detail = Text(str(event.get("message")), style="dim")
            if event.get("phase") != "training" and self.summary.pace_to is not None:  # saving, merging: no ETA
                self.progress.update(self.task, times=f"elapsed {hms(run_time(self.summary))}")
        elif kind == "run_started":
            self.progress.update(self.task, total=event.get("total_steps"), count=f"0/{event.get('total_steps')}")
        elif kind == "step":
            self._step(self._logged.fill(event))
        elif kind == "run_finished":
            status = str(event.get("status"))
            self.progress.update(self.task, description=status, icon=(ICONS.get(status, "?"), STYLES.get(status, "")),
                                 times=f"elapsed {hms(run_time(self.summary))}")
            self.progress.detail = self._metrics
        for text, style in event_lines(event):
            self.print(text, style)

    def _step(self, event: dict) -> None:
        times = f"elapsed {hms(run_time(self.summary))}"
        if not self.stopping:
            times += f" eta {hms(self.summary.eta)}"
        self.progress.update(self.task, description="training", completed=event.get("step") or 0,
                             total=event.get("total_steps"), count=f"{event.get('step')}/{event.get('total_steps')}",
                             times=times)
        self._metrics = self.progress.detail = Text(step_detail(event))

    def print(self, text: str, style: str = "") -> None:
        self.progress.refresh()  # printing redraws the bar as last rendered: bring it up to date first
        self.progress.console.print(Text(text, style=style), soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()


Display = PlainDisplay | LiveDisplay


# ---- Ctrl-C -----------------------------------------------------------------------------------

class Interrupts:
    """Counts SIGINTs while following, instead of letting a KeyboardInterrupt land anywhere.

    The follow loop acts on the count between polls; the previous handler comes back on exit. Off the
    main thread (where handlers cannot be set) Ctrl-C is left to whoever owns it.
    """

    def __init__(self) -> None:
        self.count = 0
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def __enter__(self) -> Interrupts:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            # None: the previous handler was not set from Python; the default is the closest match.
            signal.signal(signal.SIGINT, signal.SIG_DFL if self._previous is None else self._previous)


# ---- following --------------------------------------------------------------------------------

def follow(handle: launch.RunHandle, *, console: Console | None = None, poll_interval: float = 0.25,
           skip_existing: bool = False) -> int:
    """Show the run's events until it finishes (or its process ends); return the exit code for the CLI.
    `skip_existing`: a resumed run appends to events.jsonl; the earlier segment's events are not replayed."""
    console = console or Console(highlight=False)
    files = RunDir(handle.run_dir)
    console.print(f"following {handle.run_dir} (pid {handle.pid}); log: {files.log}; Ctrl-C stops the run",
                  highlight=False, soft_wrap=True)
    tail = EventTail(files.events)
    summary = RunSummary()
    if skip_existing:  # not shown again, but their time counts in the run's elapsed time
        summary = RunSummary.continuing(summarize(tail.poll()))
    with Interrupts() as interrupts:
        display: Display = LiveDisplay(console, summary) if console.is_terminal else PlainDisplay(console, summary)
        try:
            killed = _follow_events(handle, tail, summary, display, interrupts, poll_interval)
        finally:
            display.close()
    for text, style in _closing_lines(summary, handle, killed=killed, events_lost=tail.vanished):
        console.print(Text(text, style=style), soft_wrap=True)
    if tail.skipped:
        console.print(Text(f"{tail.skipped} line(s) of {tail.path} were not readable events and were skipped",
                           style=STYLES["warning"]), soft_wrap=True)
    return exit_code(summary, killed=killed, process_code=handle.returncode() if tail.vanished else None)


def _follow_events(handle: launch.RunHandle, tail: EventTail, summary: RunSummary, display: Display,
                   interrupts: Interrupts, poll_interval: float) -> bool:
    """Read events until run_finished or the process's end; True when it was killed on a second Ctrl-C."""
    stop_asked = False
    while True:
        alive = handle.alive()  # before polling: whatever the run wrote before it ended is read below
        _read(tail, summary, display)
        if summary.finished or not alive:
            return False
        if interrupts.count >= 2:
            display.print("killing the run: it ends now, without saving a checkpoint", STYLES["error"])
            launch.kill(handle)
            _read(tail, summary, display)  # its last words, if SIGTERM let it write any
            return True
        if interrupts.count == 1 and not stop_asked:
            control.request(handle.run_dir, "stop")
            display.stopping = True
            display.print(STOPPING, STYLES["warning"])
            stop_asked = True
        time.sleep(poll_interval)


def _read(tail: EventTail, summary: RunSummary, display: Display) -> None:
    for event in tail.poll():
        if summary.unknown_version is None and event.get("v") != SCHEMA_VERSION:
            display.print(f"warning: the run writes events in schema version {event.get('v')!r}, this llmtune "
                          f"reads version {SCHEMA_VERSION}: some of it may show wrongly; update llmtune",
                          STYLES["warning"])
        summary.update(event)
        display.show(event)


def exit_code(summary: RunSummary, *, killed: bool = False, process_code: int | None = None) -> int:
    """The run's own exit code from its final event; `process_code` is the process's exit status, used when
    that event was lost (events.jsonl deleted under the run): the training process exits with the same code."""
    if summary.finished and isinstance(summary.exit_code, int) and not isinstance(summary.exit_code, bool):
        return summary.exit_code
    if not summary.finished and (known := ExitCode.of(process_code)) is not None:
        return known
    if killed or summary.status in ("stopped", "killed"):
        return ExitCode.STOPPED
    if summary.status == "completed":
        return ExitCode.OK
    return ExitCode.USER if summary.error_kind == "user" else ExitCode.FAILED


def _closing_lines(summary: RunSummary, handle: launch.RunHandle, *, killed: bool,
                   events_lost: bool) -> list[tuple[str, str]]:
    """The run's summary; when it wrote no final event, what the process and its log say. `events_lost`:
    events.jsonl was deleted while followed."""
    lines = summary_lines(summary, RunDir(handle.run_dir).log, killed=killed)
    if summary.status is None and not killed:
        lines += _events_lost_lines(handle) if events_lost else _no_final_event_lines(handle)
    return lines


def _events_lost_lines(handle: launch.RunHandle) -> list[tuple[str, str]]:
    """events.jsonl went away under the run: its end is unknown to the events, not to the process."""
    code, files = handle.returncode(), RunDir(handle.run_dir)
    lines = [(f"{files.events} was deleted while the run was going on, so its last events (the "
              "final one too) could not be read", STYLES["warning"])]
    if code is not None and code >= 0:
        known = ExitCode.of(code)
        lines.append((f"the training process ended with exit code {code}"
                      + (f" ({known.meaning})" if known is not None else "") + f"; see {files.log}",
                      STYLES.get(known.meaning if known is not None else "failed", "")))
    else:
        lines.append((f"the training process {end_reason(handle)}; see {files.log}", ""))
    return lines


def _no_final_event_lines(handle: launch.RunHandle) -> list[tuple[str, str]]:
    """The process died without saying why (OOM killer, segfault, kill -9): its return code and log tail."""
    lines = [(f"the run ended without a final event: {end_reason(handle)}", STYLES["failed"])]
    log = RunDir(handle.run_dir).log
    log_tail = read_log_tail(log, LOG_TAIL_LINES)
    if log_tail:
        lines.append((f"last {len(log_tail)} lines of {log}:", ""))
        lines += [(f"  {line}", "dim") for line in log_tail]
    return lines
