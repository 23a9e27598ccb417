"""A modal to pick a directory (or a file) from a tree, or by typing its path; Enter chooses, Esc cancels."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Static

from tui.format import shown_path


class PickerTree(DirectoryTree):
    """A DirectoryTree where Enter chooses the highlighted entry (Space, → or a click opens a folder); dot files
    are hidden."""

    BINDINGS = [
        Binding("enter", "choose", "Choose"),
        Binding("right", "open", "Open", show=False),
        Binding("left", "close", "Close", show=False),
        Binding("backspace", "parent", "Parent", show=False),
    ]

    class Chosen(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    def __init__(self, path: Path, *, dirs_only: bool, suffixes: tuple[str, ...] | None, id: str | None = None):
        self.dirs_only = dirs_only
        self.suffixes = suffixes
        super().__init__(path, id=id)

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and self._shown(p)]

    def _shown(self, path: Path) -> bool:
        if self._safe_is_dir(path):
            return True
        return not self.dirs_only and (self.suffixes is None or path.suffix.lower() in self.suffixes)

    def action_choose(self) -> None:
        node = self.cursor_node
        if node is not None and node.data is not None:
            self.post_message(self.Chosen(Path(node.data.path)))

    def action_open(self) -> None:
        if self.cursor_node is not None and self.cursor_node.allow_expand:
            self.cursor_node.expand()

    def action_close(self) -> None:
        node = self.cursor_node
        if node is not None and node.is_expanded:
            node.collapse()
        elif node is not None and node.parent is not None:
            self.move_cursor(node.parent)

    def action_parent(self) -> None:
        self.path = Path(self.path).absolute().parent


class PathPicker(ModalScreen[Path | None]):
    """Dismisses with the chosen absolute path, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    PathPicker { align: center middle; }
    PathPicker > Vertical { width: 76; max-width: 100%; height: 21; max-height: 100%; border: round $accent;
                            background: $surface; padding: 0 1; }
    PathPicker #picker-title { height: 1; text-style: bold; }
    PathPicker Horizontal { height: 3; }
    PathPicker #picker-up { min-width: 6; width: 6; }
    PathPicker #picker-path { width: 1fr; }
    PathPicker #picker-choose { min-width: 10; }
    PathPicker PickerTree { height: 1fr; }
    PathPicker #picker-hint { height: 1; color: $text-muted; }
    PathPicker #picker-error { height: auto; color: $error; }
    """

    def __init__(self, start: Path, *, dirs_only: bool = True, suffixes: tuple[str, ...] | None = None,
                 title: str | None = None) -> None:
        super().__init__()
        self.start = _existing_dir(start)
        self.dirs_only = dirs_only
        self.suffixes = suffixes
        self.title_text = title or ("Choose a directory" if dirs_only else "Choose a file or a directory")

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, id="picker-title")
            with Horizontal():
                yield Button("..", id="picker-up", tooltip="the parent directory (Backspace in the tree)")
                yield Input(shown_path(self.start), id="picker-path", placeholder="type a path, Enter chooses")
                yield Button("Choose", id="picker-choose", variant="primary")
            yield PickerTree(self.start, dirs_only=self.dirs_only, suffixes=self.suffixes, id="picker-tree")
            yield Static("Enter choose · Space/→ open · ← close · Backspace parent · Esc cancel",
                         id="picker-hint")
            yield Static(id="picker-error")

    def on_mount(self) -> None:
        self.query_one(PickerTree).focus()

    @on(PickerTree.NodeHighlighted)
    def _highlighted(self, event: PickerTree.NodeHighlighted) -> None:
        if event.node.data is not None:
            self.query_one("#picker-path", Input).value = shown_path(Path(event.node.data.path))

    @on(PickerTree.Chosen)
    def _chosen(self, event: PickerTree.Chosen) -> None:
        self._choose(event.path)

    @on(Input.Submitted, "#picker-path")
    def _typed(self, event: Input.Submitted) -> None:
        self._choose(Path(event.value.strip() or ".").expanduser())

    @on(Button.Pressed, "#picker-choose")
    def _choose_pressed(self) -> None:
        self._choose(Path(self.query_one("#picker-path", Input).value.strip() or ".").expanduser())

    @on(Button.Pressed, "#picker-up")
    def _up(self) -> None:
        self.query_one(PickerTree).action_parent()

    def _choose(self, path: Path) -> None:
        path = path.absolute()
        error = self._why_not(path)
        self.query_one("#picker-error", Static).update(error or "")
        if error is None:
            self.dismiss(path)

    def _why_not(self, path: Path) -> str | None:
        if not path.exists():
            return f"{shown_path(path)}: no such file or directory"
        if self.dirs_only and not path.is_dir():
            return f"{shown_path(path)} is a file; pick a directory"
        return None

    def action_cancel(self) -> None:
        self.dismiss(None)


def _existing_dir(path: Path) -> Path:
    """The nearest existing directory at or above `path` (where to start browsing)."""
    path = path.expanduser().absolute()
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path
