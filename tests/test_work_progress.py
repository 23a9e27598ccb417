"""Progress of long data work: the pipeline reports formatting and tokenizing as lines at most once a second,
the training process writes them as `preparing data` status events, and they reach the dashboard's state."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import work_progress
from engine.events import summarize
from engine.pipeline import prepare
from engine.work_progress import Tally, progress_line
from support import CHATS, make_config, run


def test_the_line_says_share_counts_and_rate() -> None:
    assert progress_line("formatting train", 42_000, 100_000, 22.1) == \
        "formatting train: 42% (42,000/100,000 rows, 1,900 rows/s)"
    assert progress_line("tokenizing", 0, 0, 0.0, "texts") == "tokenizing: (0/0 texts)"


def test_short_work_says_nothing_and_nothing_is_counted_without_a_report() -> None:
    lines: list[str] = []
    tally = Tally(lines.append, "formatting train", 3, every=60)
    for _ in range(3):
        tally.add()
    tally.finish()
    assert lines == []
    quiet = Tally(None, "x", 3, every=0)
    quiet.add(3)
    quiet.finish()  # no report: nothing to call


@pytest.mark.parametrize("trainer", ["sft", "dpo"])
def test_the_pipeline_reports_formatting_and_tokenizing(in_tmp: Path, tiny_model: Path, trainer: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(work_progress, "EVERY_S", 0.0)  # every row: the tiny data takes milliseconds
    lines: list[str] = []
    prepared = prepare(make_config(in_tmp, tiny_model, trainer), progress=lines.append)
    train = prepared.splits[0]
    n = train.rows
    assert any(line.startswith(f"formatting train: 100% ({n:,}/{n:,} rows") for line in lines), lines
    texts = len(train.examples) * (2 if prepared.cfg.spec.pairwise else 1)
    lines.clear()
    prepared.encoded(train)
    assert lines[-1].startswith(f"tokenizing train: 100% ({texts:,}/{texts:,} texts")


def test_the_training_process_writes_them_and_the_dashboard_state_shows_them(
        in_tmp: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(work_progress, "EVERY_S", 0.0)
    code, _, events = run(make_config(in_tmp, tiny_model, "sft"))
    assert code == 0
    preparing = [i for i, e in enumerate(events) if e["type"] == "status" and e["phase"] == "preparing data"]
    assert preparing, [e.get("phase") for e in events]
    messages = [events[i]["message"] for i in preparing]
    n = len(CHATS)
    assert messages[-1].startswith(f"preparing train: 100% ({n}/{n} rows")  # formatted and tokenized
    phases = [e.get("phase") for e in events if e["type"] == "status"]
    assert phases.index("loading data") < phases.index("preparing data") < phases.index("loading model")
    state = summarize(events[:preparing[-1] + 1])  # the dashboard folds the events with summarize
    assert state.phase == "preparing data" and state.message == messages[-1]
