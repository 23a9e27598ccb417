"""`llmtune-tui runs [DIR]`: the runs under a directory, each folded from its events.jsonl: status, trainer,
progress, last loss (and last reward, for online RL runs), eval loss, and when it last wrote. A run whose process
is gone without a final event is shown as `ended?` (killed hard, or the machine went down): its train.log says
more."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine import launch
from engine.events import RunSummary, read_events_counted, summarize
from engine.run_files import EVENTS_FILE, RunDir
from tui.format import number, steps_done


def find_runs(directory: Path) -> list[Path]:
    """`directory` itself when it is a run, else the runs one or two levels below it."""
    if RunDir(directory).events.exists():
        return [directory]
    found = {p.parent for pattern in (f"*/{EVENTS_FILE}", f"*/*/{EVENTS_FILE}") for p in directory.glob(pattern)}
    return sorted(found, key=lambda d: RunDir(d).events.stat().st_mtime, reverse=True)


def run_status(run_dir: Path, summary: RunSummary) -> str:
    if summary.status is not None:
        return summary.status
    return "running" if launch.attach(run_dir) is not None else "ended?"


def print_runs(directory: Path, console: Console | None = None) -> int:
    console = console or Console(highlight=False)
    runs = find_runs(directory)
    if not runs:
        console.print(f"no runs under {directory} (a run is a directory holding {EVENTS_FILE})")
        return 0
    skipped: list[str] = []
    rows: list[tuple[Path, RunSummary, str]] = []
    for run_dir in runs:
        try:
            events, bad = read_events_counted(RunDir(run_dir).events)
        except OSError as e:  # gone or unreadable since it was listed: say so, list the others
            events, bad = [], 0
            skipped.append(f"{_shown(run_dir, directory)}: cannot read {EVENTS_FILE} ({e.strerror or e})")
        if bad:
            skipped.append(f"{_shown(run_dir, directory)}: {bad} line(s) of {EVENTS_FILE} are not readable events "
                           "and were skipped")
        when = events[-1].get("time") if events else None
        last = dt.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M") if isinstance(when, (int, float)) else "-"
        rows.append((run_dir, summarize(events), last))
    # The reward column only when a run has one: a listing of supervised runs stays as narrow as it was.
    rewarded = any(summary.reward is not None for _, summary, _ in rows)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("run", "status", "trainer", "step", "loss", *(("reward",) if rewarded else ()), "eval loss",
                 "last event"):
        # a long run name folds onto more lines: cut with an ellipsis, nested runs would all read "reward-…"
        table.add_column(name, no_wrap=name != "run", overflow="fold" if name == "run" else "ellipsis")
    for run_dir, summary, last in rows:
        reward = (number(summary.reward, ".3g"),) if rewarded else ()
        table.add_row(_shown(run_dir, directory), run_status(run_dir, summary), summary.trainer or "-",
                      steps_done(summary), number(summary.loss, ".4f"), *reward, number(summary.eval_loss, ".4f"),
                      last)
    console.print(table)
    for line in skipped:
        console.print(f"note: {line}", style="yellow", soft_wrap=True)
    return 0


def _shown(run_dir: Path, directory: Path) -> str:
    try:
        return str(run_dir.relative_to(directory)) if run_dir != directory else str(run_dir)
    except ValueError:
        return str(run_dir)

