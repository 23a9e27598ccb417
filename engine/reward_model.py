"""The reward model an RLHF run (issue 17: GRPO, RLOO) is scored by: what a reward model path names, checked
before any compute is spent, and loaded as the run that trained it saved it.

A reward model is a sequence-classification model with one output. The known mistake is giving the SFT model (a
causal LM): loaded as a classifier it gets a random head, and every score is noise, so it is refused with the
reason. An llmtune `llm-reward` run directory is read as that run saved it: a LoRA adapter on its base (merged
when loaded) or a full model, with the tokenizer and chat template it was trained with.

Light: JSON and YAML files only (engine.config's checks ask it). Loading and scoring: engine.reward_gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.run_files import CONFIG_FILE

ADAPTER_CONFIG = "adapter_config.json"
REWARD_TASK = "llm-reward"


class NotARewardModel(ValueError):
    """What is wrong with the reward model given, and how to fix it (for a config problem)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class RewardModel:
    name: str  # as given
    path: Path  # its directory (a local one, or its snapshot in the Hugging Face cache)
    kind: str  # "llmtune run", "adapter" or "model"
    adapter: bool  # a LoRA adapter, loaded on `base_model` and merged
    base_model: str | None  # an adapter's base
    template: str | None  # the chat template its tokenizer renders with; None without one

    def describe(self) -> str:
        what = f"a LoRA adapter on {self.base_model}" if self.adapter else "a full model"
        return f"{self.name}: {self.kind}, {what}"


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _template(directory: Path) -> str | None:
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    value = _json(directory / "tokenizer_config.json").get("chat_template")
    return value if isinstance(value, str) else None


def _llmtune_task(directory: Path) -> str | None:
    import yaml

    try:
        raw = yaml.safe_load((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return raw.get("task") if isinstance(raw, dict) else None


def _one_label_classifier(config: dict[str, Any]) -> tuple[bool, str]:
    """(is it one, what it is instead) from a model's config.json."""
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    labels = config.get("num_labels")
    if labels is None and isinstance(config.get("id2label"), dict):
        labels = len(config["id2label"])
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        kind = architectures[0] if architectures else "a model without an architecture in its config.json"
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures)
        return False, f"{kind}{' (a causal language model, not a reward model)' if causal else ''}"
    if labels not in (None, 1):
        return False, f"a classifier with {labels} labels (a reward model has one output)"
    return True, ""


def inspect_reward_model(name: str, base_dir: Path | None = None) -> RewardModel:
    """What `name` (an llmtune run directory, a model directory or a cached hub id) is, or NotARewardModel."""
    from engine.model_info import read_model_info

    info = read_model_info(name, base_dir)
    if info.path is None:
        raise NotARewardModel(f"{name} cannot be read here: {info.reason or 'not found'}",
                              info.fix or "give the run directory of an llm-reward run, or a local model directory")
    directory = Path(info.path)
    task = _llmtune_task(directory)
    if task is not None and task != REWARD_TASK:
        raise NotARewardModel(f"{name} is an llmtune run of task {task}, not a reward model (its scores would be a "
                              "random head's noise)", "give the run directory of an llm-reward run (train one with "
                              "task: llm-reward on chosen/rejected pairs)")
    kind = "llmtune run" if task == REWARD_TASK else "model"
    adapter = _json(directory / ADAPTER_CONFIG)
    if adapter:
        if adapter.get("task_type") != "SEQ_CLS":
            raise NotARewardModel(f"{name} is a LoRA adapter for {adapter.get('task_type') or 'an unknown task'}, "
                                  "not a sequence-classification (reward) adapter",
                                  "give the run directory of an llm-reward run")
        base = adapter.get("base_model_name_or_path")
        return RewardModel(name, directory, kind if task else "adapter", True, base if isinstance(base, str) else None,
                           _template(directory))
    ok, instead = _one_label_classifier(_json(directory / "config.json"))
    if not ok:
        raise NotARewardModel(f"{name} is {instead}: loaded as a reward model it would get a random score head, and "
                              "its scores would be noise", "give a sequence-classification model with one label: "
                              "the run directory of an llm-reward run, or such a model's directory")
    return RewardModel(name, directory, kind, False, None, _template(directory))
