"""Numbers, sizes, durations and paths as people read them, in one place for the engine's messages and the UI
(tui.format re-exports these). Pure functions on the standard library: importing this imports nothing heavy.
"""

from __future__ import annotations

import math
from pathlib import Path

_BINARY = (("G", 2**30), ("M", 2**20), ("K", 2**10))
_COUNT = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3))
_SI = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


def human_bytes(n: float | None, *, compact: bool = False, unit: str | None = None, missing: str = "-") -> str:
    """A size in binary units, at most three figures.

    Spaced (messages): "300 MiB", "9.1 GiB", "141 GiB"; never below MiB ("0 MiB").
    `compact` (narrow panels): "18.6G", "640M", "12K", "310B".
    `unit` fixes the unit, named as given ("MB": 2**20 bytes): "3.4 MB", "1,234 MB" (disk space, where one unit
    reads best across messages). `missing` when `n` is None (or not a finite number).
    """
    if n is None or not math.isfinite(n):
        return missing
    if unit is not None:
        value = n / dict(_BINARY)[unit[0].upper()]
        return f"{value:,.0f} {unit}" if abs(value) >= 10 else f"{value:.1f} {unit}"
    if not compact:
        n = max(n, 0)
    for name, size in _BINARY:
        if abs(n) >= size or (not compact and name == "M"):
            value = n / size
            text = f"{value:.1f}" if name == "G" and abs(value) < 100 else f"{value:.0f}"
            return f"{text}{name}" if compact else f"{text} {name}iB"
    return f"{n:.0f}B"


def human_count(n: float | None, *, si: bool = False, missing: str = "-") -> str:
    """A count in a few figures: 494M, 1.5B, 330K, 950 (parameters, tokens). `si`: SI prefixes, as a plot's
    axis shows steps: 1k, 2.5k, 1.2M, 3G. Below a thousand: whole as it is, else 3 significant figures (3.5).
    NaN and infinities as Python writes them; `missing` for None."""
    if n is None or isinstance(n, bool) or not isinstance(n, (int, float)):
        return missing
    if not math.isfinite(n):
        return str(n)
    for i, (name, size) in enumerate(_SI if si else _COUNT):
        if abs(n) >= size or (i and round(abs(n) / (size / 1000)) >= 1000):  # 999,999 is 1M, not 1000K
            value = n / size
            text = f"{value:.1f}" if abs(value) < 9.95 else f"{value:.0f}"
            return text.removesuffix(".0") + name
    return f"{n:.0f}" if n == int(n) else f"{n:.3g}"


def human_duration(seconds: float | None) -> str:
    """A rough duration, for estimates: "under a minute", "12 min", "2 h 05 min", "3 days"; "?" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{round(seconds / 86400)} days"


def plural(count: object, noun: str) -> str:
    """"1 row", "120 steps", "1.5 epochs"; "- steps" when the count is missing (an event without it)."""
    if isinstance(count, int) and not isinstance(count, bool):
        shown = str(count)
    else:
        shown = format(count, "g") if isinstance(count, float) else "-"
    return f"{shown} {noun}" + ("" if shown == "1" else "s")


def shown_path(path: Path | str) -> str:
    """A path as the user would type it here: relative to the current directory when under it ("." for it)."""
    path = Path(path)
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
