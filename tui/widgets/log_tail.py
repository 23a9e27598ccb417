"""The end of a growing list of lines (the run's train.log, or its events), kept scrolled to the bottom unless
the user scrolled up to read. With `wrap`, a line wider than the panel goes on over the next rows, indented
(an event's message: a sampled answer, an error); without it, a line is cut at the edge, as a terminal's pager
does (train.log's lines include TRL's metrics dicts, a thousand characters a step: wrapped, they would fill the
panel)."""

from __future__ import annotations

from rich._wrap import divide_line
from rich.cells import cell_len
from textual.widgets import Log

INDENT = "  "  # before the rows a wrapped line goes on over


def wrapped(line: str, width: int) -> list[str]:
    """`line` as rows of at most `width` cells, broken at spaces where it can (inside a word where it cannot),
    every row after the first indented: those it wraps onto, and those of a message of several lines."""
    room = width - len(INDENT)
    if room < 8 or ("\n" not in line and cell_len(line) <= width):  # fits (or too narrow to wrap usefully)
        return [line]
    rows: list[str] = []
    for part in line.splitlines():
        starts = [0, *divide_line(part, room, fold=True), len(part)] if cell_len(part) > room else [0, len(part)]
        rows += [part[a:b].rstrip() for a, b in zip(starts, starts[1:]) if a < b]
    return rows[:1] + [INDENT + row for row in rows[1:]]


class LogTail(Log):
    DEFAULT_CSS = "LogTail { border: round $panel; border-title-color: $text-muted; " \
                  "border-subtitle-color: $text-muted; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, highlight=False, auto_scroll=False)
        self.shown: list[str] = []  # the lines as given, before any wrapping
        self.wrap = False
        self._width = 0  # the width the shown lines were wrapped to

    def show(self, lines: list[str], *, to_end: bool = False, wrap: bool | None = None) -> None:
        """Show `lines`; follow the end if the view was there (or `to_end`: other lines than before). `wrap`:
        wrap lines wider than the panel from now on (True), cut them (False), as before (None)."""
        wrap = self.wrap if wrap is None else wrap
        width = self._wrap_width() if wrap else 0
        if lines == self.shown and (wrap, width) == (self.wrap, self._width):
            return
        # Decided before clear(): clearing empties the virtual size, after which Log.write_lines no longer
        # sees the old position as the end and would leave the view where it was (a stale log).
        follow = to_end or self.is_vertical_scroll_end or not self.shown
        scroll_y = self.scroll_y
        self.shown, self.wrap, self._width = list(lines), wrap, width
        self.clear()
        self.write_lines([row for line in lines for row in wrapped(line, width)] if width else lines,
                         scroll_end=False)
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self.scroll_to(y=scroll_y, animate=False, immediate=True)

    def _wrap_width(self) -> int:
        """The cells a row has: the panel's inside less a vertical scrollbar (there or not, so that wrapping
        never adds the scrollbar that would make the rows too wide); 0 before the first layout."""
        return max(self.size.width - self.styles.scrollbar_size_vertical, 0)

    def on_resize(self) -> None:
        if self.wrap:
            self.show(self.shown)
