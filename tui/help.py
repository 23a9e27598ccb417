"""The help screen (F1): the keys, and what the current step is for."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from tui.steps.base import Step

KEYS = """\
| key | does |
|---|---|
| Tab / Shift+Tab | move between fields (a field's value is selected: typing replaces it) |
| Up / Down | choose in a list of choices (the task) |
| Enter | choose / press / toggle |
| Ctrl+N | Next (checks this step first) |
| Esc | Back (keeps what you entered) |
| Ctrl+P | command palette |
| F1 | this help |
| Ctrl+Q | quit (asks first when the config has unsaved changes) |
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 76; max-height: 22; border: round $accent; background: $surface; }
    """

    def __init__(self, step: Step) -> None:
        super().__init__()
        self.step_ = step

    def compose(self) -> ComposeResult:
        about = (self.step_.__doc__ or "").strip()
        with VerticalScroll():
            yield Markdown(f"# {self.step_.title}\n\n{about}\n\n## Keys\n\n{KEYS}")
