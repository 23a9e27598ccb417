"""The cache of prepared datasets: one directory per key (engine.cache_key) under $LLMTUNE_HOME/cache.

An entry holds the trainer's rows as Arrow files (`train.arrow`, `valid.arrow`, memory-mapped when read) and
`entry.json`: the summary the dry run, the wizard and the run's statistics are built from, and what the entry
was made from (for `llmtune-tui cache`). An entry is written in a temporary sibling directory and renamed into
place once complete, so a killed preparation never leaves a half entry that is read later: what it leaves is a
`.partial-*` directory, never read, removed by the next write after an hour or by `llmtune-tui cache clear`.
Light: no torch, no datasets (pyarrow is imported by the writer and reader only).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.tinymodel import llmtune_home

ENTRY_FILE = "entry.json"
PARTIAL_PREFIX = ".partial-"
STALE_PARTIAL_S = 3600.0  # a partial directory this old belongs to a preparation that died


def cache_root() -> Path:
    return llmtune_home() / "cache"


def entry_dir(key: str) -> Path:
    return cache_root() / key


def split_file(directory: Path, split: str) -> Path:
    return directory / f"{split}.arrow"


@dataclass
class Entry:
    """One complete entry, as `llmtune-tui cache` lists it."""

    key: str
    path: Path
    bytes: int
    created: float  # seconds since the epoch
    last_used: float  # the entry's directory mtime: touched on every read
    info: dict[str, Any]  # entry.json's "made_from": data, base_model, trainer, rows per split


def read_entry(key: str) -> dict[str, Any] | None:
    """entry.json of a complete entry, or None (no entry, or one written by another pipeline version)."""
    path = entry_dir(key) / ENTRY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    with contextlib.suppress(OSError):
        os.utime(path.parent)  # last used: what `cache` lists and what clearing the oldest would go by
    return data


@contextlib.contextmanager
def writing(key: str) -> Iterator[Path]:
    """A temporary directory to write an entry into; on leaving without an error it becomes the entry (whole,
    by one rename). Leaving with an error removes it. Another process that finished the same key first wins:
    its entry is kept and this one dropped (both hold the same rows)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    partial = root / f"{PARTIAL_PREFIX}{key}-{os.getpid()}-{time.monotonic_ns()}"
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    final = entry_dir(key)
    if final.exists():  # an older or concurrent entry of the same key: replace it
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.rename(partial, final)
    except OSError:  # another process renamed its own first
        shutil.rmtree(partial, ignore_errors=True)


def write_entry_file(directory: Path, data: dict[str, Any]) -> None:
    (directory / ENTRY_FILE).write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")


def entries() -> list[Entry]:
    """The complete entries, the most recently used first."""
    root = cache_root()
    out = []
    for child in root.iterdir() if root.is_dir() else []:
        if child.name.startswith(PARTIAL_PREFIX) or not child.is_dir():
            continue
        try:
            data = json.loads((child / ENTRY_FILE).read_text(encoding="utf-8"))
            stat = child.stat()
        except (OSError, ValueError):
            continue
        out.append(Entry(child.name, child, _size(child), float(data.get("created", stat.st_mtime)),
                         stat.st_mtime, data.get("made_from") or {}))
    return sorted(out, key=lambda e: e.last_used, reverse=True)


def partials() -> list[Path]:
    """Directories left by preparations that did not finish (never read; `clear` removes them)."""
    root = cache_root()
    return sorted(p for p in root.glob(f"{PARTIAL_PREFIX}*") if p.is_dir()) if root.is_dir() else []


def remove(path: Path) -> int:
    """Delete an entry (or partial) directory; the bytes it held."""
    size = _size(path)
    shutil.rmtree(path, ignore_errors=True)
    return size


def _size(path: Path) -> int:
    total = 0
    for f in path.rglob("*"):
        with contextlib.suppress(OSError):
            if f.is_file():
                total += f.stat().st_size
    return total


def _remove_stale_partials(root: Path) -> None:
    now = time.time()
    for p in root.glob(f"{PARTIAL_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(p, ignore_errors=True)
