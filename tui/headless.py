"""Following a run in the terminal (the `--yes` path): its events as a live progress bar, or as plain lines.

The run is a detached child (engine.launch); this is only a reader of its events.jsonl, so the follower
may die or be detached without harm to the run. Ctrl-C is the exception: the first asks the run to stop
cleanly (it saves a checkpoint), the second kills it.

Exit codes: 0 completed, 1 failed, 2 failed on a config or data problem, 130 stopped or killed.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from collections.abc import Iterator
from types import FrameType
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.text import Text

from engine import launch
from engine.events import EVENTS_FILE, SCHEMA_VERSION, EventTail, RunSummary, summarize

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
PLAIN_STEP_INTERVAL = 5.0  # seconds of run time between step lines when not on a terminal
LOG_TAIL_LINES = 15
STOPPING = "stopping: the run saves a checkpoint and ends; press Ctrl-C again to stop at once"
STYLES = {"info": "", "warning": "yellow", "error": "red", "status": "dim", "eval": "cyan",
          "checkpoint": "green", "completed": "bold green", "stopped": "bold yellow",
          "killed": "bold yellow", "failed": "bold red"}
ICONS = {"completed": "✔", "stopped": "■", "killed": "■", "failed": "✖"}
# The trainer's own metrics worth a glance, in this order (at most HEADLINE_COUNT shown): name in the step
# event's `metrics`, label, format. DPO and ORPO log rewards/*, a reward model accuracy and margin, SFT its
# token accuracy (DPO logs one too: the reward accuracy comes first).
HEADLINE_METRICS = (("rewards/margins", "margin", ".3g"), ("rewards/accuracies", "acc", ".0%"),
                    ("accuracy", "acc", ".0%"), ("margin", "margin", ".3g"),
                    ("mean_token_accuracy", "tok acc", ".1%"))
HEADLINE_COUNT = 2


# ---- formatting (pure functions) --------------------------------------------------------------

def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def number(value: Any, spec: str) -> str:
    """A metric as text; "-" when it is missing."""
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _gib(nbytes: Any) -> str:
    return f"{nbytes / 2**30:.1f}G"


def run_time(summary: RunSummary) -> float | None:
    """The run's elapsed time, as every view shows it: wall time summed over its segments (RunSummary.run_time);
    from the final metrics or the training time when the events carry no times."""
    if summary.run_time is not None:
        return summary.run_time
    runtime = summary.metrics.get("train_runtime")
    if isinstance(runtime, (int, float)) and not isinstance(runtime, bool):
        return float(runtime)
    return summary.elapsed


def headline_metrics(metrics: Any, count: int = HEADLINE_COUNT) -> list[tuple[str, str]]:
    """The trainer's most telling metrics in a step event's `metrics`, as (label, value) pairs."""
    if not isinstance(metrics, dict):
        return []
    shown: list[tuple[str, str]] = []
    labels: set[str] = set()
    for name, label, spec in HEADLINE_METRICS:
        value = metrics.get(name)
        if label in labels or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        shown.append((label, number(value, spec)))
        labels.add(label)
        if len(shown) == count:
            break
    return shown


def _gpu_used(gpu: Any) -> int | float | None:
    """NVML's reading of the device's used memory, else what torch reserved (NVML missing or unsupported)."""
    if not isinstance(gpu, dict):
        return None
    for key in ("used", "reserved"):
        if isinstance(gpu.get(key), (int, float)) and not isinstance(gpu.get(key), bool):
            return gpu[key]
    return None


def memory_text(memory: Any) -> str | None:
    """The most used GPU's memory out of its total, else the process's RSS."""
    if not isinstance(memory, dict):
        return None
    gpus = [g for g in memory.get("gpus") or [] if _gpu_used(g) is not None]
    if gpus:
        gpu = max(gpus, key=_gpu_used)
        total = f"/{_gib(gpu['total'])}" if gpu.get("total") else ""
        return f"{_gib(_gpu_used(gpu))}{total}"
    return _gib(memory["rss"]) if memory.get("rss") is not None else None


class LoggedMetrics:
    """Step events between logging steps (progress only) carry loss, lr and grad_norm as null and no
    `metrics`: a display shows the last logged values instead of blanks."""

    NAMES = ("loss", "lr", "grad_norm", "metrics")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def fill(self, event: dict) -> dict:
        """The step event with its null metrics replaced by the last logged ones."""
        for name in self.NAMES:
            if event.get(name) is not None:
                self.values[name] = event[name]
        return {**event, **self.values}


def _metric_parts(event: dict) -> list[str]:
    return [f"epoch {number(event.get('epoch'), '.2f')}", f"loss {number(event.get('loss'), '.4f')}",
            *(f"{label} {value}" for label, value in headline_metrics(event.get("metrics"))),
            f"lr {number(event.get('lr'), '.2e')}", f"tok/s {number(event.get('tokens_per_s'), '.0f')}"]


def _memory_part(event: dict) -> list[str]:
    memory = memory_text(event.get("memory"))
    return [f"mem {memory}"] if memory else []


def step_line(event: dict, eta: float | None = None) -> str:
    """`step 10/100 epoch 0.10 loss 2.3456 lr 1.20e-04 tok/s 1234 eta 0:01:02 mem 18.6G/79.2G`; the trainer's
    headline metrics after the loss when it logs any (`loss 0.6931 margin 0.0123 acc 50% lr ...`)."""
    parts = [f"step {event.get('step')}/{event.get('total_steps')}", *_metric_parts(event),
             f"eta {duration(eta)}", *_memory_part(event)]
    return " ".join(parts)


def _eval_metrics_text(metrics: Any) -> str:
    """Numeric eval metrics, less the timing ones (eval_runtime, eval_samples_per_second) nobody reads."""
    if not isinstance(metrics, dict):
        return ""
    shown = [f"{k} {number(v, '.4g')}" for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)
             and not (k.endswith("runtime") or k.endswith("_per_second"))]
    return " ".join(shown)


def _plural(count: Any, noun: str) -> str:
    return f"{number(count, 'g')} {noun}" + ("" if count == 1 else "s")


def run_started_lines(event: dict) -> list[str]:
    device = event.get("device") or {}
    where = f"{device.get('kind', '?')} {device.get('name', '')}".strip()
    if (device.get("count") or 1) > 1:
        where += f" x{device['count']}"
    lines = [f"run started: {event.get('trainer')} on {event.get('base_model')} ({where}), "
             f"{_plural(event.get('total_steps'), 'step')}, {_plural(event.get('epochs'), 'epoch')}, "
             f"batch {event.get('batch_size')}"]
    for split, d in (event.get("data") or {}).items():
        if isinstance(d, dict):
            lines.append(f"data {split}: {d.get('examples', 0):,} examples, {d.get('tokens', 0):,} tokens "
                         f"({d.get('trained_tokens', 0):,} trained), {d.get('truncated', 0):,} truncated, "
                         f"{d.get('dropped', 0):,} rows dropped")
    return lines


def event_lines(event: dict) -> list[tuple[str, str]]:
    """What a non-step event prints, as (text, style) pairs; nothing for types not shown line by line."""
    kind = event.get("type")
    if kind == "status":
        return [(f"{event.get('phase')}: {event.get('message')}", STYLES["status"])]
    if kind == "run_started":
        return [(line, "") for line in run_started_lines(event)]
    if kind == "eval":
        text = f"eval step {event.get('step')} epoch {number(event.get('epoch'), '.2f')} " \
               f"eval_loss {number(event.get('eval_loss'), '.4f')} {_eval_metrics_text(event.get('metrics'))}"
        return [(text.rstrip(), STYLES["eval"])]
    if kind == "checkpoint":
        return [(f"checkpoint step {event.get('step')}: {event.get('path')}", STYLES["checkpoint"])]
    if kind == "log":
        level = event.get("level", "info")
        return [(f"{level}: {event.get('message')}", STYLES.get(level, ""))]
    if kind == "error":
        return [(f"error ({event.get('kind')}): {event.get('message')}", STYLES["error"])]
    return []


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
                self.progress.update(self.task, times=f"elapsed {duration(run_time(self.summary))}")
        elif kind == "run_started":
            self.progress.update(self.task, total=event.get("total_steps"), count=f"0/{event.get('total_steps')}")
        elif kind == "step":
            self._step(self._logged.fill(event))
        elif kind == "run_finished":
            status = str(event.get("status"))
            self.progress.update(self.task, description=status, icon=(ICONS.get(status, "?"), STYLES.get(status, "")),
                                 times=f"elapsed {duration(run_time(self.summary))}")
            self.progress.detail = self._metrics
        for text, style in event_lines(event):
            self.print(text, style)

    def _step(self, event: dict) -> None:
        times = f"elapsed {duration(run_time(self.summary))}"
        if not self.stopping:
            times += f" eta {duration(self.summary.eta)}"
        self.progress.update(self.task, description="training", completed=event.get("step") or 0,
                             total=event.get("total_steps"), count=f"{event.get('step')}/{event.get('total_steps')}",
                             times=times)
        self._metrics = self.progress.detail = Text(" ".join(_metric_parts(event) + _memory_part(event)))

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
    console.print(f"following {handle.run_dir} (pid {handle.pid}); log: {handle.run_dir / launch.LOG_FILE}; "
                  f"Ctrl-C stops the run", highlight=False, soft_wrap=True)
    tail = EventTail(handle.run_dir / EVENTS_FILE)
    summary = RunSummary()
    if skip_existing:  # not shown again, but their time counts in the run's elapsed time
        summary = RunSummary.continuing(summarize(tail.poll()))
    with Interrupts() as interrupts:
        display: Display = LiveDisplay(console, summary) if console.is_terminal else PlainDisplay(console, summary)
        try:
            killed = _follow_events(handle, tail, summary, display, interrupts, poll_interval)
        finally:
            display.close()
    for text, style in summary_lines(summary, handle, killed=killed, events_lost=tail.vanished):
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
            launch.request(handle.run_dir, "stop")
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
    if not summary.finished and process_code in (EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED):
        return process_code
    if killed or summary.status in ("stopped", "killed"):
        return EXIT_INTERRUPTED
    if summary.status == "completed":
        return EXIT_OK
    return EXIT_USER_ERROR if summary.error_kind == "user" else EXIT_FAILED


def summary_lines(summary: RunSummary, handle: launch.RunHandle, *, killed: bool = False,
                  events_lost: bool = False) -> list[tuple[str, str]]:
    """The closing summary as (text, style) pairs. `events_lost`: events.jsonl was deleted while followed."""
    status = summary.status or ("killed" if killed else None)
    steps = f"{summary.step}/{summary.total_steps}" if summary.total_steps else str(summary.step)
    facts = [f"{steps} steps"]
    if summary.loss is not None:
        facts.append(f"final loss {summary.loss:.4f}")
    if summary.eval_loss is not None:
        facts.append(f"eval loss {summary.eval_loss:.4f}")
    facts.append(f"elapsed {duration(run_time(summary))}")
    lines = [(f"{status or 'ended'}: {', '.join(facts)}", STYLES.get(status or "failed", ""))]
    if status == "stopped" and summary.checkpoint:
        lines.append((f"checkpoint: {summary.checkpoint}", ""))
    lines += [(f"{name}: {path}", "") for name, path in (("output", summary.output), ("merged", summary.merged))
              if path]
    if status in (None, "failed"):
        lines.append((f"log: {summary.log or handle.run_dir / launch.LOG_FILE}", ""))
    if status is None and events_lost:
        lines += _events_lost_lines(handle)
    elif status is None:
        lines += _no_final_event_lines(handle)
    return lines


_OUTCOMES = {EXIT_OK: "completed", EXIT_FAILED: "failed", EXIT_USER_ERROR: "failed on a config or data problem",
             EXIT_INTERRUPTED: "stopped"}


def _events_lost_lines(handle: launch.RunHandle) -> list[tuple[str, str]]:
    """events.jsonl went away under the run: its end is unknown to the events, not to the process."""
    code = handle.returncode()
    lines = [(f"{handle.run_dir / EVENTS_FILE} was deleted while the run was going on, so its last events (the "
              "final one too) could not be read", STYLES["warning"])]
    if code is not None and code >= 0:
        lines.append((f"the training process ended with exit code {code}"
                      + (f" ({_OUTCOMES[code]})" if code in _OUTCOMES else "") + f"; see {handle.run_dir / launch.LOG_FILE}",
                      STYLES.get(_OUTCOMES.get(code, "failed"), "")))
    else:
        lines.append((f"the training process {end_reason(handle)}; see {handle.run_dir / launch.LOG_FILE}", ""))
    return lines


def end_reason(handle: launch.RunHandle) -> str:
    """How a run's process ended, as far as we can tell, when it wrote no final event."""
    code = handle.returncode()
    if code is None:
        how = "its exit code is unknown (it was started elsewhere)" if handle.process is None else "it is still running"
    elif code < 0:
        how = f"it was killed by {_signal_name(-code)}"
        if -code == signal.SIGKILL:
            how += " (often the system running out of memory)"
    else:
        how = f"exit code {code}"
    return how


def _no_final_event_lines(handle: launch.RunHandle) -> list[tuple[str, str]]:
    """The process died without saying why (OOM killer, segfault, kill -9): its return code and log tail."""
    lines = [(f"the run ended without a final event: {end_reason(handle)}", STYLES["failed"])]
    log_tail = tail_lines(handle.run_dir / launch.LOG_FILE, LOG_TAIL_LINES)
    if log_tail:
        lines.append((f"last {len(log_tail)} lines of {handle.run_dir / launch.LOG_FILE}:", ""))
        lines += [(f"  {line}", "dim") for line in log_tail]
    return lines


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def tail_lines(path: Path, count: int, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `count` lines of a text file (reading only its end), [] when it does not exist."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - max_bytes, 0))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [line.rstrip() for line in lines[-count:]]
