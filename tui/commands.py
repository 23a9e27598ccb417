"""The wizard's commands in the command palette (Ctrl+P): save, save and launch, go to any step, and the
dashboards of the runs this session launched or attached to.

Register on the app with `COMMANDS = App.COMMANDS | {WizardCommands}`. This module does not import tui.app
at run time (tui.app imports it), so it reaches the wizard through the attributes WizardApp has:
`steps`, `index`, `step`, `cfg`, `show(index)`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from tui.steps.review import ReviewStep


def go_to_step(app: Any, index: int) -> None:
    """Show step `index`, keeping what was entered on the current one (as Back does: no check)."""
    if index != app.index:
        app.step.store(app.cfg)
        app.show(index)


def save(app: Any, *, launch: bool) -> None:
    """Show the review step and save from there, so its problems and questions appear where they belong."""
    from tui.steps.review import ReviewStep

    review: ReviewStep | None = next((s for s in app.steps if isinstance(s, ReviewStep)), None)
    if review is None:
        return
    go_to_step(app, app.steps.index(review))
    review.request_save(launch=launch)


def reopen_dashboard(app: Any, run_dir: Any) -> None:
    """Show a run's dashboard again, with the app's handle on its process when it has one."""
    app.open_dashboard(run_dir, app.handle_of(run_dir))


class WizardCommands(Provider):
    """Save config, Save and launch, Go to step: <name>, Dashboard: <run> (runs this session showed)."""

    def commands(self) -> list[tuple[str, Callable[[], None], str]]:
        app = self.app
        if not hasattr(app, "steps"):  # another app or mode: nothing to offer
            return []
        out: list[tuple[str, Callable[[], None], str]] = [
            ("Save config", partial(save, app, launch=False), "check the config and write it to a YAML file"),
            ("Save and launch", partial(save, app, launch=True), "check, write, and start training"),
        ]
        for index, step in enumerate(app.steps):
            out.append((f"Go to step: {step.title}", partial(go_to_step, app, index),
                        f"step {index + 1} of {len(app.steps)}"))
        for run_dir in reversed(getattr(app, "runs", [])):
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
