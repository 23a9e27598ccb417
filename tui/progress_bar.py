"""Progress of long data preparation in the CLI (`--dry-run`, `--yes`): the pipeline's Report lines
(engine.work_progress) as rich progress bars on a terminal, or as a few plain lines in a log.

The numbers shown are the ProgressLine's own (done, total, rate, ETA), not rich's timing: the work runs in a
loop that calls us at most once a second, so rich's speed estimate would be wrong. No refresh thread: the
display is redrawn on each call, from the thread doing the work.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.text import Text

from engine.work_progress import ProgressLine

PLAIN_EVERY_S = 10.0  # piped: seconds between two lines of one piece of work (its first and last always show)
clock = time.monotonic  # the time source of the plain lines' throttling (tests replace it)


def clock_text(seconds: float) -> str:
    """An ETA or a duration as on a clock: 0:27, 4:10, 1:02:03."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def words_text(seconds: float) -> str:
    """An ETA for a log line: 27 s, 4 min 10 s, 1 h 02 min."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _numbers(line: str) -> ProgressLine | None:
    """The line as a ProgressLine with its numbers, or None for plain text (a bare ProgressLine without them
    counts as text)."""
    return line if isinstance(line, ProgressLine) and hasattr(line, "unit") else None


def _finished(line: ProgressLine) -> bool:
    return line.done >= line.total


def plain_text(line: str) -> str:
    """The line as a log shows it: the line itself, plus its ETA while one is known."""
    numbers = _numbers(line)
    if numbers is None or _finished(numbers) or numbers.eta_s is None:
        return str(line)
    return f"{line}, eta {words_text(numbers.eta_s)}"


class PrepProgress:
    """A Report for the CLI: on a terminal, a rich progress bar per piece of work (what, bar, done/total unit,
    rate, ETA), finished bars left on screen; piped (not a terminal), plain lines, at most one every
    PLAIN_EVERY_S (10 s) per piece of work plus its last one, so a log of a 1M-row preparation stays short.

    A piece of work is known by its `what`; plain str lines are shown as they come, above any live bars. Once
    every bar shown is finished the live display stops (the bars stay), so what comes next prints below them.
    A dumb terminal gets the plain lines. After __exit__, lines are printed plain (throttled as when piped).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal and not console.is_dumb_terminal
        self.closed = False
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}  # terminal: what -> its bar in the live display
        self._unfinished: set[TaskID] = set()  # terminal: the bars still going (rich's own `finished` needs its timing)
        self._printed_at: dict[str, float] = {}  # plain: what -> when its last line was printed
        self._pending: dict[str, ProgressLine] = {}  # plain: what -> its latest line, not printed

    def __enter__(self) -> PrepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops the live display (its bars stay as last drawn) or prints the latest line of unfinished work
        (a failure or Ctrl-C: how far it got); nothing when nothing was shown."""
        self.closed = True
        self._stop()
        for line in list(self._pending.values()):
            self._print(plain_text(line))
        self._pending.clear()
        self._printed_at.clear()

    def __call__(self, line: str) -> None:
        numbers = _numbers(line)
        if numbers is None:
            self._print(str(line))
        elif self.live and not self.closed:
            self._bar(numbers)
        else:
            self._plain(numbers)

    # ---- piped ----

    def _plain(self, line: ProgressLine) -> None:
        what, now = line.what, clock()
        last = self._printed_at.get(what)
        if _finished(line):
            self._printed_at.pop(what, None)
            self._pending.pop(what, None)
        elif last is None or now - last >= PLAIN_EVERY_S:
            self._printed_at[what] = now
            self._pending.pop(what, None)
        else:
            self._pending[what] = line
            return
        self._print(plain_text(line))

    # ---- terminal ----

    def _bar(self, line: ProgressLine) -> None:
        progress = self._progress
        if progress is None:
            progress = self._progress = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(bar_width=30),
                TextColumn("{task.fields[count]}", markup=False, justify="right"),
                TextColumn("{task.fields[rate]}", markup=False, justify="right"),
                TextColumn("{task.fields[eta]}", markup=False),
                console=self.console, auto_refresh=False, transient=False)
            progress.start()
        rate, eta = line.rate, line.eta_s
        if _finished(line):
            times = f"took {clock_text(line.seconds)}"
        else:
            times = f"eta {clock_text(eta)}" if eta is not None else "eta -"
        # An empty piece of work (0/0) is done: a full bar rather than a division by zero.
        completed, total = (line.done, line.total) if line.total > 0 else (1, 1)
        shown = dict(completed=completed, total=total, count=f"{line.done:,}/{line.total:,} {line.unit}",
                     rate=f"{rate:,.0f} {line.unit}/s" if rate else "", eta=times)
        task = self._tasks.get(line.what)
        if task is None or task not in self._unfinished:  # new, or the same work again: a bar of its own
            task = self._tasks[line.what] = progress.add_task(line.what, **shown)  # which redraws
            self._unfinished.add(task)
        else:
            progress.update(task, **shown, refresh=True)
        if _finished(line):
            self._unfinished.discard(task)
        if not self._unfinished:
            self._stop()  # drawn one last time and left on screen

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()
            self._unfinished.clear()

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.refresh()  # printing redraws the bars as last rendered: bring them up to date first
            self._progress.console.print(Text(text), soft_wrap=True)
        else:
            self.console.print(Text(text), soft_wrap=True)
