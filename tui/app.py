"""The Textual app: a wizard that builds a run config step by step (model, task, data, columns, parameters,
preview, review). Its state is one `RunConfig`, the engine's own, shared by every step; Next validates the
step with the engine's rules, Back keeps what was entered. Launching pushes the run's dashboard
(tui.dashboard) over the wizard; `llmtune-tui attach` opens the app on a dashboard, with the wizard beneath.

Importing this module imports Textual and light engine modules only: the first screen must not wait for
torch or transformers. Heavy work (tokenizers, previews, the model cache) runs in the steps' workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, ContentSwitcher, Footer, Header, Static

from engine.config import RunConfig
from engine.data import Table
from engine.model_info import ModelInfo
from tui.commands import WizardCommands
from tui.steps.base import Step


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
        self.show(0)
        if self._attach is not None:
            self.open_dashboard(*self._attach)

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
        # With runs shown, quitting is detaching: the CLI then says how each run stands.
        if self.runs:
            self.detach()
        else:
            self.exit()

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
