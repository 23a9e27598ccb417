"""Checkpoints in a run directory: which are complete, which to resume from, and how much room they need.

transformers writes `checkpoint-N/` file by file (weights, optimizer, scheduler, RNG state, trainer state).
A full disk or a kill in the middle leaves a directory that looks like a checkpoint and is not one. Once the
save has finished, the training process writes `checkpoint-N/llmtune_checkpoint.json` (atomically, last):
only a checkpoint holding it is resumed from. Checkpoints written before llmtune kept this marker count as
complete when every file a resume reads is there and the trainer state parses.

Standard library only.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from engine.run_files import CHECKPOINT_MARKER, checkpoint_step, write_atomically
from engine.units import human_bytes

_LEGACY_FILES = ("trainer_state.json", "scheduler.pt")
MB = 2**20


def step_of(path: Path) -> int | None:
    return checkpoint_step(Path(path).name)


def all_checkpoints(run_dir: Path) -> list[Path]:
    """Every `checkpoint-N` directory, by step."""
    try:
        found = [p for p in Path(run_dir).iterdir() if step_of(p) is not None and p.is_dir()]
    except OSError:
        return []
    return sorted(found, key=lambda p: step_of(p) or 0)


def is_complete(checkpoint: Path) -> bool:
    if read_marker(checkpoint) is not None:
        return True
    if not all((checkpoint / name).is_file() for name in _LEGACY_FILES):
        return False
    if not any(checkpoint.glob("rng_state*.pth")):
        return False
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def complete_checkpoints(run_dir: Path) -> list[Path]:
    return [p for p in all_checkpoints(run_dir) if is_complete(p)]


def last_complete(run_dir: Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    return [p for p in all_checkpoints(run_dir) if not is_complete(p)]


def write_marker(checkpoint: Path, **state: Any) -> None:
    """Mark a checkpoint whose save has finished, with what llmtune needs to continue from it (token counts)."""
    write_atomically(checkpoint / CHECKPOINT_MARKER,
                     json.dumps({"step": step_of(checkpoint), "time": time.time(), **state}) + "\n")


def read_marker(checkpoint: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(checkpoint) / CHECKPOINT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def size_on_disk(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def free_bytes(path: Path) -> int | None:
    """Free space on the filesystem holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


_DISK_FULL_WORDS = ("no space left on device", "storagefull", "disk quota exceeded", "os error 28",
                    "code: 28", "errno 28", "file write failed")
LOW_BYTES = 2 * MB  # less free than this when a write failed: the disk is full, whatever the error said


def is_disk_full(error: BaseException, free: int | None = None) -> bool:
    """An ENOSPC anywhere in the exception chain, however the library that hit it worded it (torch.save says
    only "file write failed"; safetensors "StorageFull"), or any failure with (almost) no room left."""
    if free is not None and free < LOW_BYTES:
        return True
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(word in str(e).lower() for word in _DISK_FULL_WORDS):
            return True
        e = e.__cause__ or e.__context__
    return False


def mb(n: int | float | None) -> str:
    """Disk space in one unit across a message, so the sizes compare at a glance: "3.4 MB", "1,234 MB"; "?"
    when unknown."""
    return human_bytes(n, unit="MB", missing="?")
