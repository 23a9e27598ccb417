"""The event stream contract: writer, reader, tail, validation and the folded summary, against fixtures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import (
    EVENT_FIELDS,
    SCHEMA_VERSION,
    EventTail,
    EventWriter,
    read_events,
    summarize,
    validate_event,
)

FIXTURES = Path(__file__).parent / "fixtures" / "events"
FIXTURE_FILES = sorted(FIXTURES.glob("*.jsonl"))
ROOT = Path(__file__).resolve().parents[1]


def test_events_module_imports_only_the_standard_library() -> None:
    code = ("import sys, engine.events, engine.launch; "
            "print(sorted(m for m in ('torch', 'transformers', 'rich', 'textual', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_writer_reader_round_trip_with_non_finite_floats(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "run" / "events.jsonl"  # parents are created
    with EventWriter(path) as writer:
        written = writer.emit("step", step=3, loss=math.nan, grad_norm=math.inf,
                              memory={"gpus": [{"peak": -math.inf}]}, path=tmp_path)
        writer.emit("log", level="warning", message="NaN")
    text = path.read_text(encoding="utf-8")
    assert "NaN" in text and text.endswith("\n") and len(text.splitlines()) == 2
    assert all(json.loads(line, parse_constant=pytest.fail) for line in text.splitlines())  # strict JSON
    assert written["v"] == SCHEMA_VERSION and isinstance(written["time"], float)
    step, log = read_events(path)
    assert math.isnan(step["loss"]) and step["grad_norm"] == math.inf
    assert step["memory"]["gpus"][0]["peak"] == -math.inf
    assert step["path"] == str(tmp_path)
    assert log["message"] == "NaN"  # text stays text


def test_writer_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for message in ("first", "second"):
        with EventWriter(path) as writer:
            writer.emit("status", phase="loading data", message=message)
    assert [e["message"] for e in read_events(path)] == ["first", "second"]


def test_scalar_objects_are_written_as_numbers(tmp_path: Path) -> None:
    class Scalar:  # what a 0-d torch tensor or numpy float looks like to the writer
        def item(self) -> float:
            return 0.5

    with EventWriter(tmp_path / "events.jsonl") as writer:
        event = writer.emit("step", loss=Scalar(), metrics={"acc": Scalar()})
    assert event["loss"] == 0.5 and event["metrics"] == {"acc": 0.5}


def test_partial_last_line_waits_until_complete(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.poll() == []  # no file yet
    first = json.dumps({"v": 1, "type": "status", "time": 1.0, "phase": "training", "message": "go"}) + "\n"
    second = json.dumps({"v": 1, "type": "log", "time": 2.0, "level": "info", "message": "half"}) + "\n"
    path.write_text(first + second[:20])
    assert [e["type"] for e in tail.poll()] == ["status"]
    assert [e["type"] for e in read_events(path)] == ["status"]
    assert tail.poll() == []
    with open(path, "a") as f:
        f.write(second[20:])
    assert [e["message"] for e in tail.poll()] == ["half"]
    assert tail.poll() == []
    assert len(read_events(path)) == 2


def test_tail_starts_over_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"v": 1, "type": "log", "time": 1, "level": "info", "message": "a long first line"}\n')
    tail = EventTail(path)
    assert len(tail.poll()) == 1
    path.write_text('{"v": 1, "type": "log", "time": 2, "level": "info", "message": "b"}\n')  # truncated
    assert [e["message"] for e in tail.poll()] == ["b"]
    replacement = tmp_path / "new.jsonl"  # a new file in its place, longer than what was read
    replacement.write_text('{"v": 1, "type": "log", "time": 3, "level": "info", "message": "a longer new one"}\n')
    replacement.replace(path)
    assert [e["message"] for e in tail.poll()] == ["a longer new one"]


def test_corrupt_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"v": 1, "type": "log", "time": 1, "level": "info", "message": "ok"}\n'
                     b'{"v": 1, "type": "lo\n'           # cut short by a crash mid-write
                     b'\xff\xfe not utf-8\n'
                     b'[1, 2]\n'                           # JSON, but not an event
                     b'\n'
                     b'{"v": 1, "type": "log", "time": 2, "level": "info", "message": "still ok"}\n')
    assert [e["message"] for e in read_events(path)] == ["ok", "still ok"]
    assert [e["message"] for e in EventTail(path).poll()] == ["ok", "still ok"]


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_every_fixture_event_is_valid(path: Path) -> None:
    events = read_events(path)
    assert len(events) == len(path.read_text().splitlines())
    assert {(i, p) for i, e in enumerate(events, 1) for p in validate_event(e)} == set()
    assert events[-1]["type"] == "run_finished"
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)


def test_fixtures_cover_every_event_type() -> None:
    seen = {e["type"] for path in FIXTURE_FILES for e in read_events(path)}
    assert seen == set(EVENT_FIELDS)


STEP = {"v": 1, "type": "step", "time": 1.0, "step": 1, "total_steps": 10, "epoch": 0.1, "loss": 2.0, "lr": None,
        "grad_norm": None, "tokens": 100, "trained_tokens": 50, "tokens_per_s": None,
        "trained_tokens_per_s": None, "elapsed": 0.5, "memory": {}}


@pytest.mark.parametrize("change, expected", [
    ({"v": 2}, "unknown schema version 2"),
    ({"type": "stepp"}, "unknown event type 'stepp'"),
    ({"time": "noon"}, "time should be a number"),
    ({"step": 1.5}, "step: step should be an integer"),
    ({"step": True}, "step: step should be an integer"),
    ({"loss": "2.0"}, "step: loss should be a number or null"),
    ({"memory": []}, "step: memory should be an object"),
], ids=lambda x: str(x)[:30])
def test_validate_reports_broken_events(change: dict, expected: str) -> None:
    assert validate_event(STEP) == []
    problems = validate_event({**STEP, **change})
    assert any(expected in p for p in problems), problems


def test_validate_reports_missing_fields_and_bad_choices() -> None:
    assert validate_event({"type": "checkpoint", "step": 3}) == [
        "missing field 'v'", "missing field 'time'", "checkpoint: missing field 'path'"]
    finished = {"v": 1, "type": "run_finished", "time": 1.0, "status": "done", "exit_code": 0, "step": 1,
                "metrics": {}, "output": None, "merged": None}
    assert validate_event(finished) == [
        "run_finished: status should be one of completed, stopped, failed, killed, got 'done'"]
    assert validate_event([1]) == ["an event should be a JSON object, got list"]
    assert validate_event({**STEP, "extra": "fine"}) == []  # unknown fields are allowed


def summary_of(name: str):
    return summarize(read_events(FIXTURES / name))


def test_summary_of_a_completed_run() -> None:
    s = summary_of("normal.jsonl")
    assert (s.status, s.exit_code, s.trainer, s.step, s.total_steps) == ("completed", 0, "sft", 24, 24)
    assert s.loss == pytest.approx(10.1878) and s.eval_loss == pytest.approx(10.2874)
    assert s.output == s.run_dir and s.merged is None and s.error is None
    assert s.started < s.ended and s.finished
    assert s.tokens_per_s and s.epoch == 1.0


def test_summary_of_a_run_with_evaluation_and_merge() -> None:
    s = summary_of("with_eval.jsonl")
    assert (s.status, s.trainer, s.step, s.eval_loss) == ("completed", "dpo", 120, pytest.approx(0.3377))
    assert s.merged == "/data/runs/qwen-dpo/merged" and s.checkpoint == "/data/runs/qwen-dpo/checkpoint-120"
    assert s.warnings == 1


def test_summary_of_a_failed_run() -> None:
    s = summary_of("failed.jsonl")
    assert (s.status, s.exit_code, s.error_kind, s.step) == ("failed", 1, "oom", 11)
    assert math.isnan(s.loss)  # the last loss as logged: a NaN is news, not noise
    assert s.error.startswith("CUDA ran out of memory") and s.log == "/data/runs/llama-text/train.log"
    assert s.output is None


def test_summary_of_a_stopped_run_and_a_user_error() -> None:
    s = summary_of("stopped.jsonl")
    assert (s.status, s.exit_code, s.step, s.total_steps) == ("stopped", 130, 31, 250)
    assert s.output == s.checkpoint == "/data/runs/mistral-orpo/checkpoint-31"
    u = summary_of("user_error.jsonl")
    assert (u.status, u.exit_code, u.error_kind, u.trainer, u.phase) == ("failed", 2, "user", None, "loading data")


def test_summary_updates_incrementally_and_ignores_unknown_events() -> None:
    events = read_events(FIXTURES / "stopped.jsonl")
    s = summarize(events[:10])
    assert s.status is None and not s.finished and s.phase == "training" and 0 < s.step < 31
    s.update({"v": 1, "type": "future_event", "time": 2.0, "anything": 1})
    s.update({"v": 1, "type": "step"})  # missing fields: ignored rather than a crash
    for event in events[10:]:
        s.update(event)
    assert s.status == "stopped" and s.unknown_version is None
    assert s.update({"v": 2, "type": "log", "time": 3.0}).unknown_version == 2
