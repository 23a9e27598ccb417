"""The run directory's path and what is in it. Over SSH nothing can be "opened" on the user's desktop, so the
path is shown to select and also copied to the clipboard (OSC 52: works in most terminals, through tmux
with `set -g set-clipboard on`)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.widgets.memory_panel import size

DESCRIPTIONS = {"config.yaml": "the config it runs (paths absolute, secrets as ${VAR})",
                "events.jsonl": "the event stream the dashboard reads", "train.log": "the training log",
                "README.md": "model card", "merged": "the merged model", "control": "stop/checkpoint requests",
                "training_params.json": "AutoTrain's record of the parameters", "runs": "TensorBoard logs"}


def _entry_size(path: Path) -> int | None:
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return None


def listing(run_dir: Path, limit: int = 14) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(style="dim", overflow="ellipsis", no_wrap=True)
    try:
        entries = sorted(Path(run_dir).iterdir(), key=lambda p: (not p.is_dir(), p.name))
    except OSError:
        entries = []
    for entry in entries[:limit]:
        name = entry.name + ("/" if entry.is_dir() else "")
        described = DESCRIPTIONS.get(entry.name) or ("a checkpoint" if entry.name.startswith("checkpoint-") else "")
        table.add_row(name, size(_entry_size(entry)), described)
    if len(entries) > limit:
        table.add_row(Text(f"… {len(entries) - limit} more", style="dim"), "", "")
    return table


class RunDirDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,o,q,enter", "dismiss", "Close")]
    DEFAULT_CSS = """
    RunDirDialog { align: center middle; }
    RunDirDialog > Vertical { width: 90; max-width: 100%; height: auto; max-height: 100%;
                              border: round $accent; background: $surface; padding: 0 1; }
    RunDirDialog #run-dir-path { height: auto; margin-bottom: 1; }
    RunDirDialog #run-dir-files { height: auto; }
    RunDirDialog #run-dir-hint { height: auto; color: $text-muted; margin-top: 1; }
    """

    def __init__(self, run_dir: Path, *, copied: bool) -> None:
        super().__init__()
        self.run_dir = Path(run_dir).absolute()
        self.copied = copied

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(str(self.run_dir), style="bold"), id="run-dir-path")
            yield Static(listing(self.run_dir), id="run-dir-files")
            hint = "copied to the clipboard (if your terminal allows it); " if self.copied else ""
            yield Static(f"{hint}in a shell: cd {_quoted(self.run_dir)}   ·   Esc closes", id="run-dir-hint",
                         markup=False)

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "run directory"


def _quoted(path: Path) -> str:
    text = os.fspath(path)
    return f"'{text}'" if any(c in text for c in " '\"$`\\") else text
