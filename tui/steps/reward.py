"""The reward model of GRPO and RLOO, on the Parameters step: the llm-reward runs found under ./runs to pick from
(or a path or hub id typed), and what the gate says of the model chosen (engine.reward_model: what it is;
engine.reward_gate: how it scores).

What it is, or why it is no reward model, comes from file reads (a worker all the same: a hub id may be looked
up); how it scores its own run's validation pairs loads torch and the model, in another worker, so the step
never waits for either. Listing the runs reads YAML and JSON only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static

from engine.config import RunConfig
from engine.errors import Problem, UserError
from engine.online import reward_models
from engine.reward_model import NotARewardModel, RewardModel
from engine.run_files import CONFIG_FILE
from tui.steps.rows import FieldRow
from tui.workers import FunnelledWorkers

KEY = "params.reward_model"
RUNS_ROOT = Path("runs")  # where llmtune puts runs by default (project_name: runs/...)
RUNS_DEPTH = 3  # runs/<name>, runs/<group>/<name>, and one level more
MAX_DIRS = 2000  # a huge tree under ./runs is not walked for ever
DEBOUNCE_S = 0.3  # inspect this long after the last key press, not on every key
STILL_READING = "still reading the reward model's files"
NOT_CHECKED = ("not checked: it is no llmtune llm-reward run with a validation split (give params.reward_pairs, a "
               "file of prompt/chosen/rejected pairs, to have it checked)")


def find_reward_runs(root: Path = RUNS_ROOT, depth: int = RUNS_DEPTH) -> list[str]:
    """The llm-reward run directories under `root` (as paths to type, relative when `root` is): those holding a
    config.yaml of task llm-reward and a model the gate accepts. A run's own folders (checkpoints) are not
    searched; hidden folders neither."""
    found: list[str] = []
    visited = 0

    def visit(directory: Path, level: int) -> None:
        nonlocal visited
        try:
            entries = sorted((e for e in os.scandir(directory) if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if visited >= MAX_DIRS:
                return
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
            visited += 1
            path = directory / entry.name
            if (path / CONFIG_FILE).is_file():
                if is_reward_run(path):
                    found.append(str(path))
            elif level < depth:
                visit(path, level + 1)

    visit(root, 1)
    return found


def is_reward_run(path: Path) -> bool:
    from engine.reward_model import inspect_reward_model

    try:
        return inspect_reward_model(str(path)).kind == "llmtune run"
    except Exception:  # NotARewardModel, or a file that cannot be read: not one to offer
        return False


def refusal(cfg: RunConfig, name: str, error: NotARewardModel) -> Problem:
    """NotARewardModel as the config check says it (engine.online.environment_problems)."""
    return cfg.problem(KEY, str(error), error.fix, name)


@dataclass
class RewardRunsFound(Message):
    runs: list[str]


@dataclass
class RewardInspected(Message):
    key: tuple[tuple[str, ...], str | None]  # (the names, the config's directory) inspected
    found: dict[str, RewardModel | NotARewardModel]


CheckKey = tuple[str, str | None, str | None]  # (the reward model's directory, params.reward_pairs, base_dir)


@dataclass
class RewardChecked(Message):
    key: CheckKey
    check: Any  # engine.reward_gate.RewardCheck, or None: not an llmtune run with a validation split
    error: str | None = None  # why it could not be checked


@dataclass
class RewardGateChanged(Message):
    """Bubbles to the Parameters step: what the gate says of the reward model changed (check its field again)."""


class RewardModelRow(FunnelledWorkers, FieldRow):
    """params.reward_model's row: its input, a list of the llm-reward runs found under ./runs, the engine's
    problems, and the gate's findings on the model(s) given."""

    DEFAULT_CSS = """
    RewardModelRow #reward-gate { height: auto; padding-left: 2; display: none; }
    """

    def __init__(self, label: str | Text, widget: Widget, *, key: str, tooltip: str | None = None,
                 id: str | None = None) -> None:
        assert isinstance(widget, Input), widget  # params.reward_model is text (engine.params)
        super().__init__(label, widget, key=key, tooltip=tooltip, id=id)
        self.input = widget
        self.runs: list[str] = []
        # (the names, the config's directory) inspected, or being inspected (`key` is the row's config key)
        self.names_key: tuple[tuple[str, ...], str | None] | None = None
        self.inspected: dict[str, RewardModel | NotARewardModel] = {}  # of those names, once read
        self.checks: dict[CheckKey, tuple[Any, str | None]] = {}  # (RewardCheck or None, why it failed)
        self.checking: set[CheckKey] = set()  # what a worker checks now
        self._pairs: str | None = None  # params.reward_pairs: what to check them on (else their run's own pairs)
        self._allow_weak = False
        self._base_dir: Path | None = None
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label, classes="field-label")
            yield self.input
        with Horizontal():
            yield Label("  llm-reward runs: …", id="reward-runs-label", classes="field-label")
            yield Select([], prompt="(pick a run found under ./runs)", compact=True, id="reward-runs")
        yield Static(classes="field-problem")
        yield Static(id="reward-gate")

    def on_mount(self) -> None:
        self.scan()

    # ------------------------------------------------------------ the runs to pick from

    def scan(self) -> None:
        """List the llm-reward runs under ./runs again (the step is shown: one may have finished meanwhile)."""
        self._scan()

    @work(thread=True, exclusive=True, group="reward-runs")
    def _scan(self) -> None:
        try:
            runs = find_reward_runs()
        except Exception:  # an unreadable tree only means nothing to offer
            runs = []
        self.post_message(RewardRunsFound(runs))

    @on(RewardRunsFound)
    def _runs_found(self, message: RewardRunsFound) -> None:
        message.stop()
        self.runs = message.runs
        select = self.query_one("#reward-runs", Select)
        with self.prevent(Select.Changed):
            select.set_options([(run, run) for run in self.runs])
        select.disabled = not self.runs
        self.query_one("#reward-runs-label", Label).update(
            f"  llm-reward runs: {len(self.runs)}" if self.runs else "  llm-reward runs: none")
        select.tooltip = None if self.runs else ("no llm-reward run under ./runs: train one (task: llm-reward), or "
                                                 "type a run directory or model above")
        self.input.suggester = SuggestFromList(self.runs) if self.runs else None
        self._sync_select()

    @on(Select.Changed, "#reward-runs")
    def _picked(self, event: Select.Changed) -> None:
        event.stop()  # the step's own handler is for its fields
        if isinstance(event.value, str) and event.value != self.input.value.strip():
            self.input.value = event.value  # its Changed assigns it, as typing would

    def _sync_select(self) -> None:
        """The list shows the run typed, else nothing picked."""
        select = self.query_one("#reward-runs", Select)
        typed = self.input.value.strip()
        with self.prevent(Select.Changed):
            if typed in self.runs:
                select.value = typed
            elif select.value is not Select.BLANK:
                select.clear()

    # ------------------------------------------------------------ the gate

    def follow(self, cfg: RunConfig) -> None:
        """After any change on the step: inspect the model(s) now named, a moment after typing stops."""
        self._allow_weak, self._base_dir = cfg.params.allow_weak_reward_model, cfg.base_dir
        if self.is_mounted:
            self._sync_select()
        key = (tuple(reward_models(cfg.params)), str(cfg.base_dir) if cfg.base_dir else None)
        pairs = cfg.params.reward_pairs or None
        if key != self.names_key or pairs != self._pairs:
            if key != self.names_key:
                self.inspected = {}
            self.names_key, self._pairs = key, pairs
            if self._timer is not None:
                self._timer.stop()
            self._timer = self.set_timer(DEBOUNCE_S, self._inspect_now) if key[0] else None
        self.render_gate()

    def _inspect_now(self) -> None:
        self._timer = None
        if self.names_key is not None and self.names_key[0]:
            self._inspect(self.names_key, self._base_dir)

    @work(thread=True, exclusive=True, group="reward-inspect")
    def _inspect(self, key: tuple[tuple[str, ...], str | None], base_dir: Path | None) -> None:
        from engine.reward_model import inspect_reward_model

        found: dict[str, RewardModel | NotARewardModel] = {}
        for name in key[0]:
            try:
                found[name] = inspect_reward_model(name, base_dir)
            except NotARewardModel as e:
                found[name] = e
            except Exception as e:  # an odd file: said as a refusal, the wizard goes on
                found[name] = NotARewardModel(f"{name} cannot be read ({type(e).__name__}: {e})",
                                              "give the run directory of an llm-reward run")
        self.post_message(RewardInspected(key, found))

    @on(RewardInspected)
    def _inspected(self, message: RewardInspected) -> None:
        message.stop()
        if message.key != self.names_key:
            return  # typed on since
        self.inspected = message.found
        for reward in message.found.values():
            if isinstance(reward, RewardModel):
                key = self._check_key(reward)
                if key not in self.checks and key not in self.checking:
                    self.checking.add(key)
                    self._check(key, reward, self._base_dir)
        self.render_gate()
        self.post_message(RewardGateChanged())

    def _check_key(self, reward: RewardModel) -> CheckKey:
        return (str(reward.path), self._pairs, self.names_key[1] if self.names_key else None)

    @work(thread=True, group="reward-check")  # not exclusive: each result is kept, by its key
    def _check(self, key: CheckKey, reward: RewardModel, base_dir: Path | None) -> None:
        """As the gate checks it (engine.reward_gate.reward_gate): on params.reward_pairs, else its run's pairs."""
        try:
            from engine.reward_gate import check_reward_pairs, check_reward_run

            pairs = key[1]
            check = check_reward_pairs(reward, pairs, base_dir) if pairs else check_reward_run(reward)
            self.post_message(RewardChecked(key, check))
        except Exception as e:  # its run's data moved, no such pairs file, a broken model: said, not raised
            message = e.problems[0].message if isinstance(e, UserError) and e.problems else str(e)
            self.post_message(RewardChecked(key, None, f"{type(e).__name__}: {message}"))

    @on(RewardChecked)
    def _checked(self, message: RewardChecked) -> None:
        message.stop()
        self.checking.discard(message.key)
        self.checks[message.key] = (message.check, message.error)
        self.render_gate()

    def refusals(self, cfg: RunConfig) -> list[Problem]:
        """The names read so far that are no reward model, as the config check words it."""
        return [refusal(cfg, name, found) for name, found in self.inspected.items()
                if isinstance(found, NotARewardModel) and name in reward_models(cfg.params)]

    def problems(self, cfg: RunConfig) -> list[Problem]:
        """What blocks Next: a refusal, or the files not read yet (read now, without waiting for the timer)."""
        self.follow(cfg)
        if self.names_key is not None and any(name not in self.inspected for name in self.names_key[0]):
            if self._timer is not None:
                self._timer.stop()
                self._inspect_now()
            return [Problem(KEY, STILL_READING, "press Next again in a moment")]
        return self.refusals(cfg)

    def gate_text(self) -> Text:
        """What the gate knows of each model named: what it is, and how it scores its run's validation pairs."""
        text = Text()
        for name in self.names_key[0] if self.names_key else ():
            found = self.inspected.get(name)
            if found is None:
                text.append(f"reading {name}…\n", style="italic")
            elif isinstance(found, RewardModel):
                text.append(found.describe() + "\n", style="green")
                text.append_text(self._check_text(self._check_key(found)))
        text.rstrip()
        return text

    def _check_text(self, key: CheckKey) -> Text:
        if key in self.checking or key not in self.checks:
            pairs = key[1] or "its run's validation pairs"
            return Text(f"  checking how it scores {pairs} (loading it)…\n", style="italic")
        check, error = self.checks[key]
        if error is not None:
            return Text(f"  could not check it: {error}\n", style="yellow")
        if check is None:
            return Text(f"  {NOT_CHECKED}\n", style="dim")
        if not check.weak:
            return Text(f"  {check.describe()}\n")
        verdict = ("params.allow_weak_reward_model is on: the run goes ahead with it" if self._allow_weak else
                   "Save and launch (and --yes) stop on it: train it further, or turn on "
                   "params.allow_weak_reward_model (advanced)")
        return Text.assemble((f"  {check.describe()}\n", "yellow"), (f"  !! weak reward model: {verdict}\n",
                                                                       "bold yellow"))

    def render_gate(self) -> None:
        if not self.is_mounted:
            return
        gate = self.query_one("#reward-gate", Static)
        text = self.gate_text()
        gate.update(text)
        gate.display = bool(text.plain)
