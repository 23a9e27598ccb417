"""A problem caused by `--set KEY=VALUE` says it came from --set, and never shows the file's line for that key (the
line holds another value); problems with the file itself keep their lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import parse_config_text
from engine.errors import ConfigError, Problem

FILE = """task: llm-sft
base_model: Qwen/Qwen2.5-0.5B
project_name: out
data:
  path: data
params:
  lr: 1e-4
  block_size: 512
  epochs: 2
"""
LINE_OF = {"params.lr": 7, "params.block_size": 8, "params.epochs": 9}


def problems(text: str, overrides: list[str]) -> dict[str, Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, environ={}, overrides=overrides, source=Path("run.yaml"))
    return {p.key: p for p in info.value.problems}


def rendered(problem: Problem) -> str:
    return problem.render("run.yaml")


@pytest.mark.parametrize("item, key, rule", [
    ("params.lr=fast", "params.lr", "must be a number"),
    ("params.block_size=99999", "params.block_size", "must not exceed params.model_max_length"),
    ("params.epochs=0", "params.epochs", "must be at least 1"),
])
def test_a_bad_set_value_is_blamed_on_set_not_on_the_files_line(item: str, key: str, rule: str) -> None:
    found = problems(FILE, [item])
    problem = found[key]
    assert problem.line is None
    assert f"run.yaml:{LINE_OF[key]}" not in rendered(problem)
    assert problem.message.startswith("(from --set) ") and rule in problem.message


def test_a_key_only_set_adds_is_blamed_on_set() -> None:
    problem = problems(FILE, ["params.learning_rate=1"])["params.learning_rate"]
    assert problem.line is None and problem.message.startswith("(from --set) unknown key in params")


def test_a_section_set_whole_blames_its_keys_on_that_set() -> None:
    problem = problems(FILE, ["params={lr: fast}"])["params.lr"]
    assert problem.line is None and "(from --set params=...)" in problem.message


def test_an_autotrain_spelling_set_blames_the_key_it_sets() -> None:
    problem = problems(FILE, ["params.evaluation_strategy=bogus"])["params.eval_strategy"]
    assert problem.line is None and "(from --set params.evaluation_strategy=...)" in problem.message


def test_the_files_own_problems_keep_their_lines() -> None:
    found = problems(FILE.replace("epochs: 2", "epochs: zero"), ["params.lr=fast"])
    assert found["params.epochs"].line == 9 and "run.yaml:9: params.epochs" in rendered(found["params.epochs"])
    assert "--set" not in found["params.epochs"].message
    assert found["params.lr"].line is None


def test_a_good_set_value_still_wins_over_the_file() -> None:
    cfg = parse_config_text(FILE, environ={}, overrides=["params.lr=2e-4"])
    assert cfg.params.lr == 2e-4 and "params.lr" not in cfg.lines and cfg.lines["params.epochs"] == 9
