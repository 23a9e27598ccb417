"""Step 3, Data: where the rows are (a directory with train/valid files, one file, or a datasets id), which
split trains and which validates, and a look at the first rows.

Reading runs in a thread worker a moment after typing stops: the first rows (at most PREVIEW_ROWS) come back
first, the row counts after them (counting reads the whole file). The app keeps the first rows of the train
split and the splits found (DataPreviewed) for the Columns step.

A split found under a validation name (VALID_NAMES) becomes the validation split unless the user, or the
config file the wizard was opened with, chose one (or none). With no validation split, a share of the train
rows can be held out instead (params.valid_fraction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Button, DataTable, Input, Select, Static
from textual.worker import get_current_worker

from engine.config import RunConfig, coerce, data_problems, resolve_local
from engine.data import (
    EXTENSIONS,
    Table,
    count_rows,
    data_format,
    is_hub_id,
    is_the_file,
    list_data_files,
    load_split,
    split_names,
)
from engine.errors import Problem, UserError
from tui.errors import report_fix
from tui.format import shown_path
from tui.messages import DataPreviewed
from tui.steps.base import Step, step_problems
from tui.steps.rows import compact_input
from tui.widgets.path_picker import PathPicker

DEBOUNCE_S = 0.3
PREVIEW_ROWS = 200  # rows read for the table (and for the Columns step)
SHOWN_COLUMNS = 8
CELL_WIDTH = 40
HUB_SPLITS = ("train", "validation", "test")  # a hub dataset's splits are not listed offline: the usual names
NO_VALID = ""  # the valid-split Select's "(none)"
VALID_NAMES = ("valid", "validation", "val", "test", "dev")  # split names that mean "held out", preferred first
FRACTION_KEY = "params.valid_fraction"
STILL_READING = Problem("data.path", "still reading the data", "press Next again in a moment")


@dataclass(frozen=True)
class DataRequest:
    """What is read: changing any of it reads again."""

    path: str
    train: str
    valid: str | None


def request_of(cfg: RunConfig) -> DataRequest:
    return DataRequest(cfg.data.path.strip(), cfg.data.train_split, cfg.data.valid_split or None)


@dataclass
class DataPreview:
    """What the worker found: the splits to offer, the first rows, and what went wrong."""

    request: DataRequest
    found: str  # one line for people: "a directory with 2 jsonl files"
    train_choices: list[tuple[str, str]]  # (label, split) for the Selects
    valid_choices: list[tuple[str, str]]
    splits: list[str]
    table: Table | None = None
    tables: dict[str, Table] = field(default_factory=dict)  # split -> its first rows
    problems: list[Problem] = field(default_factory=list)
    picked: str | None = None  # the validation split chosen by its name (request.valid), if one was


@dataclass
class DataRead(Message):
    asked: DataRequest  # what was asked for (preview.request adds a validation split picked by its name)
    preview: DataPreview


@dataclass
class RowsCounted(Message):
    request: DataRequest
    counts: dict[str, str]  # split -> "1,234" or "200+"


# ---------------------------------------------------------------- reading (plain functions, run in the worker)


def read_preview(request: DataRequest, base_dir: Path | None, *, pick_valid: bool = False) -> DataPreview:
    """The splits found at request.path and the first rows of the train (and valid) split. `pick_valid`: with
    no validation split asked for, take the one found under a validation name (VALID_NAMES)."""
    preview = _choices(request, base_dir)
    picked = pick_valid_split(preview, request.train) if pick_valid and request.valid is None else None
    if picked is not None:
        request = replace(request, valid=picked)
        preview.request, preview.picked = request, picked
    for split, key in ((request.train, "data.train_split"), (request.valid, "data.valid_split")):
        if not split:
            continue
        try:
            table = load_split(request.path, split, base_dir=base_dir, limit=PREVIEW_ROWS, split_key=key)
        except UserError as e:
            preview.problems += [p for p in e.problems if p not in preview.problems]
            continue
        preview.tables[split] = table
        if key == "data.train_split":
            preview.table = table
    return preview


def _choices(request: DataRequest, base_dir: Path | None) -> DataPreview:
    """What is at the path, and the splits the Selects offer (the current ones always among them)."""
    local = resolve_local(request.path, base_dir) if request.path.strip() else None
    splits: list[str] = []
    if local is not None and local.is_dir():
        files = list_data_files(local)
        splits = split_names(files)
        formats = sorted({data_format(Path(f)) or "" for f in files})
        found = (f"a directory with {len(files)} {'/'.join(formats)} file{'s' if len(files) != 1 else ''}: "
                 f"split{'s' if len(splits) != 1 else ''} {', '.join(splits)}"
                 if files else "a directory with no data files")
        train = [(s, s) for s in splits]
        valid = [(s, s) for s in splits]
    elif local is not None:
        fmt = data_format(local)
        found = f"one {fmt} file" if fmt else f"a {local.suffix or 'extensionless'} file (not a data file)"
        siblings = [s for s in split_names(list_data_files(local.parent)) if s != local.stem]
        splits = [local.stem, *siblings]
        own = request.train if is_the_file(local, request.train) else "train"
        train = [(f"{local.name} (this file)", own), *[(s, s) for s in siblings]]
        valid = [(s, s) for s in siblings]
    elif is_hub_id(request.path, base_dir):
        found = "a datasets id (its splits are listed once read: train, validation, test are usual)"
        train = valid = [(s, s) for s in HUB_SPLITS]
    else:
        found = "nothing found there"
        train = valid = []
    return DataPreview(request, found, _with(train, request.train), [("(none)", NO_VALID), *_with(
        valid, request.valid)], splits)


def pick_valid_split(preview: DataPreview, train: str) -> str | None:
    """The split found at the path (not merely guessed, as a datasets id's are) whose name says it is held
    out: valid, validation, val, test, dev, in that order (case aside); never the train split."""
    offered = {value for _, value in preview.valid_choices} & set(preview.splits)
    by_name = {split.lower(): split for split in sorted(offered - {train, NO_VALID})}
    return next((by_name[name] for name in VALID_NAMES if name in by_name), None)


def _with(choices: list[tuple[str, str]], current: str | None) -> list[tuple[str, str]]:
    if current and current not in {value for _, value in choices}:
        return [*choices, (f"{current} (not found)", current)]
    return choices


def _rows(count: str | None) -> str:
    if count is None:
        return "counting… rows"
    return f"{count} row{'' if count == '1' else 's'}"


def count_label(table: Table, limit: int = PREVIEW_ROWS) -> str:
    """The number of rows as shown: exact when cheap to count, else "200+"."""
    if len(table.rows) < limit:
        return f"{len(table.rows):,}"
    counted = count_rows(table)
    return f"{counted:,}" if counted is not None else f"{limit}+"


def cell_text(value: Any, width: int = CELL_WIDTH) -> Text:
    """One line of at most `width` characters; Text, so "[INST]" is shown, not read as markup."""
    try:
        raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError):  # nested ~1000 deep: shown cut short, without recursing that far
        from engine.errors import show_value

        raw = show_value(value, width * 2)
    raw = raw[: width * 4].encode("utf-8", "replace").decode("utf-8")  # a lone surrogate cannot be drawn
    flat = " ".join(raw.split())
    return Text(flat if len(flat) <= width else flat[: width - 1] + "…")


# ---------------------------------------------------------------- the step


class DataStep(Step):
    """Where the training rows are: a directory holding train.jsonl (or .csv, .json, .parquet) and maybe
    valid.jsonl, as AutoTrain lays it out; a single data file; or a datasets id (org/name) already in the
    local cache. The split names are the file names without their extension. The table shows the first rows
    of the train split: check that the columns are what you expect."""

    title = "Data"
    keys = ("data.path", "data.train_split", "data.valid_split", FRACTION_KEY)

    DEFAULT_CSS = """
    DataStep #data-row, DataStep #data-splits { height: 3; }
    DataStep #data-picked { height: auto; color: $text-muted; }
    DataStep #data-holdout { height: 1; }
    DataStep #data-holdout Static { width: auto; color: $text-muted; }
    DataStep #valid-fraction { width: 10; margin: 0 1; }
    DataStep #data-path { width: 1fr; }
    DataStep #data-browse { min-width: 12; }
    DataStep #data-splits Static { width: auto; height: 3; content-align: left middle; padding: 0 1 0 0; }
    DataStep #data-splits Select { width: 1fr; }
    DataStep #data-found, DataStep #data-counts { height: 1; color: $text-muted; }
    DataStep #data-table { height: 1fr; min-height: 5; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request: DataRequest | None = None  # the latest read asked for
        self.preview: DataPreview | None = None  # the latest read done (for self.request, or an older one)
        self.counts: dict[str, str] = {}
        self._timer: Timer | None = None
        self._base_dir: Path | None = None
        self._valid_chosen: set[str] = set()  # data paths whose validation split the user (or the config) chose
        self._fraction_problem: Problem | None = None  # the hold-out share typed is no number

    def compose(self) -> ComposeResult:
        yield Static("Data: a directory (train.jsonl, valid.jsonl…), a data file, or a datasets id",
                     classes="label")
        with Horizontal(id="data-row"):
            yield Input(id="data-path", placeholder="e.g. data or data/train.csv or org/name")
            yield Button("Browse…", id="data-browse")
        yield Static(id="data-found")
        with Horizontal(id="data-splits"):
            yield Static("Train")
            yield Select([("train", "train")], id="train-split", allow_blank=False)
            yield Static(" Validation")
            yield Select([("(none)", NO_VALID)], id="valid-split", allow_blank=False)
        yield Static(id="data-picked")
        with Horizontal(id="data-holdout"):
            yield Static("No validation split: hold out")
            fraction = compact_input(placeholder="0", id="valid-fraction")
            fraction.tooltip = ("params.valid_fraction: the share of the train rows held out for evaluation, "
                                "chosen by params.seed (the same rows every run); 0 = none")
            yield fraction
            yield Static("of the train rows (0.05 = 5%)")
        yield Static(id="data-counts")
        yield DataTable(id="data-table", cursor_type="row", zebra_stripes=True)
        yield Static(classes="problems")

    # ------------------------------------------------------------ the step's contract

    def load(self, cfg: RunConfig) -> None:
        if self.request is None and cfg.source is not None and "data.valid_split" not in cfg.defaulted:
            self._valid_chosen.add(cfg.data.path.strip())  # the config file says which (or none): kept
        self._base_dir = cfg.base_dir
        with self.prevent(Input.Changed, Select.Changed):
            self.query_one("#data-path", Input).value = cfg.data.path
            self._set_choices("#train-split", [(cfg.data.train_split, cfg.data.train_split)], cfg.data.train_split)
            valid = cfg.data.valid_split or NO_VALID
            self._set_choices("#valid-split", [("(none)", NO_VALID), *_with([], cfg.data.valid_split)], valid)
            fraction = getattr(cfg.params, "valid_fraction", None)
            if fraction is not None and self._fraction_problem is None:  # else the text typed stays, to be fixed
                self.query_one("#valid-fraction", Input).value = f"{fraction:g}" if fraction else ""
        self._show_holdout()
        request = request_of(cfg)
        if request != self.request:
            self.read(request)
        elif self.preview is not None and self.preview.request == request:
            self._show(self.preview)  # the same data: restore the choices the worker found

    def store(self, cfg: RunConfig) -> None:
        request = self._current()
        cfg.data.path, cfg.data.train_split, cfg.data.valid_split = request.path, request.train, request.valid
        self._fraction_problem = None
        if not hasattr(cfg.params, "valid_fraction"):
            return
        if request.valid is not None:
            cfg.params.valid_fraction = 0.0  # a validation split is there: nothing is held out
            return
        text = self.query_one("#valid-fraction", Input).value.strip()
        value, problem = coerce(text or "0", "float", FRACTION_KEY)
        if problem is not None:  # the text stays in the field, the config keeps its value, Next says why
            self._fraction_problem = cfg.problem(FRACTION_KEY, problem[0], problem[1], text)
        else:
            cfg.params.valid_fraction = value

    def problems(self, cfg: RunConfig) -> list[Problem]:
        if self._fraction_problem is not None:
            return [self._fraction_problem]
        found = step_problems(cfg, self.keys)
        found += [p for p in data_problems(cfg) if p not in found]
        if found:
            return found
        request = request_of(cfg)
        if self.preview is None or self.preview.request != request:
            if self.request != request:
                self.read(request)
            return [STILL_READING]
        return list(self.preview.problems)  # unreadable rows fail the run too: say so now

    def show_problems(self, problems: list[Problem]) -> None:
        # the app clears the problems when the step is shown; unreadable data stays shown until it is read again
        if not problems and self.preview is not None and self.preview.request == self.request:
            problems = self.preview.problems
        super().show_problems(problems)
        if problems:  # they come last, below the fold at 80x24: bring them into view
            self.scroll_end(animate=False)

    # ------------------------------------------------------------ reading (a thread worker)

    def _current(self) -> DataRequest:
        train = self.query_one("#train-split", Select).value
        valid = self.query_one("#valid-split", Select).value
        return DataRequest(self.query_one("#data-path", Input).value.strip(),
                           train if isinstance(train, str) else "train",
                           valid if isinstance(valid, str) and valid != NO_VALID else None)

    def read(self, request: DataRequest | None = None) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        request = request or self._current()
        previous = self.preview
        if (previous is not None and previous.picked and request.valid == previous.picked
                and request.path != previous.request.path and request.path not in self._valid_chosen):
            request = replace(request, valid=None)  # picked for the data read before: pick again for this one
        self.request = request
        self.counts = {}
        self.show_problems([])  # those of the previous read no longer apply
        self._show_counts()
        if not self.request.path:  # nothing typed yet: nothing to read, nothing to complain about
            self.query_one("#data-found", Static).update("Type a path or a datasets id, or Browse…")
            return
        self.query_one("#data-found", Static).update(f"Reading {self.request.path or '(nothing)'}…")
        self._read_worker(self.request, self._base_dir, self._may_pick(self.request))

    def _may_pick(self, request: DataRequest) -> bool:
        """Whether a validation split may be picked by its name: none is asked for, neither the user nor the
        config file chose for this data path, and no share of the train rows is held out instead."""
        if request.valid is not None or request.path in self._valid_chosen:
            return False
        fraction, problem = coerce(self.query_one("#valid-fraction", Input).value.strip() or "0", "float",
                                   FRACTION_KEY)
        return problem is None and not fraction

    @work(thread=True, exclusive=True, group="data")
    def _read_worker(self, request: DataRequest, base_dir: Path | None, pick_valid: bool) -> None:
        worker = get_current_worker()
        asked = request
        try:
            preview = read_preview(request, base_dir, pick_valid=pick_valid)
        except Exception as e:  # a bug, not the user's fault: say so on the step rather than crash the wizard
            preview = DataPreview(request, "could not be read", [], [("(none)", NO_VALID)], [], problems=[
                Problem("data.path", f"internal error: {type(e).__name__}: {e}", report_fix(e))])
        if worker.is_cancelled:
            return
        self.post_message(DataRead(asked, preview))
        counts = {split: count_label(table) for split, table in preview.tables.items() if not worker.is_cancelled}
        if not worker.is_cancelled:
            self.post_message(RowsCounted(preview.request, counts))

    @on(DataRead)
    def _read_done(self, message: DataRead) -> None:
        message.stop()
        if message.asked != self.request:
            return  # asked for something else since
        self.request = message.preview.request  # with the validation split picked by its name, if one was
        preview = message.preview
        self.tell_app(DataPreviewed(preview.table, preview.splits), then=lambda: self._previewed(preview))

    def _previewed(self, preview: DataPreview) -> None:
        """The app has the rows: show them here too (unless asked for other data meanwhile)."""
        if preview.request == self.request:
            self.preview = preview
            self._show(preview)
            self.show_problems([])

    @on(RowsCounted)
    def _counted(self, message: RowsCounted) -> None:
        message.stop()
        if message.request == self.request:
            self.counts = message.counts
            self._show_counts()

    # ------------------------------------------------------------ showing

    def _show(self, preview: DataPreview) -> None:
        self.query_one("#data-found", Static).update(f"Found {preview.found}")
        with self.prevent(Select.Changed):
            self._set_choices("#train-split", preview.train_choices, preview.request.train)
            self._set_choices("#valid-split", preview.valid_choices, preview.request.valid or NO_VALID)
        self._fill_table(preview.table)
        self._show_counts()
        self._show_holdout()

    def _show_holdout(self) -> None:
        """Say which validation split was picked by its name; with none chosen, offer to hold rows out."""
        valid = self.query_one("#valid-split", Select).value
        none = not isinstance(valid, str) or valid == NO_VALID
        picked = self.preview.picked if self.preview is not None and self.preview.request == self.request else None
        note = self.query_one("#data-picked", Static)
        note.update(f"Validation: {picked} (found by its name; choose (none) for no evaluation)"
                    if picked and valid == picked else "")
        note.display = bool(picked and valid == picked)
        self.query_one("#data-holdout").display = none and hasattr(self.wizard.cfg.params, "valid_fraction")

    def _set_choices(self, selector: str, choices: list[tuple[str, str]], value: str) -> None:
        select: Select[str] = self.query_one(selector, Select)
        choices = choices or [(value, value)]
        select.set_options(choices)
        if value in {v for _, v in choices}:
            select.value = value

    def _fill_table(self, table: Table | None) -> None:
        widget = self.query_one("#data-table", DataTable)
        widget.clear(columns=True)
        if table is None:
            return
        columns = table.columns[:SHOWN_COLUMNS]
        widget.add_columns(*(Text(c) for c in columns))
        widget.add_rows([[cell_text(row.get(c, "")) for c in columns] for row in table.rows])

    def _show_counts(self) -> None:
        preview = self.preview
        if preview is None or preview.table is None or preview.request != self.request:
            self.query_one("#data-counts", Static).update("")
            return
        parts = [f"{split}: {_rows(self.counts.get(split))}" for split in preview.tables]
        n, hidden = len(preview.table.columns), len(preview.table.columns) - SHOWN_COLUMNS
        columns = f"{n} column{'s' if n != 1 else ''}" + (f", {hidden} more not shown" if hidden > 0 else "")
        self.query_one("#data-counts", Static).update(" · ".join([*parts, columns]))

    # ------------------------------------------------------------ input

    @on(Input.Changed, "#data-path")
    def _typed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._paused)

    def _paused(self) -> None:
        """Typing stopped: read a local path; a datasets id only on Enter (reading may download it)."""
        path = self.query_one("#data-path", Input).value.strip()
        if is_hub_id(path, self._base_dir):  # the engine's rule: a mistyped path is not offered as an id
            self._timer, self.request = None, None  # nothing read for what is typed now
            self.query_one("#data-found", Static).update(
                "A datasets id? Enter reads it (downloading it unless it is cached)")
            self._fill_table(None)
            self._show_counts()
            self.show_problems([])
            return
        self.read()

    @on(Input.Submitted, "#data-path")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.read()

    @on(Select.Changed)
    def _split_changed(self, event: Select.Changed) -> None:
        if not self.changed_by_user(event):
            return
        if event.select.id == "valid-split":
            self._valid_chosen.add(self._current().path)  # the user's choice: never replaced by a pick
        self._show_holdout()
        if self._current() != self.request:
            self.read()

    @on(Button.Pressed, "#data-browse")
    def _browse(self) -> None:
        current = self.query_one("#data-path", Input).value.strip()
        local = resolve_local(current, self._base_dir) if current else None
        start = (local if local.is_dir() else local.parent) if local is not None else Path.cwd()
        picker = PathPicker(start, dirs_only=False, suffixes=tuple(EXTENSIONS),
                            title="Choose a data directory or file")
        self.app.push_screen(picker, self._browsed)

    def _browsed(self, path: Path | None) -> None:
        if path is not None:
            with self.prevent(Input.Changed):
                self.query_one("#data-path", Input).value = shown_path(path)
            self.read()
