"""The trainer registry (engine.tasks) is the one place that lists trainers: every spec builds, the config
rules, the params table and the wizard read it, and no other module compares against a trainer's name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from engine.config import RunConfig, parse_config_text
from engine.params import PARAM_FIELDS
from engine.tasks import ROLES, SPECS, TASKS, TRAINER_PARAMS, TRAINERS, spec, spec_for_task

ROOT = Path(__file__).resolve().parents[1]
NAMES = set(TRAINERS) | set(TASKS)


def test_every_spec_is_complete_and_names_a_module_with_build() -> None:
    assert len({s.trainer for s in SPECS}) == len(SPECS) and len({s.task for s in SPECS}) == len(SPECS)
    for s in SPECS:
        assert s.label and s.purpose and s.columns_hint and s.card_name, s
        assert set(s.required) <= set(s.roles) <= set(ROLES)
        assert set(s.params) <= set(PARAM_FIELDS), f"{s.trainer} reads params that are not in engine.params"
        assert callable(importlib.import_module(s.build_module).build)
        assert spec_for_task(s.task) is s and spec(s.trainer) is s
    assert spec_for_task("llm") is None


def test_the_params_table_and_the_config_rules_take_their_trainers_from_the_registry() -> None:
    assert PARAM_FIELDS["trainer"].metadata["choices"] == TRAINERS
    mapping = "data:\n  column_mapping: {prompt_text_column: p, text_column: c, rejected_text_column: r}\n"
    for s in SPECS:
        reward = "params:\n  reward_model: runs/reward\n" if s.online else ""
        cfg = parse_config_text(f"task: {s.task}\nbase_model: m\nproject_name: p\n" + mapping + reward)
        assert cfg.trainer == s.trainer and cfg.spec is s
    generic = parse_config_text("task: llm\nbase_model: m\nproject_name: p\nparams:\n  trainer: dpo\n" + mapping)
    assert generic.spec is spec("dpo")


def test_an_unknown_trainer_reads_as_the_default_spec_until_the_rules_refuse_it() -> None:
    cfg = RunConfig(task="llm")
    cfg.params.trainer = "ppo"
    assert cfg.spec is spec("default")


def test_only_the_params_some_trainers_read_are_hidden_for_the_others() -> None:
    assert "lr" not in TRAINER_PARAMS and spec("dpo").reads("lr")
    assert spec("dpo").reads("dpo_beta") and not spec("sft").reads("dpo_beta")
    assert spec("sft").reads("train_on_all_tokens") and not spec("default").reads("train_on_all_tokens")


def _compared_names(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants naming a trainer or a task that take part in a comparison (==, !=, in, not in)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            found += [(node.lineno, item.value) for item in items
                      if isinstance(item, ast.Constant) and item.value in NAMES]
    return found


def test_no_module_but_the_registry_compares_against_a_trainer_name() -> None:
    offenders = []
    for path in sorted([*ROOT.glob("engine/**/*.py"), *ROOT.glob("tui/**/*.py")]):
        if path == ROOT / "engine" / "tasks.py":
            continue
        for line, name in _compared_names(ast.parse(path.read_text(), str(path))):
            offenders.append(f"{path.relative_to(ROOT)}:{line} compares with {name!r}")
    assert not offenders, "ask engine.tasks (a spec's fields) instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source", ['x = trainer == "dpo"', 'ok = cfg.trainer in ("sft", "orpo")'])
def test_the_scan_finds_a_comparison_with_a_trainer_name(source: str) -> None:
    assert _compared_names(ast.parse(source))
