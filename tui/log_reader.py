"""The end of a run's train.log as a terminal would show it: what the dashboard's log panel and `--yes` (when a
run dies without a final event) both print. Reads only the file's end; standard library only."""

from __future__ import annotations

import os
from pathlib import Path

TAIL_BYTES = 128 * 1024  # enough for the panel's 200 lines of a chatty log


def clean_log_line(line: str) -> str:
    """What a terminal would show of a line: tqdm redraws with carriage returns, keep the last drawing."""
    line = line.rstrip("\r\n")
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    return line.replace("\t", "    ")


def read_log_tail(path: Path, count: int, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last `count` lines of the log as a terminal shows them; [] when there is no log (yet)."""
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
