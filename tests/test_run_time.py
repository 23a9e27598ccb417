"""Elapsed time and ETA have one definition, from the events (engine.events.RunSummary), used by `--yes` and by
the dashboard alike: elapsed is the wall time of the run's segments (one per process: a resume adds one)
summed, the time between them left out; the ETA is the steps left at the pace of the current segment.
Fed by tests/fixtures/events/resumed.jsonl: a real run stopped at step 13 and resumed an hour later."""

from __future__ import annotations

import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from test_dashboard import caught_up, shown

from engine import launch
from engine.events import read_events, summarize
from engine.run_files import EVENTS_FILE
from tui.app import WizardApp
from tui.format import hms as duration
from tui.headless import PlainDisplay, follow
from tui.run_state import RunState
from tui.widgets.run_status import times_line

FIXTURES = Path(__file__).parent / "fixtures" / "events"
REPLAY = Path(__file__).with_name("replay_events.py")
EVENTS = read_events(FIXTURES / "resumed.jsonl")
SECOND = next(i for i, e in enumerate(EVENTS) if i and e.get("phase") == "loading data")  # the resume's first event
FIRST_SEGMENT = EVENTS[SECOND - 1]["time"] - EVENTS[0]["time"]
SECOND_SEGMENT = EVENTS[-1]["time"] - EVENTS[SECOND]["time"]
GAP = EVENTS[SECOND]["time"] - EVENTS[SECOND - 1]["time"]


def test_the_fixture_is_two_segments_an_hour_apart() -> None:
    assert [e["status"] for e in EVENTS if e["type"] == "run_finished"] == ["stopped", "completed"]
    assert GAP > 3000 and 2 < FIRST_SEGMENT < 30 and 2 < SECOND_SEGMENT < 30


def test_elapsed_is_the_segments_summed_without_the_time_between() -> None:
    s = summarize(EVENTS)
    assert s.segments == 2
    assert s.run_time == pytest.approx(FIRST_SEGMENT + SECOND_SEGMENT)


def test_a_segment_that_died_without_a_final_event_still_ends_where_its_events_end() -> None:
    """Killed hard (no run_finished), then resumed: the resume's first event opens the next segment."""
    died = [e for e in EVENTS[:SECOND] if e["type"] != "run_finished" and e.get("phase") != "saving"]
    s = summarize(died + EVENTS[SECOND:])
    assert s.segments == 2 and s.status == "completed"
    assert s.run_time == pytest.approx(died[-1]["time"] - died[0]["time"] + SECOND_SEGMENT)
    resuming = summarize(died + EVENTS[SECOND:SECOND + 1])
    assert resuming.status is None  # a new process is loading: the run is not over


def step_at(step: int, segment: int = 2) -> int:
    """The index of the step event of `step` in the given segment."""
    start = SECOND if segment == 2 else 0
    return next(i for i, e in enumerate(EVENTS) if i >= start and e["type"] == "step" and e["step"] == step)


def test_eta_after_resume_is_timed_by_the_current_segment() -> None:
    cut = step_at(18)
    s = summarize(EVENTS[:cut + 1])
    e = EVENTS[cut]
    pace = e["elapsed"] / (18 - 13)  # this segment began training at step 13 (its status event says so)
    assert s.eta == pytest.approx(pace * (24 - 18))
    old_pace = e["elapsed"] / 18  # the steps of the earlier process counted as if done in this one's time
    assert duration(s.eta) != duration(old_pace * (24 - 18))
    # an older writer's status carries no start step: the pace counts from the segment's first step event
    older = [{k: v for k, v in ev.items() if not (ev.get("phase") == "training" and k == "step")}
             for ev in EVENTS[:cut + 1]]
    first = EVENTS[step_at(14)]
    assert summarize(older).eta == pytest.approx((e["elapsed"] - first["elapsed"]) / (18 - 14) * (24 - 18))


def expected_at(step: int) -> tuple[str, str]:
    """(elapsed, eta) as shown at `step` of the resumed segment, worked out from the events here."""
    e = EVENTS[step_at(step)]
    elapsed = FIRST_SEGMENT + e["time"] - EVENTS[SECOND]["time"]
    return duration(elapsed), duration(e["elapsed"] / (step - 13) * (24 - step))


def test_plain_step_lines_show_that_eta() -> None:
    out = StringIO()
    display = PlainDisplay(Console(file=out, force_terminal=False, width=200))
    for event in EVENTS[:step_at(18) + 1]:
        display.show(event)
    display.close()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("step 18/24") and f"eta {expected_at(18)[1]}" in last


def test_the_dashboard_shows_the_same_elapsed_and_eta() -> None:
    state = RunState(Path("run"))
    state.update(EVENTS[:step_at(18) + 1])
    elapsed, eta = expected_at(18)
    text = times_line(state).plain
    assert f"elapsed {elapsed}" in text and f"eta {eta}" in text


async def test_resume_with_yes_and_the_dashboard_agree(in_tmp: Path) -> None:
    """`llmtune-tui resume` follows the new segment only (skip_existing) and still reports the run's elapsed
    time over both segments; attaching the dashboard to the same run shows the same."""
    run_dir = in_tmp / "runs" / "resumed"
    run_dir.mkdir(parents=True)
    (run_dir / EVENTS_FILE).write_text("".join(line for line in (FIXTURES / "resumed.jsonl").read_text()
                                               .splitlines(keepends=True)[:SECOND]))
    second = in_tmp / "second.jsonl"
    second.write_text("".join((FIXTURES / "resumed.jsonl").read_text().splitlines(keepends=True)[SECOND:]))
    handle = launch.start(run_dir, command=[sys.executable, str(REPLAY), str(run_dir), str(second)])
    out = StringIO()
    code = follow(handle, console=Console(file=out, force_terminal=False, width=200), poll_interval=0.02,
                  skip_existing=True)
    assert code == 0
    elapsed = duration(FIRST_SEGMENT + SECOND_SEGMENT)
    assert f"completed: 24/24 steps, final loss 6.0221, elapsed {elapsed}" in out.getvalue()
    assert "step 1/24" not in out.getvalue()  # the earlier segment is not shown again

    assert read_events(run_dir / EVENTS_FILE) == EVENTS  # the replay appended the resumed segment as recorded
    app = WizardApp(attach=(run_dir, None))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await caught_up(pilot, len(EVENTS))
        assert f"elapsed {elapsed}" in shown(screen.query_one("#run-status"))
