"""params.valid_fraction: a validation split held out of a single data file's train rows. Seeded, the same rows in
every run and process, reported as coming from the fraction, refused together with data.valid_split, and used by
the training process exactly as a valid split (evaluation per eval_strategy)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from engine.config import parse_config_text, to_dict
from engine.data import DataSource, Table, hold_out
from engine.errors import ConfigError, DataError
from engine.params import PARAM_FIELDS
from engine.preview import build_preview
from support import CHATS, make_config, run, tiny_config

pytestmark = pytest.mark.usefixtures("in_tmp")
ROOT = Path(__file__).resolve().parents[1]
MINIMAL = "task: llm-sft\nbase_model: Qwen/Qwen2.5-0.5B\nproject_name: out\ndata:\n  path: data\n"
TEXTS = [{"text": f"Sentence number {i} about a fox."} for i in range(20)]


def table(n: int) -> Table:
    source = DataSource("file", Path("/data/train.jsonl").absolute(), "jsonl", None, None, "train")
    return Table([{"i": i} for i in range(n)], ["i"], source, [f"train.jsonl:{i + 1}" for i in range(n)])


def held(n: int, fraction: float, seed: int) -> list[int]:
    return [row["i"] for row in hold_out(table(n), fraction, seed)[1].rows]


# ---------------------------------------------------------------- the parameter and its rules


def test_the_parameter_is_llmtunes_addition_with_a_range_below_one() -> None:
    f = PARAM_FIELDS["valid_fraction"]
    assert f.default == 0.0 and f.metadata["extra"] and f.type == "float"
    assert parse_config_text(MINIMAL + "params:\n  valid_fraction: 0.05\n", environ={}).params.valid_fraction == 0.05
    for bad, rule in (("1", "must be less than 1"), ("1.5", "must be less than 1"), ("-0.1", "must be at least 0")):
        with pytest.raises(ConfigError) as info:
            parse_config_text(MINIMAL + f"params:\n  valid_fraction: {bad}\n", environ={})
        assert [p.key for p in info.value.problems] == ["params.valid_fraction"]
        assert rule in info.value.problems[0].message


def test_it_is_written_only_when_used() -> None:
    assert "valid_fraction" not in to_dict(parse_config_text(MINIMAL, environ={}))["params"]
    cfg = parse_config_text(MINIMAL + "params:\n  valid_fraction: 0.1\n", environ={})
    assert to_dict(cfg)["params"]["valid_fraction"] == 0.1


def test_it_is_refused_together_with_a_valid_split() -> None:
    text = MINIMAL + "  valid_split: valid\nparams:\n  valid_fraction: 0.1\n"
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, environ={})
    (problem,) = info.value.problems
    assert problem.key == "params.valid_fraction" and "data.valid_split" in problem.message
    assert problem.fix is not None and problem.fix.startswith("use one or the other")


def test_evaluating_every_n_steps_with_a_fraction_is_no_warning() -> None:
    cfg = parse_config_text(MINIMAL + "params:\n  eval_strategy: steps\n  valid_fraction: 0.1\n", environ={})
    assert not [w for w in cfg.warnings if w.key == "params.eval_strategy"]


# ---------------------------------------------------------------- the split


def test_the_split_holds_out_the_fraction_rounded_up_keeping_the_files_order() -> None:
    train, valid = hold_out(table(30), 0.1, 42)
    assert len(valid.rows) == 3 and len(train.rows) == 27  # 0.1 * 30 is 3.0000000000000004 in floats: still 3
    assert len(hold_out(table(10), 0.05, 42)[1].rows) == 1
    ids = [r["i"] for r in train.rows] + [r["i"] for r in valid.rows]
    assert sorted(ids) == list(range(30)) and len(set(ids)) == 30
    assert [r["i"] for r in valid.rows] == sorted(r["i"] for r in valid.rows)
    assert valid.locations == [f"train.jsonl:{r['i'] + 1}" for r in valid.rows]  # a row keeps its place


def test_the_split_is_seeded_and_the_same_in_another_process() -> None:
    assert held(200, 0.1, 42) == held(200, 0.1, 42)
    assert held(200, 0.1, 42) != held(200, 0.1, 7)
    code = ("import json, sys; sys.path.insert(0, 'tests'); from test_valid_fraction import held; "
            "print(json.dumps(held(200, 0.1, 42)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(out.stdout) == held(200, 0.1, 42)


@pytest.mark.parametrize("n, fraction, said", [(1, 0.5, "holds out the only train row, leaving none to train on"),
                                               (3, 0.9, "holds out all 3 train rows, leaving none to train on")])
def test_each_part_keeps_at_least_one_row(n: int, fraction: float, said: str) -> None:
    with pytest.raises(DataError) as info:
        hold_out(table(n), fraction, 42)
    (problem,) = info.value.problems
    assert problem.key == "params.valid_fraction" and said in problem.message
    assert problem.fix is not None and "lower params.valid_fraction" in problem.fix


# ---------------------------------------------------------------- the preview and the training process


def test_the_preview_shows_the_valid_split_as_held_out(in_tmp: Path, tiny_model: Path) -> None:
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": TEXTS}, task="llm-generic",
                      params={"valid_fraction": 0.25, "block_size": 32})
    preview = build_preview(cfg, n_samples=1)
    train, valid = (r.formatted for r in preview.splits)
    assert (train.split, train.rows, valid.split, valid.rows) == ("train", 15, "valid", 5)
    assert valid.source == "25% of train: 5 rows of train.jsonl held out with seed 42"
    assert train.source == "train.jsonl, less the 25% held out for valid (5 rows)"
    texts = {e.text for e in train.examples} | {e.text for e in valid.examples}
    assert len(texts) == 20 and not {e.text for e in train.examples} & {e.text for e in valid.examples}
    again = build_preview(cfg, n_samples=1).splits[1].formatted
    assert [e.location for e in again.examples] == [e.location for e in valid.examples]

    from rich.console import Console

    from tui.dry_run import print_split

    out = StringIO()
    print_split(Console(file=out, width=200), preview.splits[1])
    assert "Data: valid (25% of train: 5 rows of train.jsonl held out with seed 42)" in out.getvalue()


def test_too_few_rows_to_hold_out_stop_the_preview(in_tmp: Path, tiny_model: Path) -> None:
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": TEXTS[:1]}, task="llm-generic",
                      params={"valid_fraction": 0.5})
    with pytest.raises(DataError) as info:
        build_preview(cfg)
    assert info.value.problems[0].key == "params.valid_fraction"


def test_training_evaluates_on_the_held_out_rows(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft", files={"train.jsonl": CHATS * 2},
                      params={"peft": True, "quantization": None, "max_steps": 2, "eval_strategy": "steps",
                              "eval_steps": 1, "valid_fraction": 0.25})
    code, _, events = run(cfg)
    assert code == 0, events[-3:]
    started = next(e for e in events if e["type"] == "run_started")
    train, valid = started["data"]["train"], started["data"]["valid"]
    assert (train["rows"], valid["rows"]) == (9, 3)
    assert valid["source"] == "25% of train: 3 rows of train.jsonl held out with seed 42"
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [1, 2] and all(math.isfinite(e["eval_loss"]) for e in evals)
    assert any(e.get("message") == f"valid: {valid['source']}" for e in events if e["type"] == "log")
