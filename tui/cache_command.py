"""`llmtune-tui cache`: the prepared datasets under $LLMTUNE_HOME/cache (engine.data_cache), listed or cleared.

`cache` / `cache list`: one line per entry (key, size, when last used, what it was made from) and the partial
directories left by preparations that did not finish. `cache clear` removes everything, `cache clear KEY...`
the entries whose key starts with each KEY, `cache clear --older-than DAYS` those not used for DAYS days. A
partial directory that a live process is still writing is never removed: that preparation would fail.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine import data_cache
from engine.data_cache import PARTIAL_PREFIX, Entry
from engine.errors import Problem, UserError
from engine.launch import _pid_alive
from tui.format import human_bytes, human_duration, plural

KEY_SHOWN = 12  # characters of a key in the listing: enough to tell entries apart and to type as a prefix
_DAY_S = 86400.0


def list_cache(console: Console | None = None) -> int:
    console = console or Console(highlight=False)
    root = data_cache.cache_root()
    found = data_cache.entries()
    dead, live = _partials()
    if not found and not dead and not live:
        console.print(f"the cache of prepared datasets is empty ({root})", markup=False)
        return 0
    console.print(f"cache: {root} ({_entries(len(found))}, {_size(sum(e.bytes for e in found))})", markup=False)
    if found:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("key", "size", "last used", "trainer", "examples", "base model", "data"):
            # paths and ids folded where the terminal is narrow, never dropped: a width each keeps
            table.add_column(name, no_wrap=name in ("key", "size", "examples"), overflow="fold",
                             min_width=10 if name in ("base model", "data") else None,
                             justify="right" if name in ("size", "examples") else "left")
        now = time.time()
        for e in found:
            table.add_row(*(Text(cell) for cell in (
                e.key[:KEY_SHOWN], human_bytes(e.bytes, compact=True), _ago(now - e.last_used),
                _text(e.info.get("trainer")), _examples(e.info.get("rows")), _text(e.info.get("base_model")),
                _text(e.info.get("data")))))
        console.print(table)
    if dead:
        console.print(f"{_partial_dirs(len(dead))} "
                      f"({_size(sum(size for _, size in dead))}) left by preparations that did not finish: never "
                      "read; `llmtune-tui cache clear` removes them", markup=False, style="yellow")
    for path, pid, size in live:
        console.print(f"being written now by process {pid}: {path.name} ({_size(size)})", markup=False)
    return 0


def clear_cache(keys: list[str], *, all_: bool, older_than_days: float | None,
                console: Console | None = None) -> int:
    """Remove every entry and partial (`all_`), the entries whose key starts with each of `keys`, or those last
    used more than `older_than_days` ago (with the partial directories not touched for as long). Every key is
    checked before anything is removed: an unknown or ambiguous one removes nothing."""
    console = console or Console(highlight=False)
    if all_ and (keys or older_than_days is not None):
        raise ValueError("all_ excludes keys and older_than_days")
    if keys and older_than_days is not None:
        raise UserError([Problem("--older-than", "KEY and --older-than exclude each other",
                                 "clear the entries by key, or those not used for a while, one at a time")],
                        title="cannot clear the cache")
    if not (all_ or keys or older_than_days is not None):
        raise ValueError("nothing asked: give all_, keys or older_than_days")
    root = data_cache.cache_root()
    found = data_cache.entries()
    dead, live = _partials()
    if keys:
        chosen, partial_paths = _by_prefix(keys, found, root), []
    elif older_than_days is not None:
        cutoff = time.time() - older_than_days * _DAY_S
        chosen = [e for e in found if e.last_used < cutoff]
        partial_paths = [p for p, _ in dead if _mtime(p) < cutoff]
    else:
        chosen, partial_paths = found, [p for p, _ in dead]
    freed = sum(data_cache.remove(e.path) for e in chosen)
    partial_freed = sum(data_cache.remove(p) for p in partial_paths)
    kept = len(found) - len(chosen)
    if not chosen and not partial_paths:
        if not found and not dead:
            console.print(f"nothing to remove: the cache of prepared datasets is empty ({root})", markup=False)
        else:
            console.print(f"nothing to remove: no entry was last used more than {_days(older_than_days)} ago "
                          f"({_entries(kept)} kept)", markup=False)
    else:
        what = [f"{_entries(len(chosen))} ({_size(freed)})"]
        if partial_paths:
            what.append(f"{_partial_dirs(len(partial_paths))} "
                        f"({_size(partial_freed)})")
        line = f"removed {' and '.join(what)}, freed {_size(freed + partial_freed)}"
        if older_than_days is not None:
            line += f": last used more than {_days(older_than_days)} ago"
        console.print(line, markup=False)
        if kept:
            console.print(f"{_entries(kept)} kept", markup=False)
    for path, pid, _ in live if all_ else []:  # KEY and --older-than never touch the partials being written
        console.print(f"kept {path.name}: process {pid} is writing it", markup=False)
    return 0


def _by_prefix(keys: list[str], found: list[Entry], root: Path) -> list[Entry]:
    """The entries the prefixes name, each once; a UserError naming every prefix that names none or several."""
    chosen: dict[str, Entry] = {}
    problems: list[Problem] = []
    for prefix in keys:
        matches = [e for e in found if prefix and e.key.startswith(prefix)]
        if len(matches) == 1:
            chosen.setdefault(matches[0].key, matches[0])
        elif not prefix:
            problems.append(Problem("KEY", "is empty", "give the first characters of a key `llmtune-tui cache` "
                                    "lists"))
        elif not matches:
            where = ("`llmtune-tui cache` lists the keys" if found
                     else f"the cache is empty ({root}): there is nothing to remove")
            problems.append(Problem(prefix, "no entry's key starts with it", where))
        else:
            problems.append(Problem(prefix, f"{len(matches)} entries' keys start with it: "
                                    + ", ".join(e.key for e in matches), "give more characters of the key"))
    if problems:
        raise UserError(problems, title="cannot clear the cache: nothing was removed")
    return list(chosen.values())


def _partials() -> tuple[list[tuple[Path, int]], list[tuple[Path, int, int]]]:
    """The partial directories: those no live process writes (path, bytes), and those one does (path, pid,
    bytes). The writer's pid is in the name data_cache.writing gives it: .partial-KEY-PID-NS."""
    dead: list[tuple[Path, int]] = []
    live: list[tuple[Path, int, int]] = []
    for path in data_cache.partials():
        parts = path.name[len(PARTIAL_PREFIX):].split("-")
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
        size = data_cache._size(path)
        if _pid_alive(pid):
            live.append((path, pid, size))
        else:
            dead.append((path, size))
    return dead, live


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(n: int) -> str:
    """A size in a message: in MiB and up as everywhere, but a small entry as KiB rather than "0 MiB"."""
    if n >= 2**20 or n == 0:
        return human_bytes(n)
    return f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{n} bytes"


def _entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def _partial_dirs(n: int) -> str:
    return f"{n} partial {'directory' if n == 1 else 'directories'}"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 60 else f"{human_duration(seconds)} ago"


def _days(days: float | None) -> str:
    return plural(int(days) if days is not None and float(days).is_integer() else days, "day")


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return value if isinstance(value, str) else str(value)


def _examples(rows: Any) -> str:
    """train/valid example counts: "1,200/300", "1,200/-" without a validation split."""
    if not isinstance(rows, dict):
        return "-"

    def count(split: str) -> str:
        n = rows.get(split)
        return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else "-"

    return f"{count('train')}/{count('valid')}"
