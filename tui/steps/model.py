"""Placeholder until the step is written."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from tui.steps.base import Step


class ModelStep(Step):
    title = "Model"

    def compose(self) -> ComposeResult:
        yield Static("Model")
        yield Static(classes="problems")
