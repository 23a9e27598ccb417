"""End to end with real training on the tiny model: launch from the wizard into the dashboard, watch steps
arrive, detach, re-attach, stop with a checkpoint; and runs that outlive the terminal they started from
(the terminal is a real pseudo-terminal that goes away: SIGHUP, as when an SSH connection drops)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Input

from engine import control, launch
from engine.config import to_yaml
from engine.events import read_events
from engine.run_files import EVENTS_FILE
from support import tiny_config, until
from tui.app import WizardApp
from tui.dashboard import DashboardScreen
from tui.steps.review import ReviewStep
from tui.widgets.confirm import ConfirmDialog

ROOT = Path(__file__).resolve().parents[1]
CHATS = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                       {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(16)]
LONG = {"block_size": 32, "batch_size": 2, "epochs": 1000, "logging_steps": 1, "peft": False,
        "disable_gradient_checkpointing": True}


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    """Run directories whose training process must not outlive the test."""
    run_dirs: list[Path] = []
    yield run_dirs
    for run_dir in run_dirs:
        handle = launch.attach(run_dir)
        if handle is not None:
            launch.kill(handle, grace=2)


def steps_in(run_dir: Path) -> list[int]:
    path = run_dir / EVENTS_FILE
    return [e["step"] for e in read_events(path) if e["type"] == "step"] if path.exists() else []


async def watch(pilot: Pilot, condition: Callable[[], object], what: str, timeout: float = 120) -> None:
    """Wait on the dashboard (whose follower worker runs as long as the run: not waited for)."""
    await until(pilot, condition, what, timeout, workers=False)


async def save_and_launch(pilot: Pilot, path: str) -> ReviewStep:
    """On the wizard's review step, press Save and launch with the config saved to `path`."""
    app = pilot.app
    app.show(len(app.steps) - 1)
    await pilot.pause()
    review = app.query_one(ReviewStep)
    review.query_one("#save-path", Input).value = path
    review.query_one("#launch", Button).press()
    return review


async def test_launch_watch_detach_reattach_and_stop(in_tmp: Path, tiny_model: Path, cleanup: list[Path]) -> None:
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": CHATS}, chat_template="tokenizer",
                      column_mapping={"text_column": "messages"}, params=LONG)
    cfg.project_name = "runs/e2e"
    run_dir = in_tmp / "runs" / "e2e"
    cleanup.append(run_dir)

    # Launch from the wizard's review step: the app switches to the run's dashboard.
    app = WizardApp(cfg)
    async with app.run_test(size=(80, 24)) as pilot:
        await save_and_launch(pilot, "e2e.yaml")
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard", 120, workers=False)
        screen = app.screen
        assert screen.run_dir == run_dir
        await watch(pilot, lambda: screen.state.summary.step >= 3, "steps on the dashboard")
        assert len(screen.state.train_loss) >= 3 and screen.state.rss  # loss plotted, memory read
        await pilot.press("d")
        await until(pilot, lambda: app.return_value is not None, "the app to exit", workers=False)
    assert app.return_value.runs == [run_dir] and app.return_value.config_path == Path("e2e.yaml")
    handle = launch.attach(run_dir)
    assert handle is not None and handle.alive(), "detaching must leave the run going"
    seen = steps_in(run_dir)[-1]

    # Re-attach: the plots are rebuilt from the events so far, and new steps keep arriving.
    app = WizardApp(attach=(run_dir, handle))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard", workers=False)
        screen = app.screen
        await watch(pilot, lambda: screen.state.summary.step > seen, "new steps after re-attaching")
        assert len(screen.state.train_loss) >= len([s for s in steps_in(run_dir) if s <= seen])
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question", workers=False)
        await pilot.press("y")
        await watch(pilot, lambda: screen.state.finished, "the run to stop")
        summary = screen.state.summary
        assert summary.status == "stopped" and summary.exit_code == 130
        assert summary.checkpoint and Path(summary.checkpoint, "model.safetensors").exists()
    assert not control.pending(run_dir)


async def test_a_launch_that_cannot_start_says_why_and_stays(in_tmp: Path, tiny_model: Path) -> None:
    """Every row is checked before anything starts, as with --yes: conversations without a chat template."""
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": CHATS}, column_mapping={"text_column": "messages"},
                      params=LONG)
    cfg.project_name = "runs/never"
    app = WizardApp(cfg)
    async with app.run_test(size=(80, 24)) as pilot:
        review = await save_and_launch(pilot, "never.yaml")
        await until(pilot, lambda: "not started" in str(review.query_one("#review-status").render()), "the refusal")
        assert "data.chat_template is none" in str(review.query_one(".problems").render())
        assert not review.checking and len(app.screen_stack) == 1
    assert Path("never.yaml").exists() and not (in_tmp / "runs" / "never").exists()


def _controlling_tty() -> None:
    """In the child, after setsid: make the pty on stdin its controlling terminal, as a login shell's is, with
    SIGHUP's default action, as a terminal's programs have it: the test suite itself may run under nohup (or
    from a background job), whose ignored SIGHUP every child would inherit."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def in_terminal(args: list[str], cwd: Path) -> tuple[subprocess.Popen, Callable[[], None], list[bytes]]:
    """Start `llmtune-tui ARGS` on a new pseudo-terminal; its output is drained into the returned list. The
    returned function closes the terminal. The drain stops first: a close while another thread is blocked in
    read() on the master does not release it (Linux keeps the file open until that read returns), so the
    hangup would wait for the program's next output, which a finished screen never writes."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=env, start_new_session=True, preexec_fn=_controlling_tty)
    os.close(slave)
    output: list[bytes] = []
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            if not select.select([master], [], [], 0.1)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal is gone
                return
            if not data:
                return
            output.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def hang_up() -> None:
        stop.set()
        reader.join()
        os.close(master)

    return proc, hang_up, output


def wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def final_event(run_dir: Path) -> dict | None:
    events = read_events(run_dir / EVENTS_FILE) if (run_dir / EVENTS_FILE).exists() else []
    return events[-1] if events and events[-1]["type"] == "run_finished" else None


@pytest.mark.parametrize("how", ["headless", "dashboard"])
def test_the_run_survives_its_terminal_closing(in_tmp: Path, tiny_model: Path, cleanup: list[Path], how: str) -> None:
    """--yes following in a terminal, or the dashboard attached in one: the terminal closes (SIGHUP to its
    session), the process showing the run dies, and the run trains on to the end."""
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": CHATS}, chat_template="tokenizer",
                      column_mapping={"text_column": "messages"}, params={**LONG, "epochs": 1, "max_steps": 60})
    cfg.project_name = "runs/hup"
    (in_tmp / "run.yaml").write_text(to_yaml(cfg))
    run_dir = in_tmp / "runs" / "hup"
    cleanup.append(run_dir)
    if how == "headless":
        proc, hang_up, output = in_terminal(["--config", "run.yaml", "--yes"], in_tmp)
    else:
        from tui.train_start import check_and_start

        check_and_start(in_tmp / "run.yaml")
        proc, hang_up, output = in_terminal(["attach", "runs/hup"], in_tmp)
    try:
        wait_until(lambda: steps_in(run_dir) and b"step" in b"".join(output), "steps, shown in the terminal")
        assert proc.poll() is None and final_event(run_dir) is None  # still training when the terminal goes
        hang_up()
        proc.wait(timeout=30)
        wait_until(lambda: final_event(run_dir) is not None, "the run to finish")
    finally:
        if proc.poll() is None:
            proc.kill()
    final = final_event(run_dir)
    assert final is not None and final["status"] == "completed" and final["step"] == 60
