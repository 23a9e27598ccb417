"""Step 7, Review: the resolved config in a few lines, the YAML that will be written, and where to save it.

Saving checks the whole config first with engine.config.validate, environment included (the data exists,
the model is there, this machine runs the precision asked for), in a worker: the machine probe can take
seconds. An existing file is overwritten only when the user says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Static, TextArea
from textual.widgets.text_area import LanguageDoesNotExist

from engine.config import RunConfig, to_yaml, validate
from engine.errors import Problem, UserError
from tui.app import WizardResult
from tui.dry_run import summary_rows
from tui.steps.base import Step
from tui.steps.preview import config_copy
from tui.widgets.confirm import ConfirmDialog

CHECKING = "checking the config: the data, the model, this machine…"
STARTING = "saved; reading and tokenizing every row, then starting the run…"


def default_path(cfg: RunConfig) -> str:
    """The file the wizard was opened with, else <last part of project_name>.yaml here."""
    if cfg.source is not None:
        return str(cfg.source)
    name = Path(cfg.project_name.rstrip("/")).name if cfg.project_name.strip() else ""
    return f"{name or 'llmtune'}.yaml"


def summary_table(cfg: RunConfig) -> Table:
    """The dry run's summary rows; a grid, so a long value wraps in its own column."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    for key, value in summary_rows(cfg):
        table.add_row(key, Text(value))
    return table


def yaml_view() -> TextArea:
    """A read-only TextArea, highlighted as YAML where tree-sitter has the grammar, plain text otherwise."""
    try:
        return TextArea(language="yaml", read_only=True, id="review-yaml")
    except LanguageDoesNotExist:
        return TextArea(read_only=True, id="review-yaml")


@dataclass
class ConfigChecked(Message):
    """validate() finished: `problems` is empty when the config may be saved."""

    path: Path
    text: str  # the YAML to write, as it was when Save was pressed
    launch: bool
    problems: list[Problem]


@dataclass
class RunStarted(Message):
    handle: Any  # engine.launch.RunHandle


@dataclass
class RunStartFailed(Message):
    problems: list[Problem]


class ReviewStep(Step):
    """Check the config and save it. Save writes the YAML (AutoTrain's layout; secrets stay ${VAR}
    references) after checking everything, the data and this machine included. Save and launch then checks
    every row as `llmtune-tui --config FILE --yes` does, starts training in its own process and opens its
    dashboard (leaving the dashboard never stops the run). Exit leaves once saved and prints the command that
    trains the file; Ctrl+Q quits without saving."""

    title = "Review"
    keys = ()

    DEFAULT_CSS = """
    ReviewStep #review-summary { height: auto; }
    ReviewStep #review-save-row { height: 3; }
    ReviewStep #save-path { width: 1fr; }
    ReviewStep #review-save-row Button { min-width: 6; margin-left: 1; }
    ReviewStep #review-status { height: auto; }
    ReviewStep #review-yaml { height: 20; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cfg: RunConfig | None = None
        self.checking = False
        self.saved_path: Path | None = None
        self.saved_text: str | None = None  # what was written, to tell whether the config changed since
        self._default_path: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="review-summary")
        yield Static("Save the config to:", classes="label")
        with Horizontal(id="review-save-row"):
            yield Input(id="save-path", placeholder="file name, e.g. my-run.yaml")
            yield Button("Save", id="save")
            yield Button("Save and launch", id="launch", variant="primary")
            yield Button("Exit", id="exit", disabled=True)
        yield Static(id="review-status", classes="hint", markup=False)
        yield Static(classes="problems")
        yield Static("The YAML that will be written:", classes="label")
        yield yaml_view()

    # ------------------------------------------------------------ the Step protocol

    def load(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.query_one("#review-summary", Static).update(summary_table(cfg))
        text = to_yaml(cfg)
        self.query_one("#review-yaml", TextArea).load_text(text)
        path_input = self.query_one("#save-path", Input)
        default = default_path(cfg)
        if not path_input.value or path_input.value == self._default_path:  # keep a path the user typed
            path_input.value = default
        self._default_path = default
        saved = self.saved_path is not None and self.saved_text == text
        self.query_one("#exit", Button).disabled = not saved
        self._status(f"saved {self.saved_path}" if saved else
                     "changed since saved: save again" if self.saved_path else "", scroll=False)

    # ------------------------------------------------------------ saving

    def request_save(self, *, launch: bool) -> None:
        """Check the config, then write it (asking before overwriting a file); launch=True exits to train."""
        if self.checking or self.cfg is None:
            return
        value = self.query_one("#save-path", Input).value.strip()
        if not value:
            self.show_problems([Problem("save-path", "no file name", "type where to save the config, e.g. "
                                        f"{default_path(self.cfg)}")])
            return
        self._set_checking(True)
        self.show_problems([])
        self._check(config_copy(self.cfg), Path(value).expanduser(), to_yaml(self.cfg), launch)

    @work(thread=True, exclusive=True, group="save")
    def _check(self, cfg: RunConfig, path: Path, text: str, launch: bool) -> None:
        try:
            validate(cfg)
            problems: list[Problem] = []
        except UserError as e:
            problems = list(e.problems)
        except Exception as e:  # a bug in a check must not lose the user's work: say it, keep the wizard open
            problems = [Problem("validate", f"internal error while checking: {type(e).__name__}: {e}",
                                "please report it")]
        self.post_message(ConfigChecked(path, text, launch, problems))

    @on(ConfigChecked)
    def _checked(self, message: ConfigChecked) -> None:
        message.stop()
        self._set_checking(False)
        if message.problems:
            n = len(message.problems)
            self._status(f"not saved: {n} problem{'s' if n != 1 else ''} to fix first (Esc goes back to the "
                         "steps)")
            self.show_problems(message.problems)
            self.call_after_refresh(self.query_one(".problems").scroll_visible)  # below the fold at 80x24
            return
        if message.path.exists() and not self._is_ours(message.path):
            self._status(f"{message.path} exists: overwrite it?")
            self.app.push_screen(ConfirmDialog(f"{message.path} already exists. Overwrite it?"),
                                 lambda yes: self._write(message) if yes else self._status(
                                     f"not saved: {message.path} was left as it was"))
            return
        self._write(message)

    def _is_ours(self, path: Path) -> bool:
        """The file this wizard saved a moment ago: saving it again needs no question."""
        return self.saved_path is not None and path.resolve() == self.saved_path.resolve()

    def _write(self, message: ConfigChecked) -> None:
        path = message.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(message.text, encoding="utf-8")
        except OSError as e:
            self._status("not saved")
            self.show_problems([Problem("save-path", f"cannot write {path}: {e.strerror or e}",
                                        "choose another file or directory")])
            self.call_after_refresh(self.query_one(".problems").scroll_visible)
            return
        self.saved_path, self.saved_text = path, message.text
        self.app.saved_path = path
        self.app.notify(f"saved {path}")
        if message.launch:
            self._set_checking(True)
            self._status(STARTING)
            self._start(path)
            return
        self.query_one("#exit", Button).disabled = False
        self._status(f"saved {path}; press Exit to leave (it prints how to train it), Save and launch to train "
                     "now, or Ctrl+Q to quit")

    @work(thread=True, exclusive=True, group="save")
    def _start(self, path: Path) -> None:
        from tui.train_start import check_and_start

        try:
            handle = check_and_start(path)
        except UserError as e:
            self.post_message(RunStartFailed(list(e.problems)))
            return
        except Exception as e:  # an internal error: shown, and the traceback kept in a log
            from tui.errors import write_error_log

            log = write_error_log(e)
            self.post_message(RunStartFailed([Problem("launch", f"internal error: {type(e).__name__}: {e}",
                                                      f"the traceback is in {log}; please report it")]))
            return
        self.post_message(RunStarted(handle))

    @on(RunStarted)
    def _run_started(self, message: RunStarted) -> None:
        message.stop()
        self._set_checking(False)
        self._status(f"started {message.handle.run_dir} (pid {message.handle.pid})")
        self.app.open_dashboard(message.handle.run_dir, message.handle)

    @on(RunStartFailed)
    def _run_start_failed(self, message: RunStartFailed) -> None:
        message.stop()
        self._set_checking(False)
        self._status("not started: fix this first (the config was saved)")
        self.show_problems(message.problems)
        self.call_after_refresh(self.query_one(".problems").scroll_visible)

    def _set_checking(self, checking: bool) -> None:
        self.checking = checking
        for button in self.query("#review-save-row Button").results(Button):
            if button.id != "exit":
                button.disabled = checking
        if checking:
            self._status(CHECKING)

    def _status(self, text: str, *, scroll: bool = True) -> None:
        status = self.query_one("#review-status", Static)
        status.update(text)
        if text and scroll:  # below the fold at 80x24
            self.call_after_refresh(status.scroll_visible)

    @on(Button.Pressed, "#save")
    @on(Input.Submitted, "#save-path")
    def _save_pressed(self) -> None:
        self.request_save(launch=False)

    @on(Button.Pressed, "#launch")
    def _launch_pressed(self) -> None:
        self.request_save(launch=True)

    @on(Button.Pressed, "#exit")
    def _exit_pressed(self) -> None:
        if self.saved_path is not None:
            self.app.exit(WizardResult(self.saved_path, list(getattr(self.app, "runs", []))))
