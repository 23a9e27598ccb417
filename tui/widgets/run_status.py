"""The dashboard's top lines: phase and progress, times and throughput, the latest metrics; and below them,
once the run has ended, its outcome (where the model is, or the error and the log that holds the details).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine import checkpoints, launch
from tui.headless import duration, eta, number
from tui.run_state import RunState, shown_path

ICONS = {"completed": ("✔", "bold green"), "stopped": ("■", "bold yellow"), "killed": ("■", "bold yellow"),
         "failed": ("✖", "bold red")}


@dataclass
class Liveness:
    """What the dashboard knows of the process, beyond the events."""

    alive: bool = True
    reachable: bool = True          # False: no process of ours (a finished run, or its pid is gone)
    stop_requested: bool = False
    checkpoint_requested: bool = False  # by this dashboard: its checkpoint event is announced
    ended_without_event: str | None = None  # how the process ended when it wrote no run_finished


def _count(value: float | None, spec: str = ",.0f") -> str:
    return number(value, spec)


def phase_line(state: RunState, live: Liveness, width: int) -> RenderableType:
    s = state.summary
    if s.status is not None:
        icon, style = ICONS.get(s.status, ("?", "bold"))
        steps = f"{s.step}/{s.total_steps}" if s.total_steps else str(s.step)
        return Text.assemble((f"{icon} {s.status}", style), f"  step {steps}")
    if live.ended_without_event:
        return Text.assemble(("✖ ended without a final event", "bold red"), f"  step {s.step}")
    if state.last_step is None:
        phase = s.phase or "starting"
        text = Text.assemble(("◌ ", "bold"), (phase, "bold"), f": {s.message}" if s.message else "")
        if live.stop_requested:
            text.append("  stopping…", style="yellow")
        text.truncate(width, overflow="ellipsis")
        return text
    total = s.total_steps or 0
    label = Text.assemble(("▶ training" if not live.stop_requested else "■ stopping…",
                           "bold green" if not live.stop_requested else "bold yellow"),
                          f"  step {s.step}/{total or '?'}")
    percent = Text(f" {100 * s.step / total:3.0f}%" if total else "")
    bar_width = max(width - label.cell_len - percent.cell_len - 2, 0)
    grid = Table.grid(padding=(0, 1))
    grid.add_row(label, ProgressBar(total=total or None, completed=s.step, width=bar_width), percent)
    return grid if bar_width >= 8 else label


def times_line(state: RunState) -> Text:
    s, event = state.summary, state.last_step or {}
    epochs = f"/{number(state.epochs, 'g')}" if state.epochs else ""
    parts = [f"epoch {number(s.epoch, '.2f')}{epochs}", f"elapsed {duration(_wall(state))}"]
    if not s.finished:
        parts.append(f"eta {duration(eta(event)) if event else '-:--:--'}")
    parts += [f"tok/s {_count(event.get('tokens_per_s'))}", f"trained tok/s {_count(event.get('trained_tokens_per_s'))}"]
    return Text("  ".join(parts), style="dim" if state.last_step is None else "")


def metrics_line(state: RunState) -> Text:
    s, event = state.summary, state.last_step or {}
    text = Text()
    for label, value, spec, style in (("loss", s.loss, ".4f", "cyan"), ("eval", s.eval_loss, ".4f", "magenta"),
                                      ("lr", event.get("lr"), ".2e", ""), ("grad norm", event.get("grad_norm"), ".3g", "")):
        if text:
            text.append("  ")
        text.append(f"{label} ", style="dim")
        text.append(number(value, spec), style=style)
    if state.checkpoint_step is not None:
        text.append("  checkpoint ", style="dim")
        text.append(f"{state.checkpoint_step}")
    return text


def _wall(state: RunState) -> float | None:
    """The whole run's wall time once it has ended; while it runs, the training time of the last step
    (what the ETA is computed from, and the same on every re-attach)."""
    s = state.summary
    if s.ended is not None and s.started is not None:
        return s.ended - s.started
    return s.elapsed


def _fit(text: str, width: int, lines: int) -> str:
    """At most `lines` lines of `width` (a long error keeps room for the log path below it)."""
    room = max(width * lines - 2, 10)
    return text if len(text) <= room else text[: room - 1].rstrip() + "…"


def outcome(state: RunState, live: Liveness, width: int = 78, lines: int = 4) -> RenderableType | None:
    """Nothing while the run goes on; then where its result is, or what went wrong and where to read more
    (in at most `lines` lines of `width`)."""
    s = state.summary
    log = shown_path(s.log or state.run_dir / launch.LOG_FILE)
    run = shown_path(state.run_dir)
    if s.status == "completed":
        paths = [f"{name}: {shown_path(path)}" for name, path in (("output", s.output), ("merged", s.merged)) if path]
        return Text("   ".join(paths) or "completed", style="green")
    # Only a complete checkpoint can be resumed from (a full disk or a kill can leave a half-written one).
    resume = (f"continue it: llmtune-tui resume {run}" if checkpoints.last_complete(state.run_dir) is not None
              else "no complete checkpoint to continue from")
    if s.status in ("stopped", "killed"):
        saved = f"checkpoint: {shown_path(s.checkpoint)}   " if s.checkpoint and s.status == "stopped" else ""
        return Text.assemble(saved, (resume, "dim"))
    if s.status == "failed" or (s.error and not live.alive):
        kind = f" ({s.error_kind})" if s.error_kind else ""
        head = f"failed{kind}: "
        message = _fit(head + (s.error or "the run ended with an error"), width, lines - 1)[len(head):]
        return Group(Text.assemble((head, "bold red"), message), Text(f"log: {log}", style="dim"))
    if live.ended_without_event:
        return Group(Text.assemble(("the run ended without a final event: ", "bold red"), live.ended_without_event),
                     Text(f"log: {log}  ·  {resume}", style="dim"))
    return None


class RunStatus(Static):
    """Three lines: phase and progress bar; epoch, times and throughput; loss, eval loss, lr, grad norm."""

    DEFAULT_CSS = "RunStatus { height: 3; padding: 0 1; }"

    def show(self, state: RunState, live: Liveness) -> None:
        width = max(self.size.width - 2, 20)
        self.update(Group(phase_line(state, live, width), times_line(state), metrics_line(state)))


class RunOutcome(Static):
    """The run's end: hidden while it goes on."""

    DEFAULT_CSS = "RunOutcome { height: auto; max-height: 4; padding: 0 1; display: none; }\n" \
                  "Screen.-tall RunOutcome { max-height: 6; }"

    def show(self, state: RunState, live: Liveness) -> None:
        lines = 6 if self.screen.has_class("-tall") else 4
        renderable = outcome(state, live, max(self.size.width - 3, 20) if self.size.width else 76, lines)
        self.display = renderable is not None
        if renderable is not None:
            self.set_class(state.summary.status == "completed", "-completed")
            self.set_class(state.summary.status in ("stopped", "killed"), "-stopped")
            self.update(renderable)
