"""Reading a run from its files: new events, the end of its log, and whether its process still lives.

The dashboard calls `RunFollower.poll()` from a worker thread a few times a second and hands what it
returns to the app as one message: events come in bursts (a re-attach reads thousands at once), and
only the latest log tail matters. Standard library and engine only; no Textual here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine import launch
from engine.events import EVENTS_FILE, EventTail

LOG_LINES = 200  # lines of train.log kept for the log panel (it shows the end; scrolling shows more)
LOG_TAIL_BYTES = 128 * 1024


@dataclass
class RunPolled:
    """What changed since the last poll. `log` is None when train.log did not change."""

    events: list[dict] = field(default_factory=list)
    log: list[str] | None = None
    alive: bool = True

    @property
    def empty(self) -> bool:
        return not self.events and self.log is None


def clean_log_line(line: str) -> str:
    """What a terminal would show of a line: tqdm redraws with carriage returns, keep the last drawing."""
    line = line.rstrip("\r\n")
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    return line.replace("\t", "    ")


def read_log_tail(path: Path, count: int = LOG_LINES, max_bytes: int = LOG_TAIL_BYTES) -> list[str]:
    """The last `count` lines of the log as a terminal shows them; [] when there is no log yet."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - max_bytes, 0))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")
    if len(data) >= max_bytes:
        lines = lines[1:]  # the first line was cut in the middle
    cleaned = [clean_log_line(line) for line in lines]
    while cleaned and not cleaned[-1]:
        cleaned.pop()
    return cleaned[-count:]


class RunFollower:
    """Follows one run directory. `handle` is None for a run no process of ours can reach (finished, or
    started on another machine); `alive` is then False from the start."""

    def __init__(self, run_dir: Path, handle: launch.RunHandle | None) -> None:
        self.run_dir = Path(run_dir)
        self.handle = handle
        self.tail = EventTail(self.run_dir / EVENTS_FILE)
        self.log_path = self.run_dir / launch.LOG_FILE
        self._log_stamp: tuple[int, int] | None = None

    def poll(self) -> RunPolled:
        # Liveness first: whatever the run wrote before it ended is read below, so "ended without a final
        # event" is never concluded while its last events are still unread.
        alive = self.handle is not None and self.handle.alive()
        events = self.tail.poll()
        return RunPolled(events=events, log=self._log_if_changed(), alive=alive)

    def _log_if_changed(self) -> list[str] | None:
        try:
            stat = os.stat(self.log_path)
        except OSError:
            return None
        stamp = (stat.st_size, stat.st_mtime_ns)
        if stamp == self._log_stamp:
            return None
        self._log_stamp = stamp
        return read_log_tail(self.log_path)
