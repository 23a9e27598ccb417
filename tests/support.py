"""Helpers shared by test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from engine.config import RunConfig, parse_config_text
from engine.events import read_events

ROOT = Path(__file__).resolve().parents[1]


class TookTooLong(BaseException):
    """Raised by time_limit's alarm: a BaseException, so that the CLI's handler of internal errors (which turns
    every Exception into exit 1) cannot swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """A bound, not a measurement: for inputs that used to run for minutes (or forever). Main thread only."""
    def expire(signum: int, frame: Any) -> None:
        raise TookTooLong(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fresh_python(code: str) -> str:
    """The last line `code` prints, run in a new interpreter from the checkout (what a fresh start imports)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip().splitlines()[-1]


def write(path: Path, text: str | bytes) -> Path:
    """Write a file (text as UTF-8), making its directory first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


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
            from textual.worker import WorkerCancelled

            try:
                await pilot.app.workers.wait_for_complete()
            except WorkerCancelled:  # an exclusive worker replaced by a newer one: poll again
                pass
        await pilot.pause(0.02)


async def next_step(pilot: Any, app: Any) -> None:
    """Press Ctrl+N until the wizard's step changes (a step may still be reading in a worker: it says so and
    waits); fails naming the step and what blocks it."""
    start = app.index
    for _ in range(300):
        await pilot.press("ctrl+n")
        await pilot.pause(0.05)
        if app.index != start:
            return
        await app.workers.wait_for_complete()
    raise AssertionError(f"Next did not leave step {app.step.title}: {app.step.problems(app.cfg)}")


# Small data sets for each trainer, and a config over them for a run of a few steps (tests/test_training.py).
CHATS = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                       {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}
         for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4)]]
TEXTS = "text\n" + "".join(f"\"The fox number {i} jumps over the lazy dog and runs into the forest.\"\n"
                           for i in range(12))
PAIRS = [{"prompt": f"What is {a} plus {b}?", "chosen": f"It is {a + b}.", "rejected": f"It is {a + b + 1}."}
         for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4)]]
PAIR_COLUMNS = {"prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"}

# trainer -> (task, data files, data section)
SETUPS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "default": ("llm-generic", {"train.csv": TEXTS}, {"column_mapping": {"text_column": "text"}}),
    "sft": ("llm-sft", {"train.jsonl": CHATS}, {"chat_template": "chatml",
                                                "column_mapping": {"text_column": "messages"}}),
    "reward": ("llm-reward", {"train.jsonl": PAIRS}, {"chat_template": "tokenizer", "column_mapping": PAIR_COLUMNS}),
    "dpo": ("llm-dpo", {"train.jsonl": PAIRS}, {"chat_template": "zephyr", "column_mapping": PAIR_COLUMNS}),
    "orpo": ("llm-orpo", {"train.jsonl": PAIRS}, {"chat_template": "tokenizer", "column_mapping": PAIR_COLUMNS}),
}
QUICK = {"max_steps": 2, "batch_size": 2, "gradient_accumulation": 1, "block_size": 64, "max_prompt_length": 32,
         "lr": 1e-3, "logging_steps": 1, "disable_gradient_checkpointing": True}


def make_config(directory: Path, tiny_model: Path, trainer: str, *, params: dict[str, Any] | None = None,
                files: dict[str, Any] | None = None, **data: Any) -> RunConfig:
    task, default_files, default_data = SETUPS[trainer]
    cfg = tiny_config(directory, tiny_model, files or default_files, task=task,
                      params={**QUICK, **(params or {})}, **{**default_data, **data})
    cfg.project_name = str(directory / "run")
    return cfg


def run(cfg: RunConfig, *, resume: bool = False) -> tuple[int, Path, list[dict]]:
    """Prepare the run directory and train in this process, as the training process does."""
    from engine.rundir import prepare
    from engine.train import train

    run_dir = Path(cfg.project_name) if resume else prepare(cfg)
    code = train(run_dir, resume=resume)
    return code, run_dir, read_events(run_dir / "events.jsonl")
