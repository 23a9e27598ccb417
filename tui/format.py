"""What every view says about a run, as text: numbers, sizes, durations, paths, metric values, the lines of a
run's events and its closing summary. Shared by `--yes` (tui.headless), the dashboard (tui.dashboard,
tui.widgets), `runs` (tui.runs_list) and the wizard (tui.steps, tui.dry_run), so the same fact reads the same
everywhere.

Pure functions: no Textual, no I/O. What the engine says in its own messages (sizes, counts, rough durations,
paths) lives in engine.units and is re-exported here; nothing in tui defines its own.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import RunSummary
from engine.units import human_bytes, human_count, human_duration, plural, shown_path

if TYPE_CHECKING:
    from engine.launch import RunHandle
    from engine.preview import LengthStats

__all__ = ["human_bytes", "human_count", "human_duration", "plural", "shown_path",  # engine.units
           "number", "hms", "short_number", "length_stats", "run_time", "steps_done",
           "headline_metrics", "memory_text", "step_metrics", "step_detail", "step_line", "event_lines",
           "run_started_lines", "summary_lines", "end_reason", "STYLES", "ICONS", "HEADLINE_METRICS"]

# Rich styles of a run's lines and outcomes, and the outcome's icon: `--yes` and the dashboard alike.
STYLES = {"info": "", "warning": "yellow", "error": "red", "status": "dim", "eval": "cyan",
          "checkpoint": "green", "completed": "bold green", "stopped": "bold yellow",
          "killed": "bold yellow", "failed": "bold red"}
ICONS = {"completed": "✔", "stopped": "■", "killed": "■", "failed": "✖"}
# The trainer's own metrics worth a glance, in this order (at most HEADLINE_COUNT shown): name in the step
# event's `metrics`, label, format. DPO and ORPO log rewards/*, a reward model accuracy and margin, SFT its
# token accuracy (DPO logs one too: the reward accuracy comes first); GRPO and RLOO the mean reward of their sampled
# answers and their spread (reward_std), the KL to the reference and the answers' mean length.
HEADLINE_METRICS = (("rewards/margins", "margin", ".3g"), ("rewards/accuracies", "acc", ".0%"),
                    ("accuracy", "acc", ".0%"), ("margin", "margin", ".3g"),
                    ("mean_token_accuracy", "tok acc", ".1%"), ("reward", "reward", ".3g"),
                    ("reward_std", "spread", ".2g"), ("kl", "kl", ".2g"), ("completions/mean_length", "len", ".0f"))
HEADLINE_COUNT = 2


# ---- values -----------------------------------------------------------------------------------

def _real(value: Any) -> bool:
    """A number read from an event: JSON's true/false are not one."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value: Any, spec: str) -> str:
    """A metric as text in `spec` (".4f", ".2e", ",.0f"); "-" when it is missing (None, absent, not a number)."""
    return format(value, spec) if _real(value) else "-"


def hms(seconds: float | None) -> str:
    """Elapsed time or an ETA as a clock: 0:01:02, 26:00:00; "-:--:--" when unknown (None, negative, NaN)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def short_number(value: float, width: int = 7) -> str:
    """A number in at most `width` characters where possible (a plot's axis): 7.6, 0.25, 0.00123, 1.2e-5,
    1.23e4."""
    if value == 0:
        return "0"
    text = ""
    for digits in (3, 2, 1):
        text = f"{value:.{digits}g}"
        if "e" in text:  # 1.2e-05 -> 1.2e-5
            mantissa, exponent = text.split("e")
            text = f"{mantissa}e{int(exponent)}"
        if len(text) <= width:
            break
    return text


def length_stats(stats: LengthStats) -> str:
    """A split's token lengths: "min 12, median 48.5, p95 120, max 256"."""
    return f"min {stats.min}, median {stats.median:g}, p95 {stats.p95}, max {stats.max}"


# ---- a run's numbers --------------------------------------------------------------------------

def run_time(summary: RunSummary) -> float | None:
    """The run's elapsed time, as every view shows it: wall time summed over its segments (RunSummary.run_time);
    from the final metrics or the training time when the events carry no times."""
    if summary.run_time is not None:
        return summary.run_time
    runtime = summary.metrics.get("train_runtime")
    if _real(runtime):
        return float(runtime)
    return summary.elapsed


def steps_done(summary: RunSummary) -> str:
    """The steps done out of the total ("12/120"), or only those done when the total is not known yet."""
    return f"{summary.step}/{summary.total_steps}" if summary.total_steps else str(summary.step)


def headline_metrics(metrics: Any, count: int = HEADLINE_COUNT) -> list[tuple[str, str]]:
    """The trainer's most telling metrics in a step event's `metrics`, as (label, value) pairs."""
    if not isinstance(metrics, dict):
        return []
    shown: list[tuple[str, str]] = []
    labels: set[str] = set()
    for name, label, spec in HEADLINE_METRICS:
        value = metrics.get(name)
        if label in labels or not _real(value):
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
        if _real(gpu.get(key)):
            return gpu[key]
    return None


def memory_text(memory: Any) -> str | None:
    """The most used GPU's memory out of its total (18.6G/79.2G), else the process's RSS."""
    if not isinstance(memory, dict):
        return None
    gpus = [g for g in memory.get("gpus") or [] if _gpu_used(g) is not None]
    if gpus:
        gpu = max(gpus, key=_gpu_used)
        total = f"/{human_bytes(gpu['total'], compact=True)}" if gpu.get("total") else ""
        return f"{human_bytes(_gpu_used(gpu), compact=True)}{total}"
    return human_bytes(memory["rss"], compact=True) if memory.get("rss") is not None else None


# ---- a run's lines ----------------------------------------------------------------------------

def step_metrics(event: dict) -> list[str]:
    """A step event's metrics: epoch, loss, the trainer's headline metrics, lr, throughput."""
    return [f"epoch {number(event.get('epoch'), '.2f')}", f"loss {number(event.get('loss'), '.4f')}",
            *(f"{label} {value}" for label, value in headline_metrics(event.get("metrics"))),
            f"lr {number(event.get('lr'), '.2e')}", f"tok/s {number(event.get('tokens_per_s'), '.0f')}"]


def _memory_part(event: dict) -> list[str]:
    memory = memory_text(event.get("memory"))
    return [f"mem {memory}"] if memory else []


def step_detail(event: dict) -> str:
    """The metrics and memory of a step, under a progress bar that shows the step and times itself."""
    return " ".join(step_metrics(event) + _memory_part(event))


def step_line(event: dict, eta: float | None = None) -> str:
    """`step 10/100 epoch 0.10 loss 2.3456 lr 1.20e-04 tok/s 1234 eta 0:01:02 mem 18.6G/79.2G`; the trainer's
    headline metrics after the loss when it logs any (`loss 0.6931 margin 0.0123 acc 50% lr ...`)."""
    parts = [f"step {event.get('step')}/{event.get('total_steps')}", *step_metrics(event),
             f"eta {hms(eta)}", *_memory_part(event)]
    return " ".join(parts)


def _eval_metrics_text(metrics: Any) -> str:
    """Numeric eval metrics, less the timing ones (eval_runtime, eval_samples_per_second) nobody reads."""
    if not isinstance(metrics, dict):
        return ""
    shown = [f"{k} {number(v, '.4g')}" for k, v in metrics.items()
             if _real(v) and not (k.endswith("runtime") or k.endswith("_per_second"))]
    return " ".join(shown)


def run_started_lines(event: dict) -> list[str]:
    device = event.get("device") or {}
    where = f"{device.get('kind', '?')} {device.get('name', '')}".strip()
    if (device.get("count") or 1) > 1:
        where += f" x{device['count']}"
    lines = [f"run started: {event.get('trainer')} on {event.get('base_model')} ({where}), "
             f"{plural(event.get('total_steps'), 'step')}, {plural(event.get('epochs'), 'epoch')}, "
             f"batch {event.get('batch_size')}"]
    launch = event.get("launch") or {}
    if isinstance(launch, dict) and (launch.get("world_size") or 1) > 1:
        lines[0] += f", {launch['world_size']} processes ({launch.get('backend')})"
    for split, d in (event.get("data") or {}).items():
        if isinstance(d, dict):
            trained = f"{d.get('trained_tokens', 0):,} trained" if d.get("trained_tokens") else "answers sampled"
            lines.append(f"data {split}: {d.get('examples', 0):,} examples, {d.get('tokens', 0):,} tokens "
                         f"({trained}), {d.get('truncated', 0):,} truncated, {d.get('dropped', 0):,} rows dropped")
    return lines + tracker_lines(event.get("tracker"))


def tracker_lines(tracker: object) -> list[str]:
    """Where `log:` logs the run (the run_started `tracker` field): the offline directory, the URL, the file."""
    if not isinstance(tracker, dict) or not tracker.get("where"):
        return []
    lines = [f"tracker: {tracker.get('label')} ({tracker.get('mode')}): {tracker['where']}"]
    return lines + ([f"tracker: {tracker['hint']}"] if tracker.get("hint") else [])


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


# ---- a run's end ------------------------------------------------------------------------------

def summary_lines(summary: RunSummary, log: Path, *, killed: bool = False) -> list[tuple[str, str]]:
    """The closing summary as (text, style) pairs: outcome, steps, losses, elapsed, where the results are.
    `log`: the run's train.log, named when the run failed or its end is unknown."""
    status = summary.status or ("killed" if killed else None)
    facts = [f"{steps_done(summary)} steps"]
    if summary.loss is not None:
        facts.append(f"final loss {summary.loss:.4f}")
    if summary.eval_loss is not None:
        facts.append(f"eval loss {summary.eval_loss:.4f}")
    facts.append(f"elapsed {hms(run_time(summary))}")
    lines = [(f"{status or 'ended'}: {', '.join(facts)}", STYLES.get(status or "failed", ""))]
    if status == "stopped" and summary.checkpoint:
        lines.append((f"checkpoint: {summary.checkpoint}", ""))
    lines += [(f"{name}: {path}", "") for name, path in (("output", summary.output), ("merged", summary.merged))
              if path]
    if status in (None, "failed"):
        lines.append((f"log: {summary.log or log}", ""))
    return lines


def end_reason(handle: RunHandle) -> str:
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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
