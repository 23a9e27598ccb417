"""Placeholder until the step is written."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from tui.steps.base import Step


class DataStep(Step):
    title = "Data"

    def compose(self) -> ComposeResult:
        yield Static("Data")
        yield Static(classes="problems")
