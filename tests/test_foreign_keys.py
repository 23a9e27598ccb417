"""Keys from transformers/TRL, axolotl and LLaMA-Factory configs get "did you mean" our key from one table of known
aliases (not from spelling distance), under params: and at the top level alike, with how to convert the value where
the meaning differs."""

from __future__ import annotations

import pytest

from engine.config import FOREIGN_KEYS, VALID_KEYS, parse_config_text
from engine.errors import ConfigError

MINIMAL = """task: llm-sft
base_model: Qwen/Qwen2.5-0.5B
project_name: out
data:
  path: data
"""
SECRET = "hf_FOREIGNsecret0123"


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, environ={})
    return {p.key: p.render() for p in info.value.problems}


def hint(name: str, value: str, section: str | None) -> str:
    """The rendered problem for `name: value` written under `section:` (None: the top level)."""
    text = MINIMAL + (f"{section}:\n  {name}: {value}\n" if section else f"{name}: {value}\n")
    found = problems(text)
    key = f"{section}.{name}" if section else name
    assert list(found) == [key], found
    return found[key]


RENAMES = [
    ("learning_rate", "2e-4", "params.lr"),
    ("num_epochs", "3", "params.epochs"),
    ("num_train_epochs", "3", "params.epochs"),
    ("micro_batch_size", "4", "params.batch_size"),
    ("per_device_train_batch_size", "4", "params.batch_size"),
    ("gradient_accumulation_steps", "8", "params.gradient_accumulation"),
    ("max_seq_length", "512", "params.block_size"),
    ("sequence_len", "512", "params.block_size"),
    ("cutoff_len", "512", "params.block_size"),
    ("lora_rank", "8", "params.lora_r"),
    ("model_name_or_path", "Qwen/Qwen2.5-0.5B", "base_model"),
    ("output_dir", "runs/x", "project_name"),
    ("dataset", "data", "data.path"),
]


@pytest.mark.parametrize("section", [None, "params"], ids=["top level", "under params"])
@pytest.mark.parametrize("name, value, target", RENAMES, ids=[r[0] for r in RENAMES])
def test_other_tools_names_suggest_ours_wherever_they_stand(name: str, value: str, target: str,
                                                             section: str | None) -> None:
    text = hint(name, value, section)
    assert f"did you mean {target}? ({name} is the name in " in text
    where = f"under {target.rsplit('.', 1)[0]}:" if "." in target else "at the top level"
    assert f"here it is {target.rsplit('.', 1)[-1]}, {where}" in text


CONVERSIONS = [
    ("bf16", "true", "params.mixed_precision", "bf16: true is mixed_precision: bf16"),
    ("fp16", "true", "params.mixed_precision", "fp16: true is mixed_precision: fp16"),
    ("bf16", "false", "params.mixed_precision", "bf16: false is full precision, which is llmtune's default"),
    ("load_in_4bit", "true", "params.quantization", "load_in_4bit: true is quantization: int4 (with peft: true)"),
    ("load_in_8bit", "true", "params.quantization", "load_in_8bit: true is quantization: int8"),
    ("gradient_checkpointing", "false", "params.disable_gradient_checkpointing",
     "gradient_checkpointing: false is disable_gradient_checkpointing: true"),
    ("gradient_checkpointing", "true", "params.disable_gradient_checkpointing",
     "gradient_checkpointing: true is disable_gradient_checkpointing: false"),
    ("warmup_steps", "100", "params.warmup_ratio",
     "warmup_steps counts steps; warmup_ratio is a fraction of the run's steps: warmup_ratio: 100 / the total steps"),
    ("lora_target_modules", "[q_proj, v_proj]", "params.target_modules", "target_modules: q_proj,v_proj"),
    ("val_set_size", "0.05", "params.valid_fraction", "val_set_size: 0.05 is valid_fraction: 0.05"),
]


@pytest.mark.parametrize("section", [None, "params"], ids=["top level", "under params"])
@pytest.mark.parametrize("name, value, target, how", CONVERSIONS, ids=[f"{c[0]}={c[1]}" for c in CONVERSIONS])
def test_where_the_meaning_differs_the_hint_says_how_to_convert(name: str, value: str, target: str, how: str,
                                                                section: str | None) -> None:
    text = hint(name, value, section)
    assert f"did you mean {target}?" in text and "the meaning differs" in text
    assert how in text


def test_our_own_keys_misplaced_still_point_to_their_section() -> None:
    assert "did you mean params.max_grad_norm? (it belongs under params:)" in hint("max_grad_norm", "1.0", None)


def test_the_alias_table_names_only_our_keys_and_no_name_of_ours() -> None:
    ours = {k.rsplit(".", 1)[-1] for k in VALID_KEYS}
    assert all(alias.target in VALID_KEYS for alias in FOREIGN_KEYS.values())
    assert not ours & set(FOREIGN_KEYS)  # a key of ours is never reported as another tool's


def test_an_aliased_secret_is_not_echoed() -> None:
    text = hint("hub_token", SECRET, None)
    assert "did you mean hub.token?" in text and SECRET not in text
