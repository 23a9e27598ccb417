"""The dashboard, fed from recorded event files: the real app under Pilot, real replay processes for the keys,
and snapshots at 80x24 and at a wide size. The end-to-end test with a real training run is in
test_dashboard_e2e.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from engine import checkpoints, control, launch
from engine.events import EventWriter, read_events
from engine.run_files import CONTROL_DIR, EVENTS_FILE, LOG_FILE
from fixtures.events.long_run import long_run_events, write_long_run
from support import until as until_all
from tui.app import WizardApp, WizardResult
from tui.commands import WizardCommands
from tui.dashboard import DashboardScreen
from tui.run_state import RunState
from tui.widgets.confirm import ConfirmDialog
from tui.widgets.log_tail import LogTail
from tui.widgets.run_dir_dialog import RunDirDialog
from tui.widgets.run_status import metrics_line

FIXTURES = Path(__file__).parent / "fixtures" / "events"
REPLAY = Path(__file__).with_name("replay_events.py")
SIZE, WIDE, SMALL = (80, 24), (160, 48), (60, 20)
TRAIN_LOG = """--- 2026-01-01 12:00:00 starting: python -m engine.run runs/demo
2026-01-01 12:00:01,000 INFO llmtune: reading data and the tokenizer
Loading weights:   0%|          | 0/21 [00:00<?, ?it/s]\rLoading weights: 100%|##########| 21/21 [00:00<00:00, 8973.14it/s]
2026-01-01 12:00:02,000 INFO llmtune: loading the model
{'loss': '2.412', 'grad_norm': '1.2', 'learning_rate': '1e-05', 'epoch': '0.1'}
"""  # noqa: E501 (a real progress-bar line)


def recorded_run(directory: Path, fixture: str | Path, *, name: str = "run") -> Path:
    """A run directory holding a recorded events file and a short train.log (no process)."""
    run_dir = directory / "runs" / name
    run_dir.mkdir(parents=True)
    source = fixture if isinstance(fixture, Path) else FIXTURES / fixture
    shutil.copy(source, run_dir / EVENTS_FILE)
    (run_dir / LOG_FILE).write_text(TRAIN_LOG)
    return run_dir


async def until(pilot: Pilot, condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """support.until without waiting for workers: the dashboard's follower runs as long as the run."""
    await until_all(pilot, condition, what, timeout, workers=False)


def shown(widget: Widget) -> str:
    """The widget's text as drawn on the screen, line by line."""
    region = Region(0, 0, widget.size.width, widget.size.height)
    return "\n".join(strip.text.rstrip() for strip in widget.render_lines(region))


def dashboard(app: WizardApp) -> DashboardScreen:
    screen = app.screen
    assert isinstance(screen, DashboardScreen), f"the screen is {type(screen).__name__}"
    return screen


async def caught_up(pilot: Pilot, events: int | None = None) -> DashboardScreen:
    """Wait until the dashboard has read the events file (all `events` of it) and drawn what it read."""
    screen = dashboard(pilot.app)
    await until(pilot, lambda: screen.polls >= 1 and (events is None or screen.state.events_read >= events),
                "the events to be read")
    drawn = screen.redraws
    await until(pilot, lambda: screen.redraws > drawn or not screen._dirty, "a redraw")
    await pilot.pause()
    return screen


@contextmanager
def held_alive(run_dir: Path) -> Iterator[launch.RunHandle]:
    """A handle on `run_dir` whose process is a stand-in that only stays alive, so the dashboard shows the
    recorded run as running and keeps following its files; killed on leaving."""
    process = subprocess.Popen(["sleep", "120"])
    try:
        yield launch.RunHandle(run_dir, process.pid, process)
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def replayed(in_tmp: Path) -> Iterator[Callable[..., launch.RunHandle]]:
    """Start replays of fixtures as detached runs; whatever is left running is killed afterwards."""
    handles: list[launch.RunHandle] = []

    def start(fixture: str, *flags: str, name: str = "live") -> launch.RunHandle:
        run_dir = in_tmp / "runs" / name
        command = [sys.executable, str(REPLAY), str(run_dir), str(FIXTURES / fixture), *flags]
        handle = launch.start(run_dir, command=command)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        if handle.alive():
            launch.kill(handle, grace=1)


# ---------------------------------------------------------------- the state, from fixtures (no Textual)


def test_state_folds_a_run_with_eval() -> None:
    events = read_events(FIXTURES / "with_eval.jsonl")
    state = RunState(Path("run"))
    state.update(events)
    steps = [e for e in events if e["type"] == "step"]
    evals = [e for e in events if e["type"] == "eval"]
    assert len(state.train_loss) == sum(1 for e in steps if e["loss"] == e["loss"])  # NaN losses are not drawn
    assert len(state.eval_loss) == len(evals)
    assert state.summary.status == "completed" and state.last_step == steps[-1]
    assert state.gpus and all(g.total for g in state.gpus.values())
    assert any("eval" in text for text, _ in state.lines)


def test_state_keeps_the_peak_and_marks_missing_readings(tmp_path: Path) -> None:
    path = write_long_run(tmp_path / "long.jsonl", steps=600, gpus=2)
    state = RunState(tmp_path)
    state.update(read_events(path))
    gpu0, gpu1 = state.gpus[0], state.gpus[1]
    used0 = [e["memory"]["gpus"][0]["used"] for e in read_events(path) if e["type"] == "step"]
    assert gpu0.peak is not None and gpu0.peak >= max(used0)
    assert gpu1.used is None and gpu1.total  # the fixture's second GPU has no NVML reading
    assert state.rss_peak is not None and state.rss_peak >= (state.rss or 0)


def test_lr_and_grad_norm_stay_shown_between_logging_steps() -> None:
    """A progress-only step event (loss, lr, grad_norm null) must not blank the last logged values."""
    state = RunState(Path("run"))
    state.update([{"type": "step", "step": 10, "total_steps": 100, "loss": 2.5, "lr": 1e-4, "grad_norm": 0.75},
                  {"type": "step", "step": 11, "total_steps": 100, "loss": None, "lr": None, "grad_norm": None},
                  {"type": "checkpoint", "step": 11, "path": "run/checkpoint-11"}])
    text = metrics_line(state).plain
    assert "loss 2.5000" in text and "lr 1.00e-04" in text and "grad norm 0.75" in text
    assert "checkpoint 11" in text
    assert state.last_step is not None and state.last_step["step"] == 11  # progress from the latest


class LogApp(App[None]):
    CSS = "LogTail { height: 7; }"

    def compose(self) -> ComposeResult:
        yield LogTail(id="log")


async def test_the_log_panel_follows_the_end_unless_scrolled_up() -> None:
    async with LogApp().run_test(size=(80, 24)) as pilot:
        log = pilot.app.query_one(LogTail)
        lines: list[str] = []
        for i in range(30):  # the log grows (and its tail window moves) as the run writes
            lines = (lines + [f"line {i} " + "x" * (120 if i % 3 == 0 else 5)])[-20:]
            log.show(lines)
            await pilot.pause()
            assert log.scroll_y == log.max_scroll_y > 0 or i < 5, f"not at the end after line {i}"
        assert "line 29" in log.lines[-1]
        log.scroll_to(y=2, animate=False, immediate=True)  # the user scrolls up to read
        log.show(lines + ["line 30"])
        await pilot.pause()
        assert log.scroll_y == 2 and log.lines[-1] == "line 30"


# ---------------------------------------------------------------- recorded runs in the app


async def test_a_finished_run_shows_its_outcome_and_plots(in_tmp: Path) -> None:
    run_dir = recorded_run(in_tmp, "with_eval.jsonl")
    app = WizardApp(attach=(run_dir, None))
    async with app.run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot, len(read_events(run_dir / EVENTS_FILE)))
        assert screen.state.summary.status == "completed"
        status = shown(screen.query_one("#run-status"))
        assert "completed" in status
        outcome = screen.query_one("#run-outcome")
        assert outcome.display and "output:" in shown(outcome)
        assert "Loading weights: 100%" in "\n".join(screen.query_one("#run-log").lines)  # \r redraws collapsed
        assert "Loading weights:   0%" not in "\n".join(screen.query_one("#run-log").lines)
        await pilot.press("e")  # the run's notable events instead of train.log, and back
        log = screen.query_one("#run-log")
        assert log.border_title == "events" and any(line.startswith("eval step 120") for line in log.lines)
        assert "checkpoint step 120: /data/runs/qwen-dpo/checkpoint-120" in log.lines
        await pilot.press("e")
        assert log.border_title == "train.log" and "Loading weights: 100%" in "\n".join(log.lines)
        await pilot.press("s")  # nothing to stop: said, not done
        assert not (run_dir / CONTROL_DIR).exists()


async def test_a_failed_run_shows_the_error_and_the_log(in_tmp: Path) -> None:
    run_dir = recorded_run(in_tmp, "failed.jsonl")
    app = WizardApp(attach=(run_dir, None))
    async with app.run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        outcome = shown(screen.query_one("#run-outcome"))
        assert "failed (oom)" in outcome and "CUDA ran out of memory" in outcome
        assert "log: /data/runs/llama-text/train.log" in outcome


async def test_a_run_whose_process_vanished_says_so(in_tmp: Path) -> None:
    run_dir = in_tmp / "runs" / "gone"
    run_dir.mkdir(parents=True)
    lines = (FIXTURES / "normal.jsonl").read_text().splitlines(keepends=True)
    (run_dir / EVENTS_FILE).write_text("".join(lines[: len(lines) // 2]))  # no run_finished
    (run_dir / "checkpoint-40").mkdir()
    checkpoints.write_marker(run_dir / "checkpoint-40", tokens=1, trained_tokens=1)
    (run_dir / "checkpoint-80").mkdir()  # cut short by the kill: not resumable
    app = WizardApp(attach=(run_dir, None))
    async with app.run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        assert screen.live.ended_without_event
        outcome = shown(screen.query_one("#run-outcome"))
        assert "ended without a final event" in outcome and "llmtune-tui resume runs/gone" in outcome


async def test_a_vanished_run_without_a_complete_checkpoint_offers_no_resume(in_tmp: Path) -> None:
    run_dir = in_tmp / "runs" / "gone"
    run_dir.mkdir(parents=True)
    lines = (FIXTURES / "normal.jsonl").read_text().splitlines(keepends=True)
    (run_dir / EVENTS_FILE).write_text("".join(lines[: len(lines) // 2]))
    (run_dir / "checkpoint-80").mkdir()  # half-written
    app = WizardApp(attach=(run_dir, None))
    async with app.run_test(size=SIZE) as pilot:
        await caught_up(pilot)
        outcome = shown(pilot.app.screen.query_one("#run-outcome"))
        assert "no complete checkpoint" in outcome and "llmtune-tui resume" not in outcome


async def test_a_long_run_is_downsampled_and_redrawn_quickly(in_tmp: Path) -> None:
    path = write_long_run(in_tmp / "long.jsonl", steps=12_000)
    run_dir = recorded_run(in_tmp, path)
    app = WizardApp(attach=(run_dir, None))
    async with app.run_test(size=WIDE) as pilot:
        screen = await caught_up(pilot, len(read_events(path)))
        assert len(screen.state.train_loss) == 12_000
        assert len(screen.state.train_loss.buckets()) <= 2048  # bounded, however long the run
        assert screen.state.summary.step == 12_000


# ---------------------------------------------------------------- keys, against a live replay


async def test_stop_asks_first_then_the_run_ends_with_a_checkpoint(replayed: Callable[..., launch.RunHandle]) -> None:
    handle = replayed("normal.jsonl", "--wait-stop")
    app = WizardApp(attach=(handle.run_dir, handle))
    async with app.run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        last = [e for e in read_events(FIXTURES / "normal.jsonl") if e["type"] == "step"][-1]["step"]
        await until(pilot, lambda: screen.state.summary.step == last, "every step")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("n")
        await until(pilot, lambda: app.screen is screen, "the dashboard")
        assert control.pending(handle.run_dir) == set()
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await until(pilot, lambda: screen.state.finished, "the run to end")
        assert screen.state.summary.status == "stopped" and screen.state.summary.checkpoint
        await until(pilot, lambda: "checkpoint:" in shown(screen.query_one("#run-outcome")), "the outcome")
    assert handle.process is not None and handle.process.wait(10) == 130


async def test_checkpoint_now(replayed: Callable[..., launch.RunHandle]) -> None:
    handle = replayed("normal.jsonl", "--wait-stop")
    app = WizardApp(attach=(handle.run_dir, handle))
    async with app.run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        await pilot.press("c")
        await until(pilot, lambda: screen.state.summary.checkpoint is not None, "the checkpoint event")
        assert handle.alive()


async def test_only_a_requested_checkpoint_is_announced(in_tmp: Path) -> None:
    """The checkpoints a run saves on its own show on the metrics line; a toast only answers "c"."""
    lines = (FIXTURES / "normal.jsonl").read_text().splitlines(keepends=True)
    run_dir = recorded_run(in_tmp, FIXTURES / "normal.jsonl")
    (run_dir / EVENTS_FILE).write_text("".join(line for line in lines if '"run_finished"' not in line
                                               and '"checkpoint"' not in line))
    with held_alive(run_dir) as handle:
        app = WizardApp(attach=(run_dir, handle))
        async with app.run_test(size=SIZE) as pilot:
            screen = await caught_up(pilot)
            toasts = lambda: [n.message for n in app._notifications if "checkpoint saved" in n.message]  # noqa: E731
            with EventWriter(run_dir / EVENTS_FILE) as writer:
                writer.emit("checkpoint", step=20, path=str(run_dir / "checkpoint-20"))
            await until(pilot, lambda: screen.state.checkpoint_step == 20, "the automatic checkpoint")
            await until(pilot, lambda: "checkpoint 20" in shown(screen.query_one("#run-status")), "its step shown")
            assert toasts() == []
            await pilot.press("c")
            assert control.pending(run_dir) == {"checkpoint"}
            with EventWriter(run_dir / EVENTS_FILE) as writer:
                writer.emit("checkpoint", step=21, path=str(run_dir / "checkpoint-21"))
            await until(pilot, lambda: toasts(), "the requested checkpoint's toast")
            assert toasts() == ["checkpoint saved: runs/run/checkpoint-21"]


async def test_detach_leaves_the_run_going(replayed: Callable[..., launch.RunHandle]) -> None:
    handle = replayed("normal.jsonl", "--wait-stop")
    app = WizardApp(attach=(handle.run_dir, handle))
    async with app.run_test(size=SIZE) as pilot:
        await caught_up(pilot)
        await pilot.press("d")
        await until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == WizardResult(None, [handle.run_dir.absolute()])
    assert handle.alive()


async def test_back_to_the_wizard_and_the_run_dir(replayed: Callable[..., launch.RunHandle]) -> None:
    handle = replayed("normal.jsonl", "--wait-stop")
    app = WizardApp(attach=(handle.run_dir, handle))
    async with app.run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, RunDirDialog), "the run directory")
        assert shown(app.screen.query_one("#run-dir-path")) == str(handle.run_dir.absolute())
        assert "events.jsonl" in shown(app.screen.query_one("#run-dir-files"))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the dashboard")
        await pilot.press("w")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the wizard")
        assert app.query_one("#step-title")  # the wizard's own screen
        assert handle.alive()
        # the command palette offers the run's dashboard again, with the same handle on its process
        commands = {name: run for name, run, _ in WizardCommands(app.screen).commands()}
        commands["Dashboard: live"]()
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard again")
        assert app.screen is not screen and app.screen.handle is handle
        await pilot.press("ctrl+q")  # quitting with a run shown is detaching
        await until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value.runs == [handle.run_dir.absolute()] and handle.alive()


# ---------------------------------------------------------------- snapshots


def attached_app(directory: Path, fixture: str | Path) -> WizardApp:
    return WizardApp(attach=(recorded_run(directory, fixture), None))


def settle(pilot: Pilot) -> Awaitable[Any]:
    return caught_up(pilot)


@pytest.mark.parametrize("size", [SIZE, WIDE], ids=["80x24", "wide"])
@pytest.mark.parametrize("fixture", ["normal.jsonl", "with_eval.jsonl", "failed.jsonl", "dpo_metrics.jsonl"])
def test_dashboard_snapshot(in_tmp: Path, snap_compare: Any, fixture: str, size: tuple[int, int]) -> None:
    assert snap_compare(attached_app(in_tmp, fixture), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("fixture", ["normal.jsonl", "with_eval.jsonl", "failed.jsonl", "stopped.jsonl",
                                     "dpo_metrics.jsonl", "resumed.jsonl"])
def test_small_dashboard_snapshot(in_tmp: Path, snap_compare: Any, fixture: str) -> None:
    """60x20: every status line, the outcome, a compact footer (no stop or checkpoint key: the run ended)."""
    assert snap_compare(attached_app(in_tmp, fixture), terminal_size=SMALL, run_before=settle)


@pytest.mark.parametrize("size", [SIZE, WIDE], ids=["80x24", "wide"])
def test_long_run_snapshot(in_tmp: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    path = write_long_run(in_tmp / "long.jsonl", steps=12_000)
    assert snap_compare(attached_app(in_tmp, path), terminal_size=size, run_before=settle)


def test_live_long_run_snapshot(in_tmp: Path, snap_compare: Any) -> None:
    """A run in progress (7,000 of 12,000 steps, two GPUs, one without NVML readings), held alive by a
    stand-in process so the dashboard shows it running."""
    events = long_run_events(12_000)
    cut = next(i for i, e in enumerate(events) if e["type"] == "step" and e["step"] == 7_000)
    path = in_tmp / "live.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events[: cut + 1]))
    run_dir = recorded_run(in_tmp, path)
    with held_alive(run_dir) as handle:
        assert snap_compare(WizardApp(attach=(run_dir, handle)), terminal_size=SIZE, run_before=settle)


def live_part(directory: Path, fixture: str, step: int) -> Path:
    """A run directory holding the fixture's events up to the step event of `step` (the last one of it)."""
    events = read_events(FIXTURES / fixture)
    cut = max(i for i, e in enumerate(events) if e["type"] == "step" and e["step"] == step)
    path = directory / "live.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events[: cut + 1]))
    return recorded_run(directory, path)


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["80x24", "60x20"])
def test_live_dpo_snapshot(in_tmp: Path, snap_compare: Any, size: tuple[int, int]) -> None:
    """A DPO run going on (step 24 of 30): its reward margin and accuracy, the ETA, every key in the footer."""
    run_dir = live_part(in_tmp, "dpo_metrics.jsonl", 24)
    with held_alive(run_dir) as handle:
        assert snap_compare(WizardApp(attach=(run_dir, handle)), terminal_size=size, run_before=settle)


def test_log_scale_snapshot(in_tmp: Path, snap_compare: Any) -> None:
    """`l`: the border says the loss axis is log, and what `l` does now."""
    async def log_scale(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()

    assert snap_compare(attached_app(in_tmp, "with_eval.jsonl"), terminal_size=SIZE, run_before=log_scale)
