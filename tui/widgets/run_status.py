"""The dashboard's top lines: phase and progress, times and throughput, the latest metrics; and below them,
once the run has ended, its outcome (where the model is, or the error and the log that holds the details).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich._wrap import divide_line
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine import checkpoints
from engine.run_files import RunDir
from tui.format import ICONS as STATUS_ICONS
from tui.format import STYLES, headline_metrics, hms, number, run_time, shown_path, steps_done
from tui.run_state import RunState

ICONS = {status: (icon, STYLES[status]) for status, icon in STATUS_ICONS.items()}
GAP = "  "


@dataclass
class Liveness:
    """What the dashboard knows of the process, beyond the events."""

    alive: bool = True
    reachable: bool = True          # False: no process of ours (a finished run, or its pid is gone)
    stop_requested: bool = False
    checkpoint_requested: bool = False  # by this dashboard: its checkpoint event is announced
    ended_without_event: str | None = None  # how the process ended when it wrote no run_finished


def training(state: RunState, live: Liveness) -> bool:
    """Whether the run is going on, as far as anyone can tell: not ended (no final event, its process not
    seen gone) and not asked to stop. Only then do an ETA, and the stop and checkpoint keys, mean anything."""
    return not state.finished and not live.ended_without_event and not live.stop_requested


def fit(parts: list[tuple[Text, int]], width: int | None) -> Text:
    """Parts joined by GAP, those of the highest rank left out first (the last of them first) until the line
    fits `width` (None: all of them). Rank 0 always stays."""
    kept = list(parts)
    while width is not None and len(kept) > 1 and _joined_length(kept) > width:
        worst = max(rank for _, rank in kept)
        if worst == 0:
            break
        drop = max(i for i, (_, rank) in enumerate(kept) if rank == worst)
        del kept[drop]
    text = Text(GAP).join(part for part, _ in kept)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _joined_length(parts: list[tuple[Text, int]]) -> int:
    return sum(part.cell_len for part, _ in parts) + len(GAP) * (len(parts) - 1)


def _labelled(label: str, value: str, style: str = "") -> Text:
    return Text.assemble((f"{label} ", "dim"), (value, style))


def phase_line(state: RunState, live: Liveness, width: int) -> RenderableType:
    s = state.summary
    if s.status is not None:
        icon, style = ICONS.get(s.status, ("?", "bold"))
        return Text.assemble((f"{icon} {s.status}", style), f"  step {steps_done(s)}")
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


def times_line(state: RunState, live: Liveness | None = None, width: int | None = None) -> Text:
    """Epoch, elapsed (RunSummary.run_time, as `--yes` shows it), ETA while training, throughput; what does
    not fit `width` is left out, the trained tokens/s first."""
    s, event = state.summary, state.last_step or {}
    # max_steps can end a run before its epochs, or after them (run_started's `epochs` is the config's)
    epochs = f"/{number(state.epochs, 'g')}" if state.epochs and (s.epoch or 0) <= state.epochs else ""
    parts = [(Text(f"epoch {number(s.epoch, '.2f')}{epochs}"), 1), (Text(f"elapsed {hms(run_time(s))}"), 0)]
    if training(state, live or Liveness()) and s.phase in ("training", None):  # not while saving, merging
        parts.append((Text(f"eta {hms(s.eta if event else None)}"), 0))
    parts += [(Text(f"tok/s {number(event.get('tokens_per_s'), ',.0f')}"), 2),
              (Text(f"trained tok/s {number(event.get('trained_tokens_per_s'), ',.0f')}"), 3)]
    text = fit(parts, width)
    if state.last_step is None:
        text.stylize("dim")
    return text


def metrics_line(state: RunState, width: int | None = None) -> Text:
    """Loss, eval loss, the trainer's own headline metrics (DPO's reward margin and accuracy, ...), lr, grad
    norm and the last checkpoint; lr and grad norm (the side panel shows them too) go first when narrow."""
    s, event = state.summary, state.last_step or {}
    parts = [(_labelled("loss", number(s.loss, ".4f"), "cyan"), 0),
             (_labelled("eval", number(s.eval_loss, ".4f"), "magenta"), 1)]
    parts += [(_labelled(label, value, "green"), 1) for label, value in headline_metrics(event.get("metrics"))]
    parts += [(_labelled("lr", number(event.get("lr"), ".2e")), 3),
              (_labelled("grad norm", number(event.get("grad_norm"), ".3g")), 3)]
    if state.checkpoint_step is not None:
        parts.append((_labelled("checkpoint", f"{state.checkpoint_step}"), 2))
    return fit(parts, width)


def _fit(text: str, width: int, lines: int) -> str:
    """At most `lines` lines of `width` as the terminal wraps them (at spaces), the last one ending in … when
    cut (a long error keeps room for the log path below it)."""
    breaks = divide_line(text, max(width, 1))  # where each line after the first begins
    if len(breaks) < lines:
        return text
    start, end = (breaks[lines - 2] if lines > 1 else 0), breaks[lines - 1]
    last = text[start:end].rstrip()[: max(width - 1, 1)]
    return text[:start] + last.rstrip() + "…"


def outcome(state: RunState, live: Liveness, width: int = 78, lines: int = 4) -> RenderableType | None:
    """Nothing while the run goes on; then where its result is, or what went wrong and where to read more
    (in at most `lines` lines of `width`)."""
    s = state.summary
    log = shown_path(s.log or RunDir(state.run_dir).log)
    run = shown_path(state.run_dir)
    if s.status == "completed":
        paths = [f"{name}: {shown_path(path)}" for name, path in (("output", s.output), ("merged", s.merged)) if path]
        if len("   ".join(paths)) <= width:
            return Text("   ".join(paths) or "completed", style="green")
        return Group(*(Text(path, style="green", no_wrap=True, overflow="ellipsis") for path in paths))
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


class _Shown(Static):
    """A view of the run laid out for its width: drawn again when its size changes."""

    _shown: tuple[RunState, Liveness] | None = None

    def show(self, state: RunState, live: Liveness) -> None:
        self._shown = state, live
        self.draw(state, live)

    def draw(self, state: RunState, live: Liveness) -> None:
        raise NotImplementedError

    def on_resize(self) -> None:
        if self._shown is not None:
            self.draw(*self._shown)


class RunStatus(_Shown):
    """Three lines: phase and progress bar; epoch, times and throughput; loss, eval loss, the trainer's own
    metrics, lr, grad norm. Each fits the width: what matters least is left out first."""

    DEFAULT_CSS = "RunStatus { height: 3; padding: 0 1; }"

    def draw(self, state: RunState, live: Liveness) -> None:
        width = max(self.size.width, 20)  # the content's width: padding left out
        self.update(Group(phase_line(state, live, width - 2), times_line(state, live, width),
                          metrics_line(state, width)))


class RunOutcome(_Shown):
    """The run's end: hidden while it goes on."""

    DEFAULT_CSS = "RunOutcome { height: auto; max-height: 4; padding: 0 1; display: none; }\n" \
                  "Screen.-tall RunOutcome { max-height: 6; }\n" \
                  "Screen.-low RunOutcome { max-height: 3; }"

    def draw(self, state: RunState, live: Liveness) -> None:
        lines = 6 if self.screen.has_class("-tall") else 3 if self.screen.has_class("-low") else 4
        width = self.size.width  # the content's width: border and padding left out (0 before its first layout)
        renderable = outcome(state, live, max(width, 20) if width else 76, lines)
        self.display = renderable is not None
        if renderable is not None:
            self.set_class(state.summary.status == "completed", "-completed")
            self.set_class(state.summary.status in ("stopped", "killed"), "-stopped")
            self.update(renderable)
