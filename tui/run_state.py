"""The dashboard's model of a run, folded from its events: the summary, the metric series the plots draw (the
reward of an online RL run's sampled answers with its spread too), memory per GPU with peaks, and the notable
lines (status, eval, checkpoint, warnings, errors).

Re-attaching rebuilds exactly this from events.jsonl, so what a dashboard shows never depends on whether it
watched the run from the start. No Textual here: widgets read it, tests fold fixtures into it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.events import RunSummary
from tui.format import event_lines
from tui.series import Series

NOTABLE_LINES = 500
REWARD_METRIC = "reward"  # GRPO/RLOO: the mean reward of the sampled answers, in a step event's metrics


@dataclass
class GpuMemory:
    """One GPU as the last step event saw it; `peak` is the most seen so far (NVML used or torch's peak)."""

    index: int
    name: str | None = None
    used: int | None = None
    total: int | None = None
    reserved: int | None = None
    peak: int | None = None


class LoggedMetrics:
    """Step events between logging steps (progress only) carry loss, lr and grad_norm as null and no
    `metrics`: a display (the dashboard, `--yes`) shows the last logged values instead of blanks."""

    NAMES = ("loss", "lr", "grad_norm", "metrics")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def fill(self, event: dict) -> dict:
        """The step event with its null metrics replaced by the last logged ones."""
        for name in self.NAMES:
            if event.get(name) is not None:
                self.values[name] = event[name]
        return {**event, **self.values}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _max(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


class RunState:
    """Everything the dashboard shows, updated one event at a time (`update`)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.summary = RunSummary()
        self.train_loss = Series()
        self.eval_loss = Series()
        self.lr = Series()
        self.grad_norm = Series()
        # Online RL (GRPO, RLOO): the mean reward of the sampled answers, and it minus and plus their spread
        # (reward_std), the band its plot draws. `rewarded`: a step event carried a reward.
        self.reward = Series()
        self.reward_low = Series()
        self.reward_high = Series()
        self.rewarded = False
        self.last_step: dict | None = None  # the latest step event, null metrics filled with the last logged
        self._logged = LoggedMetrics()
        self.epochs: float | None = None
        self.tracker: dict | None = None  # where `log:` logs the run (run_started's `tracker`)
        self.checkpoint_step: int | None = None  # the step of the last checkpoint saved
        self.checkpoint_kept = False  # ... and whether it was asked for by hand (rotation leaves it)
        self.gpus: dict[int, GpuMemory] = {}
        self.rss: int | None = None
        self.rss_peak: int | None = None
        self.lines: deque[tuple[str, str]] = deque(maxlen=NOTABLE_LINES)
        self.events_read = 0

    @property
    def finished(self) -> bool:
        return self.summary.finished

    def update(self, events: list[dict]) -> None:
        for event in events:
            self.summary.update(event)
            self.events_read += 1
            kind = event.get("type")
            if kind == "step":
                self._step(event)
            elif kind == "eval":
                self._eval(event)
            elif kind == "run_started":
                self.epochs = _num(event.get("epochs"))
                self.tracker = event["tracker"] if isinstance(event.get("tracker"), dict) else None
            elif kind == "checkpoint":
                self.checkpoint_step = _int(event.get("step"))
                self.checkpoint_kept = event.get("kept") is True
            self.lines.extend(event_lines(event))

    def _step(self, event: dict) -> None:
        self.last_step = self._logged.fill(event)
        step = _num(event.get("step"))
        if step is None:
            return
        for series, name in ((self.train_loss, "loss"), (self.lr, "lr"), (self.grad_norm, "grad_norm")):
            value = _num(event.get(name))
            if value is not None:
                series.append(step, value)  # a NaN loss is counted by the series, not drawn
        self._reward(step, event.get("metrics"))
        self._memory(event.get("memory"))

    def _reward(self, step: float, metrics: Any) -> None:
        if not isinstance(metrics, dict) or REWARD_METRIC not in metrics:
            return
        self.rewarded = True
        if (reward := _num(metrics[REWARD_METRIC])) is None:
            return
        self.reward.append(step, reward)
        if (spread := _num(metrics.get("reward_std"))) is not None:
            self.reward_low.append(step, reward - spread)
            self.reward_high.append(step, reward + spread)

    def _eval(self, event: dict) -> None:
        step, loss = _num(event.get("step")), _num(event.get("eval_loss"))
        if step is not None and loss is not None:
            self.eval_loss.append(step, loss)

    def _memory(self, memory: Any) -> None:
        if not isinstance(memory, dict):
            return
        self.rss = _int(memory.get("rss"))
        self.rss_peak = _max(self.rss_peak, self.rss, _int(memory.get("rss_peak")))
        for reading in memory.get("gpus") or []:
            if not isinstance(reading, dict) or _int(reading.get("index")) is None:
                continue
            gpu = self.gpus.setdefault(reading["index"], GpuMemory(reading["index"]))
            gpu.name = reading.get("name") if isinstance(reading.get("name"), str) else gpu.name
            gpu.used, gpu.reserved = _int(reading.get("used")), _int(reading.get("reserved"))
            gpu.total = _int(reading.get("total")) or gpu.total
            gpu.peak = _max(gpu.peak, gpu.used, _int(reading.get("peak")))
