"""Step 7, Review: where to save the config, the YAML that will be written (in view at 80x24), and the
resolved config in a few lines below it (the block size as the tokenizer resolves it, the steps).

The run directory is checked first, when the step is shown and again on Save (engine.rundir.check_free, a
few file reads): one that is not free is said at once, in the wizard's words, with a free name one button
away. Saving then checks the whole config with engine.config.validate, environment included (the data
exists, the model is there, this machine runs the precision asked for), in a worker: the machine probe can
take seconds. An existing file is overwritten only when the user says so, except the file the wizard was
opened from (or saved a moment ago).
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
from textual.worker import Worker

from engine.config import RunConfig, to_yaml, validate
from engine.errors import Problem, UserError
from engine.plan import Plan
from engine.preview import Preview
from tui.dry_run import summary_rows
from tui.messages import ConfigSaved, ExitRequested, RunLaunched
from tui.steps.base import Step
from tui.steps.preview import PreviewStep, config_copy, config_key
from tui.widgets.confirm import ConfirmDialog

CHECKING = "checking the config: the data, the model, this machine…"
STARTING = "saved; reading and tokenizing every row, then starting the run…"


def default_path(cfg: RunConfig) -> str:
    """The file the wizard was opened with, else <last part of project_name>.yaml here."""
    if cfg.source is not None:
        return str(cfg.source)
    name = Path(cfg.project_name.rstrip("/")).name if cfg.project_name.strip() else ""
    return f"{name or 'llmtune'}.yaml"


def summary_table(cfg: RunConfig, preview: Preview | None = None, plan: Plan | None = None,
                  block_size: str | None = None) -> Table:
    """The dry run's summary rows; a grid, so a long value wraps in its own column. `block_size`: the size
    as resolved with the tokenizer, when there is no preview to say it."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    for key, value in summary_rows(cfg, preview, plan):
        table.add_row(key, Text(block_size if key == "block size" and preview is None and block_size else value))
    return table


def run_dir_problems(cfg: RunConfig) -> list[Problem]:
    """check_free in the wizard's words; a directory that cannot be read is said, not raised. Imported on
    first use: the wizard's first screen does not wait for engine.rundir."""
    from engine.rundir import check_free

    if not cfg.project_name.strip():
        return []  # no name yet: the engine's own rule says so when saving
    try:
        return check_free(cfg, wizard=True)
    except OSError as e:
        return [cfg.problem("project_name", f"the run directory cannot be checked: {e.strerror or e}",
                            "choose another project_name", cfg.project_name)]


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
class BlockSizeResolved(Message):
    key: str  # engine config_key of the config it was resolved for
    note: str


@dataclass
class RunStartFailed(Message):
    problems: list[Problem]


class ReviewStep(Step):
    """Check the config and save it. Save writes the YAML (AutoTrain's layout; secrets stay ${VAR}
    references) after checking everything, the data and this machine included. Save and launch then checks
    every row as `llmtune-tui --config FILE --yes` does, starts training in its own process and opens its
    dashboard (leaving the dashboard never stops the run). Exit leaves once saved and prints the command that
    trains the file; Ctrl+Q with unsaved changes asks whether to save them first."""

    title = "Review"
    keys = ()

    DEFAULT_CSS = """
    ReviewStep #review-summary { height: auto; margin-top: 1; }
    ReviewStep #review-save-row { height: 3; }
    ReviewStep #review-save-row > Static { width: auto; height: 3; content-align: left middle; padding-right: 1; }
    ReviewStep #save-path { width: 1fr; }
    ReviewStep #review-save-row Button { min-width: 6; margin-left: 1; }
    ReviewStep #use-free-name { margin-left: 1; }
    ReviewStep #review-status { height: auto; }
    ReviewStep #review-yaml { height: auto; min-height: 6; max-height: 14; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cfg: RunConfig | None = None
        self.checking = False
        self.saved_path: Path | None = None
        self.saved_text: str | None = None  # what was written, to tell whether the config changed since
        self._default_path: str | None = None
        self.not_free: list[Problem] = []  # the run directory's problems (engine.rundir.check_free)
        self.free_name: str | None = None  # a free project_name to offer instead
        self._block_size: tuple[str, str] | None = None  # (config key, the block size resolved for it)
        self._resolving: str | None = None  # the config key a worker resolves the block size for

    def compose(self) -> ComposeResult:
        with Horizontal(id="review-save-row"):
            yield Static("Save to")
            yield Input(id="save-path", placeholder="file name, e.g. my-run.yaml")
            yield Button("Save", id="save")
            yield Button("Save and launch", id="launch", variant="primary")
            yield Button("Exit", id="exit", disabled=True)
        yield Button("Use a free name", id="use-free-name", compact=True, variant="warning")
        yield Static(id="review-status", classes="hint", markup=False)
        yield Static(classes="problems")
        view = yaml_view()
        view.border_title = "the YAML that will be written"
        yield view
        yield Static(id="review-summary")

    # ------------------------------------------------------------ the Step protocol

    def load(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self._check_run_dir(cfg)
        self._show_summary(cfg)
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

    def show_problems(self, problems: list[Problem]) -> None:
        # the app clears the problems when the step is shown: a run directory that is not free stays said
        super().show_problems(problems or self.not_free)

    # ------------------------------------------------------------ the run directory and the summary

    def _check_run_dir(self, cfg: RunConfig) -> list[Problem]:
        from engine.rundir import free_name

        self.not_free = run_dir_problems(cfg)
        self.free_name = free_name(cfg) if self.not_free else None
        button = self.query_one("#use-free-name", Button)
        button.display = self.free_name is not None and self.free_name != cfg.project_name
        if self.free_name:
            button.label = f"Use {self.free_name}"
        return self.not_free

    @on(Button.Pressed, "#use-free-name")
    def _use_free_name(self) -> None:
        if self.cfg is None or not self.free_name:
            return
        self.cfg.project_name = self.free_name
        self.load(self.cfg)
        self.show_problems([])
        self._status(f"project_name is now {self.cfg.project_name}", scroll=False)
        self.query_one("#save-path", Input).focus()

    def _preview(self, cfg: RunConfig) -> tuple[Preview | None, Plan | None]:
        """The Preview step's preview and plan, when they were built for this very config."""
        for step in self.wizard.steps:
            if isinstance(step, PreviewStep) and step.preview is not None and not step.building \
                    and step._key == config_key(cfg):
                return step.preview, step.plan
        return None, None

    def _show_summary(self, cfg: RunConfig) -> None:
        preview, plan = self._preview(cfg)
        block_size = None
        if preview is None:
            key = config_key(cfg)
            if self._block_size is not None and self._block_size[0] == key:
                block_size = self._block_size[1]
            else:
                if cfg.params.block_size == -1:
                    block_size = "block_size -1 (resolved once the model's tokenizer is read…)"
                if self._resolving != key:
                    self._resolving = key
                    self._resolve_block_size(config_copy(cfg), key)
        self.query_one("#review-summary", Static).update(summary_table(cfg, preview, plan, block_size))

    @work(thread=True, group="review-block-size")  # not exclusive: a cancelled worker would fail until()
    def _resolve_block_size(self, cfg: RunConfig, key: str) -> None:
        """-1, or a size beyond the tokenizer's limit, is resolved with the tokenizer, as the run resolves it."""
        from engine.block_size import resolve_block_size
        from engine.pipeline import prepare_tokenizer

        try:
            tokenizer, _ = prepare_tokenizer(cfg)
            note = resolve_block_size(cfg, tokenizer)[1]
        except UserError as e:
            note = f"block_size {cfg.params.block_size} (not resolved: {e.problems[0].message if e.problems else e})"
        except Exception as e:  # a broken tokenizer: the summary says so, the Preview step says more
            note = f"block_size {cfg.params.block_size} (not resolved: {type(e).__name__}: {e})"
        self.post_message(BlockSizeResolved(key, note))

    @on(BlockSizeResolved)
    def _block_size_resolved(self, message: BlockSizeResolved) -> None:
        message.stop()
        if self._resolving == message.key:
            self._resolving = None
        self._block_size = (message.key, message.note)
        if self.cfg is not None and config_key(self.cfg) == message.key:
            self._show_summary(self.cfg)

    # ------------------------------------------------------------ saving

    def request_save(self, *, launch: bool) -> None:
        """Check the config, then write it (asking before overwriting a file); launch=True exits to train.
        The run directory is checked first: it takes a moment, the rest (every row, for a launch) longer."""
        if self.checking or self.cfg is None:
            return
        value = self.query_one("#save-path", Input).value.strip()
        if not value:
            self.show_problems([Problem("save-path", "no file name", "type where to save the config, e.g. "
                                        f"{default_path(self.cfg)}")])
            return
        if self._check_run_dir(self.cfg):
            what = f"use {self.free_name} (the button above) or " if self.free_name else ""
            self._status(f"not saved: the run directory is not free ({what}change project_name under "
                         "Parameters)")
            self.show_problems(self.not_free)
            return
        self._set_checking(True)
        self.show_problems([])
        self._check(config_copy(self.cfg), Path(value).expanduser(), to_yaml(self.cfg), launch)

    @work(thread=True, exclusive=True, group="save")
    def _check(self, cfg: RunConfig, path: Path, text: str, launch: bool) -> None:
        try:  # a bug in a check goes to the app's funnel, then back here (worker_failed)
            validate(cfg)
            problems: list[Problem] = []
        except UserError as e:
            problems = list(e.problems)
        self.post_message(ConfigChecked(path, text, launch, problems))

    @on(ConfigChecked)
    def _checked(self, message: ConfigChecked) -> None:
        message.stop()
        self._set_checking(False)
        if message.problems:
            self._not_saved(message.problems)
            return
        if message.path.exists() and not self._is_ours(message.path):
            self._status(f"{message.path} exists: overwrite it?")
            self.app.push_screen(ConfirmDialog(f"{message.path} already exists. Overwrite it?"),
                                 lambda yes: self._write(message) if yes else self._status(
                                     f"not saved: {message.path} was left as it was"))
            return
        self._write(message)

    def _not_saved(self, problems: list[Problem]) -> None:
        n = len(problems)
        self._status(f"not saved: {n} problem{'s' if n != 1 else ''} to fix first (Esc goes back to the steps)")
        self.show_problems(problems)
        self.call_after_refresh(self.query_one(".problems").scroll_visible)  # below the fold at 80x24

    def _is_ours(self, path: Path) -> bool:
        """The file this wizard saved a moment ago, or the one it was opened from: saving it needs no question."""
        ours = [p for p in (self.saved_path, self.cfg.source if self.cfg is not None else None) if p is not None]
        return any(path.resolve() == Path(p).resolve() for p in ours)

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
        self.tell_app(ConfigSaved(path, message.text))
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
        except UserError as e:  # a bug goes to the app's funnel, then back here (worker_failed)
            self.post_message(RunStartFailed(list(e.problems)))
            return
        self.post_message(RunStarted(handle))

    @on(RunStarted)
    def _run_started(self, message: RunStarted) -> None:
        message.stop()
        self._set_checking(False)
        self._status(f"started {message.handle.run_dir} (pid {message.handle.pid})")
        self.tell_app(RunLaunched(message.handle.run_dir, message.handle))

    @on(RunStartFailed)
    def _run_start_failed(self, message: RunStartFailed) -> None:
        message.stop()
        self._not_started(message.problems)

    def _not_started(self, problems: list[Problem]) -> None:
        self._set_checking(False)
        self._status("not started: fix this first (the config was saved)")
        self.show_problems(problems)
        self.call_after_refresh(self.query_one(".problems").scroll_visible)

    def worker_failed(self, worker: Worker[Any], error: BaseException, log: Path | None) -> bool:
        """A bug while checking or starting: said here, where Save was pressed; the user's work is kept."""
        fix = f"the traceback is in {log}; please report it" if log is not None else "please report it"
        what = f"{type(error).__name__}: {error}"
        if worker.name == "_check":
            self._set_checking(False)
            self._not_saved([Problem("validate", f"internal error while checking: {what}", fix)])
        elif worker.name == "_start":
            self._not_started([Problem("launch", f"internal error: {what}", fix)])
        else:
            return False
        return True

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
        status.display = bool(text)  # no empty line above the YAML
        if text and scroll:  # in view, should the step have been scrolled
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
            self.tell_app(ExitRequested())
