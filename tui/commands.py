"""The wizard's commands in the command palette (Ctrl+P): save, save and launch, go to any step, and the
dashboards of the runs this session launched or attached to.

Register on the app with `COMMANDS = App.COMMANDS | {WizardCommands}`. This module does not import tui.app
(tui.app imports it): it reaches the wizard through `Wizard`, what WizardApp has for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.steps.base import Step


class Wizard(Protocol):
    """What the commands use of the wizard's app."""

    steps: Sequence[Step]
    runs: list[Path]

    def go_to(self, index: int, then: Callable[[], Any] | None = None) -> None: ...
    def open_dashboard(self, run_dir: Path, handle: Any = None) -> None: ...
    def handle_of(self, run_dir: Path) -> Any: ...


def save(app: Wizard, *, launch: bool) -> None:
    """Show the review step and save from there (once it is filled), so its problems and questions appear
    where they belong."""
    from tui.steps.review import ReviewStep

    review = next((s for s in app.steps if isinstance(s, ReviewStep)), None)
    if review is not None:
        app.go_to(app.steps.index(review), partial(review.request_save, launch=launch))


def reopen_dashboard(app: Wizard, run_dir: Path) -> None:
    """Show a run's dashboard again, with the app's handle on its process when it has one."""
    app.open_dashboard(run_dir, app.handle_of(run_dir))


class WizardCommands(Provider):
    """Save config, Save and launch, Go to step: <name>, Dashboard: <run> (runs this session showed)."""

    def commands(self) -> list[tuple[str, Callable[[], None], str]]:
        if not hasattr(self.app, "steps"):  # another app or mode: nothing to offer
            return []
        app = cast(Wizard, self.app)
        out: list[tuple[str, Callable[[], None], str]] = [
            ("Save config", partial(save, app, launch=False), "check the config and write it to a YAML file"),
            ("Save and launch", partial(save, app, launch=True), "check, write, and start training"),
        ]
        for index, step in enumerate(app.steps):
            out.append((f"Go to step: {step.title}", partial(app.go_to, index),
                        f"step {index + 1} of {len(app.steps)}"))
        for run_dir in reversed(app.runs):
            out.append((f"Dashboard: {run_dir.name}", partial(reopen_dashboard, app, run_dir),
                        f"the live dashboard of {run_dir}"))
        return out

    async def discover(self) -> Hits:
        for name, command, help_text in self.commands():
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, command, help_text in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, text=name, help=help_text)
