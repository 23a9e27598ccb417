"""Finding and reading the training data: a directory + split (AutoTrain's layout), a single file, or a
`datasets` hub id.

Resolving (`resolve_split`, `check_split`) is cheap and reads nothing, so config validation can call it.
Reading (`read_table`; `read_chunks` for data too big to hold at once) never shows a traceback for bad data:
every failure is a `DataError` naming the file and the line, row or byte, what is wrong, and how to fix it.

Importing this module stays light: `datasets` and `pyarrow` are imported inside the functions that need them.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
import random
import re
import socket
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from engine.errors import DataError, Problem, data_error
from engine.offline import datasets_offline, is_connection_error
from engine.units import plural, shown_path

FORMATS = ("csv", "jsonl", "json", "parquet")

# Extension -> format. .tsv is csv with tabs, .ndjson is jsonl by another name.
EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
}
# The order AutoTrain looks for `{split}.{ext}` in a data directory; also the order shown in messages.
_SPLIT_EXTENSIONS = (".csv", ".jsonl", ".json", ".parquet")
_SUPPORTED = ".csv, .tsv, .jsonl, .json or .parquet"

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_CONFIG = re.compile(r"^[\w.-]+$")
_BOM = b"\xef\xbb\xbf"
_SHOWN_FILES = 12  # how many file names a message lists before "and N more"


@dataclass
class DataSource:
    """Where the rows of one split come from."""

    kind: Literal["file", "hub"]
    path: Path | None  # the file (absolute), for kind == "file"
    format: str | None  # one of FORMATS for files, "hub" for datasets ids
    dataset_id: str | None  # for kind == "hub": "name" or "org/name"
    config_name: str | None  # for kind == "hub": from "name:config"
    split: str  # the split asked for
    # A split made by params.valid_fraction: which part of the rows it is ("5% of train: ..."), as reports say it.
    held_out: str | None = None

    def describe(self) -> str:
        if self.held_out:
            return self.held_out
        if self.kind == "file" and self.path is not None:
            return shown_path(self.path)
        config = f" (config {self.config_name})" if self.config_name else ""
        return f"hub dataset {self.dataset_id}{config}, split {self.split}"

    def location(self, row: int | None = None) -> str:
        """The short name used in row locations and problem keys: `data/train.jsonl`, `org/name[train]`."""
        base = shown_path(self.path) if self.kind == "file" and self.path else f"{self.dataset_id}[{self.split}]"
        return base if row is None else f"{base}:row {row}"


@dataclass
class Table:
    """Rows as plain dicts, with a human location per row for later error messages."""

    rows: list[dict[str, Any]]
    columns: list[str]
    source: DataSource
    locations: list[str]  # per row: "train.jsonl:17", "train.csv:row 5 (line 7)", "train.parquet:row 5" (1-based)


# ---------------------------------------------------------------------------------------------------------
# Resolving path + split


def resolve_split(path: str, split: str, *, key: str = "data.path", split_key: str = "data.train_split",
                  base_dir: Path | None = None) -> DataSource:
    """Where the rows of `split` live; reads nothing. Raises DataError with one clear problem."""
    found = _resolve(path, split, key=key, split_key=split_key, base_dir=base_dir)
    if isinstance(found, Problem):
        raise DataError([found], title="cannot use the data")
    return found


def check_split(path: str, split: str, *, key: str = "data.path", split_key: str = "data.train_split",
                base_dir: Path | None = None) -> list[Problem]:
    """The checks of `resolve_split`, returned instead of raised (config validation reports all at once)."""
    found = _resolve(path, split, key=key, split_key=split_key, base_dir=base_dir)
    return [found] if isinstance(found, Problem) else []


def load_split(
    path: str,
    split: str,
    *,
    base_dir: Path | None = None,
    token: str | None = None,
    limit: int | None = None,
    key: str = "data.path",
    split_key: str = "data.train_split",
) -> Table:
    """resolve_split + read_table."""
    source = resolve_split(path, split, key=key, split_key=split_key, base_dir=base_dir)
    return read_table(source, token=token, limit=limit)


def list_data_files(directory: Path) -> list[str]:
    """Names of the data files (by extension) in `directory`, sorted; [] when it is not a directory."""
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return []
    return sorted(
        p.name for p in entries if p.suffix.lower() in EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def data_format(path: Path) -> str | None:
    """The format (one of FORMATS) a file's extension says it holds; None: not a data file."""
    return EXTENSIONS.get(path.suffix.lower())


def split_names(files: Iterable[str]) -> list[str]:
    """The split names data files make: their names without the extension, sorted, each once."""
    return sorted({Path(name).stem for name in files})


def is_the_file(file: Path, split: str) -> bool:
    """Whether `split` names the data file `file` itself rather than another file next to it: its stem, its
    name, or "train" (the default train split: `data.path: mine.jsonl` is not swapped for a train.csv beside it)."""
    return split == "train" or file.stem == split or file.name == split


def find_splits(path: str, *, base_dir: Path | None = None) -> list[str]:
    """The split names (file stems of data files) in a local directory `path`; [] for anything else."""
    found = _find_local(path, base_dir)
    if found is None or not found.is_dir():
        return []
    return split_names(list_data_files(found))


def _resolve(path: str, split: str, *, key: str, split_key: str, base_dir: Path | None) -> DataSource | Problem:
    try:
        return _resolve_path(path, split, key=key, split_key=split_key, base_dir=base_dir)
    except (OSError, ValueError, RuntimeError) as e:  # a name the file system refuses, ~nobody: not a path
        reason = (e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:100])
        return Problem(key, f"cannot be used as a path ({reason})",
                       "point it at an existing data file or directory, or a datasets id (org/name)", value=path)


def _resolve_path(path: str, split: str, *, key: str, split_key: str, base_dir: Path | None
                  ) -> DataSource | Problem:
    if not path or not path.strip():
        return Problem(key, "is empty", fix="set it to a data directory, a data file, or a datasets id (org/name)")
    if not split or not split.strip():
        return Problem(split_key, "is empty", fix="set it to the split's name, e.g. train")
    found = _find_local(path, base_dir)
    if found is not None and found.is_dir():
        return _split_in_dir(found, split, key=key, split_key=split_key, path=path)
    if found is not None:
        special = _special_file(found)
        if special:
            return Problem(key, f"{shown_path(found)} is {special}", fix=_SPECIAL_FIX, value=path)
        return _split_for_file(found, split, key=key, base_dir=base_dir, path=path)
    if _looks_local(path) or _near_local(path, base_dir):
        return _missing_path(path, split, key=key, base_dir=base_dir)
    return _hub_source(path, split, key=key, base_dir=base_dir)


def is_hub_id(path: str, base_dir: Path | None = None) -> bool:
    """Whether data.path would be read as a hub datasets id: no such local path, nothing that says it is one
    (./, ~, a data extension or a near miss of one, or a first folder that exists or nearly does), and a valid
    id. What the wizard asks before offering to download."""
    path = path.strip()
    try:
        if not path or _find_local(path, base_dir) is not None or _looks_local(path) or _near_local(path, base_dir):
            return False
    except (OSError, ValueError, RuntimeError):
        return False
    return isinstance(_hub_source(path, "train", key="data.path", base_dir=base_dir), DataSource)


def _candidates(path: str, base_dir: Path | None) -> list[Path]:
    """Where a path may be: as is when absolute, else under the current directory, then under base_dir."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    out = [Path.cwd() / p]
    if base_dir is not None:
        alt = Path(base_dir).expanduser().absolute() / p
        if alt != out[0]:
            out.append(alt)
    return out


def _find_local(path: str, base_dir: Path | None) -> Path | None:
    for candidate in _candidates(path, base_dir):
        try:
            if candidate.exists():
                return candidate.absolute()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte: no such file
            continue
    return None


_SPECIAL_FIX = "point data.path at a regular data file or a directory of them; to use a stream, save it to a file first"


def _special_file(path: Path) -> str | None:
    """What `path` is when it is neither a regular file nor a directory: a FIFO blocks until a writer comes,
    a device like /dev/zero never ends, so reading either would hang instead of failing."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # missing or unreadable: reported where it is opened
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = [(stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"{kind}, not a regular file: reading it could wait forever or never end"


def _looks_local(path: str) -> bool:
    """A path the user meant as local, so a miss is "no such file", not an unknown hub dataset."""
    return (
        path.startswith((".", "/", "~"))
        or "\\" in path
        or _data_suffix(path) is not None
        or path.count("/") > 1
    )


_DATA_SUFFIXES = [ext[1:] for ext in EXTENSIONS]


def _data_suffix(path: str) -> str | None:
    """The data extension `path` ends in, or the one it nearly ends in (`.cvs`, `.jsonn`, `.parquett`)."""
    suffix = Path(path).suffix.lower()
    if suffix in EXTENSIONS:
        return suffix
    close = difflib.get_close_matches(suffix[1:21], _DATA_SUFFIXES, n=1, cutoff=0.6) if len(suffix) > 2 else []
    return f".{close[0]}" if close else None


_CLOSE = 0.8  # how alike a hub id's org and a local folder's name must be to take the id for a mistyped path


def _near_local(path: str, base_dir: Path | None) -> bool:
    """`org/name` is a hub id, unless `org` is a local folder or nearly the name of one (`dat/train` next to
    data/): then it is a path with a typo, and "no such file" with the nearest names helps more than a download."""
    first, sep, _ = path.partition("/")
    if not sep or not first:
        return False
    for base in [Path.cwd(), *([Path(base_dir).expanduser()] if base_dir is not None else [])]:
        try:
            if (base / first).is_dir():
                return True
            folders = [e.name for e in _entries(base) if not e.name.startswith(".") and e.is_dir()]
        except (OSError, ValueError):
            continue
        if difflib.get_close_matches(first[:100], folders, n=1, cutoff=_CLOSE):
            return True
    return False


_MAX_ENTRIES = 5000  # names of a folder compared with a missing one; a folder of more is not browsed by hand


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    entries: list[os.DirEntry[str]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                entries.append(entry)
                if len(entries) >= _MAX_ENTRIES:
                    break
    except OSError:
        return []
    return entries


def _file_source(file: Path, split: str, *, key: str, value: str) -> DataSource | Problem:
    fmt = data_format(file)
    if fmt is None:
        return Problem(
            key,
            f"{shown_path(file)}: unsupported file type {file.suffix or '(no extension)'!r}; "
            f"data files must end in {_SUPPORTED}",
            fix="convert the file, or rename it if its content already is one of these "
            "(.jsonl for one JSON object per line)",
            value=value,
        )
    return DataSource("file", file, fmt, None, None, split)


def _stem_matches(directory: Path, stem: str) -> list[Path]:
    """Data files in `directory` named `{stem}.{ext}`, in AutoTrain's extension order."""
    names = [n for n in list_data_files(directory) if Path(n).stem == stem]
    order = {ext: i for i, ext in enumerate((*_SPLIT_EXTENSIONS, ".tsv", ".ndjson"))}
    return [directory / n for n in sorted(names, key=lambda n: order.get(Path(n).suffix.lower(), 99))]


def _split_in_dir(directory: Path, split: str, *, key: str, split_key: str, path: str) -> DataSource | Problem:
    exact = directory / split  # the split written with its extension: `train.jsonl`
    if Path(split).suffix.lower() in EXTENSIONS and exact.is_file():
        return _file_source(exact, split, key=split_key, value=split)
    matches = _stem_matches(directory, split)
    if len(matches) == 1:
        return DataSource("file", matches[0], data_format(matches[0]), None, None, split)
    if len(matches) > 1:
        return _duplicate_split(matches, split, key=key, value=path)
    for candidate in [exact, *(directory / f"{split}{ext}" for ext in EXTENSIONS)]:
        special = _special_file(candidate) if candidate.exists() else None
        if special:  # list_data_files skips it: say why it is not used rather than "no data file"
            return Problem(split_key, f"{shown_path(candidate)} is {special}", fix=_SPECIAL_FIX, value=split)
    wanted = ", ".join(f"{split}{ext}" for ext in _SPLIT_EXTENSIONS)
    message = f"no data file for split {split!r} in {shown_path(directory)}/ (looked for {wanted})"
    files = list_data_files(directory)
    if not files:
        return Problem(
            split_key,
            f"{message}; the directory has no data files",
            fix=f"put {split}.jsonl (or .csv, .json, .parquet) in {shown_path(directory)}/, "
            f"or point {key} at a data file",
            value=split,
        )
    splits = split_names(files)
    return Problem(
        split_key,
        f"{message}; it holds: {_names(files)}",
        fix=f"set {split_key} to one of: {', '.join(splits)}; or add {split}.jsonl to {shown_path(directory)}/",
        value=split,
    )


def _duplicate_split(matches: list[Path], split: str, *, key: str, value: str) -> Problem:
    shown = ", ".join(shown_path(m) for m in matches[:-1]) + f" and {shown_path(matches[-1])}"
    return Problem(
        key,
        f"more than one file for split {split!r}: {shown}",
        fix="remove or rename all but one of them",
        value=value,
    )


def _split_for_file(file: Path, split: str, *, key: str, base_dir: Path | None, path: str) -> DataSource | Problem:
    """A file path is the data; a split that names another existing data file selects that file instead."""
    if is_the_file(file, split):
        return _file_source(file, split, key=key, value=path)
    if "/" not in split and "\\" not in split and Path(split).suffix.lower() not in EXTENSIONS:
        # A bare name (`valid`) is only looked up next to the data file: a stray `valid.csv` in the current
        # directory should not win over the user's data directory.
        matches = _stem_matches(file.parent, split)
        if len(matches) > 1:
            return _duplicate_split(matches, split, key=key, value=path)
        if matches:
            return _file_source(matches[0], split, key=key, value=path)
        return _file_source(file, split, key=key, value=path)
    for candidate in [*_candidates(split, base_dir), file.parent / Path(split).expanduser()]:
        if candidate.is_file():
            return _file_source(candidate.absolute(), split, key=key, value=split)
        matches = _stem_matches(candidate.parent, candidate.name) if candidate.parent.is_dir() else []
        if len(matches) > 1:
            return _duplicate_split(matches, split, key=key, value=split)
        if matches:
            return _file_source(matches[0].absolute(), split, key=key, value=split)
    return _file_source(file, split, key=key, value=path)


@dataclass
class _Miss:
    """Where one candidate of a missing path stops existing, and the names there that are like the missing one."""

    folder: Path  # the deepest folder of the candidate that exists
    wanted: str  # the first name under it that does not
    rest: tuple[str, ...]  # the names after that one
    close: list[str]  # names in `folder` like `wanted`, closest first (folders end in /)
    others: list[str]  # the data files and folders there that are not close
    score: float  # how alike the closest is (0: none is)


def _miss(candidate: Path) -> _Miss:
    folder = _nearest_dir(candidate)
    try:
        parts = candidate.relative_to(folder).parts
    except ValueError:
        parts = (candidate.name,)
    wanted, rest = (parts[0], parts[1:]) if parts else (candidate.name, ())
    names: dict[str, str] = {}  # name -> as shown
    for entry in _entries(folder):
        if entry.name.startswith(".") and not wanted.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
            data = not is_dir and Path(entry.name).suffix.lower() in EXTENSIONS and entry.is_file()
        except OSError:
            continue
        names[entry.name] = entry.name + "/" if is_dir else entry.name if data else ""
    scored = [(difflib.SequenceMatcher(None, wanted.lower()[:100], n.lower()[:100]).ratio(), n) for n in
              difflib.get_close_matches(wanted[:100], list(names), n=_SHOWN_FILES, cutoff=0.6)]
    scored.sort(key=lambda x: (-x[0], x[1]))
    close = [names[n] or n for _, n in scored]
    others = sorted(shown for n, shown in names.items() if shown and n not in {n for _, n in scored})
    return _Miss(folder, wanted, rest, close, others, scored[0][0] if scored else 0.0)


def _corrected(path: str, miss: _Miss) -> str:
    """`path` as typed with the missing name replaced by the closest one (`./chatdri` -> `./chatdir`)."""
    name = miss.close[0].rstrip("/")
    parts = path.rstrip("/").split("/")
    at = len(parts) - len(miss.rest) - 1
    if 0 <= at < len(parts) and parts[at] == miss.wanted:
        return "/".join([*parts[:at], name, *parts[at + 1:]]) + ("/" if path.endswith("/") else "")
    return shown_path(miss.folder / name / Path(*miss.rest)) if miss.rest else shown_path(miss.folder / name)


def _missing_path(path: str, split: str, *, key: str, base_dir: Path | None) -> Problem:
    tried = _candidates(path, base_dir)
    looked = ", ".join(shown_path(p) for p in tried)
    message = f"no such file or directory (looked for {looked})"
    misses = [_miss(p) for p in tried]
    # The candidate with the most alike name; without one, the most specific existing directory.
    miss = max(misses, key=lambda m: (m.score, len(m.folder.parts)))
    where = "the current directory" if miss.folder == Path.cwd() else shown_path(miss.folder).rstrip("/") + "/"
    shown = miss.close + miss.others
    if shown:
        message += f"; {where} holds: {_names(shown)}"
    else:
        message += f"; {where} has no data files or folders"
    suffix, typed = _data_suffix(path), Path(path).suffix.lower()
    if suffix and typed and suffix != typed:
        message += f" ({typed} is no data file extension: {_SUPPORTED})"
    hint = f"did you mean {_corrected(path, miss)}? " if miss.close else ""
    if not hint and suffix and typed and suffix != typed:
        hint = f"did you mean {path[:len(path) - len(typed)]}{suffix}? "
    return Problem(
        key,
        message,
        fix=f"{hint}point {key} at an existing data file ({_SUPPORTED}) or at a directory holding "
        f"{split}.jsonl (or .csv, .json, .parquet); relative paths are tried against the current directory, "
        "then the config file's directory",
        value=path,
    )


def _nearest_dir(path: Path) -> Path:
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return Path(path.anchor or "/")


def _hub_source(path: str, split: str, *, key: str, base_dir: Path | None) -> DataSource | Problem:
    name, _, config = path.partition(":")
    if not _HUB_NAME.match(name) or (":" in path and not _HUB_CONFIG.match(config)):
        return Problem(
            key,
            "is neither an existing local file or directory nor a valid datasets id "
            "(name or org/name, optionally followed by :config)",
            fix="point it at a local data directory or file, or use a hub id like org/name or org/name:config",
            value=path,
        )
    return DataSource("hub", None, "hub", name, config or None, split)


# ---------------------------------------------------------------------------------------------------------
# A validation split held out of the train rows (params.valid_fraction)


def hold_out(table: Table, fraction: float, seed: int) -> tuple[Table, Table]:
    """(train, valid): ceil(fraction * rows) of the train rows, drawn with `seed`, become the validation split.

    The same rows in every run and every process: each row gets a number from random.Random(seed).random(),
    a sequence Python keeps the same for a given seed across versions (unlike shuffle or sample), and the rows
    with the smallest numbers are held out. Both parts keep the file's order and the rows' locations. Raises
    DataError when either part would be empty."""
    n = len(table.rows)
    held = math.ceil(round(fraction * n, 6))  # round: 0.1 * 30 is 3.0000000000000004, which must hold out 3
    share = f"{fraction * 100:g}%"
    if not 0 < held < n:
        every = "the only train row" if n == 1 else f"all {n} train rows"
        what = (f"holds out {every}, leaving none to train on" if held >= n else
                f"holds out no row of the {plural(n, 'train row')}, leaving none to evaluate")
        raise DataError([Problem(
            "params.valid_fraction",
            f"{what}: the train and the validation part each need at least one row",
            fix="lower params.valid_fraction, add rows to the train split, or set data.valid_split to a split of "
            "its own (and remove params.valid_fraction)",
            value=fraction,
        )], title="cannot hold out a validation split")
    draws = random.Random(seed).random
    order = sorted(range(n), key=[draws() for _ in range(n)].__getitem__)
    valid = set(order[:held])

    def part(keep: bool, described: str) -> Table:
        picked = [i for i in range(n) if (i in valid) == keep]
        return Table([table.rows[i] for i in picked], list(table.columns),
                     replace(table.source, held_out=described), [table.locations[i] for i in picked])

    base = table.source.describe()
    return (part(False, f"{base}, less the {share} held out for valid ({plural(held, 'row')})"),
            part(True, f"{share} of train: {plural(held, 'row')} of {base} held out with seed {seed}"))


# ---------------------------------------------------------------------------------------------------------
# Reading


def read_table(source: DataSource, *, token: str | None = None, limit: int | None = None) -> Table:
    """The rows of `source` (at most `limit` of them, for previews). Raises DataError for anything wrong."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if source.kind == "hub":
        return _read_hub(source, token=token, limit=limit)
    if source.path is None or source.format not in FORMATS:
        raise ValueError(f"not a readable file source: {source!r}")
    where = source.location()
    _check_file(source.path, where)
    with _file_errors(where):
        _sniff(source.path, source.format, where)
        if source.format == "parquet":
            rows, columns, locations = _read_parquet(source.path, where, limit)
        elif source.format == "csv":
            rows, columns, locations = _read_csv(source.path, where, limit, _delimiter(source.path))
        elif source.format == "jsonl":
            rows, columns, locations = _read_jsonl(source.path, where, limit)
        else:
            rows, columns, locations = _read_json(source.path, where, limit)
    return Table(rows, columns, source, locations)


def read_chunks(source: DataSource, *, token: str | None = None, limit: int | None = None,
                chunk_rows: int = 1000) -> Iterator[Table]:
    """The rows of `source` as consecutive Tables of at most chunk_rows rows each, for reading huge data in
    bounded memory.

    Concatenated, the chunks' rows and locations are read_table(source, token=token, limit=limit)'s (at most
    `limit` rows in all); each chunk's columns are those seen so far, in read_table's order (the last chunk's are
    read_table's columns), and its source is `source`. JSONL is read line by line, CSV/TSV record by record,
    Parquet a batch at a time (iter_batches), a hub split a slice of its memory-mapped Dataset at a time: only
    the chunk being made is held, besides the one the caller holds. A JSON document is read whole, as read_table
    reads it, then cut into chunks: a .json file, and a .jsonl file whose lines fail before the first row because
    it holds one (a list, or pretty-printed objects).

    Raises the DataError read_table raises, with the same message and location. What read_table finds before
    any row (a missing, empty, UTF-16, binary or special file, an unknown hub dataset or split) is raised by the
    first next(); nothing is read before it. An error at row k is raised after the chunks before it were yielded,
    and so is one of CSV's checks across records (a quote left open in the last record, a record far longer
    than all others), which run once the last row is read. A bad `limit`, `chunk_rows` or source raises ValueError
    at once.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    if source.kind != "hub" and (source.path is None or source.format not in FORMATS):
        raise ValueError(f"not a readable file source: {source!r}")
    return _chunks(source, token=token, limit=limit, chunk_rows=chunk_rows)


def _chunks(source: DataSource, *, token: str | None, limit: int | None, chunk_rows: int) -> Iterator[Table]:
    parts = (_hub_parts(source, token=token, limit=limit, chunk_rows=chunk_rows) if source.kind == "hub"
             else _file_parts(source, limit=limit, chunk_rows=chunk_rows))
    with closing(parts):
        for rows, columns, locations in parts:
            yield Table(rows, columns, source, locations)


def _file_parts(source: DataSource, *, limit: int | None, chunk_rows: int) -> Iterator[_Read]:
    """read_table's reading of a file, a chunk at a time."""
    path, fmt, where = source.path, source.format, source.location()
    assert path is not None and fmt is not None
    _check_file(path, where)
    with _file_errors(where):
        _sniff(path, fmt, where)
        if fmt == "parquet":
            parts = _parquet_parts(path, where, limit, chunk_rows)
        elif fmt == "csv":
            header: list[str] = []  # filled in by _csv_rows before the first row
            parts = _gather(_csv_rows(path, where, limit, _delimiter(path), header), chunk_rows, None, header)
        elif fmt == "jsonl":
            parts = _jsonl_parts(path, where, limit, chunk_rows)
        else:
            parts = _gather(_pairs(_read_json(path, where, limit)), chunk_rows, None, None)
        with closing(parts):
            yield from parts


_Read = tuple[list[dict[str, Any]], list[str], list[str]]  # rows, columns, locations


def _check_file(path: Path, where: str) -> None:
    special = _special_file(path)
    if special:
        raise data_error(where, f"is {special}", fix=_SPECIAL_FIX)


@contextmanager
def _file_errors(where: str) -> Iterator[None]:
    """The OSErrors of reading a data file as DataErrors."""
    try:
        yield
    except FileNotFoundError:
        raise data_error(where, "no such file (it was there when the config was checked)") from None
    except OSError as e:
        raise data_error(where, f"cannot read the file: {e.strerror or e}", fix="check its permissions") from None


def _gather(pairs: Iterator[tuple[dict[str, Any], str]], chunk_rows: int, limit: int | None,
            columns: list[str] | None, *, empty: Callable[[], DataError] | None = None) -> Iterator[_Read]:
    """(row, location) pairs as chunks of at most chunk_rows rows; after `limit` rows no more pair is asked for
    (a bad line after the limit is never read). `columns`: the columns of every row, read as each chunk is made
    (a reader may fill the list in once it has read a header); None: the union of the rows' keys so far, in
    first-seen order. `empty`: the error when there is no row at all."""
    seen: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    locations: list[str] = []
    total = 0
    try:
        for row, location in pairs:
            if columns is None:
                _union(seen, row)
            rows.append(row)
            locations.append(location)
            total += 1
            if len(rows) >= chunk_rows or total == limit:
                yield rows, list(seen) if columns is None else list(columns), locations
                rows, locations = [], []
                if total == limit:
                    return
        if rows:
            yield rows, list(seen) if columns is None else list(columns), locations
        elif not total and empty is not None:
            raise empty()
    finally:
        close = getattr(pairs, "close", None)
        if close is not None:
            close()


def _pairs(read: _Read) -> Iterator[tuple[dict[str, Any], str]]:
    rows, _, locations = read
    return zip(rows, locations)


def _sniff(path: Path, fmt: str, where: str) -> None:
    """Catch the common mix-ups from the first bytes, before a parser gives a confusing message."""
    with path.open("rb") as f:
        head = f.read(8192)
    if not head:
        raise data_error(where, "file is empty", fix="write the rows into it, or point data.path at another file")
    if fmt == "parquet":
        return
    if head.startswith(b"PAR1"):
        raise data_error(where, "this is a Parquet file, not " + fmt, fix="rename it to end in .parquet")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise data_error(
            where,
            "file is UTF-16 encoded; data files must be UTF-8",
            fix=f"re-save it as UTF-8, e.g. iconv -f utf-16 -t utf-8 {path.name} > utf8-{path.name}",
        )
    nul = head.find(b"\x00")
    if nul >= 0:
        raise data_error(
            where,
            f"file holds NUL bytes (the first at byte {nul}): it is binary or UTF-16, not {fmt} text",
            fix=f"check that this is the right file; re-save text as UTF-8 {fmt}",
        )


def _bad_utf8(where: str, offset: int, line: int, byte: int, name: str) -> DataError:
    return data_error(
        f"{where}:{line}",
        f"not valid UTF-8: byte {byte:#04x} at byte offset {offset} (line {line})",
        fix=f"re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {name} > utf8-{name}",
    )


def _lines(path: Path, where: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, decoded lazily so a `limit` does not read the whole file."""
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            start = len(_BOM) if number == 1 and raw.startswith(_BOM) else 0
            try:
                text = raw[start:].decode("utf-8")
            except UnicodeDecodeError as e:
                raise _bad_utf8(where, offset + start + e.start, number, raw[start + e.start], path.name) from None
            offset += len(raw)
            yield number, text


def _decode(data: bytes, where: str, name: str) -> str:
    start = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        raise _bad_utf8(where, offset, data.count(b"\n", 0, offset) + 1, data[offset], name) from None


def _empty(where: str) -> DataError:
    return data_error(where, "file is empty", fix="write the rows into it, or point data.path at another file")


def _union(columns: dict[str, None], row: dict[str, Any]) -> None:
    for name in row:
        columns.setdefault(name, None)


# --- JSONL


class _LineEndsEarly(DataError):
    """A JSONL line that ends inside its object. On the first line, the file may hold pretty-printed objects."""

    first_line = False


def _read_jsonl(path: Path, where: str, limit: int | None) -> _Read:
    try:
        with closing(_lines(path, where)) as lines:  # closing: a limit may stop before the end of the file
            return _parse_jsonl(lines, where, limit)
    except DataError as error:
        return _jsonl_fallback(path, where, limit, error)


def _jsonl_fallback(path: Path, where: str, limit: int | None, error: DataError) -> _Read:
    """What a .jsonl file that failed as JSON lines holds, if not `error`."""
    # A JSON document (a list, or pretty-printed) saved as .jsonl: read it as JSON rather than fail on line 1.
    document = _try_json_document(path)
    if isinstance(document, (list, dict)):
        return _json_rows(document, where, limit)
    if isinstance(error, _LineEndsEarly) and error.first_line:
        # Objects pretty-printed one after another (`jq .` output): read them, or say where one is broken.
        return _parse_json_stream(_decode(path.read_bytes(), where, path.name), where, limit)
    raise error


def _jsonl_parts(path: Path, where: str, limit: int | None, chunk_rows: int) -> Iterator[_Read]:
    """_read_jsonl's rows, chunk_rows at a time, reading line by line.

    Only a failure before the first row can mean the file holds a JSON document, so only then is it read whole
    (_jsonl_fallback, as _read_jsonl does). Once a line held an object the file is no JSON document: it would
    have to end with that object, and _read_jsonl's fallback fails for any later error too, re-raising it."""
    lines = _lines(path, where)
    pairs = _jsonl_rows(lines, where)
    try:
        first = next(pairs, None)
        if first is None:
            raise _empty(where)
    except DataError as error:
        lines.close()
        read = _jsonl_fallback(path, where, limit, error)
    else:
        try:
            yield from _gather(chain([first], pairs), chunk_rows, limit, None)
        finally:
            lines.close()  # a limit (or the caller) may stop before the end of the file
        return
    yield from _gather(_pairs(read), chunk_rows, None, None)


def _try_json_document(path: Path) -> Any:
    try:
        data = path.read_bytes()
        return json.loads(data[len(_BOM) :] if data.startswith(_BOM) else data)
    except (ValueError, OSError, RecursionError):
        return None


def _parse_jsonl(lines: Iterable[tuple[int, str]], where: str, limit: int | None) -> _Read:
    rows: list[dict[str, Any]] = []
    locations: list[str] = []
    columns: dict[str, None] = {}
    for row, location in _jsonl_rows(lines, where):
        _union(columns, row)
        rows.append(row)
        locations.append(location)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise _empty(where)
    return rows, list(columns), locations


def _jsonl_rows(lines: Iterable[tuple[int, str]], where: str) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, location) for each non-blank line; a DataError at the first line that is not a JSON object."""
    first = True
    for number, text in lines:
        if not text.strip():
            continue
        location = f"{where}:{number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise _jsonl_error(location, number, text, e, first_line=first) from None
        except RecursionError:
            depth, at, _ = _deepest(text)
            raise _too_deep(location, depth, f"column {at + 1}") from None
        if not isinstance(row, dict):
            kind = _json_kind(row)
            hint = " (a JSON array saved as .jsonl? name the file .json)" if first and kind == "array" else ""
            raise data_error(
                location,
                f"line holds a JSON {kind}, not an object{hint}",
                fix='each line must hold one JSON object, e.g. {"text": "..."}',
            )
        first = False
        yield row, location


def _jsonl_error(location: str, number: int, text: str, error: json.JSONDecodeError, *, first_line: bool
                 ) -> DataError:
    """The message for a line that is not JSON. The decoder counts columns on its own line, so an error at the
    end of the line (the object goes on, or the line was cut) would read as "column 1" of the next one."""
    content = text.rstrip("\r\n")
    if error.pos < len(content.rstrip()):
        msg = error.msg.removesuffix(" at")  # "Invalid control character at" + our " at column N"
        return data_error(location, f"not valid JSON ({msg} at column {error.colno})",
                          fix='each line must hold one complete JSON object, e.g. {"text": "..."}')
    ends = _LineEndsEarly([Problem(
        location,
        f"not valid JSON: line {number} ends before its JSON object is complete (column {len(content) + 1}, the "
        "end of the line, with a string, list or object still open)",
        'each line must hold one complete JSON object, e.g. {"text": "..."}; join an object spread over '
        "several lines, or complete a line that was cut off",
    )], title="cannot use the data")
    ends.first_line = first_line
    return ends


def _parse_json_stream(text: str, where: str, limit: int | None) -> _Read:
    """JSON objects one after another, each on one line or spread over several; locations name the line where
    each object starts."""
    decoder = json.JSONDecoder()
    rows: list[dict[str, Any]] = []
    locations: list[str] = []
    columns: dict[str, None] = {}
    pos, line = 0, 1
    while limit is None or len(rows) < limit:
        space = _JSON_SPACE.match(text, pos)
        start = space.end() if space else pos
        if start >= len(text):
            break
        line += text.count("\n", pos, start)
        try:
            row, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError as e:
            raise data_error(
                f"{where}:{e.lineno}",
                f"not valid JSON ({e.msg.removesuffix(' at')} at line {e.lineno}, column {e.colno})",
                fix='write one JSON object per line, e.g. {"text": "..."}, or a .json file holding a list of them',
            ) from None
        except RecursionError:
            depth, at, _ = _deepest(text, start)
            at_line = text.count("\n", 0, at) + 1
            raise _too_deep(f"{where}:{at_line}", depth, f"line {at_line}, column {_column(text, at)}") from None
        if not isinstance(row, dict):
            raise data_error(f"{where}:{line}", f"line {line} starts a JSON {_json_kind(row)}, not an object",
                             fix='the file must hold JSON objects, e.g. {"text": "..."}, one after another')
        _union(columns, row)
        rows.append(row)
        locations.append(f"{where}:{line}")
        line += text.count("\n", start, pos)
    if not rows:
        raise _empty(where)
    return rows, list(columns), locations


def _json_kind(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
# Strings (skipped: brackets inside them do not nest) and brackets, for measuring how deep a value nests.
_JSON_NESTING = re.compile(r'"(?:[^"\\]+|\\.)*"|[\[\]{}]')


def _deepest(text: str, start: int = 0) -> tuple[int, int, int | None]:
    """How deep the JSON value at `start` nests: (depth, offset of its deepest point, and for a top-level list
    the 1-based item holding that point, else None). Only called once the decoder has given up."""
    depth = best = at = items = 0
    item: int | None = None
    top_list = False
    for m in _JSON_NESTING.finditer(text, start):
        c = text[m.start()]
        if c == '"':
            continue
        if c in "[{":
            depth += 1
            if depth == 1:
                top_list = c == "["
            elif depth == 2 and top_list:
                items += 1
            if depth > best:
                best, at, item = depth, m.start(), items
        else:
            depth -= 1
            if depth == 0:
                break
    return best, at, (item if top_list and item else None)


def _too_deep(location: str, depth: int, where: str) -> DataError:
    return data_error(
        location,
        f"a value is nested {depth} levels deep (lists or objects inside each other, deepest at {where}), "
        "too deep to read",
        fix="flatten it: a data row holds text, or a list of messages; deep nesting like this is usually "
        "generated by mistake",
    )


def _column(text: str, offset: int) -> int:
    return offset - (text.rfind("\n", 0, offset) + 1) + 1


# --- JSON


def _read_json(path: Path, where: str, limit: int | None) -> _Read:
    text = _decode(path.read_bytes(), where, path.name)
    if not text.strip():
        raise _empty(where)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and _first_record_is_object(text):
            # One object per line in a .json file: it is JSONL.
            return _parse_jsonl(enumerate(text.split("\n"), 1), where, limit)
        if e.msg == "Extra data" and text.lstrip().startswith("{"):
            # Pretty-printed objects one after another (`jq .` output).
            return _parse_json_stream(text, where, limit)
        raise data_error(
            f"{where}:{e.lineno}",
            f"not valid JSON ({e.msg.removesuffix(' at')} at line {e.lineno}, column {e.colno})",
            fix="fix the JSON; a .json data file holds a list of objects, e.g. [{\"text\": \"...\"}, ...]",
        ) from None
    except RecursionError:
        depth, at, item = _deepest(text, len(text) - len(text.lstrip()))
        line = text.count("\n", 0, at) + 1
        row = f" (in row {item})" if item else ""
        raise _too_deep(f"{where}:{line}", depth, f"line {line}, column {_column(text, at)}{row}") from None
    return _json_rows(document, where, limit)


def _first_record_is_object(text: str) -> bool:
    for line in text.splitlines():
        if line.strip():
            try:
                return isinstance(json.loads(line), dict)
            except (json.JSONDecodeError, RecursionError):
                return False
    return False


def _json_rows(document: Any, where: str, limit: int | None) -> _Read:
    """Rows from a list of objects, an object of equal-length lists, or {"data": [objects]}."""
    if isinstance(document, dict):
        values = list(document.values())
        if len(values) == 1 and isinstance(values[0], list) and values[0] and _all_objects(values[0]):
            document = values[0]  # {"data": [...]}: the rows under one key
        else:
            document = _columns_to_rows(document, where)
    if not isinstance(document, list):
        raise data_error(
            where,
            f"the file holds a JSON {_json_kind(document)}; expected a list of objects",
            fix='write the rows as [{"text": "..."}, ...], or as JSONL (one object per line, .jsonl)',
        )
    if not document:
        raise data_error(where, "has no rows (the list is empty)", fix="add the rows to the list")
    rows = document[:limit] if limit is not None else document
    columns: dict[str, None] = {}
    for index, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise data_error(
                f"{where}:row {index}",
                f"item {index} of the list is a JSON {_json_kind(row)}, not an object",
                fix='every item must be an object mapping column names to values, e.g. {"text": "..."}',
            )
        _union(columns, row)
    return rows, list(columns), [f"{where}:row {i}" for i in range(1, len(rows) + 1)]


def _all_objects(items: list[Any]) -> bool:
    return all(isinstance(item, dict) for item in items)


def _columns_to_rows(document: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """{"text": [...], "label": [...]} -> rows; anything else is not a table."""
    shape_fix = (
        'write a list of objects [{"text": "..."}, ...], an object of equal-length lists {"text": [...]}, '
        "or JSONL (one object per line, .jsonl)"
    )
    if not document:
        raise data_error(where, "has no rows (the object is empty)", fix=shape_fix)
    not_lists = [k for k, v in document.items() if not isinstance(v, list)]
    if not_lists:
        raise data_error(
            where,
            f"the file holds one JSON object whose {not_lists[0]!r} is not a list, so it is not a table",
            fix=shape_fix,
        )
    lengths = {k: len(v) for k, v in document.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise data_error(
            where, f"the columns have different lengths ({shown})", fix="give every column the same length"
        )
    names = list(document)
    return [dict(zip(names, values)) for values in zip(*document.values())]


# --- CSV

# A record is suspected of a stray quote when it spans at least this many lines, more than this many times the
# lines of any other record, and this share of the lines inside its quoted cell would each be a row of their own.
_RUNAWAY_LINES = 8
_RUNAWAY_FACTOR = 4
_ROW_LIKE_SHARE = 0.9
_ROW_LIKE_SAMPLE = 200  # lines of a suspect cell checked, at most


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","  # .tsv is csv with tabs


def _read_csv(path: Path, where: str, limit: int | None, delimiter: str) -> _Read:
    header: list[str] = []
    rows: list[dict[str, Any]] = []
    locations: list[str] = []
    for row, location in _csv_rows(path, where, limit, delimiter, header):
        rows.append(row)
        locations.append(location)
    return rows, header, locations


def _csv_rows(path: Path, where: str, limit: int | None, delimiter: str, header: list[str]
              ) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, location) for the first `limit` rows, read record by record; `header` is filled in before the
    first row. The checks that look across records (a quote left open in the last one, a record far longer
    than all others) run once the last row is read: only when the caller asks past it."""
    csv.field_size_limit(2**31 - 1)  # long documents in one cell are normal for training data
    lines = _lines(path, where)
    tape = _Tape(lines)
    reader = csv.reader(iter(tape), delimiter=delimiter)
    kind = "TSV" if delimiter == "\t" else "CSV"
    count = 0
    try:
        header[:] = _csv_header(reader, where, kind)
        head = tape.take()  # the header's lines, and any blank ones before it
        _check_quotes(head, reader.line_num - len(head) + 1, where, delimiter)
        longest = _LongestRecord(len(header), delimiter)
        raw: list[str] = []
        last = 0  # the first line of the last record read
        while limit is None or count < limit:
            start = reader.line_num + 1
            record = next(reader, None)
            if record is None:
                break
            raw, last = tape.take(), start
            if not record or (len(record) == 1 < len(header) and not record[0].strip()):
                continue  # a blank line
            location = f"{where}:row {count + 1} (line {start})"
            if len(record) != len(header):
                cell = _check_quotes(raw, start, where, delimiter) if len(raw) > 1 else None
                raise _ragged(location, start, len(record), len(header), kind,
                              cell.describe(start, len(raw)) if cell else "")
            longest.add(count + 1, start, raw, where)
            count += 1
            yield dict(zip(header, record)), location
        # Only the last record can end inside quotes: any other would have gone on to the next line.
        _check_quotes(raw, last, where, delimiter)
        longest.check(where)
    except csv.Error as e:
        raise data_error(
            f"{where}:{reader.line_num}",
            f"not valid {kind} ({e}, line {reader.line_num})",
            fix='check the quoting: a cell with the delimiter, quotes or newlines must be in "double quotes"',
        ) from None
    finally:
        lines.close()  # closes the file when a limit (or the caller) stops early
    if not count:
        raise data_error(where, "has a header but no rows", fix="add the rows under the header line")


class _Tape:
    """Feeds the lines to the csv reader and keeps those of the record being read: Python's csv module (not
    strict) reads an unclosed quote to the end of the file as one cell without a word, so the records that can
    hide one (the last, a ragged one, one far longer than the rest) are scanned again. Only the current
    record's lines are held."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self.lines = lines
        self.record: list[str] = []

    def __iter__(self) -> Iterator[str]:
        for _, text in self.lines:
            self.record.append(text)
            yield text

    def take(self) -> list[str]:
        """The lines read since the last call: exactly one record's, as the reader returns whole records."""
        record, self.record = self.record, []
        return record


@dataclass
class _QuotedCell:
    """The quoted cell that makes a CSV record span lines: where it opens and closes (offsets in the record)."""

    text: str  # the record's raw text
    opened: int
    closed: int | None  # None: never closed, the file ended inside it

    def line_of(self, offset: int, start: int) -> int:
        return start + self.text.count("\n", 0, offset)

    def describe(self, start: int, span: int) -> str:
        """Why a (closed) cell makes the record span lines, for the message about the record."""
        closed = self.line_of(self.closed if self.closed is not None else len(self.text), start)
        return (f"the row runs from line {start} to line {start + span - 1} because the quoted cell opened on "
                f"line {self.line_of(self.opened, start)} (column {_column(self.text, self.opened)}) closes only "
                f"on line {closed}")


_FIELD_ENDS: dict[str, re.Pattern[str]] = {}


def _quoted_cell(text: str, delimiter: str) -> _QuotedCell | None:
    """Scan one record's raw text as the csv module does (not strict): a quote opens a quoted cell only at the
    start of a cell, "" inside it is a quote, and after its closing quote the cell runs to the next delimiter.
    Returns a quoted cell still open at the end, else the one spanning the most line breaks, else None."""
    ends = _FIELD_ENDS.setdefault(delimiter, re.compile(f"[{re.escape(delimiter)}\r\n]"))
    pos, size = 0, len(text)
    widest: _QuotedCell | None = None
    breaks = 0
    while pos < size:
        if text[pos] == '"':
            opened, pos = pos, pos + 1
            while True:
                close = text.find('"', pos)
                if close < 0:
                    return _QuotedCell(text, opened, None)
                if not text.startswith('"', close + 1):
                    break
                pos = close + 2  # "" is a quote inside the cell
            inside = text.count("\n", opened, close)
            if inside > breaks:
                widest, breaks = _QuotedCell(text, opened, close), inside
            pos = close + 1
        end = ends.search(text, pos)
        if end is None or end.group() != delimiter:
            break  # the end of the record
        pos = end.end()
    return widest


def _check_quotes(raw: list[str], start: int, where: str, delimiter: str) -> _QuotedCell | None:
    """The quoted cell that makes this record span lines; a DataError when one is never closed."""
    if len(raw) < 2 and not any('"' in line for line in raw):
        return None
    cell = _quoted_cell(raw[0] if len(raw) == 1 else "".join(raw), delimiter)
    if cell is not None and cell.closed is None:
        line, last = cell.line_of(cell.opened, start), start + len(raw) - 1
        rest = f"lines {line}-{last}" if last > line else f"line {line}"
        raise data_error(
            f"{where}:{line}",
            f"a quoted cell opens on line {line} (column {_column(cell.text, cell.opened)}) and is never closed, "
            f"so {rest} (the rest of the file) would be read as that one cell",
            fix='close the quote, or double a quote that is part of the text (""); a cell holding the delimiter, '
            'quotes or line breaks must be written in "double quotes"',
        )
    return cell


@dataclass
class _Suspect:
    row: int
    start: int
    span: int
    cell: _QuotedCell
    row_like: int  # lines inside the cell that would each be a whole row
    checked: int  # lines inside the cell looked at


class _LongestRecord:
    """Tracks the record spanning the most lines: a quote opened by mistake and closed by a stray quote much
    later makes one record of many rows, which the csv module accepts."""

    def __init__(self, width: int, delimiter: str) -> None:
        self.width, self.delimiter = width, delimiter
        self.longest = self.second = 1  # lines of the longest record and of the longest other one
        self.suspect: _Suspect | None = None

    def add(self, row: int, start: int, raw: list[str], where: str) -> None:
        span = len(raw)
        if span <= self.longest:
            self.second = max(self.second, span)
            return
        self.second, self.longest, self.suspect = self.longest, span, None
        # Only a record far longer than all before it can end up far longer than all others: only it is scanned.
        if span < _RUNAWAY_LINES or span <= _RUNAWAY_FACTOR * self.second or self.width < 2:
            return
        cell = _check_quotes(raw, start, where, self.delimiter)
        if cell is not None and cell.closed is not None:
            first = cell.text.count("\n", 0, cell.opened) + 1
            inside = raw[first:cell.text.count("\n", 0, cell.closed)][:_ROW_LIKE_SAMPLE]
            row_like = sum(1 for line in inside
                           if len(next(csv.reader([line], delimiter=self.delimiter), [])) == self.width)
            self.suspect = _Suspect(row, start, span, cell, row_like, len(inside))

    def check(self, where: str) -> None:
        s = self.suspect
        if (s is None or s.span <= _RUNAWAY_FACTOR * self.second or not s.checked
                or s.row_like < _ROW_LIKE_SHARE * s.checked):
            return
        assert s.cell.closed is not None
        line = s.cell.line_of(s.cell.opened, s.start)
        raise data_error(
            f"{where}:{line}",
            f"row {s.row} runs from line {s.start} to line {s.start + s.span - 1} ({s.span} lines; no other row has "
            f"more than {self.second}): the quoted cell opened on line {line} (column "
            f"{_column(s.cell.text, s.cell.opened)}) closes only on line {s.cell.line_of(s.cell.closed, s.start)}, "
            f"and {s.row_like} of the {s.checked} lines in between look like rows of their own",
            fix=f'a quote near line {line} is probably missing or stray: close it, or double it ("") if it is '
            "part of the text; if that cell really holds these lines, save the data as JSONL instead",
        )


def _csv_header(reader: Any, where: str, kind: str) -> list[str]:
    for header in reader:
        if any(cell.strip() for cell in header):
            break
    else:
        raise _empty(where)
    line = f"{where}:{reader.line_num}"
    for index, name in enumerate(header, 1):
        if not name.strip():
            raise data_error(
                line,
                f"column {index} of the header has no name",
                fix="name every column in the first line (pandas: save with to_csv(index=False))",
            )
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise data_error(line, f"the header names column {name!r} twice", fix="give every column a unique name")
        seen.add(name)
    return header


def _ragged(location: str, line: int, got: int, want: int, kind: str, why: str = "") -> DataError:
    more = "more" if got > want else "fewer"
    return data_error(
        location,
        f"line {line} has {got} fields, {more} than the {want} columns of the header" + (f"; {why}" if why else ""),
        fix=f'quote cells that contain the delimiter or newlines ("a, b"), or fix the row; every {kind} row '
        "needs one field per column",
    )


# --- Parquet


def _read_parquet(path: Path, where: str, limit: int | None) -> _Read:
    parquet, columns = _open_parquet(path, where)
    rows: list[dict[str, Any]] = []
    batch_size = min(limit, 8192) if limit is not None else 8192
    for batch in _parquet_batches(parquet, columns, where, batch_size):
        rows.extend(batch)
        if limit is not None and len(rows) >= limit:
            del rows[limit:]
            break
    if not rows:
        raise _no_parquet_rows(where)
    return rows, columns, [f"{where}:row {i}" for i in range(1, len(rows) + 1)]


def _parquet_parts(path: Path, where: str, limit: int | None, chunk_rows: int) -> Iterator[_Read]:
    """read_table's Parquet rows, chunk_rows at a time: one batch of rows in Python objects at a time."""
    parquet, columns = _open_parquet(path, where)
    batch_size = min(chunk_rows, limit or chunk_rows, 8192)

    def pairs() -> Iterator[tuple[dict[str, Any], str]]:
        number = 0
        for batch in _parquet_batches(parquet, columns, where, batch_size):
            for row in batch:
                number += 1
                yield row, f"{where}:row {number}"

    try:
        yield from _gather(pairs(), chunk_rows, limit, columns, empty=lambda: _no_parquet_rows(where))
    finally:
        parquet.close()


def _open_parquet(path: Path, where: str) -> tuple[Any, list[str]]:
    """The ParquetFile and its data columns."""
    import pyarrow as pa  # lazy: importing engine.data stays light
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        # pandas stores a non-default index as `__index_level_N__`: not a data column.
        return parquet, [c for c in parquet.schema_arrow.names if not re.fullmatch(r"__index_level_\d+__", c)]
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _unreadable_parquet(where, e) from None


def _parquet_batches(parquet: Any, columns: list[str], where: str, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of `parquet`, batch_size (at most) at a time; a DataError when a batch cannot be read."""
    import pyarrow as pa

    try:
        batches = parquet.iter_batches(batch_size=batch_size, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _unreadable_parquet(where, e) from None
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            rows = batch.to_pylist()
        except (pa.ArrowException, OSError, ValueError) as e:
            raise _unreadable_parquet(where, e) from None
        yield rows


def _unreadable_parquet(where: str, error: Exception) -> DataError:
    return data_error(
        where,
        f"not a readable Parquet file ({error})",
        fix="check that it was written completely; re-export it, e.g. pandas DataFrame.to_parquet(path)",
    )


def _no_parquet_rows(where: str) -> DataError:
    return data_error(where, "has no rows", fix="write the rows into it, or point data.path at another file")


# --- Hub datasets


def _read_hub(source: DataSource, *, token: str | None, limit: int | None) -> Table:
    where = source.location()
    loaded = _load_hub(source, token=token)
    if limit is not None and len(loaded) > limit:
        loaded = loaded.select(range(limit))
    rows = loaded.to_list()
    if not rows:
        raise _no_hub_rows(source)
    return Table(rows, list(loaded.column_names), source, [f"{where}:row {i}" for i in range(1, len(rows) + 1)])


def _hub_parts(source: DataSource, *, token: str | None, limit: int | None, chunk_rows: int) -> Iterator[_Read]:
    """read_table's hub rows, chunk_rows at a time: slices of the memory-mapped Dataset, each made into rows
    by the same to_list read_table uses (so JSON fields are decoded alike)."""
    where = source.location()
    loaded = _load_hub(source, token=token)
    total = len(loaded) if limit is None else min(len(loaded), limit)
    if not total:
        raise _no_hub_rows(source)
    columns = list(loaded.column_names)
    for start in range(0, total, chunk_rows):
        stop = min(start + chunk_rows, total)
        rows = loaded.select(range(start, stop)).to_list()
        yield rows, list(columns), [f"{where}:row {i}" for i in range(start + 1, stop + 1)]


def _no_hub_rows(source: DataSource) -> DataError:
    return data_error(source.location(), f"split {source.split!r} has no rows", fix="pick another split")


def _load_hub(source: DataSource, *, token: str | None) -> Any:
    """The split as a `datasets.Dataset` (memory-mapped, nothing read into Python objects)."""
    name = source.dataset_id or ""
    # Why the hub is not asked, if it is not: offline mode, or no route to it. Either way a cached
    # dataset still loads, and a missing one fails at once instead of after a minute of retries.
    offline = "offline mode is on (HF_HUB_OFFLINE)" if datasets_offline() else None
    if offline is None and not _hub_reachable():
        offline = "the hub cannot be reached"
    # Fail in seconds, not minutes, when the hub is slow. Read by huggingface_hub at import.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    import datasets  # lazy: heavy, and only needed for hub ids

    restore = _force_offline() if offline else None
    try:
        return datasets.load_dataset(name, name=source.config_name, split=source.split, token=token)
    except Exception as e:  # noqa: BLE001 - every failure of the hub stack becomes a message for people
        raise _hub_error(source, e, offline=offline) from None
    finally:
        if restore:
            restore()


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens; True behind a proxy, where only the proxy can tell."""
    if any(os.environ.get(n) for n in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _force_offline() -> Callable[[], None]:
    """datasets and huggingface_hub read the offline flag once, at import; honour a flag set since then."""
    import datasets.config as dconfig
    import huggingface_hub.constants as hconstants

    before = (dconfig.HF_HUB_OFFLINE, hconstants.HF_HUB_OFFLINE)
    dconfig.HF_HUB_OFFLINE = hconstants.HF_HUB_OFFLINE = True

    def restore() -> None:
        dconfig.HF_HUB_OFFLINE, hconstants.HF_HUB_OFFLINE = before

    return restore


def _hub_error(source: DataSource, error: BaseException, *, offline: str | None) -> DataError:
    name, where = source.dataset_id, source.location()
    text = str(error)
    not_local = f"there is no local file or directory named {name!r} either"
    near = _miss(Path.cwd() / (name or "")) if name else None
    if near is not None and near.close:  # `chatdri` for the folder chatdir/: a typo, not a dataset
        not_local += f" (did you mean {_corrected(name or '', near)}?)"
    if is_connection_error(error):
        return data_error(
            where,
            f"hub dataset {name!r} could not be found locally and {offline or 'the hub cannot be reached'}; "
            f"{not_local}",
            fix=f"download it on a machine with internet (datasets.load_dataset({name!r}) fills "
            "~/.cache/huggingface; copy that cache here), or point data.path at local files "
            "(a directory with train.jsonl, or a .csv/.jsonl/.json/.parquet file)",
        )
    if type(error).__name__ == "DatasetNotFoundError":
        return data_error(
            where,
            f"no dataset {name!r} on the hub, or it is private or gated; {not_local}",
            fix="check the name (org/name); for a private or gated dataset log in (hf auth login) or set HF_TOKEN",
        )
    # datasets names what it has in its message: the splits, or the configs to pick from.
    choices = (
        (r"Unknown split \"(.*?)\"\. Should be one of \[(.*)\]", 2,
         "the dataset has no split {split!r}; its splits are: {available}",
         "set data.train_split (or data.valid_split) to one of: {available}"),
        (r"(?:not found\. Available|pick one among the available configs): \[(.*?)\]", 1,
         "pick a config of {name!r}: {available}", "set data.path to {name}:CONFIG, CONFIG one of: {available}"),
    )
    for pattern, group, message, fix in choices:
        found = re.search(pattern, text)
        if found:
            values = {"available": found.group(group).replace("'", ""), "split": source.split, "name": name}
            return data_error(where, message.format(**values), fix=fix.format(**values))
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return data_error(
        where,
        f"could not load hub dataset {name!r} ({type(error).__name__}: {first_line})",
        fix="check data.path and the split; or download the data and point data.path at local files",
    )


# ---------------------------------------------------------------------------------------------------------
# Counting rows without reading them (for showing: the training process counts what it reads)

COUNT_LIMIT_BYTES = 1 << 30  # larger files are not counted: it would take a while and the number is only shown


def count_rows(table: Table, *, limit_bytes: int = COUNT_LIMIT_BYTES) -> int | None:
    """The rows of the local data file `table` was read from, counted without parsing them: non-blank lines of
    JSONL, records of CSV less the header, Parquet's metadata. None: not a file, too large, or a JSON document
    (counting means parsing it all)."""
    source = table.source
    if source.kind != "file" or source.path is None:
        return None
    try:
        if source.path.stat().st_size > limit_bytes:
            return None
        # a .jsonl file read as JSONL has line locations ("train.jsonl:17"); one holding a JSON document has not
        if source.format == "jsonl" and all(":" in loc and loc.rsplit(":", 1)[1].isdigit()
                                            for loc in table.locations[:1]):
            with source.path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        if source.format == "csv":
            return _count_csv(source.path)
        if source.format == "parquet":
            import pyarrow.parquet as pq  # lazy: only for Parquet files

            return pq.ParquetFile(source.path).metadata.num_rows
    except (OSError, ValueError, csv.Error, ImportError):
        return None
    return None


def _count_csv(path: Path) -> int:
    csv.field_size_limit(2**31 - 1)
    with path.open(encoding="utf-8-sig", newline="") as f:
        records = sum(1 for record in csv.reader(f, delimiter=_delimiter(path)) if any(cell.strip() for cell in record))
    return max(records - 1, 0)  # the header


# ---------------------------------------------------------------------------------------------------------
# Helpers for messages


def _names(files: list[str]) -> str:
    shown = ", ".join(files[:_SHOWN_FILES])
    more = len(files) - _SHOWN_FILES
    return f"{shown} and {more} more" if more > 0 else shown
