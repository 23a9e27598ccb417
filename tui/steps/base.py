"""What every wizard step is: a container that fills its widgets from the config (`load`), writes them back
(`store`), and names the config keys it owns, so Next shows the engine's own problems for those keys.

Steps never re-implement a rule: `problems` asks engine.config, the same validator `--yes` uses.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.config import RunConfig, static_problems
from engine.errors import Problem


def step_problems(cfg: RunConfig, keys: tuple[str, ...], *, extra: list[Problem] | None = None) -> list[Problem]:
    """The engine's problems about `keys` (exact keys or prefixes ending in '.')."""
    def owned(key: str) -> bool:
        return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)

    return [p for p in static_problems(cfg) + (extra or []) if owned(p.key)]


def render_problems(problems: list[Problem]) -> Text:
    text = Text()
    for p in problems:
        text.append(p.render().replace("\n    fix:", "\n  fix:") + "\n", style="red")
    return text


class Step(VerticalScroll):
    """A wizard step. Subclasses set `title`, `keys`, and implement `load` / `store`."""

    title: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()  # the config keys this step edits

    DEFAULT_CSS = """
    Step { height: 1fr; padding: 0 1; }
    Step .problems { color: $error; height: auto; }
    Step .hint { color: $text-muted; height: auto; }
    """

    def load(self, cfg: RunConfig) -> None:
        """Fill the widgets from the config (each time the step is shown)."""

    def store(self, cfg: RunConfig) -> None:
        """Write the widgets' values into the config (Back and Next both call it: nothing entered is lost)."""

    def focus_first(self) -> None:
        """Put the focus on the step's first input when it is shown (keyboard first)."""
        for widget in self.query("Input, Select, RadioSet, DataTable, DirectoryTree, ListView, Button, Checkbox, "
                                 "Switch, TextArea"):
            if widget.focusable:
                widget.focus()
                return

    def problems(self, cfg: RunConfig) -> list[Problem]:
        """What blocks Next; by default the engine's problems about this step's keys."""
        return step_problems(cfg, self.keys)

    def show_problems(self, problems: list[Problem]) -> None:
        for widget in self.query(".problems").results(Static):
            widget.update(render_problems(problems))
            widget.display = bool(problems)
