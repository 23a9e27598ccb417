"""One-line form rows for the Columns and Parameters steps: a label on the left, an input on the right, and a
line under them for the engine's problems about that field. Compact, so a screenful of fields fits 80x24."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Input, Label, Static

from engine.errors import Problem


def compact_input(value: str = "", *, placeholder: str = "", id: str | None = None) -> Input:
    """A one-line Input. app.tcss sizes every Input to 3 rows and app CSS outranks Textual's compact default,
    so the height is set on the widget itself."""
    widget = Input(value, placeholder=placeholder, id=id, compact=True, select_on_focus=False)
    widget.styles.height = 1
    return widget


class FieldRow(Vertical):
    """`label  [widget]` on one line, with the field's problems and warnings under it (hidden when none)."""

    DEFAULT_CSS = """
    FieldRow { height: auto; }
    FieldRow > Horizontal { height: auto; }
    FieldRow .field-label { width: 32; height: 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }
    FieldRow Input, FieldRow Select { width: 1fr; }
    FieldRow .field-problem { height: auto; padding-left: 2; display: none; }
    """

    def __init__(self, label: str | Text, widget: Widget, *, key: str, tooltip: str | None = None,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.key = key  # the config key the field edits, e.g. "params.lr"
        self.label = label
        self.widget = widget
        self._shown = ""  # the problem text on show
        if tooltip:
            self.tooltip = tooltip

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label, classes="field-label")
            yield self.widget
        yield Static(classes="field-problem")

    def show(self, problems: list[Problem], warnings: list[Problem] | None = None) -> None:
        """The engine's words about this field: problems in red, warnings (that do not block) in yellow."""
        text = Text()
        for style, items in (("red", problems), ("yellow", warnings or [])):
            for p in items:
                text.append(problem_line(p) + "\n", style=style)
        text.rstrip()
        if text.plain == self._shown:
            return  # called on every keystroke: leave the layout alone when nothing changed
        self._shown = text.plain
        line = self.query_one(".field-problem", Static)
        line.update(text)
        line.display = bool(problems or warnings)


def problem_line(problem: Problem) -> str:
    """A problem as the CLI words it (`key = value: rule`, then the fix), with a shorter fix indent."""
    return problem.render().replace("\n    fix:", "\n  fix:")
