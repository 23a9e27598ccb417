"""The run directory's path and what is in it. Over SSH nothing can be "opened" on the user's desktop, so the
path is shown to select and also copied to the clipboard (OSC 52: works in most terminals, through tmux
with `set -g set-clipboard on`)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from engine import checkpoints, run_files
from tui.format import human_bytes

DESCRIPTIONS = {
    run_files.CONFIG_FILE: "the config it runs (paths absolute, secrets as ${VAR})",
    run_files.EVENTS_FILE: "the event stream the dashboard reads",
    run_files.LOG_FILE: "the training log",
    run_files.MODEL_CARD: "model card",
    run_files.MERGED_DIR: "the merged model",
    run_files.CONTROL_DIR: "stop/checkpoint requests",
    run_files.PARAMS_FILE: "AutoTrain's record of the parameters",
    run_files.TENSORBOARD_DIR: "TensorBoard logs",
    run_files.PID_FILE: "the training process's id",
    run_files.MANIFEST_FILE: "what llmtune wrote here",
    run_files.RESERVE_FILE: "room kept to report a full disk",
}


def _entry_size(path: Path) -> int | None:
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return None


SIZE_WIDTH = 5  # "1023M", "17.4G": sizes always show whole


def listing(run_dir: Path, limit: int = 14, width: int = 86) -> Text:
    """The entries of the run directory, one a line, `width` cells wide at most: the name (cut with … when
    long), its size (always whole) and what it is (cut first, left out when there is no room)."""
    try:
        entries = sorted(Path(run_dir).iterdir(), key=lambda p: (not p.is_dir(), p.name))
    except OSError:
        entries = []
    shown = entries if len(entries) <= limit else entries[:max(limit - 1, 1)]
    names = [entry.name + ("/" if entry.is_dir() else "") for entry in shown]
    name_width = min(max((len(n) for n in names), default=0), max(width - SIZE_WIDTH - 1, 4), 28)
    room = width - name_width - SIZE_WIDTH - 2  # for the description
    lines = []
    for entry, name in zip(shown, names):
        checkpoint = entry.name.startswith(run_files.CHECKPOINT_PREFIX)
        described = DESCRIPTIONS.get(entry.name) or (_checkpoint(entry) if checkpoint else "")
        line = Text.assemble(_cut(name, name_width).ljust(name_width), " ",
                             human_bytes(_entry_size(entry), compact=True).rjust(SIZE_WIDTH))
        if described and room >= 8:
            line.append(" " + _cut(described, room), style="dim")
        lines.append(line)
    if len(shown) < len(entries):
        lines.append(Text(f"… {len(entries) - len(shown)} more", style="dim"))
    text = Text("\n").join(lines)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _checkpoint(path: Path) -> str:
    marker = checkpoints.read_marker(path)
    if marker is None:
        return "a checkpoint, not complete" if not checkpoints.is_complete(path) else "a checkpoint"
    return "a checkpoint, kept" if marker.get("kept") is True else "a checkpoint"  # kept: asked for by hand


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


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
            yield Static(id="run-dir-files")
            hint = "copied to the clipboard (if your terminal allows it); " if self.copied else ""
            yield Static(f"{hint}in a shell: cd {_quoted(self.run_dir)}   ·   Esc closes", id="run-dir-hint",
                         markup=False)

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "run directory"
        self._list()

    def on_resize(self) -> None:
        self._list()

    def _list(self) -> None:
        """As many entries as the screen leaves room for, as wide as the dialog: the path, the hint and the
        sizes always show."""
        width = min(self.size.width or 80, 90) - 4  # the dialog's border and padding
        lines = [len(Text(str(static.render())).wrap(self.app.console, max(width, 1)))
                 for static in (self.query_one("#run-dir-path", Static), self.query_one("#run-dir-hint", Static))]
        room = (self.size.height or 24) - 2 - sum(lines) - 2  # borders, and the margins around the listing
        self.query_one("#run-dir-files", Static).update(listing(self.run_dir, max(room, 2), width))


def _quoted(path: Path) -> str:
    text = os.fspath(path)
    return f"'{text}'" if any(c in text for c in " '\"$`\\") else text
