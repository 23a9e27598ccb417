"""The Textual app: a wizard that builds a run config step by step (model, task, data, columns, parameters,
preview, review). Its state is one `RunConfig`, the engine's own, shared by every step; Next validates the
step with the engine's rules, Back keeps what was entered. Launching pushes the run's dashboard
(tui.dashboard) over the wizard; `llmtune-tui attach` opens the app on a dashboard, with the wizard beneath.

Importing this module imports Textual and light engine modules only: the first screen must not wait for
torch or transformers. Heavy work (tokenizers, previews, the model cache) runs in the steps' workers.

Keys are handled one at a time, in the order typed (see `WizardApp.on_event`): Textual runs a widget's own
key handler at once (an Input inserting a character) but its bindings (End, Ctrl+U, Backspace, Enter, Tab)
only after the key has climbed every container to the app, so under load a burst like End, Ctrl+U, "1", "2"
was applied as "1", "2", End, Ctrl+U.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message_pump import MessagePump
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, ContentSwitcher, Footer, Header, Input, Static

from engine.config import RunConfig, to_yaml
from engine.data import Table
from engine.model_info import ModelInfo
from tui.commands import WizardCommands
from tui.steps.base import Step
from tui.widgets.confirm import QuitDialog


@dataclass
class WizardResult:
    """What the app ends with: the config saved last (if any), and the runs it launched or watched, in order
    (they go on running: the app only reads them)."""

    config_path: Path | None
    runs: list[Path] = field(default_factory=list)


def new_config() -> RunConfig:
    """The config a fresh wizard starts from: AutoTrain's defaults, SFT with LoRA, no model chosen yet."""
    cfg = RunConfig(task="llm-sft", base_model="", project_name="runs/my-model")
    cfg.data.path = ""  # AutoTrain's default "data" would be read as a hub dataset id before anything is typed
    cfg.params.trainer = "sft"
    cfg.params.peft = True
    cfg.params.quantization = None
    return cfg


@dataclass
class KeyInFlight:
    """A key (or paste) handed to a widget, on its way up to the app, where its bindings run."""

    event: events.Key | events.Paste
    screen: Screen
    focused: Widget | None  # what had the focus when it was handed on
    node: MessagePump  # where the probe following it waits now
    since: float = field(default_factory=time.monotonic)


KEY_STUCK_S = 10.0  # a key that never comes back (a bug) holds the keyboard this long at most


def step_classes() -> list[type[Step]]:
    from tui.steps.columns import ColumnsStep
    from tui.steps.data import DataStep
    from tui.steps.model import ModelStep
    from tui.steps.params import ParamsStep
    from tui.steps.preview import PreviewStep
    from tui.steps.review import ReviewStep
    from tui.steps.task import TaskStep

    return [ModelStep, TaskStep, DataStep, ColumnsStep, ParamsStep, PreviewStep, ReviewStep]


class WizardApp(App[WizardResult | None]):
    TITLE = "llmtune"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {WizardCommands}
    BINDINGS = [
        Binding("ctrl+n", "next", "Next", priority=True),
        Binding("escape", "back", "Back"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, cfg: RunConfig | None = None, *, problems: list | None = None,
                 attach: tuple[Path, Any] | None = None) -> None:
        """`attach`: (run directory, engine.launch.RunHandle or None) to open on that run's dashboard."""
        super().__init__()
        self.cfg = cfg or new_config()
        self.initial_problems = problems or []
        # Read by several steps, set by the step that learns them (in workers, through messages):
        self.model_info: ModelInfo | None = None  # the model step: what config.json says about the model
        self.table: Table | None = None  # the data step: the train split's first rows
        self.splits: list[str] = []  # the data step: the splits found
        self.capabilities: Any = None  # the parameters step: engine.capabilities.probe(), once
        self.gpu_total: int | None = None  # the parameters step: the GPU's memory in bytes (None: no CUDA)
        self.steps: list[Step] = [cls(id=f"step-{i}") for i, cls in enumerate(step_classes())]
        self.index = 0
        self.saved_path: Path | None = None  # set by the review step
        self.runs: list[Path] = []  # the runs shown on a dashboard, the last one last
        self._handles: dict[Path, Any] = {}
        self._attach = attach
        self.loaded_yaml = to_yaml(self.cfg)  # what "no unsaved changes" means until a save
        self._quit_after_save = False
        self._keys: deque[events.Key | events.Paste] = deque()  # typed, waiting for the key before them
        self._in_flight: KeyInFlight | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="step-title")
        with ContentSwitcher(initial="step-0", id="steps"):
            yield from self.steps
        with Horizontal(id="nav"):
            yield Button("Back", id="back")
            yield Button("Next", id="next", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(0.5, self._check_key_in_flight)
        self.show(0)
        if self._attach is not None:
            self.open_dashboard(*self._attach)

    # ------------------------------------------------------------ keys, in order

    async def on_event(self, event: events.Event) -> None:
        """Hand keys on one at a time: the next only once the one before has been handled all the way (by the
        widget, the containers above it, and the bindings), so every key acts in the order typed, on what the
        keys before it left focused. A key whose widget lost the focus on the way (to code, or a dialog)
        is not applied to whatever has the focus now."""
        if isinstance(event, (events.Key, events.Paste)):
            if not event.is_forwarded:  # from the terminal
                self._keys.append(event)
                await self._hand_on_keys()
                return
            flight = self._in_flight
            if flight is not None and event is flight.event:  # back from the widget: its bindings now
                try:
                    if self.screen is flight.screen and flight.screen.focused is flight.focused:
                        await super().on_event(event)
                finally:
                    await self._landed(event)
                return
        await super().on_event(event)

    async def _hand_on_keys(self) -> None:
        while self._in_flight is None and self._keys:
            event = self._keys.popleft()
            await super().on_event(event)  # priority bindings (Ctrl+N, Ctrl+Q) run here; else handed on
            if not event.is_forwarded:
                continue
            screen = self.screen  # handed to what has the focus (else the screen), nothing ran since
            target: MessagePump = self.focused or screen
            self._in_flight = KeyInFlight(event, screen, screen.focused, target)
            if not target.call_later(self._follow_key, event, target):
                self._in_flight = None  # the widget is closing: nothing to wait for

    def _follow_key(self, event: events.Key | events.Paste, node: MessagePump) -> None:
        """Runs in `node`'s queue right after the key: follows it up to the app, one container at a time."""
        flight = self._in_flight
        if flight is None or flight.event is not event:
            return
        parent = node._parent
        if isinstance(node, Screen) or parent is None or parent is self or event._stop_propagation:
            # Stopped here (an Input took a character), or on its way into the app's queue: land after it.
            flight.node = self
            self.call_later(self._landed, event)
            return
        flight.node = parent
        if not parent.call_later(self._follow_key, event, parent):
            flight.node = self
            self.call_later(self._landed, event)

    async def _landed(self, event: events.Key | events.Paste) -> None:
        """The key is handled (runs in the app's queue): hand on the next one."""
        if self._in_flight is not None and self._in_flight.event is event:
            self._in_flight = None
            await self._hand_on_keys()

    def _check_key_in_flight(self) -> None:
        """A key whose container closed under it (or that never came back) must not hold the keyboard.
        (A timer's callback runs in the timer's task: the landing is done in the app's queue.)"""
        flight = self._in_flight
        if flight is None:
            return
        node = flight.node
        if node._closed or node._closing or time.monotonic() - flight.since > KEY_STUCK_S:
            self.call_later(self._landed, flight.event)

    def action_focus_next(self) -> None:
        super().action_focus_next()
        self._select_tabbed_input()

    def action_focus_previous(self) -> None:
        super().action_focus_previous()
        self._select_tabbed_input()

    def _select_tabbed_input(self) -> None:
        """Tabbing into a step's field selects its value, so typing replaces it (as in any form). Queued after
        the field's Focus event, which may place the cursor, and before the next key (keys wait their turn)."""
        widget = self.focused
        if isinstance(widget, Input) and any(isinstance(a, Step) for a in widget.ancestors):
            widget.call_later(widget.select_all)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The wizard's keys act on the wizard only, not through a dashboard or dialog above it.
        if action in ("next", "back", "help") and len(self.screen_stack) > 1:
            return False
        return True

    # ------------------------------------------------------------ runs

    def open_dashboard(self, run_dir: Path, handle: Any = None) -> None:
        """Show a run's dashboard over the wizard; `handle` (engine.launch.RunHandle) when it is running."""
        from tui.dashboard import DashboardScreen

        run_dir = Path(run_dir).absolute()
        if run_dir in self.runs:
            self.runs.remove(run_dir)
        self.runs.append(run_dir)
        if handle is not None:
            self._handles[run_dir] = handle
        self.push_screen(DashboardScreen(run_dir, handle))

    def handle_of(self, run_dir: Path) -> Any:
        """The handle this app holds on a run (the process it started: its exit status is known), else a
        fresh attach (None when nothing runs it)."""
        from engine import launch

        held = self._handles.get(Path(run_dir).absolute())
        return held if held is not None else launch.attach(run_dir)

    def back_to_wizard(self, dashboard: Any) -> None:
        """Leave the dashboard (the run goes on) for the wizard, as it was left."""
        if self.screen is dashboard:
            self.pop_screen()
            self.notify("the run goes on; Ctrl+P, Dashboard shows it again (or, later: llmtune-tui attach "
                        f"{dashboard.run_dir})", timeout=6)

    def detach(self) -> None:
        """Quit the app and leave every run going."""
        self.exit(WizardResult(self.saved_path, list(self.runs)))

    async def action_quit(self) -> None:
        if isinstance(self.screen, QuitDialog):
            return  # answer the question first
        from tui.dashboard import DashboardScreen

        # With a run's dashboard shown, quitting is detaching: the CLI then says how each run stands.
        dashboard = any(isinstance(screen, DashboardScreen) for screen in self.screen_stack)
        if dashboard or not self.unsaved():
            self._leave()
            return
        self.push_screen(QuitDialog(), self._quit_answered)

    def _leave(self) -> None:
        if self.runs:
            self.detach()
        else:
            self.exit()

    def unsaved(self) -> bool:
        """Whether the config (with what the current step shows) differs from the one last saved or loaded."""
        try:
            self.step.store(self.cfg)  # what the step shows is what the user means, as Next would take it
            return to_yaml(self.cfg) != self.clean_yaml()
        except Exception:  # a value the YAML writer chokes on is certainly not saved: ask
            return True

    def clean_yaml(self) -> str:
        """The YAML last saved by the Review step, else that of the config the wizard was opened with."""
        review = self._review()
        saved = getattr(review, "saved_text", None) if getattr(review, "saved_path", None) is not None else None
        return saved if isinstance(saved, str) else self.loaded_yaml

    def _review(self) -> Any:
        from tui.steps.review import ReviewStep

        return next((s for s in self.steps if isinstance(s, ReviewStep)), None)

    def _quit_answered(self, answer: str | None) -> None:
        if answer == "discard":
            self._leave()
        elif answer == "save":
            from tui.commands import save

            self._quit_after_save = True
            save(self, launch=False)  # on the Review step: its checks, its file name, its overwrite question
            self.set_timer(0.1, self._quit_when_saved)

    def _quit_when_saved(self) -> None:
        """After "save" in the quit question: leave once the Review step has written the file; stay (and say
        why) when it could not."""
        if not self._quit_after_save:
            return
        review = self._review()
        if getattr(review, "checking", False) or len(self.screen_stack) > 1:
            self.set_timer(0.1, self._quit_when_saved)  # still checking, or asking before overwriting
            return
        self._quit_after_save = False
        if self.saved_path is not None and to_yaml(self.cfg) == self.clean_yaml():
            self.exit(WizardResult(self.saved_path, list(self.runs)))
        else:
            self.notify("not saved (see the Review step); Ctrl+Q again to quit", title="Still here",
                        severity="warning", timeout=6)

    @property
    def step(self) -> Step:
        return self.steps[self.index]

    def show(self, index: int) -> None:
        self.index = index
        step = self.step
        self.query_one("#steps", ContentSwitcher).current = step.id
        self.query_one("#step-title", Static).update(
            f"Step {index + 1} of {len(self.steps)}: [b]{step.title}[/b]")
        self.query_one("#back", Button).disabled = index == 0
        self.query_one("#next", Button).display = index < len(self.steps) - 1
        step.load(self.cfg)
        step.show_problems([])
        step.focus_first()

    def action_next(self) -> None:
        step = self.step
        step.store(self.cfg)
        problems = step.problems(self.cfg)
        step.show_problems(problems)
        if problems:
            self.notify(problems[0].render(), title="Fix this first", severity="error")
            return
        if self.index < len(self.steps) - 1:
            self.show(self.index + 1)

    def action_back(self) -> None:
        if self.index == 0:
            return
        self.step.store(self.cfg)
        self.show(self.index - 1)

    def action_help(self) -> None:
        from tui.help import HelpScreen

        self.push_screen(HelpScreen(self.step))

    @on(Button.Pressed, "#next")
    def _next_pressed(self) -> None:
        self.action_next()

    @on(Button.Pressed, "#back")
    def _back_pressed(self) -> None:
        self.action_back()
