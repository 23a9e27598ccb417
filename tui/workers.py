"""Workers whose errors go to the app's one funnel (WizardApp.on_worker_state_changed) instead of exiting the
app: the wizard's steps and the dashboard screen both run theirs this way."""

from __future__ import annotations

from typing import Any

from textual.worker import Worker, WorkerState


class FunnelledWorkers:
    """Mix into a widget or screen (before its Textual base): every worker it runs (`@work` comes through
    run_worker) hands an error to the app, which writes the traceback to a log and shows it; the app keeps
    running. A plain class, not a DOMNode: Textual's CSS inheritance follows the first DOMNode base only, so a
    DOMNode mixin would hide the base widget's DEFAULT_CSS."""

    app: Any

    def run_worker(self, work: Any, *args: Any, **kwargs: Any) -> Worker[Any]:
        kwargs["exit_on_error"] = False
        return super().run_worker(work, *args, **kwargs)  # type: ignore[misc]

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Worker.StateChanged does not bubble: hand an error to the app, where every worker error is reported.
        if event.state == WorkerState.ERROR:
            self.app.post_message(event)
