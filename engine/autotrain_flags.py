"""`autotrain llm`'s command line, as config keys: every flag AutoTrain's help lists, in both its spellings, plus
one flag for every other key of the config (llmtune's additions), all made from the same tables the YAML is
read through (engine.params, engine.config's sections). Nothing here is a second list of parameters: a param
added to engine.params gets its flags here by itself.

`config_from_flags` turns what was given into the raw mapping a YAML file would hold, and says which flag gave
each key, so a bad value is blamed on the flag (`--lr`) and not on a file line. Standard library only.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from engine.params import PARAM_FIELDS

# AutoTrain's help groups, in its order (engine.autotrain_flags.Flag.group)
GROUPS = ("commands", "hub and backend", "model and data", "columns and templates", "training parameters",
          "llmtune's additions")
COMMANDS = ("--train", "--deploy", "--inference")  # what `autotrain llm` does; llmtune runs --train only
# Flags that are not `--key` / `--key-with-dashes` of their config key, as AutoTrain spells them.
ALIASES: dict[str, tuple[str, ...]] = {
    "base_model": ("--model",),
    "project_name": ("--project-name", "--project_name"),
    "data.path": ("--data-path", "--data_path"),
    "data.train_split": ("--train-split", "--train_split"),
    "data.valid_split": ("--valid-split", "--valid_split"),
    "hub.username": ("--username",),
    "hub.token": ("--token",),
    "hub.push_to_hub": ("--push-to-hub", "--push_to_hub"),
    "params.batch_size": ("--batch-size", "--batch_size", "--train-batch-size", "--train_batch_size"),
    "params.peft": ("--peft", "--use-peft", "--use_peft"),
    "params.disable_gradient_checkpointing": ("--disable_gradient_checkpointing", "--disable-gradient-checkpointing",
                                              "--disable-gc"),
    "params.use_flash_attention_2": ("--use_flash_attention_2", "--use-flash-attention-2", "--use-fa2"),
    "params.eval_strategy": ("--evaluation_strategy", "--evaluation-strategy", "--eval_strategy", "--eval-strategy"),
}
# The config keys `autotrain llm --help` has flags for (the rest are llmtune's additions).
AUTOTRAIN_KEYS = frozenset({
    "hub.username", "backend", "hub.token", "hub.push_to_hub", "base_model", "project_name", "data.path",
    "data.train_split", "data.valid_split", "log", "data.column_mapping.text_column",
    "data.column_mapping.rejected_text_column", "data.column_mapping.prompt_text_column", "data.chat_template",
    *(f"params.{name}" for name in (
        "batch_size", "seed", "epochs", "gradient_accumulation", "disable_gradient_checkpointing", "lr", "model_ref",
        "warmup_ratio", "optimizer", "scheduler", "weight_decay", "max_grad_norm", "add_eos_token", "block_size",
        "peft", "lora_r", "lora_alpha", "lora_dropout", "logging_steps", "eval_strategy", "save_total_limit",
        "auto_find_batch_size", "mixed_precision", "quantization", "model_max_length", "max_prompt_length",
        "max_completion_length", "trainer", "target_modules", "merge_adapter", "use_flash_attention_2", "dpo_beta",
        "padding")),
})
BACKENDS_HERE = ("local-cli", "local")  # AutoTrain's spaces-* backends train on Hugging Face's machines


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]  # every spelling, the first as the help shows it
    key: str  # the config key it sets ("" for a command)
    switch: bool  # takes no value: it sets a true/false key (or is a command)
    group: str  # one of GROUPS
    help: str
    default: Any  # the config's default when the flag is not given
    choices: tuple | None = None
    negates: bool = False  # `--no-...`: sets the switch to false

    @property
    def dest(self) -> str:
        """argparse's name for it (a `--no-...` flag's differs from its switch's)."""
        return self.names[0].lstrip("-").replace("-", "_")


def _spellings(name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((f"--{name}", f"--{name.replace('_', '-')}")))


def _group(key: str) -> str:
    if key.startswith("hub.") or key == "backend":
        return "hub and backend"
    if key.startswith("data.column_mapping.") or key in ("data.chat_template", "data.prompt_template",
                                                         "data.completion_template"):
        return "columns and templates"
    if not key.startswith("params."):
        return "model and data"
    return "training parameters" if key in AUTOTRAIN_KEYS else "llmtune's additions"


def _config_keys() -> list[tuple[str, Any, str, tuple | None, str]]:
    """(config key, default, type, choices, help) of every key a flag can set, in the config's order."""
    from engine.config import SECTIONS, TOP_KEYS, RunConfig

    out: list[tuple[str, Any, str, tuple | None, str]] = []
    top = {f.name: f for f in fields(RunConfig)}
    for name in TOP_KEYS:
        if name in SECTIONS:
            continue
        out.append((name, top[name].default, str(top[name].type), None, _TOP_HELP[name]))
    for prefix, cls in SECTIONS.items():
        if prefix == "params":
            continue
        for f in fields(cls):
            if f.name == "column_mapping":
                continue
            default = f.default if f.default is not MISSING else None
            out.append((f"{prefix}.{f.name}", default, str(f.type), f.metadata.get("choices"),
                        _TOP_HELP.get(f"{prefix}.{f.name}", "")))
    for name, f in PARAM_FIELDS.items():
        default = f.default if f.default is not MISSING else None
        out.append((f"params.{name}", default, str(f.type), f.metadata["choices"], f.metadata["help"]))
    return out


_TOP_HELP = {
    "task": "the AutoTrain task (llm, llm-sft, ...); `llm` with --trainer is AutoTrain's CLI",
    "base_model": "the model to fine-tune: a hub id or a local model directory",
    "project_name": "the output directory (the run directory)",
    "log": "experiment tracking",
    "backend": "where to train: local-cli (this machine); AutoTrain's spaces-* backends are refused",
    "data.path": "a directory holding {split}.csv/.jsonl/.json/.parquet, one data file, or a hub dataset id",
    "data.train_split": "the training split",
    "data.valid_split": "the validation split (none by default)",
    "data.chat_template": "tokenizer, chatml, zephyr or None",
    "data.column_mapping.text_column": "the text (or chosen) column",
    "data.column_mapping.rejected_text_column": "the rejected column (reward, DPO, ORPO)",
    "data.column_mapping.prompt_text_column": "the prompt column (DPO, ORPO, GRPO, RLOO; optional for SFT, reward)",
    "data.prompt_template": "a format string over columns that builds the prompt",
    "data.completion_template": "a format string over columns that builds the completion",
    "hub.username": "Hugging Face username, for --push-to-hub",
    "hub.token": "Hugging Face token (never written to a file)",
    "hub.push_to_hub": "upload the result to the hub once trained",
}


def flags() -> list[Flag]:
    """Every flag, in the config's order: AutoTrain's spellings first, a `--no-...` for switches that are on by
    default."""
    out = [Flag((name,), "", True, "commands", help, False) for name, help in (
        ("--train", "train (as --config FILE --yes does)"),
        ("--deploy", "AutoTrain's deployment: refused (llmtune trains; serve the result with your own server)"),
        ("--inference", "AutoTrain's inference: refused (load the run directory with transformers)"))]
    column_alias = {"data.column_mapping.prompt_text_column": ("--prompt-text-column", "--prompt_text_column")}
    for key, default, type_, choices, help in _config_keys():
        name = key.rsplit(".", 1)[-1]
        names = ALIASES.get(key) or column_alias.get(key) or _spellings(name)
        switch = type_ == "bool"
        out.append(Flag(names, key, switch, _group(key), help, default, choices))
        if switch and default is True:
            out.append(Flag(tuple(f"--no-{n[2:]}" for n in names[:2]), key, True, _group(key),
                            f"set {key} to false", default, negates=True))
    return out


def flag_for(key: str) -> Flag:
    return next(f for f in flags() if f.key == key and not f.negates)


def config_from_flags(given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the raw nested mapping a YAML file would hold, config key -> the flag that set it) from the flags given:
    {flag dest: value}, a switch's value True. AutoTrain's CLI is task `llm` with params.trainer."""
    raw: dict[str, Any] = {"task": "llm"}
    origins: dict[str, str] = {}
    by_dest = {f.dest: f for f in flags()}
    for dest, value in given.items():
        flag = by_dest[dest]
        if not flag.key:
            continue
        node = raw
        parts = flag.key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = (not flag.negates) if flag.switch else value
        origins[flag.key] = flag.names[0]
    return raw, origins
