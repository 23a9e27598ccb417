"""The data pipeline at scale: a config's data read in chunks, formatted, tokenized and masked in several
processes, and written once as the trainer's rows (Arrow, memory-mapped) into the cache (engine.data_cache),
under a key of everything that changes them (engine.cache_key).

The dry run, `--yes`, the wizard (when the entry exists) and the training process all call `prepare_dataset`:
the first one prepares, the others read the entry, so `--yes` checks every row and the training process
trains on those very rows without a second pass. Memory stays flat with the rows: a chunk at a time is held,
the statistics are sums and histograms (engine.split_counts), and only the first SAMPLES_KEPT examples of a
split are kept, for samples. Each chunk goes through the same functions as a split formatted in memory
(engine.pipeline.prepare, which tests compare it with): Formatter, encode_split, chunk_rows.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine import data_cache
from engine.block_size import checked_block_size
from engine.cache_key import cache_key
from engine.chat_templates import TemplateSetup, renderer
from engine.config import RunConfig
from engine.data import DataSource, Table, count_rows, hold_out, read_chunks, resolve_split
from engine.formatting import (
    FormattedSplit,
    Formatter,
    PairExample,
    PromptExample,
    RowProblems,
    TextExample,
    check_columns,
    finish_split,
    format_rows,
    needed_columns,
)
from engine.pipeline import encode_examples_for, prepare_tokenizer
from engine.split_counts import SplitCounts, count_blocks, counts_of, empty_counts
from engine.tasks import ROW_COLUMNS, TEXT_ROW_COLUMNS
from engine.work_progress import Report, Tally

SAMPLES_KEPT = 20  # examples of each split kept for samples (the dry run shows 3 by default)
CHUNK_ROWS = 1000  # rows a process formats and tokenizes at a time
MAX_PROCS = 8


def default_num_proc() -> int:
    """Processes preparing data: LLMTUNE_DATA_PROCS, else the CPUs this process may use (at most MAX_PROCS)."""
    forced = os.environ.get("LLMTUNE_DATA_PROCS", "").strip()
    if forced.isdigit() and int(forced) > 0:
        return int(forced)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_PROCS))


@dataclass
class PreparedSplit:
    formatted: FormattedSplit  # examples: the first SAMPLES_KEPT only; .used counts them all
    counts: SplitCounts


@dataclass
class PreparedData:
    """A config's data, prepared: the splits' summaries, and their rows in the cache entry `directory`."""

    cfg: RunConfig
    tokenizer: Any
    setup: TemplateSetup
    block_size: int
    block_size_note: str
    key: str
    directory: Path
    splits: list[PreparedSplit]
    from_cache: bool
    seconds: float = 0.0  # how long preparing (or finding) it took

    def dataset(self, split: str) -> Any:
        """The trainer's rows of `split` as a datasets.Dataset, memory-mapped from the entry's Arrow file."""
        from datasets import Dataset

        return Dataset.from_file(str(data_cache.split_file(self.directory, split)))

    def trainer_rows(self, split: PreparedSplit) -> Any:
        from engine.trainers.rows import TrainerRows, skipped_notes, split_stats

        fs = split.formatted
        stats = split_stats(fs.rows, sum(fs.dropped.values()), fs.source, split.counts)
        return TrainerRows(fs.split, self.dataset(fs.split), stats,
                           skipped_notes(self.cfg.spec, fs.split, split.counts.skipped))


def prepare_dataset(cfg: RunConfig, *, tokenizer: Any | None = None, progress: Report | None = None,
                    n_samples: int = SAMPLES_KEPT, num_proc: int | None = None,
                    chunk_rows: int = CHUNK_ROWS) -> PreparedData:
    """The prepared data of `cfg`: from the cache when an entry has its key, else prepared now (every row; a
    bad row raises DataError naming it) and stored. `progress` gets a line at most once a second."""
    started = time.monotonic()
    found = find_prepared(cfg, tokenizer=tokenizer, n_samples=n_samples)
    if isinstance(found, PreparedData):
        if progress is not None:
            progress(f"using the data prepared before: {found.directory}")
        return found
    tokenizer, setup, block_size, note, key = found
    work = _Work(cfg, tokenizer, setup, block_size, max(n_samples, SAMPLES_KEPT))
    with data_cache.writing(key) as partial:
        splits = work.run(partial, progress, num_proc or default_num_proc(), chunk_rows)
        data_cache.write_entry_file(partial, {
            "key": key, "created": time.time(), "made_from": _made_from(cfg, splits),
            "splits": [_split_as_dict(s) for s in splits]})
    return PreparedData(cfg, tokenizer, setup, block_size, note, key, data_cache.entry_dir(key), splits, False,
                        time.monotonic() - started)


def find_prepared(cfg: RunConfig, *, tokenizer: Any | None = None, n_samples: int = SAMPLES_KEPT
                  ) -> PreparedData | tuple[Any, TemplateSetup, int, str, str]:
    """The cached PreparedData of `cfg`, or what preparing it needs: (tokenizer, setup, block_size, its note,
    the cache key)."""
    started = time.monotonic()
    tokenizer, setup = prepare_tokenizer(cfg, tokenizer)
    block_size, note = checked_block_size(cfg, tokenizer)
    key = cache_key(cfg, tokenizer, setup, block_size)
    entry = data_cache.read_entry(key)
    directory = data_cache.entry_dir(key)
    if entry is None or not _enough_samples(entry, n_samples) or not all(
            data_cache.split_file(directory, s["formatted"]["split"]).is_file() for s in entry["splits"]):
        return tokenizer, setup, block_size, note, key
    splits = [_split_from_dict(d) for d in entry["splits"]]
    return PreparedData(cfg, tokenizer, setup, block_size, note, key, directory, splits, True,
                        time.monotonic() - started)


# ---------------------------------------------------------------- the work, in chunks


@dataclass
class _Chunk:
    """What one process made of a chunk of rows of one split."""

    role: str
    rows: int
    examples: list[Any]  # the first few (for samples)
    used: int
    dropped: Counter
    shapes: Counter
    roles_mapped: Counter
    problems: RowProblems
    counts: SplitCounts
    columns: dict[str, Any]  # column -> (offsets, values) int32 arrays; "blocks": the token stream's values
    seen: list[str]  # the data's columns so far (engine.data.read_chunks: all of them, by the last chunk)


@dataclass
class _SplitState:
    role: str
    source: DataSource
    needed: list[str]
    counts: SplitCounts
    columns: dict[str, None] = field(default_factory=dict)
    rows: int = 0
    used: int = 0
    examples: list[Any] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    roles_mapped: Counter = field(default_factory=Counter)
    problems: RowProblems = field(default_factory=RowProblems)
    writer: Any = None
    carry: Any = None  # the generic trainer: tokens not yet cut into a block


_STATE: _Work | None = None  # the work a forked process runs (set before the pool starts)


class _Work:
    def __init__(self, cfg: RunConfig, tokenizer: Any, setup: TemplateSetup, block_size: int, keep: int) -> None:
        self.cfg, self.tokenizer, self.setup, self.block_size, self.keep = cfg, tokenizer, setup, block_size, keep
        self.render = renderer(tokenizer) if setup.is_chat else None
        self.needed = needed_columns(cfg)
        self.shape = cfg.spec.rows
        self._held: set[int] | None = None  # the train rows (numbers) held out as valid (params.valid_fraction)

    def __getstate__(self) -> dict[str, Any]:  # sent to a spawned worker: the renderer is made again there
        return {k: v for k, v in self.__dict__.items() if k not in ("render", "_held")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.render = renderer(self.tokenizer) if self.setup.is_chat else None

    # -- in each process

    def chunk(self, role: str, table: Table) -> _Chunk:
        cfg = self.cfg
        fmt = Formatter(cfg, self.setup, self.render, self.tokenizer.eos_token)
        formatted = format_rows(table, fmt, self.needed)
        examples = formatted.examples
        encoded = encode_examples_for(cfg, self.tokenizer, self.setup, examples, self.block_size)
        counts = counts_of(cfg.spec, cfg.params, encoded, self.block_size)
        if cfg.spec.packs:
            columns = {"blocks": _lists([e.ids for e in encoded])}
        else:
            from engine.trainers.rows import chunk_rows

            rows = chunk_rows(self.shape, encoded, self.block_size, examples, cfg.params.max_prompt_length)
            columns = {name: [r[name] for r in rows] if name in TEXT_ROW_COLUMNS else _lists([r[name] for r in rows])
                       for name in ROW_COLUMNS[self.shape]}
        return _Chunk(role, len(table.rows), examples[:self.keep], len(examples), formatted.dropped, formatted.shapes,
                      fmt.roles_mapped, formatted.problems, counts, columns, list(table.columns))

    # -- in the main process

    def run(self, directory: Path, progress: Report | None, num_proc: int, chunk_rows: int) -> list[PreparedSplit]:
        states: dict[str, _SplitState] = {}
        sources = {role: resolve_split(self.cfg.data.path, split, base_dir=self.cfg.base_dir,
                                       split_key=f"data.{role}_split") for role, split in self.cfg.data.splits()}
        for role, source in sources.items():
            for state in self._states(role, source, chunk_rows):
                states[state.role] = state
        try:
            for role, source in sources.items():
                self._read_split(role, source, states, directory, progress, num_proc, chunk_rows)
            return [self._finish(s) for s in states.values()]
        finally:
            for s in states.values():
                if s.writer is not None:
                    with contextlib.suppress(Exception):
                        s.writer.close()

    def _states(self, role: str, source: DataSource, chunk_rows: int) -> list[_SplitState]:
        p = self.cfg.params
        out = [_SplitState(role, source, self.needed, empty_counts(self.cfg.spec, p, self.block_size))]
        if role == "train" and p.valid_fraction and not self.cfg.data.valid_split:
            n = sum(len(t.rows) for t in read_chunks(source, token=self._token, chunk_rows=10 * chunk_rows))
            # engine.data.hold_out over the row numbers: the rows it holds out of the table of n rows
            train, valid = hold_out(Table(range(n), [], source, [""] * n), p.valid_fraction, p.seed)
            self._held = set(valid.rows)
            out[0].source = train.source
            out.append(_SplitState("valid", valid.source, self.needed, empty_counts(self.cfg.spec, p, self.block_size)))
        return out

    @property
    def _token(self) -> str | None:
        return self.cfg.hub.token or None

    def _read_split(self, role: str, source: DataSource, states: dict[str, _SplitState], directory: Path,
                    progress: Report | None, num_proc: int, chunk_rows: int) -> None:
        held = self._held if role == "train" else None
        chunks = read_chunks(source, token=self._token, chunk_rows=chunk_rows)
        first = next(chunks, None)
        if first is None:
            return
        total = count_rows(first) or 0
        tally = Tally(progress, f"preparing {role}", total)
        tasks = _tasks(itertools.chain([first], chunks), role, held)
        for chunk in _mapped(self, tasks, num_proc if total > 2 * chunk_rows or not total else 1):
            state = states[chunk.role]
            self._add(state, chunk, directory)
            tally.add(chunk.rows)
            if state.problems and not state.used and len(state.problems.problems) >= state.rows > 0:
                # every row so far refused: a column the config names may be missing; say that first
                check_columns(list(state.columns), self.needed, state.source.describe())
        tally.finish()

    def _add(self, state: _SplitState, chunk: _Chunk, directory: Path) -> None:
        state.rows += chunk.rows
        state.columns.update(dict.fromkeys(chunk.seen))
        state.used += chunk.used
        state.examples += chunk.examples[:max(0, self.keep - len(state.examples))]
        state.dropped.update(chunk.dropped)
        state.shapes.update(chunk.shapes)
        state.roles_mapped.update(chunk.roles_mapped)
        state.problems.merge(chunk.problems)
        state.counts.merge(chunk.counts)
        if state.problems:
            return  # the run stops with the problems once all rows are read: nothing more to write
        if state.writer is None:
            state.writer = _Writer(data_cache.split_file(directory, state.role), ROW_COLUMNS[self.shape])
        if self.cfg.spec.packs:
            state.carry = _write_blocks(state.writer, state.carry, chunk.columns["blocks"][1], self.block_size)
        else:
            state.writer.write(chunk.columns)

    def _finish(self, state: _SplitState) -> PreparedSplit:
        check_columns(list(state.columns), self.needed, state.source.describe())
        state.problems.raise_if_any()
        if self.cfg.spec.packs and state.writer is not None and state.carry is not None and len(state.carry):
            state.writer.write({name: _one_block(state.carry) for name in ROW_COLUMNS["blocks"]})
        if state.writer is not None:
            state.writer.close()
            state.writer = None
        needed = self.needed
        fs = FormattedSplit(split=state.role, source=state.source.describe(), shape="", rows=state.rows,
                            examples=state.examples, columns_used=[c for c in state.columns if c in needed],
                            columns_dropped=[c for c in state.columns if c not in needed])
        fs.dropped, fs.roles_mapped = state.dropped, state.roles_mapped
        finish_split(fs, state.shapes, state.used)
        if self.cfg.spec.packs:
            count_blocks(state.counts, self.block_size)
        return PreparedSplit(fs, state.counts)


def _tasks(chunks: Any, role: str, held: set[int] | None) -> Any:
    """(role, table) per chunk; with a hold-out, each chunk's rows are parted into train and valid."""
    start = 0
    for table in chunks:
        if held is None:
            yield role, table
            continue
        for part, keep in (("train", False), ("valid", True)):
            picked = [i for i in range(len(table.rows)) if (start + i in held) == keep]
            if picked:
                yield part, Table([table.rows[i] for i in picked], table.columns, table.source,
                                  [table.locations[i] for i in picked])
        start += len(table.rows)


def _set_work(work: _Work) -> None:
    global _STATE
    _STATE = work


def _run_chunk(task: tuple[str, Table]) -> _Chunk:
    assert _STATE is not None
    return _STATE.chunk(*task)


def _mapped(work: _Work, tasks: Any, num_proc: int) -> Any:
    """The chunks made from `tasks`, in order: in this process, or in `num_proc` forked ones with a few chunks
    in flight each (never the whole file queued)."""
    global _STATE
    _STATE = work
    if num_proc <= 1:
        yield from map(_run_chunk, tasks)
        return
    import multiprocessing
    import threading

    # Each worker tokenizes on one thread; tokenizers that used threads before the fork would warn and stop.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Forking copies only the calling thread: with others running (the wizard's), a lock one of them holds
    # would stay held in the copy forever. Then the workers start afresh (spawn), and are given the work.
    method = "fork" if threading.active_count() == 1 else "spawn"
    with multiprocessing.get_context(method).Pool(num_proc, initializer=_set_work, initargs=(work,)) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(_run_chunk, (task,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---------------------------------------------------------------- Arrow


def _lists(lists: list[list[int]]) -> tuple[Any, Any]:
    """Lists of ints as Arrow's (offsets, values), int32."""
    import numpy as np

    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, lists), dtype=np.int64, count=len(lists)), out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
    return offsets, values


def _one_block(values: Any) -> tuple[Any, Any]:
    import numpy as np

    return np.array([0, len(values)], dtype=np.int32), values


def _write_blocks(writer: _Writer, carry: Any, values: Any, block_size: int) -> Any:
    """Cut the token stream into blocks of block_size and write the whole ones; the rest is carried over."""
    import numpy as np

    stream = values if carry is None or not len(carry) else np.concatenate([carry, values])
    whole = len(stream) // block_size * block_size
    if whole:
        offsets = np.arange(0, whole + 1, block_size, dtype=np.int32)
        writer.write({name: (offsets, stream[:whole]) for name in ROW_COLUMNS["blocks"]})
    return stream[whole:]


class _Writer:
    """An Arrow stream file of list<int32> columns (and text ones, TEXT_ROW_COLUMNS), written a batch at a time
    (datasets reads it memory-mapped)."""

    def __init__(self, path: Path, names: tuple[str, ...]) -> None:
        import pyarrow as pa

        self.names = names
        self.schema = pa.schema([(name, pa.string() if name in TEXT_ROW_COLUMNS else pa.list_(pa.int32()))
                                 for name in names])
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, self.schema)

    def write(self, columns: dict[str, tuple[Any, Any]]) -> None:
        import pyarrow as pa

        arrays = [pa.array(columns[n], pa.string()) if n in TEXT_ROW_COLUMNS else
                  pa.ListArray.from_arrays(pa.array(columns[n][0]), pa.array(columns[n][1])) for n in self.names]
        if len(arrays[0]):
            self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()
        self.sink.close()


# ---------------------------------------------------------------- the entry's summary


def _enough_samples(entry: dict[str, Any], n_samples: int) -> bool:
    return all(len(s["formatted"]["examples"]) >= min(n_samples, s["formatted"]["used"]) for s in entry["splits"])


def _split_as_dict(s: PreparedSplit) -> dict[str, Any]:
    fs = s.formatted
    kinds = {PairExample: "pair", PromptExample: "prompt"}
    examples = [{"kind": kinds.get(type(e), "text"), **asdict(e)} for e in fs.examples]
    # asdict would rebuild a Counter from its (key, count) pairs, counting the pairs: the counters by hand
    return {"formatted": {**asdict(fs), "examples": examples, "dropped": dict(fs.dropped),
                          "roles_mapped": dict(fs.roles_mapped)}, "counts": s.counts.as_dict()}


def _split_from_dict(d: dict[str, Any]) -> PreparedSplit:
    f = dict(d["formatted"])
    examples = []
    for e in f.pop("examples"):
        kind = e.pop("kind")
        if kind == "pair":
            examples.append(PairExample(**e))
        elif kind == "prompt":
            examples.append(PromptExample(**e))
        else:
            examples.append(TextExample(e["location"], e["text"], [tuple(span) for span in e["spans"]]))
    fs = FormattedSplit(**{**f, "examples": examples})
    fs.dropped, fs.roles_mapped = Counter(f["dropped"]), Counter(f["roles_mapped"])
    return PreparedSplit(fs, SplitCounts.from_dict(d["counts"]))


def _made_from(cfg: RunConfig, splits: list[PreparedSplit]) -> dict[str, Any]:
    return {"data": cfg.data.path, "base_model": cfg.base_model, "trainer": cfg.trainer,
            "config": str(cfg.source) if cfg.source else None,
            "rows": {s.formatted.split: s.counts.examples for s in splits}}
