"""engine.preview at the edges: sample parts of huge cells (built in linear time, capped, displayed exactly as
before by the dry run and the wizard) and a train split that has nothing to train (found before training)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.encoding import Encoded
from engine.pipeline import prepare
from engine.preview import (
    PREVIEW_PART_CHARS,
    Part,
    Segment,
    _part,
    build_preview,
    training_problems,
)
from support import tiny_config, write_files
from tui.dry_run import MAX_PART_CHARS, render_part, shorten

ROOT = Path(__file__).resolve().parents[1]
CHAT = [{"messages": [{"role": "user", "content": "hello there, how are you today? " * 3},
                      {"role": "assistant", "content": "fine, thanks"}]}] * 4
PREFERENCE_COLUMNS = {"prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"}

pytestmark = pytest.mark.usefixtures("in_tmp")  # each test in its own directory (conftest)


# ---------------------------------------------------------------- huge sample parts


def synthetic(chars: int) -> tuple[str, Encoded]:
    """A text of `chars` characters in 4-character tokens, all masked but the last quarter (trained)."""
    text = "abcd" * (chars // 4)
    n = len(text) // 4
    return text, Encoded([7] * n, [i >= 3 * n // 4 for i in range(n)], [(4 * i, 4 * i + 4) for i in range(n)])


def test_part_time_grows_linearly_with_the_text() -> None:
    def seconds(chars: int) -> float:
        text, enc = synthetic(chars)
        start = time.perf_counter()
        part = _part("text", None, text, enc, 0, len(enc), len(enc))
        elapsed = time.perf_counter() - start
        assert (part.tokens, part.trained) == (len(enc), len(enc) - 3 * len(enc) // 4)
        return elapsed

    small = min(seconds(100_000) for _ in range(3))
    large = seconds(1_000_000)
    # Ten times the text: about ten times the time when linear; with += on a field it was 290 times (12 s).
    assert large < 40 * small, (small, large)


def test_long_part_is_capped_but_counts_and_display_are_exact() -> None:
    text, enc = synthetic(1_000_000)
    keep_to = len(enc) - 1000  # the last 1000 tokens are cut
    capped = _part("text", None, text, enc, 0, len(enc), keep_to)
    whole = _part("text", None, text, enc, 0, len(enc), keep_to, max_chars=None)
    assert (capped.tokens, capped.trained, capped.cut) == (whole.tokens, whole.trained, whole.cut)
    assert sum(len(s.text) for s in capped.segments) == PREVIEW_PART_CHARS
    assert sum(len(s.text) + s.omitted for s in capped.segments) == len(text)
    assert [s.kind for s in capped.segments] == ["masked", "trained", "cut"]  # the start and the end
    for plain in (True, False):
        assert render_part(capped.segments, plain=plain) == render_part(whole.segments, plain=plain)
    from tui.widgets.masked_text import render_segments  # the wizard's view of a part

    assert render_segments(capped.segments).plain == render_segments(whole.segments).plain
    assert f"({len(text) - MAX_PART_CHARS} characters not shown)" in render_part(capped.segments, plain=True).plain


@pytest.mark.parametrize("budget", [20, 2000, PREVIEW_PART_CHARS, 50_000, 2_000_000])
def test_shorten_says_exactly_how_much_it_leaves_out(budget: int) -> None:
    text, enc = synthetic(1_000_000)
    capped = _part("text", None, text, enc, 0, len(enc), len(enc)).segments
    pieces = shorten(capped, budget)
    shown = sum(len(p) for p, kind in pieces if kind is not None)
    gaps = [p for p, kind in pieces if kind is None]
    hidden = sum(int(g.split("(")[1].split(" ")[0]) for g in gaps)
    assert shown + hidden == len(text)
    assert len(gaps) == 1
    if budget <= PREVIEW_PART_CHARS:  # within what the preview keeps: as if it had kept everything
        whole = _part("text", None, text, enc, 0, len(enc), len(enc), max_chars=None).segments
        assert pieces == shorten(whole, budget)


def test_short_parts_are_not_changed() -> None:
    segments = [Segment("a" * 30, "masked"), Segment("b" * 30, "trained")]
    assert shorten(segments, 90) == [("a" * 30, "masked"), ("b" * 30, "trained")]
    text, enc = synthetic(400)
    assert _part("t", None, text, enc, 0, len(enc), len(enc)).segments == \
        _part("t", None, text, enc, 0, len(enc), len(enc), max_chars=None).segments


def test_preview_of_a_huge_cell_keeps_the_counts(tmp_path: Path, tiny_model: Path) -> None:
    long = "word " * 100_000  # half a megabyte in one cell
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": [{"text": long}]}, task="llm-generic",
                      params={"block_size": 64})
    [sample] = build_preview(cfg, n_samples=1).samples
    [part] = sample.parts
    assert isinstance(part, Part) and part.tokens > 100_000
    assert sum(len(s.text) for s in part.segments) <= PREVIEW_PART_CHARS
    assert sum(len(s.text) + s.omitted for s in part.segments) >= len(long)


# ---------------------------------------------------------------- nothing to train


def problems_for(tmp_path: Path, tiny_model: Path, rows: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": rows}, **kwargs)
    return training_problems(build_preview(cfg, n_samples=0))


def test_chat_answers_beyond_the_block_leave_nothing_to_train(tmp_path: Path, tiny_model: Path) -> None:
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": CHAT}, chat_template="tokenizer",
                      column_mapping={"text_column": "messages"}, params={"block_size": 16})
    preview = build_preview(cfg, n_samples=0)
    assert (preview.splits[0].no_trained, preview.splits[0].skipped) == (4, 4)
    [problem] = training_problems(preview)
    assert problem.key == "params.block_size" and problem.value == 16
    assert problem.message.startswith("no training example has a trained token within block_size 16: all 4 "
                                      "example(s) of the train split")
    assert "raise params.block_size" in (problem.fix or "") and "--dry-run" in (problem.fix or "")


def test_one_trainable_example_is_enough(tmp_path: Path, tiny_model: Path) -> None:
    rows = CHAT + [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="tokenizer",
                      column_mapping={"text_column": "messages"}, params={"block_size": 16})
    preview = build_preview(cfg, n_samples=0)
    assert preview.splits[0].skipped == 4
    assert training_problems(preview) == []


def test_the_skipped_count_is_what_the_trainers_leave_out(tmp_path: Path, tiny_model: Path) -> None:
    from engine.trainers.rows import build_rows

    rows = CHAT + [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="tokenizer",
                      column_mapping={"text_column": "messages"}, params={"block_size": 16})
    preview = build_preview(cfg, n_samples=0)
    prepared = prepare(cfg)
    [train] = prepared.splits
    assert build_rows(prepared, train).stats.skipped == preview.splits[0].skipped


def test_preference_pairs_cut_to_nothing(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"prompt": "a long question " * 20, "chosen": " yes", "rejected": " no"}] * 3
    [problem] = problems_for(tmp_path, tiny_model, rows, task="llm-dpo", column_mapping=PREFERENCE_COLUMNS,
                             params={"block_size": 16, "max_prompt_length": 16})
    assert "empty chosen or rejected answer" in problem.message
    assert "max_prompt_length" in (problem.fix or "")


@pytest.mark.parametrize("task, kwargs", [
    ("llm-generic", {"column_mapping": {"text_column": "text"}}),
    ("llm-reward", {"column_mapping": {"text_column": "text", "rejected_text_column": "rejected"}}),
])
def test_trainers_that_never_skip_have_no_such_problem(tmp_path: Path, tiny_model: Path, task: str,
                                                       kwargs: dict[str, Any]) -> None:
    rows = [{"text": "a fairly long text " * 10, "rejected": "another long text " * 10}] * 2
    assert problems_for(tmp_path, tiny_model, rows, task=task, params={"block_size": 16}, **kwargs) == []


def test_dry_run_prints_the_preview_then_exits_2(tmp_path: Path, tiny_model: Path) -> None:
    write_files(tmp_path, {"train.jsonl": CHAT})
    config = tmp_path / "run.yaml"
    config.write_text(f"task: llm-sft\nbase_model: {tiny_model}\nproject_name: {tmp_path / 'out'}\ndata:\n"
                      f"  path: {tmp_path}\n  chat_template: tokenizer\n  column_mapping:\n"
                      "    text_column: messages\n")
    out = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(config), "--dry-run", "-n", "1",
                          "--set", "params.block_size=16"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ}, timeout=300, check=False)
    assert out.returncode == 2, out.stderr
    assert "rows: 4 read, 4 used" in out.stdout and "--- sample 1" in out.stdout  # the preview first
    assert "4 sample(s) have no trained token left after truncation; training leaves them out" in out.stdout
    assert "nothing to train" in out.stderr
    assert "no training example has a trained token within block_size 16" in out.stderr
    assert "Traceback" not in out.stderr
