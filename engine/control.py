"""Requests to a running run: `stop` (save a checkpoint and end) and `checkpoint` (save one and go on).

A request is a file under `RUN_DIR/control/`, which the training loop checks each step: files survive the UI
going away and need no open channel between the two processes. The UI (and `touch`) writes them, the run
removes each once handled. Standard library only: the training process imports this, not the launcher.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from engine.run_files import CONTROL_DIR, REQUESTS, RunDir, write_atomically


def _check_request(what: str) -> None:
    if what not in REQUESTS:
        raise ValueError(f"unknown run request {what!r}: expected one of {', '.join(REQUESTS)}")


def request(run_dir: Path, what: str) -> None:
    """Ask the run to `stop` (save a checkpoint and end) or to save a `checkpoint` and go on."""
    _check_request(what)
    files = RunDir(run_dir)
    files.control.mkdir(parents=True, exist_ok=True)
    write_atomically(files.request(what), f"{time.time()}\n")


def pending(run_dir: Path) -> set[str]:
    """The requests waiting for the run; cheap enough to call every step (one listdir)."""
    try:
        names = os.listdir(os.path.join(run_dir, CONTROL_DIR))
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {name for name in names if name in REQUESTS}


def clear(run_dir: Path, what: str) -> None:
    """The run removes a request once it has handled it."""
    _check_request(what)
    RunDir(run_dir).request(what).unlink(missing_ok=True)
