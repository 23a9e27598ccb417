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
from engine.events import EventTail
from engine.run_files import RunDir
from tui.log_reader import read_log_tail

LOG_LINES = 200  # lines of train.log kept for the log panel (it shows the end; scrolling shows more)


@dataclass
class RunPolled:
    """What changed since the last poll. `log` is None when train.log did not change."""

    events: list[dict] = field(default_factory=list)
    log: list[str] | None = None
    alive: bool = True

    @property
    def empty(self) -> bool:
        return not self.events and self.log is None


class RunFollower:
    """Follows one run directory. `handle` is None for a run no process of ours can reach (finished, or
    started on another machine); `alive` is then False from the start."""

    def __init__(self, run_dir: Path, handle: launch.RunHandle | None) -> None:
        self.run_dir = Path(run_dir)
        self.handle = handle
        files = RunDir(self.run_dir)
        self.tail = EventTail(files.events)
        self.log_path = files.log
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
        return read_log_tail(self.log_path, LOG_LINES)
