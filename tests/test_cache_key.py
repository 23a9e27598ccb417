"""The prepared-data cache key (engine.cache_key): the same for an unchanged re-run, different after each kind
of change that alters the ids or masks (data file edited, mapping, template, chat template, tokenizer, block
size, length limits, trainer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engine.cache_key import cache_key
from engine.config import RunConfig
from engine.pipeline import prepare_tokenizer
from support import CHATS, PAIRS, tiny_config

SFT = {"chat_template": "chatml", "column_mapping": {"text_column": "messages"}}


def key_of(cfg: RunConfig, tokenizer: Any = None, block_size: int = 64) -> str:
    tokenizer, setup = prepare_tokenizer(cfg, tokenizer)
    return cache_key(cfg, tokenizer, setup, block_size)


def config(directory: Path, tiny_model: Path, **changes: Any) -> RunConfig:
    """A config over directory/train.jsonl, written once: writing it again would change its time, and so the key."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {} if (directory / "train.jsonl").exists() else {"train.jsonl": CHATS}
    data = {**SFT, "path": str(directory), **changes.pop("data", {})}
    return tiny_config(directory, tiny_model, files, **changes, **data)


def test_an_unchanged_rerun_has_the_same_key(tmp_path: Path, tiny_model: Path) -> None:
    first = key_of(config(tmp_path, tiny_model))
    assert key_of(config(tmp_path, tiny_model)) == first  # the same file, untouched, in a new config
    assert key_of(config(tmp_path / "copy", tiny_model)) != first  # the same rows in another file


def test_an_edited_data_file_misses(tmp_path: Path, tiny_model: Path) -> None:
    cfg = config(tmp_path, tiny_model)
    before = key_of(cfg)
    path = tmp_path / "train.jsonl"
    stat = path.stat()
    path.write_text(path.read_text().replace("plus", "PLUS"))  # the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == stat.st_size and key_of(cfg) != before


@pytest.mark.parametrize("change", [
    {"data": {"chat_template": "zephyr"}},
    {"data": {"column_mapping": {"text_column": "messages", "prompt_text_column": "messages"}}},
    {"data": {"prompt_template": "Q: {messages}\n"}},
    {"params": {"max_completion_length": 16}},
    {"params": {"train_on_all_tokens": True}},
    {"params": {"valid_fraction": 0.25}},
    {"task": "llm-generic"},
])
def test_each_kind_of_change_misses(tmp_path: Path, tiny_model: Path, change: dict[str, Any]) -> None:
    base = key_of(config(tmp_path / "a", tiny_model))
    assert key_of(config(tmp_path / "a", tiny_model, **change)) != base


def test_the_block_size_and_the_tokenizer_are_in_the_key(tmp_path: Path, tiny_model: Path) -> None:
    cfg = config(tmp_path, tiny_model)
    tokenizer, _ = prepare_tokenizer(cfg)
    assert key_of(cfg, block_size=64) == key_of(cfg, block_size=64)
    assert key_of(cfg, block_size=32) != key_of(cfg, block_size=64)
    before = key_of(cfg, tokenizer)
    tokenizer.add_tokens(["<new-token>"])
    assert key_of(cfg, tokenizer) != before


def test_pairs_for_two_trainers_have_two_keys(tmp_path: Path, tiny_model: Path) -> None:
    mapping = {"prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"}
    keys = {key_of(tiny_config(tmp_path, tiny_model, {"train.jsonl": PAIRS}, task=task, column_mapping=mapping,
                               path=str(tmp_path)))
            for task in ("llm-dpo", "llm-orpo", "llm-reward")}
    assert len(keys) == 3
