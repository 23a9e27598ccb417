"""Progress of long data work (formatting, tokenizing): counted where the work is done, reported at most once
a second as a line such as "formatting train: 42% (42,000/100,000 rows, 1,900 rows/s)". Light: no torch."""

from __future__ import annotations

import time
from collections.abc import Callable

Report = Callable[[str], None]  # takes the line; the training process emits it as a status event
EVERY_S = 1.0


class ProgressLine(str):
    """The line, which also carries its numbers: a terminal can draw a bar from them (tui.progress_bar), a
    log or an event just writes the text."""

    what: str
    done: int
    total: int
    seconds: float
    unit: str

    @property
    def rate(self) -> float | None:
        return self.done / self.seconds if self.seconds > 0 and self.done else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None before there is a rate (or with no total)."""
        rate = self.rate
        return (self.total - self.done) / rate if rate and self.total >= self.done else None


def progress_line(what: str, done: int, total: int, seconds: float, unit: str = "rows") -> ProgressLine:
    rate = f", {done / seconds:,.0f} {unit}/s" if seconds > 0 and done else ""
    share = f"{100 * done // total}% " if total else ""
    line = ProgressLine(f"{what}: {share}({done:,}/{total:,} {unit}{rate})")
    line.what, line.done, line.total, line.seconds, line.unit = what, done, total, seconds, unit
    return line


class Tally:
    """Counts `done` of `total` for one piece of work and reports through `report` at most every `every` seconds
    (and once at the end, via finish). With report None it does nothing, at the cost of one comparison."""

    def __init__(self, report: Report | None, what: str, total: int, *, unit: str = "rows",
                 every: float | None = None) -> None:
        self.report, self.what, self.total, self.unit = report, what, total, unit
        self.every = EVERY_S if every is None else every
        self.done = 0
        self.start = self.last = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.done += n
        if self.report is None:
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.report(progress_line(self.what, self.done, self.total, now - self.start, self.unit))

    def finish(self) -> None:
        """Said only for work that took long enough to have been reported on: short work stays quiet."""
        if self.report is not None and (self.last > self.start or not self.every):
            now = time.monotonic()
            self.report(progress_line(self.what, self.done, self.total, now - self.start, self.unit))
