"""Placeholder until the step is written."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from tui.steps.base import Step


class ColumnsStep(Step):
    title = "Columns"

    def compose(self) -> ComposeResult:
        yield Static("Columns")
        yield Static(classes="problems")
