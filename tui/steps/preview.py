"""Placeholder until the step is written."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from tui.steps.base import Step


class PreviewStep(Step):
    title = "Preview"

    def compose(self) -> ComposeResult:
        yield Static("Preview")
        yield Static(classes="problems")
