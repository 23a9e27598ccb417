"""The run config: AutoTrain-compatible YAML <-> a typed model, and every rule that checks it.

Reading a config never imports torch & co. `load_config` parses, substitutes `${VAR}`, applies `--set`
overrides, converts types and runs the static rules, reporting every problem at once with the key, the
value, the rule and a fix (and the file line when known). `check_environment` adds what needs a look at
this machine (the model and data exist, the hardware runs the asked precision and quantization, LoRA's
target modules exist in the model); it stays cheap and only imports torch when the config asks for a
precision, a quantization or named target modules.

Whatever the input, reading ends in a result or in problems, never in a hang or an exception: the YAML is
bounded (nesting, alias expansion, integer size) before it is built, numbers must be finite and fit the types
torch uses, and values are shown in messages cut short without being rendered whole.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import string
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from engine.errors import SECRET_KEYS, ConfigError, Problem, show_value
from engine.model_names import model_id_problem, resolve_local
from engine.params import INT_LIMIT, PARAM_FIELDS, Params
from engine.target_modules import parse_targets
from engine.tasks import BY_TRAINER, DEFAULT_TRAINER, ROLE_MEANINGS, TASKS, TrainerSpec
from engine.trackers import TRACKERS

CHAT_TEMPLATES = ("none", "zephyr", "chatml", "tokenizer")
LOGGERS = ("none", *TRACKERS)  # engine.trackers: what each needs, checked before a run
BACKENDS_LOCAL = ("local", "local-cli", "local-ui")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
# SECRET_KEYS (imported from engine.errors, where Problem hides their values) is part of this module's API.

# What a config's YAML may hold. A real config is four levels deep with a few dozen values; far beyond these
# bounds the text is a mistake or an attack, and refusing it before it is built keeps every later step
# (building, comparing, messages) small. Aliases (*name) are measured rather than refused: a file may reuse
# a value through an anchor, and only their expansion turns a "billion laughs" text of 2 KB into 10**9 values.
MAX_NESTING = 32
MAX_VALUES = 10_000
MAX_INT_CHARS = 100  # an integer written with more characters than this is no setting (Python refuses > 4300)
# File name limits (Linux: NAME_MAX and PATH_MAX); static rules do not look at the actual file system.
NAME_MAX = 255
PATH_MAX = 4096
PATH_KEYS = ("project_name", "base_model", "data.path", "data.train_split", "data.valid_split", "params.model_ref")
# Widths and precisions in a template: a few dozen are useful; {x:>999999999} exhausts memory at format time.
MAX_FORMAT_NUMBER = 1000


@dataclass
class ColumnMapping:
    text_column: str = "text"
    rejected_text_column: str | None = None
    prompt_text_column: str | None = None


@dataclass
class DataConfig:
    path: str = "data"
    train_split: str = "train"
    valid_split: str | None = None
    chat_template: str = field(default="none", metadata={"choices": CHAT_TEMPLATES})
    column_mapping: ColumnMapping = field(default_factory=ColumnMapping)
    # llmtune's additions: format strings over column names that build prompt/completion pairs.
    prompt_template: str | None = None
    completion_template: str | None = None

    def splits(self) -> list[tuple[str, str]]:
        """(role, split name) of the splits read: train, and valid when data.valid_split names one."""
        return [("train", self.train_split)] + ([("valid", self.valid_split)] if self.valid_split else [])


@dataclass
class HubConfig:
    username: str | None = None
    token: str | None = None
    push_to_hub: bool = False


@dataclass
class RunConfig:
    task: str = "llm-sft"
    base_model: str = ""
    project_name: str = "llmtune-run"
    log: str = "none"
    backend: str = "local"
    data: DataConfig = field(default_factory=DataConfig)
    params: Params = field(default_factory=Params)
    hub: HubConfig = field(default_factory=HubConfig)
    # Where the config came from, to resolve relative paths and to name the file in messages.
    source: Path | None = field(default=None, compare=False)
    # dotted key -> the `${VAR}` text it was written as (secrets are written back that way).
    env_refs: dict[str, str] = field(default_factory=dict, compare=False)
    # dotted key -> names of variables it references that are unset.
    unset_env: dict[str, list[str]] = field(default_factory=dict, compare=False)
    # dotted key -> line in the config file.
    lines: dict[str, int] = field(default_factory=dict, compare=False)
    # dotted keys given by `--set KEY=VALUE` (a problem with one is the option's, not the file's) -> the KEY.
    overrides: dict[str, str] = field(default_factory=dict, compare=False)
    # dotted key -> the command-line flag that gave it (`llmtune-tui llm --lr ...`): its problems are the flag's.
    given_as: dict[str, str] = field(default_factory=dict, compare=False)
    # keys that were absent from the file (their defaults were used).
    defaulted: set[str] = field(default_factory=set, compare=False)
    warnings: list[Problem] = field(default_factory=list, compare=False)

    @property
    def trainer(self) -> str:
        return TASKS.get(self.task) or self.params.trainer

    @property
    def spec(self) -> TrainerSpec:
        """The trainer's spec (engine.tasks). An unknown params.trainer (refused by the rules) reads as the
        default trainer, so that the other checks still run."""
        return BY_TRAINER.get(self.trainer) or BY_TRAINER[DEFAULT_TRAINER]

    @property
    def base_dir(self) -> Path | None:
        return self.source.parent if self.source else None

    def problem(self, key: str, message: str, fix: str | None = None, value: Any = None,
                show_value: bool = True) -> Problem:
        """A Problem about `key`, with its line in the file when known, or saying it came from --set."""
        if show_value:
            return self.located(Problem(key, message, fix, value))
        return self.located(Problem(key, message, fix))

    def set_by(self, key: str) -> str | None:
        """The KEY of the `--set KEY=VALUE` that gave `key` its value (it, or a section holding it)."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            item = self.overrides.get(".".join(parts[:n]))
            if item is not None:
                return item
        return None

    def located(self, p: Problem) -> Problem:
        """`p` placed: a value from `--set` is said to come from it (the file's line for that key would blame a
        line that does not hold the value); otherwise the key's line in the file, when known."""
        flag = self.given_as.get(p.key)
        if flag is not None:  # a fix written as YAML (`lr: 3e-5`) is said as the flag (`--lr 3e-5`)
            leaf = p.key.rsplit(".", 1)[-1]
            fix = p.fix.replace(f"e.g. {leaf}: ", f"e.g. {flag} ") if p.fix else p.fix
            return replace(p, message=f"(from {flag}) {p.message}", fix=fix, line=None)
        given = self.set_by(p.key)
        if given is not None:  # the value is not repeated here: Problem shows it, or hides it for a secret
            where = "--set" if given == p.key else f"--set {_cut(given, 60)}=..."
            return replace(p, message=f"(from {where}) {p.message}", line=None)
        return p if p.line is not None else replace(p, line=self.lines.get(p.key))


SECTIONS: dict[str, type] = {"data": DataConfig, "data.column_mapping": ColumnMapping, "hub": HubConfig,
                             "params": Params}
TOP_KEYS = ("task", "base_model", "project_name", "log", "backend", "data", "params", "hub")

# AutoTrain flattens every key into its params; configs in the wild put these under `params:` too.
RELOCATED = {
    "params.chat_template": "data.chat_template",
    "params.text_column": "data.column_mapping.text_column",
    "params.rejected_text_column": "data.column_mapping.rejected_text_column",
    "params.prompt_text_column": "data.column_mapping.prompt_text_column",
    "params.train_split": "data.train_split",
    "params.valid_split": "data.valid_split",
    "params.data_path": "data.path",
    "params.model": "base_model",
    "params.project_name": "project_name",
    "params.log": "log",
    "params.username": "hub.username",
    "params.token": "hub.token",
    "params.push_to_hub": "hub.push_to_hub",
    "params.evaluation_strategy": "params.eval_strategy",
}


def _true(value: Any) -> bool:
    """How a YAML switch reads (checked without rendering the value: it may be anything)."""
    return value is True or value == 1 or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "on"))


_DEFAULT = "is llmtune's default: remove the line"


def _switch(on: str, off: str) -> Callable[[str, Any], str]:
    """For another tool's true/false key: what its true (`on`) and its false (`off`) are written as here, e.g.
    "mixed_precision: bf16", or a clause starting with "is" where nothing needs writing."""
    def convert(name: str, value: Any) -> str:
        ours = on if _true(value) else off
        return f"{name}: {'true' if _true(value) else 'false'} {ours if ours.startswith('is') else 'is ' + ours}"
    return convert


def _modules(name: str, value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value[:20]):
        value = ",".join(v[:60] for v in value[:20])  # cut before joining: a value may be huge
    shown = _cut(value, 60) if isinstance(value, str) else "q_proj,v_proj"
    return f"a list is one comma-separated text here: target_modules: {shown} (or all-linear)"


def _number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return show_value(value, 20) if ok else None


def _warmup(name: str, value: Any) -> str:
    steps = _number(value) or "N"
    return (f"{name} counts steps; warmup_ratio is a fraction of the run's steps: warmup_ratio: {steps} / the total "
            "steps (the dry run shows them), e.g. warmup_ratio: 0.1")


def _holdout(name: str, value: Any) -> str:
    if isinstance(value, float) and 0 < value < 1:
        return f"{name}: {_number(value)} is valid_fraction: {_number(value)}"
    return "valid_fraction is a fraction of the train rows (e.g. 0.05 holds out 5%), not a count"


def _adapter(name: str, value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if text == "qlora":
        return f"{name}: qlora is peft: true (quantization int4 is then the default)"
    if text == "lora":
        return f"{name}: lora is peft: true with quantization: none (with peft, int4 is the default)"
    if text == "full":
        return f"{name}: full is peft: false, {_DEFAULT}"
    return "LoRA is peft: true; full fine-tuning is peft: false (the default)"


def _bits(name: str, value: Any) -> str:
    bits = value if isinstance(value, int) and not isinstance(value, bool) else None
    if bits in (4, 8):
        return f"{name}: {bits} is quantization: int{bits} (with peft: true)"
    return "quantization: int4 or int8 (with peft: true)"


def _attention(name: str, value: Any) -> str:
    if isinstance(value, str) and "flash" in value.lower():
        return "flash attention is use_flash_attention_2: true"
    return f"the default attention {_DEFAULT}; flash-attention 2 is use_flash_attention_2: true"


def _say(text: str) -> Callable[[str, Any], str]:
    return lambda name, value: text


@dataclass(frozen=True)
class ForeignKey:
    """Another tool's name for one of our keys: what an unknown key most likely meant."""

    target: str  # our dotted key
    tools: str  # whose name it is
    # (the name, the value) -> how it is written here, where the meaning differs; None: the same meaning
    convert: Callable[[str, Any], str] | None = None


_T, _TRL, _AX, _LF = "transformers", "TRL", "axolotl", "LLaMA-Factory"
# The one table of other tools' spellings (transformers TrainingArguments, TRL, axolotl, LLaMA-Factory, AutoTrain's
# CLI flags), by the key's own name wherever it stands: `learning_rate` at the top level or under params: is
# params.lr. They are refused with "did you mean", not taken: where the meaning differs a silent rename would
# run something else than what was written (warmup_steps is a count, warmup_ratio a fraction).
FOREIGN_KEYS: dict[str, ForeignKey] = {
    "learning_rate": ForeignKey("params.lr", f"{_T}, {_TRL}, {_AX} and {_LF}"),
    "num_epochs": ForeignKey("params.epochs", _AX),
    "num_train_epochs": ForeignKey("params.epochs", f"{_T}, {_TRL} and {_LF}"),
    "micro_batch_size": ForeignKey("params.batch_size", _AX),
    "per_device_train_batch_size": ForeignKey("params.batch_size", f"{_T}, {_TRL} and {_LF}"),
    "train_batch_size": ForeignKey("params.batch_size", "AutoTrain's CLI"),
    "per_device_eval_batch_size": ForeignKey("params.batch_size", _T, _say("batch_size is the evaluation "
                                             "batch size too: remove the line")),
    "gradient_accumulation_steps": ForeignKey("params.gradient_accumulation", f"{_T}, {_TRL}, {_AX} and {_LF}"),
    "max_seq_length": ForeignKey("params.block_size", _TRL),
    "max_length": ForeignKey("params.block_size", _TRL),
    "max_seq_len": ForeignKey("params.block_size", "several tools"),
    "sequence_len": ForeignKey("params.block_size", _AX),
    "cutoff_len": ForeignKey("params.block_size", _LF),
    "lora_rank": ForeignKey("params.lora_r", _LF),
    "lora_target": ForeignKey("params.target_modules", _LF, _modules),
    "lora_target_modules": ForeignKey("params.target_modules", _AX, _modules),
    "warmup_steps": ForeignKey("params.warmup_ratio", f"{_T}, {_AX} and {_LF}", _warmup),
    "lr_scheduler_type": ForeignKey("params.scheduler", f"{_T} and {_LF}"),
    "lr_scheduler": ForeignKey("params.scheduler", _AX),
    "optim": ForeignKey("params.optimizer", f"{_T} and {_LF}"),
    "bf16": ForeignKey("params.mixed_precision", f"{_T}, {_AX} and {_LF}",
                       _switch("mixed_precision: bf16", f"full precision, which {_DEFAULT}")),
    "fp16": ForeignKey("params.mixed_precision", f"{_T}, {_AX} and {_LF}",
                       _switch("mixed_precision: fp16", f"full precision, which {_DEFAULT}")),
    "load_in_4bit": ForeignKey("params.quantization", f"{_T} and {_AX}",
                               _switch("quantization: int4 (with peft: true)", "quantization: none")),
    "load_in_8bit": ForeignKey("params.quantization", f"{_T} and {_AX}",
                               _switch("quantization: int8 (with peft: true)", "quantization: none")),
    "quantization_bit": ForeignKey("params.quantization", _LF, _bits),
    "gradient_checkpointing": ForeignKey("params.disable_gradient_checkpointing", f"{_T}, {_AX} and {_LF}",
                                         _switch("is disable_gradient_checkpointing: false (without it llmtune "
                                                 "chooses from the memory estimate)",
                                                 "disable_gradient_checkpointing: true")),
    "use_peft": ForeignKey("params.peft", _TRL),
    "adapter": ForeignKey("params.peft", _AX, _adapter),
    "finetuning_type": ForeignKey("params.peft", _LF, _adapter),
    "train_on_inputs": ForeignKey("params.train_on_all_tokens", _AX),
    "beta": ForeignKey("params.dpo_beta", _TRL),
    "pref_beta": ForeignKey("params.dpo_beta", _LF),
    "flash_attention": ForeignKey("params.use_flash_attention_2", _AX),
    "attn_implementation": ForeignKey("params.use_flash_attention_2", _T, _attention),
    "evaluation_strategy": ForeignKey("params.eval_strategy", f"older {_T}"),
    "val_set_size": ForeignKey("params.valid_fraction", _AX, _holdout),
    "model_name_or_path": ForeignKey("base_model", f"{_T}, {_TRL} and {_LF}"),
    "model_name": ForeignKey("base_model", "several tools"),
    "model": ForeignKey("base_model", "AutoTrain's CLI"),
    "output_dir": ForeignKey("project_name", f"{_T}, {_TRL}, {_AX} and {_LF}"),
    "dataset": ForeignKey("data.path", _LF),
    "datasets": ForeignKey("data.path", _AX, _say("llmtune reads one data set: data.path is a data directory, a "
                           "file or a datasets id, and data.column_mapping names its columns")),
    "dataset_name": ForeignKey("data.path", _TRL),
    "dataset_path": ForeignKey("data.path", "several tools"),
    "train_file": ForeignKey("data.path", _T),
    "data_path": ForeignKey("data.path", "AutoTrain's CLI"),
    "dataset_text_field": ForeignKey("data.column_mapping.text_column", _TRL),
    "template": ForeignKey("data.chat_template", _LF, _say("chat_template is tokenizer (the model's own), "
                           "chatml, zephyr or none")),
    "hub_token": ForeignKey("hub.token", _T),
    "hub_model_id": ForeignKey("project_name", _T, _say("the repo is hub.username/project_name, pushed with "
                               "hub.push_to_hub: true")),
    "report_to": ForeignKey("log", _T, _say("log is one of none, tensorboard, wandb, mlflow, trackio")),
}


def _all_keys() -> list[str]:
    keys = [k for k in TOP_KEYS if k not in ("data", "params", "hub")]
    for prefix, cls in SECTIONS.items():
        keys += [f"{prefix}.{f.name}" for f in fields(cls) if f.name != "column_mapping"]
    return keys


VALID_KEYS = _all_keys()


# ---------------------------------------------------------------- reading


def load_config(path: str | Path, overrides: list[str] | None = None,
                environ: dict[str, str] | None = None, *, check_env: bool = False) -> RunConfig:
    """Read a config file; raise ConfigError listing every problem (with check_env, the machine's too)."""
    path = Path(path)
    return parse_config_text(_read_text(path), source=path, overrides=overrides, environ=environ,
                             check_env=check_env)


def load_config_lenient(path: str | Path) -> tuple[RunConfig, list[Problem]]:
    """For the wizard: the config as far as it could be read, with its problems (to show, not to stop on).
    Raises ConfigError only when the file cannot be read or is not YAML at all."""
    path = Path(path)
    raw, lines, problems = _read_yaml(_read_text(path))
    if raw is None:
        raise ConfigError(problems, source=str(path))
    cfg, more = build_config(raw, lines=lines, source=path)
    return cfg, problems + more


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "no such config file",
                                   "check the path, or run `llmtune-tui` without --config to build one")])
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(str(path), f"cannot read the config file: {e}")])


def parse_config_text(text: str, *, source: Path | None = None, overrides: list[str] | None = None,
                      environ: dict[str, str] | None = None, check_env: bool = False,
                      given_as: dict[str, str] | None = None, name: str | None = None) -> RunConfig:
    """`given_as`: config key -> the command-line flag that set it; `name`: what messages call the config."""
    name = name or (str(source) if source else "<config>")
    raw, lines, problems = _read_yaml(text)
    if raw is None:
        raise ConfigError(problems, source=name)
    problems += apply_overrides(raw, overrides or [])
    cfg, more = build_config(raw, lines=lines, source=source, environ=environ, overrides=overrides,
                             given_as=given_as)
    problems += more
    if check_env:
        problems = _with_environment(cfg, problems)
    if problems:
        raise ConfigError(problems, source=name)
    return cfg


def _read_yaml(text: str) -> tuple[dict | None, dict[str, int], list[Problem]]:
    """Parse YAML, keeping the line of every key and refusing duplicate keys."""
    try:
        data, lines, problems = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        what = getattr(e, "problem", None) or str(e)
        return None, {}, [Problem("yaml", f"not valid YAML: {what}",
                                  "check the indentation and quoting around this line",
                                  line=mark.line + 1 if mark else None)]
    except YamlRefused as e:
        return None, {}, e.problems
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, {}, [Problem("yaml", "the config must be a mapping of keys (task:, base_model:, ...)",
                                  line=1)]
    return data, lines, problems


def _walk_lines(node: Any, prefix: str, lines: dict[str, int], problems: list[Problem]) -> None:
    """Recursive, but over mappings only, whose nesting load_yaml has bounded."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue  # a list or mapping as a key: construction has refused it already
        key = f"{prefix}{_key_text(key_node.value, key_node.tag == _STR_TAG)}"
        line = key_node.start_mark.line + 1
        if key in seen:
            problems.append(Problem(key, f"appears twice (first on line {lines[key]}); the later one would "
                                    "silently win", "keep only one", line=line))
        seen.add(key)
        lines[key] = line
        _walk_lines(value_node, key + ".", lines, problems)


def _key_text(key: Any, is_text: bool = True) -> str:
    """A key as it appears in dotted keys; one with dots of its own is quoted, so that `"params.lr": 1` at the
    top level is never mistaken for params.lr (and its line never taken for params.lr's)."""
    return f'"{key}"' if is_text and isinstance(key, str) and "." in key else str(key)


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")
_INT_TAG = "tag:yaml.org,2002:int"
_KINDS = {_INT_TAG: "whole number", "tag:yaml.org,2002:float": "number", "tag:yaml.org,2002:bool": "true or false",
          "tag:yaml.org,2002:timestamp": "date", "tag:yaml.org,2002:binary": "base64 binary value"}


class YamlRefused(Exception):
    """YAML that parses, but that llmtune will not build: too deep, expanding too far, or holding a value
    that cannot be read. Carries the problems, each with its key."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.render() for p in problems))
        self.problems = problems


def load_yaml(text: str, where: str = "") -> tuple[Any, dict[str, int], list[Problem]]:
    """Parse and build YAML within the bounds above: (the value, the line of every dotted key, duplicate keys).
    Raises yaml.YAMLError for text that is not YAML, YamlRefused for YAML nested too deep, expanding too far
    through aliases, or holding a value that cannot be read. `where` is the dotted key whose value the text is
    (a --set value); '' for a file. Each step is linear in the text: nothing recursive runs before the nesting
    is known to be bounded."""
    _check_nesting(text, where)  # the composer and the constructor recurse once per level
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        _check_expansion(node, where)
        problems = _check_scalars(loader, node, where)
        if problems:
            raise YamlRefused(problems)
        lines: dict[str, int] = {}
        _walk_lines(node, "", lines, problems)  # before construction, which rewrites merge keys (<<) in place
        try:
            return loader.construct_document(node), lines, problems
        except yaml.YAMLError:
            raise
        except Exception as e:  # noqa: BLE001 - a constructor failing on something the checks let through
            raise YamlRefused([Problem(where or "yaml", f"a value cannot be read ({type(e).__name__})",
                                       "quote values that are meant as text")])
    finally:
        loader.dispose()


def _dotted(where: str, path: list[str]) -> str:
    return ".".join([where] * bool(where) + path) or "yaml"


def _check_nesting(text: str, where: str) -> None:
    """Refuse nesting deeper than MAX_NESTING from the event stream, which PyYAML produces without recursion."""
    stack: list[list[Any]] = []  # per open collection: [is a mapping, next node is a key, the current key]
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, yaml.CollectionStartEvent)):
            if stack and stack[-1][0]:
                if stack[-1][1]:
                    stack[-1][2] = _key_text(event.value) if isinstance(event, yaml.ScalarEvent) else "?"
                stack[-1][1] = not stack[-1][1]
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append([isinstance(event, yaml.MappingStartEvent), True, None])
                if len(stack) > MAX_NESTING:
                    path = [e[2] for e in stack[:-1] if e[0] and e[2] is not None]
                    raise YamlRefused([Problem(_dotted(where, path), f"is nested more than {MAX_NESTING} levels "
                                               "deep; a config is a few levels deep",
                                               "write a single value here (check the brackets and indentation)",
                                               line=event.start_mark.line + 1 if not where else None)])
        elif isinstance(event, yaml.CollectionEndEvent):
            stack.pop()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a node graph that aliases expand beyond MAX_VALUES values or MAX_NESTING levels, or that refers to
    itself. Measured once per node (aliases share nodes), iteratively, so the measurement itself is linear."""
    size: dict[yaml.Node, int] = {}
    depth: dict[yaml.Node, int] = {}
    cyclic: set[yaml.Node] = set()
    entered: set[yaml.Node] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not children_done:
            if node not in entered:
                entered.add(node)
                stack.append((node, True))
                stack.extend((kid, False) for kid in _children(node))
            continue
        total, deepest = 1, 0
        for kid in _children(node):
            if kid not in size or kid in cyclic:  # not measured yet at its parent's end: an ancestor
                cyclic.add(node)
                total = MAX_VALUES + 1
            else:
                total += size[kid]
                deepest = max(deepest, depth[kid])
        size[node], depth[node] = min(total, MAX_VALUES + 1), min(deepest + 1, MAX_NESTING + 1)

    def bad(n: yaml.Node) -> bool:
        return n in cyclic or size[n] > MAX_VALUES or depth[n] > MAX_NESTING

    if not bad(root):
        return
    path, node, line = [], root, root.start_mark.line + 1
    visited: set[yaml.Node] = set()
    while isinstance(node, yaml.MappingNode):  # down to the key whose value is at fault
        visited.add(node)
        entry = next(((k, v) for k, v in node.value if bad(v) or bad(k)), None)
        if entry is None or entry[1] in visited:  # a mapping holding itself would lead down forever
            break
        path.append(_key_text(entry[0].value) if isinstance(entry[0], yaml.ScalarNode) else "?")
        line, node = entry[0].start_mark.line + 1, entry[1]
    fix = "write the value out instead of using anchors (&name) and aliases (*name)"
    if node in cyclic:
        message = "refers to itself through a YAML alias (*name), so it never ends"
    elif size[node] > MAX_VALUES:
        message = (f"expands through YAML aliases (*name) to more than {MAX_VALUES} values; a config holds a "
                   "few dozen")
    else:
        message = f"is nested more than {MAX_NESTING} levels deep through YAML aliases (*name)"
    raise YamlRefused([Problem(_dotted(where, path), message, fix, line=line if not where else None)])


def _check_scalars(loader: yaml.SafeLoader, root: yaml.Node, where: str) -> list[Problem]:
    """Build every scalar on its own, so that one that cannot be read (an integer of thousands of digits, a
    date like 2024-13-45, `!!int abc`) is reported with its key instead of failing the whole file."""
    problems: list[Problem] = []
    seen: set[yaml.Node] = set()
    stack: list[tuple[yaml.Node, list[str]]] = [(root, [])]  # the expansion is bounded: walking it is cheap
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for k, v in reversed(node.value):
                key = _key_text(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                stack += [(v, path + [key]), (k, path)]
            continue
        if isinstance(node, yaml.SequenceNode):
            stack += [(item, path) for item in reversed(node.value)]
            continue
        if node in seen or node.tag in _MERGE_TAGS:
            continue  # `<<` and `=` keys are read by the mapping that holds them, not on their own
        seen.add(node)
        key, line = _dotted(where, path), None if where else node.start_mark.line + 1
        kind = _KINDS.get(node.tag, node.tag)
        if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
            problems.append(Problem(key, f"is a whole number of {len(node.value)} characters: far larger than any "
                                    "setting can be", "write a realistic number", line=line))
            continue
        try:
            loader.construct_object(node)  # kept by the loader: the document reuses it
        except yaml.YAMLError:
            raise  # an unknown tag and the like: reported as invalid YAML, with the place
        except Exception:  # noqa: BLE001 - ValueError, OverflowError, AttributeError from PyYAML's constructors
            problems.append(Problem(key, f"is not a valid {kind}", "correct it, or quote it to make it text",
                                    line=line))
    return problems


def apply_overrides(raw: dict, overrides: list[str]) -> list[Problem]:
    """Apply `--set KEY=VALUE` (dotted keys; the value is read as YAML) to the raw config in place."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(f"--set {item}", "expected KEY=VALUE", "e.g. --set params.lr=1e-4"))
            continue
        try:
            parsed = load_yaml(value, key)[0] if value.strip() else None
        except yaml.YAMLError:
            parsed = value  # not YAML: the text itself
        except YamlRefused as e:
            problems += [Problem(p.key, f"(in --set) {p.message}", p.fix) for p in e.problems]
            continue
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            # a copy: a section reached through a YAML alias is shared, and must not change elsewhere too
            node[part] = dict(node[part]) if isinstance(node.get(part), dict) else {}
            node = node[part]
        node[parts[-1]] = parsed
    return problems


def override_keys(overrides: list[str]) -> dict[str, str]:
    """The dotted keys `--set` items set, each mapped to itself (relocated spellings add their target)."""
    out: dict[str, str] = {}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = key.strip()
    return out


# ---------------------------------------------------------------- building


def build_config(raw: dict, *, lines: dict[str, int] | None = None, source: Path | None = None,
                 environ: dict[str, str] | None = None, overrides: list[str] | None = None,
                 given_as: dict[str, str] | None = None) -> tuple[RunConfig, list[Problem]]:
    """Turn a raw mapping into a RunConfig; return it with every problem found (static rules included).
    `overrides`: the `--set` items already applied to `raw`, so that their problems are said to be theirs."""
    env = os.environ if environ is None else environ
    cfg = RunConfig(source=source, lines=dict(lines or {}), overrides=override_keys(overrides or []),
                    given_as=dict(given_as or {}))
    for key in list(cfg.lines):
        if cfg.set_by(key) is not None:
            del cfg.lines[key]  # the file's line no longer holds the value
    problems: list[Problem] = []
    flat = _flatten(raw, cfg, problems)
    flat = _substitute_env(flat, env, cfg)
    _assign(cfg, flat, problems)
    if source and "project_name" in cfg.defaulted:
        cfg.project_name = source.stem
    problems += static_problems(cfg)
    return cfg, problems


def _flatten(raw: dict, cfg: RunConfig, problems: list[Problem]) -> dict[str, Any]:
    """Raw nested mapping -> {dotted key: value}, with unknown, misplaced and dotted keys reported."""
    flat: dict[str, Any] = {}
    relocated: list[tuple[str, str, Any]] = []  # (the key as written, where it belongs, its value)

    def visit(mapping: dict, prefix: str) -> None:
        for key, value in mapping.items():
            dotted = f"{prefix}{_key_text(key)}"
            if isinstance(key, str) and "." in key:
                problems.append(_dotted_key(cfg, prefix, key, dotted))
                continue
            if dotted in ("data", "params", "hub", "data.column_mapping"):
                if value is None:
                    continue
                if not isinstance(value, dict):
                    problems.append(cfg.problem(dotted, "must be a mapping of keys", value=value))
                    continue
                visit(value, dotted + ".")
                continue
            target = RELOCATED.get(dotted, dotted)
            if target not in VALID_KEYS:
                problems.append(_unknown_key(cfg, dotted, value))
                continue
            if target != dotted:
                relocated.append((dotted, target, value))
                continue
            flat[target] = value

    visit(raw, "")
    # AutoTrain's spellings are placed once the whole file is read, so where they stand against the proper key
    # does not matter: alone, they set it; equal to it, they are redundant; different, they conflict.
    for dotted, target, value in relocated:
        if target in flat:
            if flat[target] != value:
                shown = "" if target in SECRET_KEYS else f" = {show_value(flat[target])}"
                problems.append(cfg.problem(dotted, f"conflicts with {target}{shown}", f"keep only {target}",
                                            value))
            continue
        flat[target] = value
        if dotted in cfg.lines:
            cfg.lines.setdefault(target, cfg.lines[dotted])
        given = cfg.set_by(dotted)
        if given is not None:
            cfg.overrides.setdefault(target, given)
    return flat


def _dotted_key(cfg: RunConfig, prefix: str, key: str, dotted: str) -> Problem:
    """A key with dots in its name would shadow the nested key it looks like (or be shadowed by it)."""
    parts = [p for p in prefix.split(".") if p] + key.split(".")
    nested = "".join(f"\n      {'  ' * i}{_cut(part, 40)}:" for i, part in enumerate(parts[:MAX_NESTING])) + " ..."
    return cfg.problem(dotted, "is one key with dots in its name; keys are not split at dots, so it does not set "
                       f"{_cut('.'.join(parts), 60)}", f"write it nested:{nested}", show_value=False)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _placed(key: str) -> str:
    return f"under {key.rsplit('.', 1)[0]}:" if "." in key else "at the top level"


def _foreign_hint(name: str, value: Any) -> str | None:
    """"did you mean" from the table of other tools' key names, with how the value converts where it must."""
    alias = FOREIGN_KEYS.get(name)
    if alias is None:
        return None
    own = alias.target.rsplit(".", 1)[-1]
    if alias.convert is None:
        return f"did you mean {alias.target}? ({name} is the name in {alias.tools}; here it is {own}, " \
               f"{_placed(alias.target)})"
    return f"did you mean {alias.target}? ({name} is the name in {alias.tools}, and the meaning differs: " \
           f"{alias.convert(name, value)}; {own} goes {_placed(alias.target)})"


def _unknown_key(cfg: RunConfig, key: str, value: Any) -> Problem:
    last = key.rsplit(".", 1)[-1][:100]  # a name longer than any key is no typo of one: keep difflib quick
    same_name = [k for k in VALID_KEYS if k.rsplit(".", 1)[-1] == last]
    foreign = None if same_name else _foreign_hint(last, value)
    if same_name:
        hint = f"did you mean {same_name[0]}? (it belongs under {same_name[0].rsplit('.', 1)[0]}:)"
    elif foreign:
        hint = foreign
    else:
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        siblings = [k[len(prefix):] for k in VALID_KEYS if k.startswith(prefix) and "." not in k[len(prefix):]]
        close = difflib.get_close_matches(last, siblings, n=1, cutoff=0.6)
        if not close:
            close = [k for k in difflib.get_close_matches(last, [k.rsplit(".", 1)[-1] for k in VALID_KEYS],
                                                          n=1, cutoff=0.7)]
            close = [next(k for k in VALID_KEYS if k.rsplit(".", 1)[-1] == close[0])] if close else []
            hint = f"did you mean {close[0]}?" if close else None
        else:
            hint = f"did you mean {prefix}{close[0]}?"
    section = key.rsplit(".", 1)[0] if "." in key else "the top level"
    return cfg.problem(key, f"unknown key in {section}", hint or "remove it (see the README for the keys)",
                       value, show_value=False)


def _substitute_env(flat: dict[str, Any], env: Any, cfg: RunConfig) -> dict[str, Any]:
    """Replace `${VAR}` (and `${VAR:-default}`) in every string value; remember unset ones per key."""
    out = {}
    for key, value in flat.items():
        if isinstance(value, str) and "${" in value:
            cfg.env_refs[key] = value
            missing: list[str] = []

            def sub(m: re.Match) -> str:
                name, default = m.group(1), m.group(2)
                if name in env and env[name] != "":
                    return env[name]
                if default is not None:
                    return default
                missing.append(name)
                return ""

            value = ENV_REF.sub(sub, value)
            if missing:
                cfg.unset_env[key] = missing
                value = None
        out[key] = value
    return out


def _targets(cfg: RunConfig) -> list[tuple[str, Any, Any]]:
    """(dotted key, the object holding it, its dataclass field or None for the top level) of every key."""
    targets: list[tuple[str, Any, Any]] = [(k, cfg, None) for k in TOP_KEYS if k not in ("data", "params", "hub")]
    for prefix, obj in (("data", cfg.data), ("data.column_mapping", cfg.data.column_mapping),
                        ("hub", cfg.hub), ("params", cfg.params)):
        targets += [(f"{prefix}.{f.name}", obj, f) for f in fields(obj) if f.name != "column_mapping"]
    return targets


def _assign(cfg: RunConfig, flat: dict[str, Any], problems: list[Problem]) -> None:
    """Convert each value to its field's type and set it; keys absent keep their defaults."""
    for key, obj, f in _targets(cfg):
        name = key.rsplit(".", 1)[-1]
        if key not in flat:
            cfg.defaulted.add(key)
            continue
        annotation = f.type if f else next(x.type for x in fields(RunConfig) if x.name == name)
        choices = f.metadata.get("choices") if f else None
        given = flat[key]
        if f and f.metadata.get("listed") and isinstance(given, list) and all(
                isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in given):
            given = ", ".join(str(v) for v in given) or None  # kept as text: one form for YAML, CLI and wizard
        value, problem = coerce(given, annotation, key, choices)
        if problem:
            problems.append(cfg.problem(key, problem[0], problem[1], flat[key]))
            cfg.defaulted.add(key)  # its default stands in, as if absent: no rule blames the default on the key
            continue
        if key in cfg.unset_env and value is None and not _optional(annotation):
            continue  # keep the default; the unset variable is reported where it matters
        setattr(obj, name, value)
    # AutoTrain quantizes by default only where it applies (with peft); absent means "as AutoTrain would".
    if "params.quantization" in cfg.defaulted and not cfg.params.peft:
        cfg.params.quantization = None
    if cfg.data.chat_template in (None, "None", "null"):
        cfg.data.chat_template = "none"
    if TASKS.get(cfg.task) and "params.trainer" in cfg.defaulted:
        cfg.params.trainer = TASKS[cfg.task]  # written out as AutoTrain's training_params do


def key_is_optional(key: str) -> bool:
    """Whether a dotted config key may be empty (None): its field's type says so."""
    for k, obj, f in _targets(RunConfig()):
        if k == key:
            return _optional(f.type if f else next(x.type for x in fields(RunConfig) if x.name == key))
    raise KeyError(key)


def _optional(annotation: str) -> bool:
    return "None" in annotation


_NONE_WORDS = ("none", "null", "~", "")


def coerce(value: Any, annotation: str, key: str, choices: tuple | None = None
           ) -> tuple[Any, tuple[str, str | None] | None]:
    """Convert a YAML value to the annotated type. Returns (value, None) or (None, (message, fix))."""
    optional = _optional(annotation)
    base = annotation.replace("| None", "").replace("None |", "").strip()
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS and optional):
        if optional:
            return None, None
        if base == "str" and key == "data.chat_template":
            return "none", None
        return None, ("must not be empty", f"give {key} a value or remove the line to use the default")
    try:
        if base == "bool":
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no",
                                                                       "off", "0"):
                out = value.strip().lower() in ("true", "yes", "on", "1")
            elif isinstance(value, int) and value in (0, 1):
                out = bool(value)
            else:
                raise ValueError
        elif base == "int":
            out = _whole_number(value)
            if abs(out) > INT_LIMIT:
                return None, (f"is too large: a whole number here must lie within ±{INT_LIMIT} (64 bits)",
                              f"write a realistic number, e.g. {key.rsplit('.', 1)[-1]}: 16")
        elif base == "float":
            if isinstance(value, bool):
                raise ValueError
            try:
                out = float(value.strip()) if isinstance(value, str) else float(value)
            except OverflowError:  # float(10**400)
                out = math.inf
            if not math.isfinite(out):  # NaN passes every range check (nan < 0 is False): refuse it here
                name = key.rsplit(".", 1)[-1]
                example = PARAM_FIELDS[name].default if key == f"params.{name}" and name in PARAM_FIELDS else 3e-5
                return None, ("must be a finite number, not NaN or infinity", f"write it as e.g. {name}: {example}")
        elif base == "str":
            if isinstance(value, (dict, list, set, tuple, bytes)):  # a YAML list, mapping, !!set or !!binary
                raise ValueError
            out = str(value)
            words = ("yes", "on", "true") if value is True else ("no", "off", "false") if value is False else ()
            out = next((w for w in words if choices and w in choices), out)  # YAML 1.1 reads `no` as false
            if choices and "on" in choices and "off" in choices:  # auto|on|off: YAML reads `on` as true
                switch = str(value).strip().lower()
                if switch in ("true", "yes", "1", "false", "no", "0"):
                    out = "on" if switch in ("true", "yes", "1") else "off"
        else:  # pragma: no cover - every field has one of the types above
            out = value
    except (TypeError, ValueError, OverflowError):
        kind = {"bool": "true or false", "int": "a whole number", "float": "a number",
                "str": "a single value (text)"}.get(base, base)
        example = {"bool": "true", "int": "16", "float": "3e-5"}.get(base)
        fix = f"write it as e.g. {key.rsplit('.', 1)[-1]}: {example}" if example else None
        if isinstance(value, list) and base == "int":
            fix = "give one number; lists of block sizes are not supported"
        return None, (f"must be {kind}", fix)
    if choices and out is not None and out not in choices:
        lowered = {str(c).lower(): c for c in choices}
        if isinstance(out, str) and out.lower() in lowered:
            return lowered[out.lower()], None
        if isinstance(out, str) and out.lower() in ("no", "none") and optional:
            return None, None
        close = difflib.get_close_matches(str(out)[:100], [str(c) for c in choices], n=1)
        allowed = ", ".join(str(c) for c in choices) + (", or empty" if optional else "")
        hint = f"did you mean {close[0]}? " if close else ""
        return None, ("is not one of the allowed values", f"{hint}allowed: {allowed}")
    return out, None


_DIGITS = re.compile(r"[+-]?[0-9][0-9_]*")


def _whole_number(value: Any) -> int:
    """An int from an int, an integral float or a text; TypeError or ValueError otherwise. Digits are read as an
    int, never through float (which rounds beyond 2**53 and overflows beyond 10**308)."""
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():  # also NaN and infinity
            raise ValueError
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _DIGITS.fullmatch(text):
            if len(text) > MAX_INT_CHARS:  # int() would refuse beyond 4300 digits with a message about Python
                return INT_LIMIT + 1 if not text.startswith("-") else -INT_LIMIT - 1
            return int(text)
        return _whole_number(float(text))
    raise TypeError


# ---------------------------------------------------------------- rules


def static_problems(cfg: RunConfig) -> list[Problem]:
    """Every rule that needs nothing but the config itself."""
    problems: list[Problem] = []
    p = cfg.params
    add = problems.append
    cfg.warnings.clear()

    if cfg.task not in TASKS:
        close = difflib.get_close_matches(cfg.task, list(TASKS), n=1)
        add(cfg.problem("task", "unknown task",
                        (f"did you mean {close[0]}? " if close else "") + "valid tasks: " + ", ".join(TASKS),
                        cfg.task))
    elif (TASKS[cfg.task] and "params.trainer" not in cfg.defaulted
          and p.trainer not in (DEFAULT_TRAINER, TASKS[cfg.task])):
        add(cfg.problem("params.trainer", f"conflicts with task {cfg.task} (which uses the {TASKS[cfg.task]} "
                        "trainer)", "remove params.trainer, or use task: llm", p.trainer))

    if not cfg.base_model and "base_model" not in cfg.unset_env:
        add(cfg.problem("base_model", "is missing: which model should be fine-tuned?",
                        "set base_model to a model id (e.g. Qwen/Qwen2.5-0.5B-Instruct), a local model "
                        "directory, or llmtune/tiny-random to try the tool", show_value=False))
    if not cfg.project_name and "project_name" not in cfg.unset_env:
        add(cfg.problem("project_name", "must not be empty: it is the output directory",
                        "e.g. project_name: runs/my-model", cfg.project_name))
    if cfg.log not in LOGGERS:
        add(cfg.problem("log", "is not a supported logger", "use one of: " + ", ".join(LOGGERS), cfg.log))
    if cfg.backend not in BACKENDS_LOCAL and not cfg.backend.startswith("local"):
        warn(cfg, cfg.problem("backend", "llmtune trains on this machine; the backend is ignored",
                                        None, cfg.backend))

    problems += text_problems(cfg)
    problems += _range_problems(cfg)
    problems += length_problems(cfg, p.block_size)
    problems += _column_problems(cfg)
    problems += _template_problems(cfg)

    if p.quantization and not p.peft:
        add(cfg.problem("params.quantization", "quantization needs LoRA (peft): a quantized model's weights "
                        "cannot be trained directly", "set params.peft: true, or remove params.quantization",
                        p.quantization))
    if p.peft and parse_targets(p.target_modules) == []:
        add(cfg.problem("params.target_modules", "names no module", "write module names separated by commas, "
                        "e.g. q_proj,v_proj, or all-linear", p.target_modules))
    if p.unsloth:
        add(cfg.problem("params.unsloth", "unsloth is not supported by llmtune", "remove params.unsloth", True))
    if p.model_ref and cfg.spec.reference_model and p.peft:
        warn(cfg, cfg.problem("params.model_ref", "is not used with LoRA: the frozen base model (the "
                                        "adapter switched off) is the reference", None, p.model_ref))
    if p.eval_strategy == "steps" and not cfg.data.valid_split and not p.valid_fraction:
        warn(cfg, cfg.problem("params.eval_strategy", "there is no data.valid_split, so nothing is "
                                        "evaluated", "set data.valid_split (or params.valid_fraction) to evaluate "
                                        "during training", p.eval_strategy))
    if p.valid_fraction and cfg.data.valid_split:
        add(cfg.problem("params.valid_fraction", f"holds out part of the train rows as the validation split, "
                        f"and data.valid_split ({_cut(cfg.data.valid_split, 40)!r}) names one too",
                        "use one or the other: remove params.valid_fraction to evaluate on data.valid_split, or "
                        "remove data.valid_split to hold out this fraction of the train rows", p.valid_fraction))

    from engine.online import static_problems as online_problems

    problems += online_problems(cfg)
    problems += _env_problems(cfg)
    return problems


def warn(cfg: RunConfig, problem: Problem) -> None:
    """A note that does not stop the run (shown by the dry run and the wizard)."""
    if all((w.key, w.message) != (problem.key, problem.message) for w in cfg.warnings):
        cfg.warnings.append(problem)


def text_problems(cfg: RunConfig) -> list[Problem]:
    """Text that no file name, model id, column or tokenizer can take (NUL bytes, lone surrogates such as a
    "\\ud800" escape), and names longer than file systems allow. Said here, before anything opens a file."""
    out = []
    for key, obj, _ in _targets(cfg):
        value = getattr(obj, key.rsplit(".", 1)[-1])
        if not isinstance(value, str):
            continue
        if "\0" in value:
            out.append(cfg.problem(key, "contains a NUL byte (\\0), which no name or text setting can hold",
                                   "remove it", value))
            continue
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError as e:
            out.append(cfg.problem(key, f"contains a lone surrogate (U+{ord(value[e.start]):04X}), which is not a "
                                   "character and cannot be written to a file or tokenized",
                                   "remove it, or write the character it was meant to be", value))
            continue
        if key in PATH_KEYS:
            out += _path_length_problems(cfg, key, value, encoded)
    return out


def _path_length_problems(cfg: RunConfig, key: str, value: str, encoded: bytes) -> list[Problem]:
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        part = longest.decode("utf-8", "replace")
        return [cfg.problem(key, f"has a name of {len(longest)} bytes ({_cut(part, 30)!r}); file systems allow "
                            f"at most {NAME_MAX} per name", "use a shorter name", value)]
    # A relative path is read from the current directory and the config's directory: the longer must fit.
    bases = [os.getcwd()] + ([str(cfg.base_dir)] if cfg.base_dir else [])
    full = max(len(os.fsencode(os.path.join(os.path.abspath(b), value))) for b in bases)
    if full >= PATH_MAX:
        return [cfg.problem(key, f"makes a path of {full} bytes; the system allows at most {PATH_MAX - 1}",
                            "use a shorter path", value)]
    return []


def _default_fix(name: str, default: Any) -> str:
    """The fix of a value out of its range: the default, or leaving the key out where the default is none."""
    return f"default: {default}" if default is not None else f"leave params.{name} out (the default)"


def _range_problems(cfg: RunConfig) -> list[Problem]:
    out = []
    for name, f in PARAM_FIELDS.items():
        value = getattr(cfg.params, name)
        meta = f.metadata
        fix = _default_fix(name, f.default)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):  # set in code, not read (coerce refuses it)
            out.append(cfg.problem(f"params.{name}", "must be a finite number, not NaN or infinity",
                                   fix, value))
            continue
        if value in meta["special"]:
            continue
        lo, hi = meta["minimum"], meta["maximum"]
        special = " or " + " or ".join(str(s) for s in meta["special"]) if meta["special"] else ""
        if lo is not None and (value < lo or (meta["exclusive_min"] and value == lo)):
            rule = f"must be {'greater than' if meta['exclusive_min'] else 'at least'} {lo}{special}"
            out.append(cfg.problem(f"params.{name}", rule, fix, value))
        elif hi is not None and (value > hi or (meta.get("exclusive_max") and value == hi)):
            rule = f"must be {'less than' if meta.get('exclusive_max') else 'at most'} {hi}"
            out.append(cfg.problem(f"params.{name}", rule, fix, value))
    return out


def length_problems(cfg: RunConfig, block_size: int) -> list[Problem]:
    """AutoTrain's length rules (it documents them, then fails late or with nan losses), against a block
    size: the configured one, or the one -1 resolved to once the tokenizer is known."""
    p = cfg.params
    out = []
    mml = p.model_max_length
    if block_size != -1 and block_size > mml:
        out.append(cfg.problem("params.block_size", f"must not exceed params.model_max_length ({mml})",
                               f"set block_size to {mml} or less, or raise model_max_length", block_size))
    if cfg.spec.prompt_limits:
        for name in ("max_prompt_length", "max_completion_length"):
            value = getattr(p, name)
            if value is None:
                continue
            if value > mml:
                out.append(cfg.problem(f"params.{name}", f"must not exceed params.model_max_length ({mml})",
                                       f"set {name} below {mml}", value))
            elif block_size != -1 and value > block_size:
                out.append(cfg.problem(f"params.{name}", f"must not exceed params.block_size ({block_size}): "
                                       "prompt and completion together must fit in a block",
                                       f"set {name} to at most {block_size}, or raise block_size", value))
            elif block_size != -1 and value == block_size:
                warn(cfg, cfg.problem(f"params.{name}", f"equals block_size ({block_size}), leaving "
                                                "no room for the rest of the pair", None, value))
    return out




def _column_problems(cfg: RunConfig) -> list[Problem]:
    out = []
    cm = cfg.data.column_mapping
    for name in cfg.spec.required:
        if getattr(cm, name):
            continue
        if name == "prompt_text_column" and (cfg.data.prompt_template or (cfg.data.chat_template != "none"
                                                                          and not cfg.spec.online)):
            continue  # the prompt comes from the template, or from the shared leading turns of message lists
        key = f"data.column_mapping.{name}"
        fix = {"prompt_text_column": "map the prompt column (e.g. prompt_text_column: prompt), or " + (
                   "build prompts with data.prompt_template" if cfg.spec.online else
                   "keep whole conversations in chosen/rejected and set data.chat_template"),
               "rejected_text_column": "map the rejected column, e.g. rejected_text_column: rejected",
               "text_column": "map the chosen column, e.g. text_column: chosen"}[name]
        out.append(cfg.problem(key, f"task {cfg.task} needs {ROLE_MEANINGS[name]}, and no column is mapped to it",
                               fix, show_value=False))
    return out


SECTION_OPEN, SECTION_CLOSE = "{[", "]}"


def template_sections(template: str) -> list[tuple[str, bool]]:
    """A template cut into (format string, optional) pieces. `{[ ... ]}` marks an optional section, left out of a
    row whose columns in it are all empty. The marker was invalid before (a field named `[...`), so no template
    that worked changes meaning; `{{` and `}}` stay literal braces. Raises ValueError on a section never closed
    or one inside another. Linear in the template."""
    pieces: list[tuple[str, bool]] = []
    start, i, inside, n = 0, 0, False, len(template)
    while i < n:
        if template.startswith(("{{", "}}"), i):
            i += 2
        elif template.startswith(SECTION_OPEN, i):
            if inside:
                raise ValueError("an optional section {[ ... ]} cannot hold another one")
            pieces.append((template[start:i], False))
            inside, i = True, i + 2
            start = i
        elif inside and template.startswith(SECTION_CLOSE, i):
            pieces.append((template[start:i], True))
            inside, i = False, i + 2
            start = i
        elif template[i] == "{":  # a field, to its closing brace (its spec may hold one level of braces)
            depth, i = 1, i + 1
            while i < n and depth:
                depth += {"{": 1, "}": -1}.get(template[i], 0)
                i += 1
        else:
            i += 1
    if inside:
        raise ValueError("an optional section opened with {[ is never closed with ]}")
    pieces.append((template[start:], False))
    return [(text, optional) for text, optional in pieces if text or optional]


def template_fields(template: str) -> list[str]:
    """The column names a prompt/completion template uses; raises ValueError on bad syntax, and on a format spec
    that could blow up when filled: a huge width or precision ({text:>999999999} asks for a gigabyte per row),
    or nested braces ({text:{width}}) that take the spec from the data, or a spec that text or numbers refuse
    (it would fail in the middle of the data). A plain {column} is what templates are for; aligning and
    padding ({title:>20}) stays allowed. Optional sections ({[...]}, see template_sections) must use a column."""
    names = []
    for piece, optional in template_sections(template):
        used = _piece_fields(piece)
        if optional and not used:
            raise ValueError(f"the optional section {SECTION_OPEN}{_cut(piece, 40)}{SECTION_CLOSE} uses no column; "
                             "it is left out when its columns are empty, so it needs one")
        names += used
    return names


def _piece_fields(template: str) -> list[str]:
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        field = _cut("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}", 60)
        if not name or not re.match(r"^[^\[\].!:]+$", name):
            raise ValueError(f"{_cut('{' + name + '}', 60)} is not a column name")
        if conversion not in (None, "r", "s", "a"):
            raise ValueError(f"{field} has an unknown conversion: use !r, !s or !a, or none")
        if spec:
            if "{" in spec or "}" in spec:
                raise ValueError(f"{field} takes its format from the data (braces inside the braces)")
            for digits in re.findall(r"[0-9]+", spec):
                if len(digits.lstrip("0")) > 4 or int(digits) > MAX_FORMAT_NUMBER:
                    raise ValueError(f"{field} asks for a width or precision of {_cut(digits, 20)}; at most "
                                     f"{MAX_FORMAT_NUMBER} is allowed")
            # A column holds text, or numbers: a spec that one of them refuses ({n:d} on text, {x:.3} on an int)
            # would fail in the middle of the data, when the row is filled
            if not all(_formats(sample, spec) for sample in ("", 0, 0.0)[:1 if conversion else 3]):  # !s: text
                raise ValueError(f"{field} has a format spec that not every value takes (text and numbers); "
                                 f"write {{{_cut(name, 40)}}}, or only align and pad, e.g. {{{_cut(name, 40)}:>20}}")
        names.append(name)
    return names


def _formats(sample: Any, spec: str) -> bool:
    try:
        format(sample, spec)
    except (ValueError, TypeError):
        return False
    return True


def _template_problems(cfg: RunConfig) -> list[Problem]:
    out = []
    d = cfg.data
    for name in ("prompt_template", "completion_template"):
        template = getattr(d, name)
        if template is None:
            continue
        try:
            used = template_fields(template)
        except ValueError as e:
            out.append(cfg.problem(f"data.{name}", f"is not a valid template: {e}",
                                   "write column names in braces, e.g. \"### Question\\n{question}\\n\"; "
                                   "double literal braces: {{ }}", template))
            continue
        if not used:
            out.append(cfg.problem(f"data.{name}", "uses no column", "put column names in braces, e.g. "
                                   "{instruction}", template))
    if d.completion_template and not d.prompt_template:
        out.append(cfg.problem("data.completion_template", "needs data.prompt_template too",
                               "add a prompt_template, or map data.column_mapping.text_column instead",
                               d.completion_template))
    if d.prompt_template and cfg.spec.whole_texts:
        out.append(cfg.problem("data.prompt_template", "reward training scores whole texts and has no prompt",
                               "remove it, or use llm-dpo/llm-orpo", d.prompt_template))
    return out


def _env_problems(cfg: RunConfig) -> list[Problem]:
    """Unset `${VAR}`s are errors only where the run needs them."""
    out = []
    for key, names in cfg.unset_env.items():
        if key.startswith("hub.") and not cfg.hub.push_to_hub:
            continue
        var = ", ".join(names)
        out.append(cfg.problem(key, f"uses the environment variable {var}, which is not set",
                               f"export {names[0]}=... before running, or write the value in the config",
                               cfg.env_refs.get(key)))
    if cfg.hub.push_to_hub:
        for name in ("username", "token"):
            if not getattr(cfg.hub, name) and f"hub.{name}" not in cfg.unset_env:
                out.append(cfg.problem(f"hub.{name}", "is needed to push to the hub", f"set hub.{name} (e.g. "
                                       f"${{HF_{name.upper()}}}), or set hub.push_to_hub: false",
                                       show_value=False))
    return out


# ---------------------------------------------------------------- the machine, the model, the data


def check_environment(cfg: RunConfig) -> list[Problem]:
    """Rules that look at this machine: model and data exist, the hardware runs the precision asked for, LoRA's
    target modules are modules of the model, the tracker `log` names can log from here. Keys whose text no file
    can have are left to text_problems."""
    unusable = {p.key for p in text_problems(cfg)}
    model = [] if "base_model" in unusable else model_problems(cfg)
    out = list(model)
    if not unusable & {"data.path", "data.train_split", "data.valid_split"}:
        out += data_problems(cfg)
    out += machine_problems(cfg)
    out += distributed_problems(cfg)
    from engine.online import environment_problems as online_problems

    out += online_problems(cfg)
    from engine.trackers import environment_problems as tracker_problems

    out += tracker_problems(cfg)
    if "base_model" not in unusable and not model:
        out += target_module_problems(cfg)
    return out



def model_problems(cfg: RunConfig) -> list[Problem]:
    from engine.tinymodel import TINY_MODEL_ID

    name = cfg.base_model
    if not name or name == TINY_MODEL_ID:
        return []
    local = resolve_local(name, cfg.base_dir)
    if local is not None:
        if not local.is_dir():
            return [cfg.problem("base_model", "is a file; a model is a directory holding config.json",
                                "point base_model at the model's directory", name)]
        if not (local / "config.json").exists():
            files = sorted(x.name for x in local.iterdir())[:12]
            return [cfg.problem("base_model", f"the directory has no config.json, so it is not a model "
                                f"(it holds: {', '.join(files) or 'nothing'})",
                                "point base_model at a directory saved with save_pretrained", name)]
        return []
    wrong = model_id_problem(name)
    return [cfg.problem("base_model", *wrong, name)] if wrong else []


def target_module_problems(cfg: RunConfig) -> list[Problem]:
    """LoRA target_modules that name no module of the model (peft would fail in the training process)."""
    targets = parse_targets(cfg.params.target_modules)
    if not cfg.params.peft or not targets or not cfg.base_model:
        return []
    from engine.target_modules import model_modules, unknown_targets
    from engine.tinymodel import resolve_model

    name = resolve_model(cfg.base_model)
    local = resolve_local(name, cfg.base_dir)
    found = model_modules(str(local) if local is not None else name, reward=cfg.spec.scores)
    if found is None:
        return []  # its config cannot be read: the model's own checks say why
    modules, linear = found
    unknown = unknown_targets(targets, modules)
    if not unknown:
        return []
    return [cfg.problem("params.target_modules", f"names no module of {_cut(cfg.base_model, 60)}: "
                        f"{_cut(', '.join(unknown), 200)}", "use its linear layers, e.g. "
                        f"{_cut(','.join(linear), 200) or 'all-linear'} (or all-linear for all of them)",
                        cfg.params.target_modules)]



def data_problems(cfg: RunConfig) -> list[Problem]:
    from engine.data import check_split

    out = check_split(cfg.data.path, cfg.data.train_split, key="data.path", split_key="data.train_split",
                      base_dir=cfg.base_dir)
    if cfg.data.valid_split and not out:
        out += check_split(cfg.data.path, cfg.data.valid_split, key="data.path", split_key="data.valid_split",
                           base_dir=cfg.base_dir)
    return [cfg.located(p) for p in out]


def machine_problems(cfg: RunConfig) -> list[Problem]:
    """Precision, quantization, batching and kernels this machine cannot run, said before any model is loaded."""
    # a quantization the config leaves open is the run's choice (engine.quantization): int4 only where it runs
    quantization = None if "params.quantization" in cfg.defaulted else cfg.params.quantization
    asks = [("params.mixed_precision", cfg.params.mixed_precision), ("params.quantization", quantization)]
    asks = [(k, v) for k, v in asks if v]
    from engine.kernels import asks_on, on_refusals

    if not asks and cfg.params.batching != "packed" and not asks_on(cfg.params):
        return []
    from engine.capabilities import probe

    caps = probe()
    on_cuda = caps.device == "cuda"
    out = []
    if cfg.params.batching == "packed":
        from engine.batching import flash_attention, packing_refusal

        refusal = packing_refusal(cfg.spec, on_cuda=on_cuda, flash_attention=flash_attention(cfg.params,
                                                                                              on_cuda=on_cuda))
        if refusal:
            out.append(cfg.problem("params.batching", f"packed cannot run here: {refusal}",
                                   "use params.batching: grouped (as little padding as examples of similar length "
                                   "allow, the same loss), or auto", "packed"))
    for key, refusal in on_refusals(cfg.params, on_cuda=on_cuda):
        out.append(cfg.problem(key, f"on cannot run here: {refusal}", f"use {key}: auto (on wherever it can run) "
                               "or off", "on"))
    for key, what in asks:
        support = caps.support(what)
        if not support.ok:
            fix = ("remove params.mixed_precision (full precision)" if key.endswith("precision")
                   else "remove params.quantization (plain LoRA)")
            out.append(cfg.problem(key, f"this machine cannot run {what}: {support.reason}", fix, what))
    return out


DISTRIBUTED_KEYS = ("distributed_backend", "num_processes", "deepspeed_config", "accelerate_config", "num_machines",
                    "machine_rank", "main_process_ip", "main_process_port")


def distributed_problems(cfg: RunConfig, environ: dict[str, str] | None = None) -> list[Problem]:
    """A launch on several processes this machine cannot make (engine.distributed), said before anything starts.
    A config without the keys asks nothing (the run's default, every visible GPU, is always possible)."""
    from engine.distributed import BadVariable, cuda_gpus, port_in_use, refusals, topology

    p = cfg.params
    environ = dict(os.environ) if environ is None else environ
    if "LOCAL_RANK" in environ:  # a launched process: checked before launching (its port is the launcher's now)
        return []
    if all(getattr(p, k) is None for k in DISTRIBUTED_KEYS) and "params.deepspeed_stage" in cfg.defaulted:
        return []
    out = []
    for key in ("deepspeed_config", "accelerate_config"):
        path = getattr(p, key)
        if path and resolve_local(path, cfg.base_dir) is None:
            out.append(cfg.problem(f"params.{key}", f"names {path}, which is not a file here",
                                   "give the path of the file (relative to the config file or the current "
                                   "directory)", path))
    from engine.capabilities import probe

    caps = probe()
    on_cuda = caps.device == "cuda"
    gpus = cuda_gpus(caps)
    try:
        topo = topology(p, gpus=gpus, environ=environ)
    except BadVariable as e:
        return out + [cfg.problem(e.key, str(e), f"set the variable to a whole number, or set {e.key} in the "
                                  "config (it wins over the environment)")]
    quantization = None if "params.quantization" in cfg.defaulted else p.quantization
    for key, what, fix in refusals(p, topo, gpus=gpus, on_cuda=on_cuda, quantization=quantization):
        out.append(cfg.problem(key, what, fix, getattr(p, key.split(".", 1)[1], None)))
    if topo.machine_rank > 0 and topo.machine_rank < topo.machines:
        from engine.distributed import launch_command, run_params
        from engine.run_files import run_dir_of

        command = " ".join(launch_command(run_params(cfg), topo, run_dir_of(cfg), python="python"))
        where = f" (from {', '.join(topo.from_env)})" if topo.from_env and p.machine_rank is None else ""
        out.append(cfg.problem("params.machine_rank", f"is {topo.machine_rank}{where}: only machine 0 starts a run "
                               "(it writes the run directory); the others join it", f"on this machine run: {command}",
                               topo.machine_rank))
    if topo.launched and topo.machine_rank == 0 and topo.main_process_port and port_in_use(topo.main_process_port):
        out.append(cfg.problem("params.main_process_port", f"{topo.main_process_port} is in use on this machine "
                               "(another run, or another program)", "choose a free port (or leave the key out "
                               "on one machine: a free one is picked)", topo.main_process_port))
    return out


def validate(cfg: RunConfig, *, environment: bool = True) -> RunConfig:
    """Raise ConfigError with every problem, static and (optionally) environmental. The wizard's check."""
    problems = static_problems(cfg)
    if environment:
        problems = _with_environment(cfg, problems)
    if problems:
        raise ConfigError(problems, source=str(cfg.source) if cfg.source else None)
    return cfg


def _with_environment(cfg: RunConfig, problems: list[Problem]) -> list[Problem]:
    """Add the machine's problems, except about keys already wrong (their defaults would only add noise)."""
    wrong = {p.key for p in problems}
    return problems + [p for p in check_environment(cfg) if p.key not in wrong]


# ---------------------------------------------------------------- writing


def to_dict(cfg: RunConfig, *, keep_secrets: bool = False) -> dict[str, Any]:
    """The config in AutoTrain's layout. Secrets are written as the `${VAR}` they came from, or left out."""
    def section(obj: Any, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(obj):
            if f.name == "column_mapping":
                out[f.name] = section(obj.column_mapping, f"{prefix}.column_mapping")
                continue
            value = getattr(obj, f.name)
            key = f"{prefix}.{f.name}"
            if f.metadata.get("extra") or f.name in ("prompt_template", "completion_template"):
                default = f.default if f.default is not MISSING else None
                if value == default:
                    continue  # llmtune's additions are written only when used, so AutoTrain can read the rest
            if key in SECRET_KEYS and not keep_secrets:
                value = cfg.env_refs.get(key)  # `${HF_TOKEN}` stays a reference; a literal token is left out
            out[f.name] = value
        return out

    data = section(cfg.data, "data")
    if data.get("chat_template") == "none":
        data["chat_template"] = None
    return {
        "task": cfg.task,
        "base_model": cfg.base_model,
        "project_name": cfg.project_name,
        "log": cfg.log,
        "backend": cfg.backend,
        "data": data,
        "params": section(cfg.params, "params"),
        "hub": section(cfg.hub, "hub"),
    }


class _Dumper(yaml.SafeDumper):
    """Writes multi-line text (templates) as block scalars, as a person would type it."""


_UNICODE_BREAKS = ("\x85", "\u2028", "\u2029")  # line breaks to YAML, which PyYAML's allow_unicode writes unescaped


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted scalar where a block cannot hold the text exactly (trailing spaces, control
    # characters). Unicode line breaks it would write raw in any style but double quotes (NEL then reads back as
    # a space): those get double quotes, which escape them.
    style = '"' if any(c in value for c in _UNICODE_BREAKS) else "|" if "\n" in value else None
    return dumper.represent_scalar(_STR_TAG, value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(cfg: RunConfig, *, keep_secrets: bool = False) -> str:
    return yaml.dump(to_dict(cfg, keep_secrets=keep_secrets), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=100)
