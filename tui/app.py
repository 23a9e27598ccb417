"""The Textual app: a wizard that builds a run config step by step (model, task, data, columns, parameters,
preview, review). Its state is one `RunConfig`, the engine's own, shared by every step; Next validates the
step with the engine's rules, Back keeps what was entered. Launching pushes the run's dashboard
(tui.dashboard) over the wizard; `llmtune-tui attach` opens the app on a dashboard, with the wizard beneath.

Importing this module imports Textual and light engine modules only: the first screen must not wait for
torch or transformers. Heavy work (tokenizers, previews, the model cache) runs in the steps' workers. A step is
composed when first shown (`show`), so the first frame waits for the first step only.

The app owns the wizard's state (the config, what the steps learned in their workers, the file saved last):
steps read it through Step.wizard and change it by posting the messages of tui.messages, handled here. Every
worker error comes to one handler (`on_worker_state_changed`): the traceback is written to a log file, the
error shown in the step that ran the worker, or in a dialog. Never lost, never a crash.

Keys are handled one at a time, in the order typed (see `WizardApp.on_event`): Textual runs a widget's own
key handler at once (an Input inserting a character) but its bindings (End, Ctrl+U, Backspace, Enter, Tab)
only after the key has climbed every container to the app, so under load a burst like End, Ctrl+U, "1", "2"
was applied as "1", "2", End, Ctrl+U.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, overload

from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message_pump import MessagePump
from textual.screen import Screen
from textual.widget import AwaitMount, Widget
from textual.widgets import Button, ContentSwitcher, Footer, Header, Input, Static
from textual.worker import Worker, WorkerState

from engine.config import RunConfig, to_yaml
from engine.data import Table
from engine.model_info import ModelInfo
from engine.tasks import SPECS
from tui.commands import WizardCommands
from tui.errors import write_error_log
from tui.messages import (
    CapabilitiesRead,
    ConfigSaved,
    DataPreviewed,
    ExitRequested,
    ModelInfoChanged,
    RunLaunched,
    WizardResult,
)
from tui.steps.base import Step
from tui.widgets.confirm import Answer, QuestionDialog, QuitDialog


def new_config() -> RunConfig:
    """The config a fresh wizard starts from: AutoTrain's defaults, SFT with LoRA, no model chosen yet."""
    usual = SPECS[0]  # the registry lists the usual choice first
    cfg = RunConfig(task=usual.task, base_model="", project_name="runs/my-model")
    cfg.data.path = ""  # AutoTrain's default "data" would be read as a hub dataset id before anything is typed
    cfg.params.trainer = usual.trainer
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


# The wizard's steps in order, each module imported when its step is first needed: the first frame needs the
# first step only. (Literal names: the import checks of tests/imports.py read them.)
STEP_CLASSES: tuple[Callable[[], type[Step]], ...] = (
    lambda: import_module("tui.steps.model").ModelStep,
    lambda: import_module("tui.steps.task").TaskStep,
    lambda: import_module("tui.steps.data").DataStep,
    lambda: import_module("tui.steps.columns").ColumnsStep,
    lambda: import_module("tui.steps.params").ParamsStep,
    lambda: import_module("tui.steps.preview").PreviewStep,
    lambda: import_module("tui.steps.review").ReviewStep,
)


class Steps(Sequence[Step]):
    """The wizard's steps, each built when first asked for (by index, slice, or going through them all)."""

    def __init__(self) -> None:
        self._built: dict[int, Step] = {}

    def __len__(self) -> int:
        return len(STEP_CLASSES)

    @overload
    def __getitem__(self, index: int) -> Step: ...

    @overload
    def __getitem__(self, index: slice) -> list[Step]: ...

    def __getitem__(self, index: int | slice) -> Step | list[Step]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        index = range(len(self))[index]  # a negative index counts from the end; IndexError past it
        if index not in self._built:
            self._built[index] = STEP_CLASSES[index]()(id=f"step-{index}")
        return self._built[index]


class WizardApp(App[WizardResult | None]):
    STEPS_AT_START = 1  # composed with the app; the others when first shown (benchmarks/wizard_startup.py: all)
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
        # Read by several steps (Step.wizard), set here on the messages of the step that learns them:
        self.model_info: ModelInfo | None = None  # ModelInfoChanged: what config.json says about the model
        self.table: Table | None = None  # DataPreviewed: the train split's first rows
        self.splits: list[str] = []  # DataPreviewed: the splits found
        self.capabilities: Any = None  # CapabilitiesRead: engine.capabilities.probe(), once
        self.gpu_total: int | None = None  # CapabilitiesRead: the GPU's memory in bytes (None: no CUDA)
        self.steps = Steps()
        self.index = 0  # the step shown and filled from the config: Next and Back go from there
        self._unfilled: Step | None = None  # the step shown while it is composed (show), until it is filled
        self.saved_path: Path | None = None  # ConfigSaved: the file written last
        self.saved_text: str | None = None  # ConfigSaved: what was written there
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
        with ContentSwitcher(initial=self.steps[0].id, id="steps"):
            yield from self.steps[: self.STEPS_AT_START]
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
        # A step being composed to be shown holds the keys typed after the one that showed it (_enter_mounted).
        while self._in_flight is None and self._keys and self._unfilled is None:
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

    # ------------------------------------------------------------ what the steps tell (tui.messages)

    @on(ModelInfoChanged)
    def _model_info_changed(self, message: ModelInfoChanged) -> None:
        self.model_info = message.info

    @on(DataPreviewed)
    def _data_previewed(self, message: DataPreviewed) -> None:
        self.table, self.splits = message.table, message.splits

    @on(CapabilitiesRead)
    def _capabilities_read(self, message: CapabilitiesRead) -> None:
        self.capabilities, self.gpu_total = message.capabilities, message.gpu_total

    @on(ConfigSaved)
    def _config_saved(self, message: ConfigSaved) -> None:
        self.saved_path, self.saved_text = message.path, message.text

    @on(RunLaunched)
    def _run_launched(self, message: RunLaunched) -> None:
        self.open_dashboard(message.run_dir, message.handle)

    @on(ExitRequested)
    def _exit_requested(self) -> None:
        self.detach()

    # ------------------------------------------------------------ worker errors: the one funnel

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised (a bug): its traceback goes to a log file under $LLMTUNE_HOME/logs, the error to
        the step that ran it when the step shows it (Step.worker_failed), else to a dialog. A step hands its
        workers' errors here (Step.run_worker keeps them from exiting the app)."""
        error = event.worker.error
        if event.state != WorkerState.ERROR or error is None:
            return
        log = write_error_log(error)
        node = event.worker.node
        if isinstance(node, Step) and node.worker_failed(event.worker, error, log):
            return
        where = f"The traceback is in {log}." if log is not None else "The traceback could not be written."
        self.push_screen(QuestionDialog(
            f"Internal error: {type(error).__name__}: {error}\n{where}\nThis is a bug in llmtune; please report "
            "it with that log. The wizard goes on.", [Answer("error-ok", "OK", ("o",), "primary")],
            safe="error-ok", question_id="error-message"))

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
            if self.step is not self._unfilled:  # what the step shows is what the user means, as Next takes it
                self.step.store(self.cfg)
            return to_yaml(self.cfg) != self.clean_yaml()
        except Exception:  # a value the YAML writer chokes on is certainly not saved: ask
            return True

    def clean_yaml(self) -> str:
        """The YAML last saved by the Review step, else that of the config the wizard was opened with."""
        return self.saved_text if self.saved_path is not None and self.saved_text is not None else self.loaded_yaml

    def _review(self) -> Any:
        from tui.steps.review import ReviewStep

        return next((s for s in self.steps if isinstance(s, ReviewStep)), None)

    def _quit_answered(self, answer: str | None) -> None:
        if answer == "discard":
            self._leave()
        elif answer == "save":
            review = self._review()
            if review is None:
                return

            def save_then_quit() -> None:  # on the Review step: its checks, its file name, its overwrite question
                review.request_save(launch=False)
                self.set_timer(0.1, self._quit_when_saved)  # only now: the step may take a while to be shown

            self._quit_after_save = True
            self.go_to(self.steps.index(review), save_then_quit)

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
        """The step shown: the one at `index`, or the one still being composed to be shown."""
        return self._unfilled if self._unfilled is not None else self.steps[self.index]

    def show(self, index: int, then: Callable[[], Any] | None = None) -> None:
        """Show step `index`, filled from the config, and run `then` once it is. A step shown for the first time
        is composed now, with those before it a jump passed over (so Back never waits), and filled once
        mounted: a moment later, the keys typed meanwhile waiting for it; `index` follows once it is filled."""
        step = self.steps[index]
        switcher = self.query_one("#steps", ContentSwitcher)
        new = [s for s in self.steps[: index + 1] if s.parent is None]
        for passed in new[:-1]:
            passed.display = False  # the switcher shows its current step only
        if new:
            switcher.mount_all(new)
        switcher.current = step.id
        self.query_one("#step-title", Static).update(
            f"Step {index + 1} of {len(self.steps)}: [b]{step.title}[/b]")
        self.query_one("#back", Button).disabled = index == 0
        self.query_one("#next", Button).display = index < len(self.steps) - 1
        if step.is_mounted:
            self._unfilled = None
            self._enter(index, then)
        else:  # the keys typed after this wait for it (_hand_on_keys)
            self._unfilled = step
            self.call_later(self._enter_mounted, index, then)

    async def _enter_mounted(self, index: int, then: Callable[[], Any] | None) -> None:
        step = self.steps[index]
        await AwaitMount(self.query_one("#steps", ContentSwitcher), [step])
        if self._unfilled is step and self.is_running:  # else another was shown meanwhile (or the app ends)
            self._unfilled = None
            self._enter(index, then)
            await self._hand_on_keys()  # those typed meanwhile, in order, on the step now filled

    def _enter(self, index: int, then: Callable[[], Any] | None) -> None:
        self.index = index
        step = self.steps[index]
        step.load(self.cfg)
        step.show_problems([])
        step.focus_first()
        if then is not None:
            then()

    def go_to(self, index: int, then: Callable[[], Any] | None = None) -> None:
        """Show step `index`, keeping what was entered on the current one (as Back does: no check)."""
        if self._unfilled is self.steps[index]:
            if then is not None:
                self.call_later(then)  # behind the filling under way, which holds the app's queue until done
            return
        if self._unfilled is None:  # a step not filled yet has nothing of the user's to keep
            if index == self.index:
                if then is not None:
                    then()
                return
            self.step.store(self.cfg)
        self.show(index, then)

    def action_next(self) -> None:
        step = self.step
        if step is self._unfilled:
            return  # not filled yet: nothing to check
        step.store(self.cfg)
        problems = step.problems(self.cfg)
        step.show_problems(problems)
        if problems:
            self.notify(problems[0].render(), title="Fix this first", severity="error")
            return
        if self.index < len(self.steps) - 1:
            self.show(self.index + 1)

    def action_back(self) -> None:
        if self.index > 0 and self._unfilled is None:
            self.go_to(self.index - 1)

    def action_help(self) -> None:
        from tui.help import HelpScreen

        self.push_screen(HelpScreen(self.step))

    @on(Button.Pressed, "#next")
    def _next_pressed(self) -> None:
        self.action_next()

    @on(Button.Pressed, "#back")
    def _back_pressed(self) -> None:
        self.action_back()
