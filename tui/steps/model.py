"""Step 1, Model: the base model to fine-tune, picked from the local Hugging Face cache, typed, or browsed to.

What the model is (architecture, size, context, chat template) is read from its files in a thread worker, a
moment after typing stops, and shown beside the list; the app keeps the result (ModelInfoChanged) for the
steps after this one (the memory estimate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.config import RunConfig, model_problems, resolve_local
from engine.errors import Problem
from engine.model_info import ModelInfo, cached_models, read_model_info
from engine.tinymodel import TINY_MODEL_ID
from tui.errors import report_fix
from tui.format import human_count, shown_path
from tui.messages import ModelInfoChanged
from tui.steps.base import Step, step_problems
from tui.widgets.path_picker import PathPicker

DEBOUNCE_S = 0.3  # read the model this long after the last key press, not on every key
TINY_LABEL = f"{TINY_MODEL_ID} (built locally, for trying the tool)"
SOURCES = {"local": "local directory", "cache": "Hugging Face cache", "hub": "Hugging Face Hub (config only)",
           "built-in": "built here, random weights"}


@dataclass
class ModelInfoRead(Message):
    info: ModelInfo


@dataclass
class CacheScanned(Message):
    names: list[str]


def describe(info: ModelInfo) -> Text:
    """The info panel's text: what the model is, or why it cannot be used."""
    text = Text()
    if not info.available:
        text.append("Not available\n", style="bold red")
        text.append(f"{info.reason or 'unknown reason'}\n", style="red")
        if info.fix:
            text.append(f"fix: {info.fix}\n", style="dim")
        return text
    text.append(f"{info.architecture or 'unknown architecture'}", style="bold")
    text.append(f" ({info.model_type})\n" if info.model_type else "\n")
    rows = [
        ("Parameters", _parameters(info)),
        ("Context", f"{info.context_length:,} tokens" if info.context_length else None),
        ("Dtype", info.dtype),
        ("Chat template", {True: "yes", False: "no (pick one later)", None: "unknown"}[info.has_chat_template]),
        ("Layers", _shape(info)),
        ("Vocabulary", f"{info.vocab_size:,}" if info.vocab_size else None),
        ("From", SOURCES.get(info.source or "")),
    ]
    for label, value in rows:
        text.append(f"{label:<14}", style="dim")
        text.append(f"{value or '?'}\n")
    return text


def _parameters(info: ModelInfo) -> str | None:
    if info.parameters is None:
        return None
    return human_count(info.parameters) if info.parameters_exact else f"~{human_count(info.parameters)} (est.)"


def _shape(info: ModelInfo) -> str | None:
    if not info.num_layers:
        return None
    heads = f", {info.num_heads} heads" if info.num_heads else ""
    if info.num_heads and info.num_kv_heads and info.num_kv_heads != info.num_heads:
        heads += f" ({info.num_kv_heads} kv)"
    return f"{info.num_layers} x {info.hidden_size}{heads}"


class ModelStep(Step):
    """Pick the model to fine-tune: a Hugging Face id (org/name), a model already in the local Hugging Face
    cache (listed), or a local directory saved with save_pretrained (Browse). llmtune/tiny-random is a tiny
    random model built on this machine: for trying the tool, not for results. The panel on the right says
    what the model is; a model that is neither local nor cached cannot be used offline."""

    title = "Model"
    keys = ("base_model",)

    DEFAULT_CSS = """
    ModelStep #model-row { height: 3; }
    ModelStep #model-input { width: 1fr; }
    ModelStep #model-browse { min-width: 12; }
    ModelStep #model-panes { height: auto; }
    ModelStep #model-panes > Vertical { width: 1fr; height: auto; }
    ModelStep #model-panes .label { margin-top: 0; }
    ModelStep #model-cache { height: 10; }
    ModelStep #model-info { height: auto; padding: 0 0 0 2; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.info: ModelInfo | None = None  # the latest info read, for `info.name`
        self.reading: str | None = None  # the name being read, if any
        self._timer: Timer | None = None
        self._base_dir: Path | None = None

    def compose(self) -> ComposeResult:
        yield Static("Model id (org/name) or a local model directory", classes="label")
        with Horizontal(id="model-row"):
            yield Input(id="model-input", placeholder="e.g. Qwen/Qwen2.5-0.5B-Instruct or ./my-model")
            yield Button("Browse…", id="model-browse")
        with Horizontal(id="model-panes"):
            with Vertical():
                yield Static("Pick one (Enter)", classes="label")
                yield OptionList(Option(TINY_LABEL, id=TINY_MODEL_ID), id="model-cache")
            with Vertical():
                yield Static("About the model", classes="label")
                yield Static(id="model-info")
        yield Static(classes="problems")

    def on_mount(self) -> None:
        self._scan_cache()

    # ------------------------------------------------------------ the step's contract

    def load(self, cfg: RunConfig) -> None:
        self._base_dir = cfg.base_dir
        name = cfg.base_model.strip()
        field = self.query_one("#model-input", Input)
        if field.value.strip() != name:
            with self.prevent(Input.Changed):
                field.value = name
        if not name:
            self._nothing_chosen()
        elif name != self.reading and (self.info is None or self.info.name != name):
            self.read(name)

    def store(self, cfg: RunConfig) -> None:
        cfg.base_model = self.query_one("#model-input", Input).value.strip()

    def problems(self, cfg: RunConfig) -> list[Problem]:
        found = step_problems(cfg, self.keys)
        found += [p for p in model_problems(cfg) if p not in found]
        if found or not cfg.base_model:
            return found
        info = self.info
        if info is None or info.name != cfg.base_model:
            if self.reading != cfg.base_model:
                self.read(cfg.base_model)
            return [Problem("base_model", "still reading the model's files", "press Next again in a moment")]
        if not info.available and resolve_local(cfg.base_model, cfg.base_dir) is None:
            return [cfg.problem("base_model", info.reason or "cannot be used", info.fix, cfg.base_model)]
        return []

    # ------------------------------------------------------------ reading the model (a thread worker)

    def read(self, name: str) -> None:
        """Read `name`'s info now (the debounce timer, Enter, or a pick from the list got here)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.reading = name
        self.tell_app(ModelInfoChanged(None))  # until the new one is read: never a stale model for the estimate
        slow = " (built the first time: a few seconds)" if name == TINY_MODEL_ID else ""
        self._panel(Text(f"Reading {name}…{slow}", style="dim"))
        self._read_worker(name, self._base_dir)

    @work(thread=True, exclusive=True, group="model-info")
    def _read_worker(self, name: str, base_dir: Path | None) -> None:
        try:
            info = read_model_info(name, base_dir)
        except Exception as e:  # a bug or an odd file: say so in the panel rather than crash the wizard
            info = ModelInfo(name, reason=f"cannot read it ({type(e).__name__}: {e})",
                             fix="pick another model, or if the model loads elsewhere: " + report_fix(e))
        if not get_current_worker().is_cancelled:
            self.post_message(ModelInfoRead(info))

    @on(ModelInfoRead)
    def _info_read(self, message: ModelInfoRead) -> None:
        message.stop()
        info = message.info
        if info.name != self.query_one("#model-input", Input).value.strip():
            return  # typed on since: a newer read is coming
        self.tell_app(ModelInfoChanged(info), then=lambda: self._info_known(info))

    def _info_known(self, info: ModelInfo) -> None:
        """The app has the model's info: show it here too (unless typed on meanwhile)."""
        if info.name == self.query_one("#model-input", Input).value.strip():
            self.info, self.reading = info, None
            self._panel(describe(info))

    def show_problems(self, problems: list[Problem]) -> None:
        super().show_problems(problems)
        if problems:  # they come last, below the fold at 80x24: bring them into view
            self.scroll_end(animate=False)

    def _panel(self, text: Text) -> None:
        self.query_one("#model-info", Static).update(text)

    # ------------------------------------------------------------ the cache list

    @work(thread=True, group="model-cache")
    def _scan_cache(self) -> None:
        try:
            names = cached_models()
        except Exception:  # an unreadable cache only means an empty list
            names = []
        self.post_message(CacheScanned(names))

    @on(CacheScanned)
    def _cache_scanned(self, message: CacheScanned) -> None:
        message.stop()
        options = self.query_one("#model-cache", OptionList)
        options.add_options([Option(name, id=name) for name in message.names if name != TINY_MODEL_ID])

    # ------------------------------------------------------------ input

    def _nothing_chosen(self) -> None:
        self.info = None
        self.tell_app(ModelInfoChanged(None))
        self._panel(Text("Pick a model from the list, type its id, or browse to a local directory.", style="dim"))

    @on(Input.Changed, "#model-input")
    def _typed(self, event: Input.Changed) -> None:
        name = event.value.strip()
        if self._timer is not None:
            self._timer.stop()
        if not name:
            self._timer = None
            self._nothing_chosen()  # the panel must not keep describing the model that was erased
            return
        self._timer = self.set_timer(DEBOUNCE_S, lambda: self.read(name))

    @on(Input.Submitted, "#model-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.read(event.value.strip())

    @on(OptionList.OptionSelected, "#model-cache")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self._choose(event.option.id)

    @on(Button.Pressed, "#model-browse")
    def _browse(self) -> None:
        current = self.query_one("#model-input", Input).value.strip()
        local = resolve_local(current, self._base_dir) if current else None
        start = local.parent if local is not None else Path.cwd()
        self.app.push_screen(PathPicker(start, dirs_only=True, title="Choose a model directory"),
                             self._browsed)

    def _browsed(self, path: Path | None) -> None:
        if path is not None:
            self._choose(shown_path(path))

    def _choose(self, name: str) -> None:
        field = self.query_one("#model-input", Input)
        with self.prevent(Input.Changed):
            field.value = name
        self.read(name)
