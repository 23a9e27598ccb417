"""Helpers shared by test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from engine.config import RunConfig, parse_config_text


def write_files(directory: Path, files: dict[str, Any]) -> None:
    """name -> a list of rows (written as JSONL) or the file's text."""
    for name, content in files.items():
        if isinstance(content, list):
            content = "".join(json.dumps(row) + "\n" for row in content)
        (directory / name).write_text(content, encoding="utf-8")


def tiny_config(directory: Path, tiny_model: Path, files: dict[str, Any], *, task: str = "llm-sft",
                params: dict[str, Any] | None = None, **data: Any) -> RunConfig:
    """Write the data into `directory` and parse an AutoTrain-style config over it for the tiny model."""
    write_files(directory, files)
    raw = {"task": task, "base_model": str(tiny_model), "data": {"path": ".", **data}, "params": params or {}}
    return parse_config_text(yaml.safe_dump(raw, sort_keys=False), source=directory / "run.yaml")


async def until(pilot: Any, condition: Callable[[], Any], what: str, timeout: float = 60.0, *,
                workers: bool = True) -> None:
    """A bounded poll for Pilot tests: between tries, let the app's workers finish and their messages be
    handled; never a fixed sleep. Fails saying what was awaited. `workers=False` where a worker runs for
    the app's whole life (the dashboard's follower): then only the messages are let through."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if workers:
            await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.02)
