"""The end of a growing list of lines (the run's train.log, or its events), kept scrolled to the bottom unless
the user scrolled up to read."""

from __future__ import annotations

from textual.widgets import Log


class LogTail(Log):
    DEFAULT_CSS = "LogTail { border: round $panel; border-title-color: $text-muted; " \
                  "border-subtitle-color: $text-muted; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, highlight=False, auto_scroll=False)
        self.shown: list[str] = []

    def show(self, lines: list[str], *, to_end: bool = False) -> None:
        """Show `lines`; follow the end if the view was there (or `to_end`: other lines than before)."""
        if lines == self.shown:
            return
        # Decided before clear(): clearing empties the virtual size, after which Log.write_lines no longer
        # sees the old position as the end and would leave the view where it was (a stale log).
        follow = to_end or self.is_vertical_scroll_end or not self.shown
        scroll_y = self.scroll_y
        self.shown = list(lines)
        self.clear()
        self.write_lines(lines, scroll_end=False)
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self.scroll_to(y=scroll_y, animate=False, immediate=True)
