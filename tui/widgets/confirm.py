"""Questions in a modal dialog: a few answers, each a button and a key; the safe answer is focused.

`ConfirmDialog` asks yes or no and dismisses with True for yes (No is the safe answer). `QuitDialog` asks what
to do with unsaved changes when quitting: "save", "discard" or "cancel" (the safe answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


@dataclass(frozen=True)
class Answer:
    id: str  # the button's id and what the dialog dismisses with
    label: str
    keys: tuple[str, ...]  # Textual key names; the first is shown on the button
    variant: str = "default"


class QuestionDialog(ModalScreen[Any]):
    DEFAULT_CSS = """
    QuestionDialog { align: center middle; }
    QuestionDialog > Vertical { width: 64; max-width: 100%; height: auto; border: round $warning;
                                background: $surface; padding: 1 2; }
    QuestionDialog .question { height: auto; margin-bottom: 1; }
    QuestionDialog Horizontal { height: auto; align-horizontal: right; }
    QuestionDialog Button { margin-left: 1; min-width: 8; }
    """

    def __init__(self, question: str, answers: list[Answer], *, safe: str, question_id: str = "question") -> None:
        super().__init__()
        self.question, self.answers, self.safe, self.question_id = question, answers, safe, question_id

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id=self.question_id, classes="question", markup=False)
            with Horizontal():
                for a in self.answers:
                    shown = "esc" if a.keys[0] == "escape" else a.keys[0]
                    yield Button(f"{a.label} ({shown})", id=a.id, variant=a.variant)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.query_one(f"#{self.safe}", Button).focus()

    def on_key(self, event: events.Key) -> None:
        for a in self.answers:
            if event.key in a.keys:
                event.stop()
                self.answer(a.id)
                return
        if event.key == "escape":
            event.stop()
            self.answer(self.safe)

    def answer(self, answer_id: str) -> None:
        self.dismiss(answer_id)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.answer(event.button.id or self.safe)


class ConfirmDialog(QuestionDialog):
    def __init__(self, question: str, *, yes: str = "Yes", no: str = "No") -> None:
        super().__init__(question, [Answer("yes", yes, ("y",), "warning"), Answer("no", no, ("n",), "primary")],
                         safe="no")

    def answer(self, answer_id: str) -> None:
        self.dismiss(answer_id == "yes")


class QuitDialog(QuestionDialog):
    def __init__(self) -> None:
        super().__init__("The config has changes that are not saved. Save them before quitting?",
                         [Answer("quit-save", "Save", ("s",), "primary"),
                          Answer("quit-discard", "Discard", ("d",), "error"),
                          Answer("quit-cancel", "Cancel", ("escape", "c"))],
                         safe="quit-cancel", question_id="quit-question")

    def answer(self, answer_id: str) -> None:
        self.dismiss(answer_id.removeprefix("quit-"))
