"""A run of several processes must never hang silently: rank 0 watches the time since the training loop last
moved (a step began or ended, an evaluation batch, a checkpoint saved). "No progress for WARN_FACTOR x the usual
step time" becomes a warning event; past FAIL_FACTOR x (and at least FAIL_MIN_S) the run fails with each rank's
last lines from train.log, and the whole process group is ended. A rank that dies is the launcher's to see (it
ends the others); this is for the ranks that live but wait forever (a collective one rank never reaches).

Checkpoint saves do not count as stalls: they may take long for a large model and are not steps.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

WARN_FACTOR = 10.0
WARN_MIN_S = 120.0
FAIL_FACTOR = 50.0
FAIL_MIN_S = 900.0
FIRST_STEP_S = 1800.0  # before any step has a time: the first step compiles, allocates, warms caches
CHECK_EVERY_S = 5.0
LAST_LINES = 5
_RANK = re.compile(r"^\[rank (\d+)\] ")


class Watchdog:
    """The clock and the thresholds, apart from the thread, so they can be tested with a fake clock."""

    def __init__(self, *, now: Callable[[], float] = time.monotonic, warn_factor: float = WARN_FACTOR,
                 warn_min_s: float = WARN_MIN_S, fail_factor: float = FAIL_FACTOR, fail_min_s: float = FAIL_MIN_S,
                 first_step_s: float = FIRST_STEP_S) -> None:
        self.now = now
        self.warn_factor, self.warn_min_s = warn_factor, warn_min_s
        self.fail_factor, self.fail_min_s = fail_factor, fail_min_s
        self.first_step_s = first_step_s
        self.last = now()
        self.step_began: float | None = None
        self.step_times: list[float] = []
        self.paused = False
        self.warned = False

    def beat(self) -> None:
        self.last = self.now()
        self.warned = False

    def step_begin(self) -> None:
        self.beat()
        self.step_began = self.last

    def step_end(self) -> None:
        now = self.now()
        if self.step_began is not None:
            self.step_times = (self.step_times + [now - self.step_began])[-50:]
        self.beat()

    def usual_step_s(self) -> float | None:
        return statistics.median(self.step_times) if self.step_times else None

    def limits(self) -> tuple[float, float]:
        """(warn after, fail after) seconds without progress."""
        usual = self.usual_step_s()
        if usual is None:
            return self.first_step_s / 2, self.first_step_s
        return max(self.warn_factor * usual, self.warn_min_s), max(self.fail_factor * usual, self.fail_min_s)

    def check(self) -> tuple[str, float] | None:
        """("warn" | "fail", seconds since the loop last moved), or None while all is well (or paused)."""
        if self.paused:
            return None
        quiet = self.now() - self.last
        warn, fail = self.limits()
        if quiet >= fail:
            return "fail", quiet
        if quiet >= warn and not self.warned:
            self.warned = True
            return "warn", quiet
        return None


def last_lines_by_rank(log: Path, world_size: int, n: int = LAST_LINES,
                       tail_bytes: int = 256 * 1024) -> dict[int, list[str]]:
    """Each rank's last `n` lines in train.log: rank 0's lines carry no prefix, the others `[rank N] `."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[int, list[str]] = {r: [] for r in range(world_size)}
    for line in text.split("\n"):
        m = _RANK.match(line)
        line = line.rsplit("\r", 1)[-1].rstrip()  # a progress bar's last state
        if m and line.startswith(m.group(0)):
            line = line[m.end():]
        if not line:
            continue
        out.setdefault(int(m.group(1)) if m else 0, []).append(line)
    return {r: lines[-n:] for r, lines in out.items()}


def hang_message(quiet: float, usual: float | None, lines: dict[int, list[str]]) -> str:
    usual_text = f" (a step usually takes {usual:.1f} s)" if usual is not None else ""
    parts = [f"no training progress for {quiet:.0f} s{usual_text} while the processes were alive: a rank is "
             "waiting for the others (a collective one of them never reached), so the run was ended"]
    for rank, rank_lines in sorted(lines.items()):
        shown = " | ".join(rank_lines) if rank_lines else "(nothing in train.log)"
        parts.append(f"rank {rank} last wrote: {shown}")
    return ". ".join(parts)


class WatchdogThread:
    """Checks every CHECK_EVERY_S; `on_warn(quiet, usual)` and `on_fail(quiet, usual)` run on this thread.
    After on_fail the process group is ended (the launcher and every rank)."""

    def __init__(self, dog: Watchdog, on_warn: Callable[[float, float | None], None],
                 on_fail: Callable[[float, float | None], None], every: float = CHECK_EVERY_S) -> None:
        self.dog, self.on_warn, self.on_fail, self.every = dog, on_warn, on_fail, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmtune-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            found = self.dog.check()
            if found is None:
                continue
            kind, quiet = found
            if kind == "warn":
                self.on_warn(quiet, self.dog.usual_step_s())
                continue
            try:
                self.on_fail(quiet, self.dog.usual_step_s())
            finally:
                os.killpg(os.getpgrp(), signal.SIGKILL)  # every rank and the launcher: nothing else ends a hang
