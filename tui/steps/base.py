"""What every wizard step is: a container that fills its widgets from the config (`load`), writes them back
(`store`), and names the config keys it owns, so Next shows the engine's own problems for those keys.

Steps never re-implement a rule: `problems` asks engine.config, the same validator `--yes` uses.

The app owns the wizard's state: a step reads it through `wizard` (what the app shows of itself to steps) and
changes it by posting a message of tui.messages (`tell_app`); a step never imports tui.app. A step is composed
when first shown (the wizard's first frame waits for the first step only), so its widgets post their mounting
`Changed` messages while it is the current step: `changed_by_user` tells those apart. A worker of a step that
raises goes to the app's one funnel (tui.app), which asks the step first (`worker_failed`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, cast

from rich.text import Text
from textual import events, on
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker

from engine.config import RunConfig, static_problems
from engine.data import Table
from engine.errors import Problem
from engine.model_info import ModelInfo
from tui.workers import FunnelledWorkers


class WizardState(Protocol):
    """What a step may read of the app's state. The app writes it, on the messages of tui.messages."""

    cfg: RunConfig
    model_info: ModelInfo | None  # the Model step's ModelInfoChanged
    table: Table | None  # the Data step's DataPreviewed: the train split's first rows
    splits: list[str]
    capabilities: Any  # the Parameters step's CapabilitiesRead: engine.capabilities.probe()
    gpu_total: int | None
    steps: Sequence[Step]

    @property
    def step(self) -> Step: ...


def step_problems(cfg: RunConfig, keys: tuple[str, ...], *, extra: list[Problem] | None = None) -> list[Problem]:
    """The engine's problems about `keys` (exact keys or prefixes ending in '.')."""
    def owned(key: str) -> bool:
        return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)

    return [p for p in static_problems(cfg) + (extra or []) if owned(p.key)]


def render_problems(problems: list[Problem]) -> Text:
    text = Text()
    for p in problems:
        text.append(p.render().replace("\n    fix:", "\n  fix:") + "\n", style="red")
    return text


class Step(FunnelledWorkers, VerticalScroll):
    """A wizard step. Subclasses set `title`, `keys`, and implement `load` / `store`."""

    title: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()  # the config keys this step edits

    DEFAULT_CSS = """
    Step { height: 1fr; padding: 0 1; }
    Step .problems { color: $error; height: auto; }
    Step .hint { color: $text-muted; height: auto; }
    """

    _mounted_at: float | None = None  # the time of this step's Mount (Message.time's clock)

    # ------------------------------------------------------------ the app, seen from a step

    @property
    def wizard(self) -> WizardState:
        """The app's state, to read (a step is only ever mounted in the wizard's app)."""
        return cast(WizardState, self.app)

    @property
    def is_current(self) -> bool:
        """Whether this is the step the wizard shows now."""
        return getattr(self.app, "step", None) is self

    def changed_by_user(self, event: Message) -> bool:
        """Whether a widget's Changed is one to act on: this step is shown and the change came after it was
        mounted (a Select posts Changed as it mounts, which is not a choice)."""
        return self.is_current and self._mounted_at is not None and event.time >= self._mounted_at

    def tell_app(self, message: Message, then: Callable[[], Any] | None = None) -> None:
        """Post `message` to the app, which owns the state, and run `then` once the app has handled it: both go
        through the app's queue, in order, so this step never shows news the app does not know yet."""
        self.app.post_message(message)
        if then is not None:
            self.app.call_later(then)

    @on(events.Mount)
    def _mounted(self, event: events.Mount) -> None:
        self._mounted_at = event.time

    def worker_failed(self, worker: Worker[Any], error: BaseException, log: Path | None) -> bool:
        """A worker of this step raised (a bug; the traceback is in `log` when it could be written). Return
        True once shown in the step; False (the default) and the app shows it in a dialog."""
        return False

    # ------------------------------------------------------------ the step's contract

    def load(self, cfg: RunConfig) -> None:
        """Fill the widgets from the config (each time the step is shown)."""

    def store(self, cfg: RunConfig) -> None:
        """Write the widgets' values into the config (Back and Next both call it: nothing entered is lost)."""

    def focus_first(self) -> None:
        """Put the focus on the step's first input when it is shown (keyboard first)."""
        for widget in self.query("Input, Select, RadioSet, DataTable, DirectoryTree, ListView, Button, Checkbox, "
                                 "Switch, TextArea"):
            if widget.focusable:
                widget.focus()
                return

    def problems(self, cfg: RunConfig) -> list[Problem]:
        """What blocks Next; by default the engine's problems about this step's keys."""
        return step_problems(cfg, self.keys)

    def show_problems(self, problems: list[Problem]) -> None:
        for widget in self.query(".problems").results(Static):
            widget.update(render_problems(problems))
            widget.display = bool(problems)
