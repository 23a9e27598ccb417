"""tui.format and engine.units: the words every view uses for numbers, sizes, durations and paths, at their
edges (0, negative, missing, huge, NaN)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import RunSummary
from tui.format import (
    end_reason,
    event_lines,
    headline_metrics,
    hms,
    human_bytes,
    human_count,
    human_duration,
    length_stats,
    memory_text,
    number,
    plural,
    run_started_lines,
    short_number,
    shown_path,
    step_line,
    steps_done,
    summary_lines,
)

ROOT = Path(__file__).resolve().parents[1]
GiB, MiB = 2**30, 2**20
NAN, INF = math.nan, math.inf


def test_the_modules_stay_light() -> None:
    code = ("import sys, tui.format, engine.units; print(sorted(m for m in ('torch', 'transformers', 'textual', "
            "'rich', 'engine.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bytes_in_messages() -> None:
    assert [human_bytes(n) for n in (0, -5, 512, 300 * MiB, 9.14 * GiB, 99.96 * GiB, 141 * GiB, 5000 * GiB)] == [
        "0 MiB", "0 MiB", "0 MiB", "300 MiB", "9.1 GiB", "100.0 GiB", "141 GiB", "5000 GiB"]
    assert [human_bytes(n) for n in (None, NAN, INF)] == ["-", "-", "-"]


def test_bytes_in_narrow_columns() -> None:
    assert [human_bytes(n, compact=True) for n in (0, 310, 12 * 1024, 640 * MiB, 18.6 * GiB, 141 * GiB)] == [
        "0B", "310B", "12K", "640M", "18.6G", "141G"]
    assert human_bytes(-3 * GiB, compact=True) == "-3.0G"
    assert human_bytes(None, compact=True) == "-" and human_bytes(NAN, compact=True) == "-"


def test_bytes_in_one_unit() -> None:
    assert [human_bytes(n, unit="MB") for n in (0, 3.4 * MiB, 1234 * MiB, 10**15)] == [
        "0.0 MB", "3.4 MB", "1,234 MB", "953,674,316 MB"]
    assert human_bytes(None, unit="MB", missing="?") == "?"


def test_counts() -> None:
    assert [human_count(n) for n in (0, 7, 999, 1000, 330_048, 494_032_768, 1_543_714_304, 2 * 10**15)] == [
        "0", "7", "999", "1K", "330K", "494M", "1.5B", "2000T"]
    assert human_count(999_999) == "1M" and human_count(9_960_000) == "10M"  # rounding moves up a unit
    assert human_count(-1500) == "-1.5K" and human_count(3.5) == "3.5" and human_count(0.25) == "0.25"
    assert [human_count(n) for n in (None, NAN, INF, -INF)] == ["-", "nan", "inf", "-inf"]
    assert [human_count(n, si=True) for n in (950, 1000, 2500, 1_200_000, 3e9)] == ["950", "1k", "2.5k", "1.2M", "3G"]


def test_rough_durations() -> None:
    assert [human_duration(s) for s in (0, 59, 60, 89, 3599, 7500, 47 * 3600, 48 * 3600, 10**9)] == [
        "under a minute", "under a minute", "1 min", "1 min", "1 h 00 min", "2 h 05 min", "47 h 00 min",
        "2 days", "11574 days"]
    assert [human_duration(s) for s in (None, NAN, INF)] == ["?", "?", "?"]
    assert human_duration(-5) == "under a minute"


def test_clock_durations() -> None:
    assert [hms(s) for s in (0, 0.9, 62, 3600, 26 * 3600 + 1, 10**7)] == [
        "0:00:00", "0:00:00", "0:01:02", "1:00:00", "26:00:01", "2777:46:40"]
    assert [hms(s) for s in (None, -1, NAN, INF)] == ["-:--:--"] * 4


def test_metric_values() -> None:
    assert number(2.34567, ".4f") == "2.3457" and number(0, ".2e") == "0.00e+00" and number(-1, ".0f") == "-1"
    assert number(NAN, ".4f") == "nan" and number(10**12, ",.0f") == "1,000,000,000,000"
    assert [number(v, ".4f") for v in (None, True, "2.5", [])] == ["-"] * 4  # JSON's true is not a number


def test_short_numbers_fit_their_width() -> None:
    assert [short_number(v) for v in (0, 7.6, -3.14159, 1.2e-5, 12345.0)] == ["0", "7.6", "-3.14", "1.2e-5", "1.23e4"]
    assert all(len(short_number(v, 5)) <= 7 for v in (1e300, -1e-300, 123456789.0))
    assert short_number(NAN) == "nan" and short_number(-INF) == "-inf"


def test_plurals() -> None:
    assert [plural(n, "step") for n in (0, 1, 2, 1_000_000)] == ["0 steps", "1 step", "2 steps", "1000000 steps"]
    assert plural(1.5, "epoch") == "1.5 epochs" and plural(1.0, "epoch") == "1 epoch"
    assert plural(None, "step") == "- steps" and plural(True, "step") == "- steps"


def test_paths_as_typed(in_tmp: Path) -> None:
    assert shown_path(in_tmp) == "." and shown_path(in_tmp / "runs" / "a") == "runs/a"
    assert shown_path("runs/a") == "runs/a" and shown_path(Path("runs") / ".." / "b") == "runs/../b"
    assert shown_path("/elsewhere/x") == "/elsewhere/x"


def test_steps_done_and_lengths() -> None:
    summary = RunSummary()
    assert steps_done(summary) == "0"
    summary.step, summary.total_steps = 12, 120
    assert steps_done(summary) == "12/120"
    stats = type("Stats", (), {"min": 1, "median": 48.5, "p95": 120, "max": 256})()
    assert length_stats(stats) == "min 1, median 48.5, p95 120, max 256"


def test_a_step_line_with_missing_and_odd_values() -> None:
    event = {"type": "step", "step": 3, "total_steps": 10, "epoch": 0.3, "loss": NAN, "lr": None,
             "tokens_per_s": 10**9, "metrics": {"rewards/margins": -0.5, "rewards/accuracies": True},
             "memory": {"rss": 0, "gpus": [{"index": 0, "used": 5 * GiB, "total": 80 * GiB},
                                           {"index": 1, "used": None, "reserved": 20 * GiB, "total": None}]}}
    assert step_line(event, None) == ("step 3/10 epoch 0.30 loss nan margin -0.5 lr - tok/s 1000000000 "
                                      "eta -:--:-- mem 20.0G")  # the fuller GPU, torch's reading, no total
    assert step_line({"type": "step"}) == "step None/None epoch - loss - lr - tok/s - eta -:--:--"
    assert memory_text({"rss": 300 * MiB}) == "300M" and memory_text({}) is None and memory_text(None) is None
    assert headline_metrics({"accuracy": NAN}) == [("acc", "nan%")]


def test_event_lines_and_a_run_start_with_missing_fields() -> None:
    assert run_started_lines({"type": "run_started"}) == [
        "run started: None on None (?), - steps, - epochs, batch None"]
    assert event_lines({"type": "log", "level": "warning", "message": "m"}) == [("warning: m", "yellow")]
    assert event_lines({"type": "hologram"}) == [] and event_lines({"type": "step", "step": 1}) == []


def test_summary_lines_name_the_log_only_when_it_helps() -> None:
    summary = RunSummary()
    assert summary_lines(summary, Path("run/train.log")) == [
        ("ended: 0 steps, elapsed -:--:--", "bold red"), ("log: run/train.log", "")]
    assert summary_lines(summary, Path("run/train.log"), killed=True)[0][0].startswith("killed: ")
    summary.update({"type": "run_finished", "status": "completed", "exit_code": 0, "step": 5,
                    "metrics": {"train_runtime": 62.0}, "output": "out", "merged": None})
    assert summary_lines(summary, Path("run/train.log")) == [
        ("completed: 5 steps, elapsed 0:01:02", "bold green"), ("output: out", "")]


@pytest.mark.parametrize("code, said", [(None, "it is still running"), (0, "exit code 0"),
                                        (-9, "it was killed by SIGKILL (often the system running out of memory)"),
                                        (-15, "it was killed by SIGTERM"), (-99, "it was killed by signal 99")])
def test_how_a_process_ended(code: int | None, said: str) -> None:
    handle = type("Handle", (), {"process": object(), "returncode": lambda self: code})()
    assert end_reason(handle) == said
