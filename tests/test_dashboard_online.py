"""The dashboard and `runs` for online RL (GRPO, RLOO; issue 17), fed the events of a real tiny GRPO run
(fixtures/events/grpo_metrics.jsonl, recorded by fixtures/events/record_online.py): the reward plotted next to the
loss with its spread, KL, the answers' length and how many were cut in the side panel, the sampled answers read
whole in the events view, the last reward in `llmtune-tui runs`. Runs without a reward are the snapshot tests'
(test_dashboard.py), unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from test_dashboard import FIXTURES, REPLAY, SIZE, SMALL, WIDE, caught_up, recorded_run, shown, until
from textual.app import App, ComposeResult
from textual.widget import Widget

from engine import launch
from engine.events import read_events, validate_event
from engine.run_files import EVENTS_FILE
from support import ROOT
from tui.app import WizardApp
from tui.run_state import RunState
from tui.runs_list import print_runs
from tui.widgets.log_tail import INDENT, LogTail

GRPO = FIXTURES / "grpo_metrics.jsonl"


def steps(path: Path = GRPO) -> list[dict]:
    """The fixture's logging step events (those with `metrics`)."""
    return [e for e in read_events(path) if e["type"] == "step" and e.get("metrics")]


def last_metrics() -> dict:
    return steps()[-1]["metrics"]


def sampled() -> list[str]:
    return [e["message"] for e in read_events(GRPO) if e["type"] == "log" and e["message"].startswith("sampled at")]


def test_the_fixture_is_a_real_grpo_run_in_the_current_schema() -> None:
    events = read_events(GRPO)
    for event in events:
        validate_event(event)
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "completed"
    assert len(steps()) == 12 and all({"reward", "reward_std", "kl", "completions/mean_length",
                                       "completions/clipped_ratio"} <= set(e["metrics"]) for e in steps())
    assert sampled() and max(map(len, sampled())) > 2 * SIZE[0]  # wider than any panel: wrapped, or cut


def test_state_folds_the_reward_and_its_spread() -> None:
    state = RunState(Path("run"))
    state.update(read_events(GRPO))
    rewards = [(e["step"], e["metrics"]["reward"], e["metrics"]["reward_std"]) for e in steps()]
    assert state.rewarded and len(state.reward) == len(rewards) == len(state.reward_low) == len(state.reward_high)
    step, reward, std = rewards[-1]
    assert state.reward.last == (step, reward)
    assert state.reward_low.last == (step, reward - std) and state.reward_high.last == (step, reward + std)
    assert state.summary.reward == reward


def test_runs_without_a_reward_fold_none() -> None:
    for fixture in ("normal.jsonl", "dpo_metrics.jsonl"):  # DPO logs rewards/* (its implicit ones), no `reward`
        state = RunState(Path("run"))
        state.update(read_events(FIXTURES / fixture))
        assert not state.rewarded and len(state.reward) == 0 and state.summary.reward is None


# ---------------------------------------------------------------- the dashboard, under Pilot


def visible(widget: Widget) -> bool:
    return widget.display and widget.region.area > 0


def legend(plot: Widget) -> str:
    """A plot's first line inside its border: the title and each line's last value."""
    return shown(plot).splitlines()[1].strip("│ ")


async def test_the_dashboard_plots_the_reward_next_to_the_loss(in_tmp: Path) -> None:
    run_dir = recorded_run(in_tmp, GRPO)
    metrics = last_metrics()
    async with WizardApp(attach=(run_dir, None)).run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot, len(read_events(GRPO)))
        loss, reward = screen.query_one("#loss-plot"), screen.query_one("#reward-plot")
        assert visible(loss) and visible(reward)
        assert reward.region.x >= loss.region.right and reward.region.y == loss.region.y  # side by side
        assert legend(reward) == f"reward  {metrics['reward']:.4g} ±{metrics['reward_std']:.2g}"
        assert any(ch != " " and 0x2800 <= ord(ch) <= 0x28FF for ch in shown(reward))  # braille: drawn
        stats = shown(screen.query_one("#online-stats")).splitlines()
        assert stats == [f"kl {metrics['kl']:.3g}", f"answer length {metrics['completions/mean_length']:.1f}",
                         f"cut at max length {metrics['completions/clipped_ratio']:.0%}"]
        assert f"reward {metrics['reward']:.3g}" in shown(screen.query_one("#run-status"))  # format.py's headline


async def test_a_tall_dashboard_stacks_the_plots_and_a_narrow_one_shows_the_reward_alone(in_tmp: Path) -> None:
    run_dir = recorded_run(in_tmp, GRPO)
    async with WizardApp(attach=(run_dir, None)).run_test(size=WIDE) as pilot:
        screen = await caught_up(pilot, len(read_events(GRPO)))
        loss, reward = screen.query_one("#loss-plot"), screen.query_one("#reward-plot")
        assert visible(loss) and visible(reward) and reward.region.y >= loss.region.bottom
        assert reward.region.width == loss.region.width
        await pilot.resize_terminal(*SMALL)
        await until(pilot, lambda: not visible(loss), "the loss plot to leave room")
        assert visible(reward) and reward.region.width > SMALL[0] // 2
        assert legend(reward).startswith(f"reward  {last_metrics()['reward']:.4g} ±")


async def test_a_run_without_a_reward_has_no_reward_plot_or_online_stats(in_tmp: Path) -> None:
    run_dir = recorded_run(in_tmp, "dpo_metrics.jsonl")
    async with WizardApp(attach=(run_dir, None)).run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        assert not screen.query_one("#reward-plot").display and not screen.query_one("#online-stats").display
        assert not screen.has_class("-rewarded") and visible(screen.query_one("#loss-plot"))


async def test_the_sampled_answers_read_whole_in_the_events_view(in_tmp: Path) -> None:
    run_dir = recorded_run(in_tmp, GRPO)
    async with WizardApp(attach=(run_dir, None)).run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot, len(read_events(GRPO)))
        log = screen.query_one("#run-log", LogTail)
        await pilot.press("e")
        assert log.border_title == "events"
        width = log.scrollable_content_region.width
        assert log.lines and all(len(row) <= width for row in log.lines)
        # Each sampled answer is there in full: its first row, then the rows it wraps onto (indented).
        text = "\n".join(log.lines).replace("\n" + INDENT, " ")
        for message in sampled():
            assert " ".join(f"info: {message}".split()) in " ".join(text.split())
        await pilot.press("e")  # train.log: lines as they are, cut at the edge like a pager's
        assert log.border_title == "train.log" and log.lines == log.shown


@pytest.fixture
def replay(in_tmp: Path) -> Iterator[launch.RunHandle]:
    """The GRPO fixture replayed into a run directory by a detached process, as a training run writes it."""
    run_dir = in_tmp / "runs" / "live"
    handle = launch.start(run_dir, command=[sys.executable, str(REPLAY), str(run_dir), str(GRPO), "--delay", "0.02"])
    yield handle
    if handle.alive():
        launch.kill(handle, grace=1)


async def test_a_live_grpo_run_shows_its_reward_as_it_trains(replay: launch.RunHandle) -> None:
    events = read_events(GRPO)
    app = WizardApp(attach=(replay.run_dir, replay))
    async with app.run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        reward = screen.query_one("#reward-plot")
        await until(pilot, lambda: screen.state.events_read == len(events) and screen.state.finished, "the run's end")
        await until(pilot, lambda: not screen._dirty, "the last redraw")
        await pilot.pause()
        assert visible(reward)
        assert legend(reward).startswith(f"reward  {last_metrics()['reward']:.4g} ±")
        assert len(screen.state.reward) == len(steps())


# ---------------------------------------------------------------- the log panel's wrapping


class LogApp(App[None]):
    CSS = "LogTail { height: 10; }"

    def compose(self) -> ComposeResult:
        yield LogTail(id="log")


async def test_wrapped_lines_fit_the_panel_and_follow_its_width() -> None:
    message = f"info: {sampled()[0]}"
    async with LogApp().run_test(size=(50, 24)) as pilot:
        log = pilot.app.query_one(LogTail)
        log.show(["short", message], wrap=True)
        await pilot.pause()
        narrow = list(log.lines)
        assert narrow[0] == "short" and len(narrow) > 3
        assert all(len(row) <= log.scrollable_content_region.width for row in narrow)
        assert all(row.startswith(INDENT) for row in narrow[2:])
        await pilot.resize_terminal(100, 24)
        await until(pilot, lambda: len(log.lines) < len(narrow), "the lines wrapped again to the new width")
        assert all(len(row) <= log.scrollable_content_region.width for row in log.lines)
        log.show(["short", message], wrap=False)
        await pilot.pause()
        assert log.lines == ["short", message]


# ---------------------------------------------------------------- `llmtune-tui runs`


def test_runs_lists_the_last_reward_of_a_grpo_run(in_tmp: Path) -> None:
    recorded_run(in_tmp, GRPO, name="grpo")
    recorded_run(in_tmp, "normal.jsonl", name="sft")
    out = subprocess.run([sys.executable, "-m", "tui.cli", "runs"], capture_output=True, text=True, cwd=in_tmp,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"})
    assert out.returncode == 0, out.stderr
    header, *lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert header.split()[:7] == ["run", "status", "trainer", "step", "loss", "reward", "eval"]
    rows = {line.split()[0]: line.split() for line in lines}
    final = read_events(GRPO)[-1]
    loss = [e for e in read_events(GRPO) if e["type"] == "step"][-1]["loss"]
    assert rows["grpo"][1:7] == ["completed", "grpo", f"{final['step']}/12", f"{loss:.4f}",
                                      f"{last_metrics()['reward']:.3g}", "-"]
    assert rows["sft"][1:7] == ["completed", "sft", "24/24", "10.1878", "-", "10.2874"]


def test_runs_without_a_reward_keep_their_columns(in_tmp: Path) -> None:
    recorded_run(in_tmp, "normal.jsonl", name="sft")
    out = StringIO()
    assert print_runs(in_tmp / "runs", Console(file=out, width=120)) == 0
    assert out.getvalue().splitlines()[0].split() == ["run", "status", "trainer", "step", "loss", "eval", "loss",
                                                      "last", "event"]
    assert (in_tmp / "runs" / "sft" / EVENTS_FILE).exists()
