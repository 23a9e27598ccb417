"""`llmtune-tui attach`: which run it picks, following without a terminal, and what the app leaves on the
terminal about its runs when it quits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from engine import launch
from engine.errors import UserError
from engine.run_files import EVENTS_FILE
from tui.app import WizardResult
from tui.attach import after_app, pick_run

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "events"
REPLAY = Path(__file__).with_name("replay_events.py")


def recorded(directory: Path, name: str, fixture: str) -> Path:
    run_dir = directory / name
    run_dir.mkdir(parents=True)
    shutil.copy(FIXTURES / fixture, run_dir / EVENTS_FILE)
    return run_dir


@pytest.fixture
def live(tmp_path: Path) -> Iterator[launch.RunHandle]:
    """A replayed run that waits for a stop request: running until the test ends."""
    run_dir = tmp_path / "runs" / "live"
    handle = launch.start(run_dir, command=[sys.executable, str(REPLAY), str(run_dir), str(FIXTURES / "normal.jsonl"),
                                            "--wait-stop"])
    deadline = time.monotonic() + 20
    while not (run_dir / EVENTS_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield handle
    launch.kill(handle, grace=1)


def test_pick_run_prefers_the_running_run_then_the_newest(tmp_path: Path, live: launch.RunHandle) -> None:
    runs = tmp_path / "runs"
    newer = recorded(runs, "newer", "normal.jsonl")
    future = time.time() + 60
    os.utime(newer / EVENTS_FILE, (future, future))
    assert pick_run(runs) == live.run_dir.absolute()  # running beats newer
    assert pick_run(newer) == newer.absolute()  # a run directory is itself
    launch.kill(live, grace=1)
    assert pick_run(runs) == newer.absolute()


def test_pick_run_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such directory"):
        pick_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run here"):
        pick_run(tmp_path / "empty")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("fixture, code, said", [("with_eval.jsonl", 0, "completed: 120/120 steps"),
                                                 ("failed.jsonl", 1, "CUDA ran out of memory")])
def test_attach_without_a_terminal_prints_the_run(tmp_path: Path, fixture: str, code: int, said: str) -> None:
    recorded(tmp_path / "runs", "one", fixture)
    out = cli("attach", cwd=tmp_path)  # default: the newest run under ./runs
    assert out.returncode == code, out.stdout + out.stderr
    assert "run started:" in out.stdout and said in out.stdout and "Traceback" not in out.stderr


def test_attach_to_nothing_exits_2(tmp_path: Path) -> None:
    out = cli("attach", "nowhere", cwd=tmp_path)
    assert out.returncode == 2 and "nothing to attach to" in out.stderr and "llmtune-tui runs" in out.stderr


def said(result: object) -> tuple[int, str]:
    buffer = StringIO()
    code = after_app(result, Console(file=buffer, width=200))
    return code, buffer.getvalue()


def test_after_the_app_each_run_is_accounted_for(tmp_path: Path, live: launch.RunHandle) -> None:
    assert said(None) == (0, "")
    code, text = said(WizardResult(Path("my.yaml"), []))
    assert code == 0 and "train it with: llmtune-tui --config my.yaml --yes" in text

    done = recorded(tmp_path / "runs", "done", "with_eval.jsonl")
    code, text = said(WizardResult(None, [done]))
    assert code == 0 and "completed: 120/120 steps" in text

    failed = recorded(tmp_path / "runs", "failed", "failed.jsonl")
    code, text = said(WizardResult(None, [done, failed]))
    assert code == 1 and "error (oom): CUDA ran out of memory" in text and "log: " in text  # the last run's

    code, text = said(WizardResult(None, [failed, live.run_dir]))
    assert code == 0 and "still training" in text and f"llmtune-tui attach {live.run_dir}" in text
