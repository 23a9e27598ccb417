"""The config: AutoTrain's format and defaults, `${VAR}`, `--set`, and every validation rule with its message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.config import (
    RunConfig,
    build_config,
    load_config,
    parse_config_text,
    to_dict,
    to_yaml,
    validate,
)
from engine.errors import ConfigError
from engine.params import OPTIMIZERS, SCHEDULERS
from support import fresh_python

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
ENV = {"HF_USERNAME": "someone", "HF_TOKEN": "hf_secret"}

MINIMAL = """
task: llm-sft
base_model: org/model
project_name: out
data:
  path: data
"""


def problems(text: str, environ: dict | None = None, overrides: list[str] | None = None) -> dict[str, str]:
    """key -> rendered problem, for a config expected to be invalid."""
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, environ=environ or {}, overrides=overrides)
    return {p.key: p.render() for p in info.value.problems}


def config(text: str, **kw) -> RunConfig:
    return parse_config_text(text, environ=kw.pop("environ", {}), **kw)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads_and_validates(path: Path) -> None:
    cfg = load_config(path, environ=ENV)
    assert cfg.base_model and cfg.trainer in ("default", "sft", "reward", "dpo", "orpo")
    if cfg.base_model == "llmtune/tiny-random":  # runnable here: the data exists, the machine can run it
        validate(cfg)


def test_examples_cover_every_trainer() -> None:
    trainers = {load_config(p, environ=ENV).trainer for p in CONFIGS}
    assert trainers == {"default", "sft", "reward", "dpo", "orpo"}


def test_autotrain_defaults_fill_missing_keys() -> None:
    p = config(MINIMAL).params
    assert (p.lr, p.batch_size, p.gradient_accumulation, p.block_size, p.model_max_length) == (3e-5, 2, 4, -1, 2048)
    assert (p.lora_r, p.lora_alpha, p.lora_dropout, p.dpo_beta, p.max_prompt_length) == (16, 32, 0.05, 0.1, 128)
    assert (p.target_modules, p.optimizer, p.scheduler, p.seed, p.epochs) == ("all-linear", "adamw_torch",
                                                                             "linear", 42, 1)
    assert (p.warmup_ratio, p.padding, p.eval_strategy, p.save_total_limit, p.add_eos_token) == (0.1, "right",
                                                                                                "epoch", 1, True)


def test_quantization_default_follows_autotrain_only_with_peft() -> None:
    assert config(MINIMAL).params.quantization is None
    assert config(MINIMAL + "params:\n  peft: true\n").params.quantization == "int4"
    assert config(MINIMAL + "params:\n  peft: true\n  quantization: null\n").params.quantization is None


def test_numbers_written_as_strings_are_accepted() -> None:
    p = config(MINIMAL + "params:\n  lr: '3e-5'\n  epochs: '2'\n  peft: 'true'\n  quantization: none\n").params
    assert p.lr == 3e-5 and p.epochs == 2 and p.peft is True


def test_tasks_map_to_trainers() -> None:
    for task, trainer in [("llm", "default"), ("llm-generic", "default"), ("llm-sft", "sft"),
                          ("llm-reward", "reward"), ("llm-dpo", "dpo"), ("llm-orpo", "orpo")]:
        text = MINIMAL.replace("llm-sft", task) + "  column_mapping:\n    prompt_text_column: p\n" \
            "    rejected_text_column: r\n"
        assert config(text).trainer == trainer
    assert config(MINIMAL.replace("llm-sft", "llm") + "params:\n  trainer: sft\n").trainer == "sft"


def test_autotrain_keys_flattened_into_params_are_accepted() -> None:
    cfg = config(MINIMAL + "params:\n  chat_template: chatml\n  text_column: messages\n")
    assert cfg.data.chat_template == "chatml" and cfg.data.column_mapping.text_column == "messages"


def test_env_substitution_anywhere_and_unset_variables() -> None:
    text = MINIMAL.replace("org/model", "${BASE}") + "params:\n  lr: ${LR:-1e-4}\n"
    cfg = config(text, environ={"BASE": "org/other"})
    assert cfg.base_model == "org/other" and cfg.params.lr == 1e-4
    found = problems(text)
    assert "environment variable BASE, which is not set" in found["base_model"]
    assert "export BASE=" in found["base_model"]


def test_unset_hub_variables_only_matter_when_pushing() -> None:
    text = MINIMAL + "hub:\n  username: ${HF_USERNAME}\n  token: ${HF_TOKEN}\n  push_to_hub: false\n"
    assert config(text).hub.token is None
    found = problems(text.replace("push_to_hub: false", "push_to_hub: true"))
    assert "HF_TOKEN" in found["hub.token"] and "HF_USERNAME" in found["hub.username"]


def test_set_overrides_dotted_keys() -> None:
    cfg = config(MINIMAL, overrides=["params.lr=1e-4", "params.peft=true", "data.chat_template=zephyr"])
    assert cfg.params.lr == 1e-4 and cfg.params.peft is True and cfg.data.chat_template == "zephyr"
    assert "did you mean params.lr" in problems(MINIMAL, overrides=["lr=1e-4"])["lr"]
    assert "KEY=VALUE" in problems(MINIMAL, overrides=["params.lr"])["--set params.lr"]


def test_project_name_may_be_a_path_and_defaults_to_the_config_name(tmp_path: Path) -> None:
    assert config(MINIMAL.replace("out", "runs/exp/1")).project_name == "runs/exp/1"
    path = tmp_path / "my-run.yaml"
    path.write_text(MINIMAL.replace("project_name: out\n", ""))
    assert load_config(path).project_name == "my-run"


# ---------------------------------------------------------------- each rule and its message


def test_unknown_task_lists_the_valid_ones() -> None:
    message = problems(MINIMAL.replace("llm-sft", "llm-dop"))["task"]
    assert "unknown task" in message and "did you mean llm-dpo" in message
    assert "llm-generic" in message and "llm-orpo" in message


def test_unknown_keys_with_did_you_mean() -> None:
    found = problems(MINIMAL + "params:\n  lerning_rate: 1\n  lora_rank: 2\n  batchsize: 3\nfoo: 1\n")
    assert "did you mean params.batch_size" in found["params.batchsize"]
    assert "unknown key in params" in found["params.lora_rank"]
    assert "unknown key in the top level" in found["foo"]
    misplaced = problems(MINIMAL + "epochs: 3\n")["epochs"]
    assert "did you mean params.epochs" in misplaced


def test_wrong_types() -> None:
    found = problems(MINIMAL + "params:\n  batch_size: two\n  lr: fast\n  peft: maybe\n  epochs: 1.5\n")
    assert "must be a whole number" in found["params.batch_size"] and "'two'" in found["params.batch_size"]
    assert "must be a number" in found["params.lr"]
    assert "must be true or false" in found["params.peft"]
    assert "must be a whole number" in found["params.epochs"]


def test_choices_and_ranges() -> None:
    found = problems(MINIMAL + "params:\n  mixed_precision: fp32\n  optimizer: adamw\n  lora_dropout: 1.5\n"
                     "  lr: 0\n  batch_size: 0\n")
    assert "allowed: fp16, bf16" in found["params.mixed_precision"]
    assert "not one of the allowed values" in found["params.optimizer"]
    assert "must be at most 1" in found["params.lora_dropout"]
    assert "must be greater than 0" in found["params.lr"]
    assert "must be at least 1" in found["params.batch_size"]


def test_block_size_must_not_exceed_model_max_length() -> None:
    message = problems(MINIMAL + "params:\n  block_size: 4096\n  model_max_length: 2048\n")["params.block_size"]
    assert "must not exceed params.model_max_length (2048)" in message and "4096" in message
    assert "fix:" in message


DPO = MINIMAL.replace("llm-sft", "llm-dpo") + ("  column_mapping:\n    prompt_text_column: prompt\n"
                                               "    text_column: chosen\n    rejected_text_column: rejected\n")


def test_prompt_and_completion_lengths_against_block_and_model_length() -> None:
    found = problems(DPO + "params:\n  block_size: 256\n  max_prompt_length: 512\n  max_completion_length: 300\n")
    assert "must not exceed params.block_size (256)" in found["params.max_prompt_length"]
    assert "must not exceed params.block_size (256)" in found["params.max_completion_length"]
    found = problems(DPO + "params:\n  model_max_length: 100\n  block_size: 64\n  max_prompt_length: 200\n")
    assert "must not exceed params.model_max_length (100)" in found["params.max_prompt_length"]
    # SFT does not use max_prompt_length: AutoTrain's default must not trip it
    config(MINIMAL + "params:\n  block_size: 64\n")


def test_trainers_need_their_column_mapping() -> None:
    found = problems(MINIMAL.replace("llm-sft", "llm-dpo"))
    assert "needs the prompt" in found["data.column_mapping.prompt_text_column"]
    assert "needs the rejected text" in found["data.column_mapping.rejected_text_column"]
    found = problems(MINIMAL.replace("llm-sft", "llm-reward"))
    assert list(found) == ["data.column_mapping.rejected_text_column"]
    # whole conversations in chosen/rejected + a chat template: the prompt comes from their shared turns
    config(MINIMAL.replace("llm-sft", "llm-orpo") + "  chat_template: chatml\n  column_mapping:\n"
           "    text_column: chosen\n    rejected_text_column: rejected\n")


def test_quantization_needs_peft() -> None:
    message = problems(MINIMAL + "params:\n  quantization: int4\n")["params.quantization"]
    assert "needs LoRA (peft)" in message and "params.peft: true" in message


def test_duplicate_keys_and_bad_yaml() -> None:
    assert "appears twice" in problems(MINIMAL + "params:\n  lr: 1\n  lr: 2\n")["params.lr"]
    with pytest.raises(ConfigError) as info:
        parse_config_text("task: [unclosed\n")
    assert "not valid YAML" in info.value.render() and info.value.problems[0].line


def test_problems_name_the_line_and_all_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL.replace("llm-sft", "llm-xyz") + "params:\n  block_size: 9999\n  batch_size: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = info.value.render()
    assert len(info.value.problems) == 3
    assert f"{path}:2: task" in text and f"{path}:8: params.block_size" in text


def test_prompt_and_completion_templates_are_checked() -> None:
    found = problems(MINIMAL + "  prompt_template: '{instruction'\n  completion_template: 'x'\n")
    assert "is not a valid template" in found["data.prompt_template"]
    assert "uses no column" in found["data.completion_template"]
    assert "needs data.prompt_template" in problems(MINIMAL + "  completion_template: '{a}'\n")[
        "data.completion_template"]


# ---------------------------------------------------------------- the machine, the model, the data


def test_base_model_must_be_a_model_dir_or_a_valid_id(tmp_path: Path) -> None:
    def env_problems(base: str) -> dict[str, str]:
        cfg, _ = build_config(yaml.safe_load(MINIMAL.replace("org/model", base).replace("path: data",
                                                                                          f"path: {tmp_path}")))
        (tmp_path / "train.csv").write_text("text\nhello\n")
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        return {p.key: p.render() for p in info.value.problems}

    assert "no such directory" in env_problems("./missing/model")["base_model"]
    (tmp_path / "empty").mkdir()
    assert "has no config.json" in env_problems(str(tmp_path / "empty"))["base_model"]
    assert "neither a local model directory nor a valid model id" in env_problems("bad id!")["base_model"]


def test_missing_data_lists_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "training.csv").write_text("text\nhi\n")
    cfg, _ = build_config(yaml.safe_load(MINIMAL.replace("path: data", f"path: {tmp_path}")))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = info.value.render()
    assert "training.csv" in message


def test_machine_problems_said_before_loading(tiny_model: Path) -> None:
    from engine.capabilities import probe

    caps = probe()
    text = MINIMAL.replace("org/model", str(tiny_model)) + "params:\n  mixed_precision: fp16\n"
    cfg, _ = build_config(yaml.safe_load(text))
    if caps.fp16.ok:
        pytest.skip("this machine runs fp16")
    with pytest.raises(ConfigError) as info:
        validate(cfg, environment=True)
    assert "this machine cannot run fp16" in info.value.render()


# ---------------------------------------------------------------- writing


def test_round_trip_and_secrets_are_never_written() -> None:
    text = MINIMAL + "hub:\n  username: me\n  token: ${HF_TOKEN}\n  push_to_hub: true\n"
    cfg = config(text, environ={"HF_TOKEN": "hf_secret"})
    written = to_yaml(cfg)
    assert "hf_secret" not in written and "${HF_TOKEN}" in written
    again = config(written, environ={"HF_TOKEN": "hf_secret"})
    assert to_dict(again) == to_dict(cfg)
    literal = config(MINIMAL + "hub:\n  token: hf_literal\n")
    assert "hf_literal" not in to_yaml(literal)


def test_llmtune_additions_are_written_only_when_used() -> None:
    plain = to_dict(config(MINIMAL))
    assert "max_steps" not in plain["params"] and "prompt_template" not in plain["data"]
    used = to_dict(config(MINIMAL + "  prompt_template: '{q}'\nparams:\n  max_steps: 5\n"))
    assert used["params"]["max_steps"] == 5 and used["data"]["prompt_template"] == "{q}"


def test_optimizer_and_scheduler_lists_match_installed_transformers() -> None:
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert set(OPTIMIZERS) == {o.value for o in OptimizerNames}
    assert set(SCHEDULERS) <= {s.value for s in SchedulerType}


def test_light_modules_do_not_import_the_ml_stack() -> None:
    code = ("import sys, engine.config, engine.params, engine.errors, engine.data, engine.formatting, "
            "engine.encoding, engine.preview, engine.chat_templates, engine.rundir, engine.demo, engine.model_card, "
            "tui.cli, tui.dry_run, tui.train_start\n"
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'textual', 'bitsandbytes') "
            "if m in sys.modules]\nprint(heavy)")
    assert fresh_python(code) == "[]"


def test_yaml_booleans_read_back_as_the_choice_they_spell() -> None:
    """YAML 1.1 reads `no` (and off, yes, on) as a boolean: `eval_strategy: no`, AutoTrain's spelling, is "no"."""
    assert config(MINIMAL + "params:\n  eval_strategy: no\n").params.eval_strategy == "no"
    assert config(MINIMAL, overrides=["params.eval_strategy=no"]).params.eval_strategy == "no"
    assert config(MINIMAL + "params:\n  liger_kernel: off\n").params.liger_kernel == "off"
    assert "params.eval_strategy" in problems(MINIMAL + "params:\n  eval_strategy: yes\n")  # no such choice
