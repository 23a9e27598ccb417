"""GRPO and RLOO driven by an llmtune reward model (issue 17), through the real CLI on the tiny model: a reward
run, then a policy run pointed at its directory; the reward model gate before any compute is spent (a causal LM
refused, another chat template said, a weak reward model blocking --yes unless allowed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from engine.events import read_events
from engine.online import num_generations
from engine.pipeline import prepare
from support import PAIRS, QUICK, ROOT, make_config, run, tiny_config, write_files

PROMPTS = [{"prompt": p["prompt"]} for p in PAIRS]
CHATS = [{"messages": [{"role": "user", "content": p["prompt"]}]} for p in PAIRS]


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """An llm-reward run (a LoRA adapter) with a validation split, as the gate checks it: pairs it was trained on
    (a 0.3M-parameter random model does not generalise sums), so that the gate lets it through."""
    directory = tmp_path_factory.mktemp("reward")
    cfg = make_config(directory, tiny_model, "reward", files={"train.jsonl": PAIRS, "valid.jsonl": PAIRS[:4]},
                      path=str(directory), valid_split="valid",
                      params={"peft": True, "quantization": None, "max_steps": 20, "lr": 3e-3})
    code, run_dir, _ = run(cfg)
    assert code == 0
    return run_dir


def policy_config(directory: Path, tiny_model: Path, reward: Path | str, *, task: str = "llm-grpo",
                  files: dict | None = None, column: str = "prompt", **params: object) -> Path:
    """A GRPO/RLOO config file over prompts, written as a user would."""
    write_files(directory, files or {"train.jsonl": PROMPTS})
    raw = {"task": task, "base_model": str(tiny_model), "project_name": str(directory / "policy"),
           "data": {"path": str(directory), "chat_template": "tokenizer",
                    "column_mapping": {"prompt_text_column": column}},
           "params": {**QUICK, "reward_model": str(reward), "num_generations": 2, "max_completion_length": 8,
                      "peft": True, "quantization": None, **params}}
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(("task", "peft"), [("llm-grpo", True), ("llm-rloo", False)], ids=["grpo-lora", "rloo-full"])
def test_a_policy_learns_from_the_reward_run_through_the_cli(tmp_path: Path, tiny_model: Path, reward_run: Path,
                                                             task: str, peft: bool) -> None:
    config = policy_config(tmp_path, tiny_model, reward_run, task=task, peft=peft, max_steps=3)
    out = cli("--config", str(config), "--yes", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reward" in out.stdout and "Traceback" not in out.stdout + out.stderr
    run_dir = tmp_path / "policy"
    events = read_events(run_dir / "events.jsonl")
    steps = [e for e in events if e["type"] == "step" and e.get("loss") is not None]
    assert [e["step"] for e in steps] == [1, 2, 3] and events[-1]["status"] == "completed"
    for e in steps:  # the reward of the sampled answers, its spread and the answers' length, in every step
        m = e["metrics"]
        assert {"reward", "reward_std", "completions/mean_length", "completions/clipped_ratio"} <= set(m), m
        assert any(k.startswith("rewards/") and k.endswith("/mean") for k in m)
        assert e["tokens"] > 0 and 0 < e["trained_tokens"] < e["tokens"]  # the answers are what is trained
    assert ("kl" in steps[0]["metrics"]) == (task == "llm-rloo")  # RLOO's default KL term; GRPO's is 0
    assert any(e["type"] == "log" and e["message"].startswith("sampled at step") for e in events)
    # the result loads and generates, as the run saved it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir))
    if peft:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(run_dir))
        assert (run_dir / "adapter_model.safetensors").exists()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(run_dir))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 1 plus 2?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > ids["input_ids"].shape[1]


def test_the_prompt_ids_the_preview_shows_are_the_ones_trl_samples_from(in_tmp: Path, tiny_model: Path,
                                                                       reward_run: Path) -> None:
    """TRL renders message lists itself; the pipeline's ids (the preview's) must be the same tokens."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from engine.reward_gate import load_reward_model
    from engine.reward_model import inspect_reward_model

    reward, scorer = load_reward_model(inspect_reward_model(str(reward_run)), dtype=torch.float32)

    for files, column, template in (({"train.jsonl": CHATS}, "messages", "chatml"),
                                    ({"train.jsonl": PROMPTS}, "prompt", "tokenizer"),
                                    ({"train.jsonl": PROMPTS}, "prompt", "none")):
        cfg = tiny_config(in_tmp, tiny_model, files, task="llm-grpo", chat_template=template,
                          column_mapping={"prompt_text_column": column},
                          params={"reward_model": str(reward_run), "num_generations": 2})
        prepared = prepare(cfg)
        fs = prepared.splits[0]
        ids = [e.ids for e in prepared.encoded(fs)]
        prompts = [x.prompt for x in fs.examples]
        assert isinstance(prompts[0], list) == (template != "none")
        args = GRPOConfig(output_dir=str(in_tmp / "out"), per_device_train_batch_size=2, num_generations=2,
                          use_cpu=True, report_to="none", bf16=False)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
        model.resize_token_embeddings(len(prepared.tokenizer))
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_list(
            [{"prompt": p} for p in prompts]), processing_class=prepared.tokenizer, reward_processing_classes=scorer)
        assert [list(x) for x in trainer._tokenize_prompts(prompts)[0]] == ids, template


def test_a_causal_lm_as_reward_model_is_refused_before_anything_runs(tmp_path: Path, tiny_model: Path) -> None:
    config = policy_config(tmp_path, tiny_model, tiny_model)
    for flag in ("--dry-run", "--yes"):
        out = cli("--config", str(config), flag, cwd=tmp_path)
        assert out.returncode == 2, out.stdout + out.stderr
        text = out.stdout + out.stderr
        assert "params.reward_model" in text and "a causal language model, not a reward model" in text, text
        assert "Traceback" not in text and not (tmp_path / "policy").exists()


def test_the_gate_reports_the_reward_model_and_shows_each_prompt_as_both_models_see_it(
        tmp_path: Path, tiny_model: Path, reward_run: Path) -> None:
    out = cli("--config", str(policy_config(tmp_path, tiny_model, reward_run)), "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "Reward model" in text and "llmtune run, a LoRA adapter" in text
    assert "chosen above rejected on 100% of 4 pairs" in text and "valid.jsonl" in text  # its validation pairs
    assert "as reward model" in text and "<the sampled answer>" in text
    assert "another chat template" not in text  # both render with the tiny model's own template
    assert "optimizer steps" in text or "max_steps" in text
    assert "prompts up to max_prompt_length" in text and "2 answers per prompt" in text


def test_a_reward_model_with_another_chat_template_is_said_with_one_sample_each_way(
        tmp_path: Path, tiny_model: Path, reward_run: Path) -> None:
    out = cli("--config", str(policy_config(tmp_path, tiny_model, reward_run)), "--dry-run",
              "--set", "data.chat_template=zephyr", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "another chat template than the policy" in out.stdout
    assert "policy: '<|system|>" in out.stdout and "reward model: '" in out.stdout


def _dead_reward_model(tmp_path: Path, tiny_model: Path) -> Path:
    """A full llm-reward run whose score head is zeroed: it says the same of every text."""
    from safetensors.torch import load_file, save_file

    code, run_dir, _ = run(make_config(tmp_path / "dead", tiny_model, "reward", files={"train.jsonl": PAIRS * 2},
                                       path=str(tmp_path / "dead"),
                                       params={"peft": False, "quantization": None, "valid_fraction": 0.25}))
    assert code == 0
    weights = run_dir / "model.safetensors"
    tensors = load_file(str(weights))
    tensors = {k: torch.zeros_like(v) if k.startswith("score.") else v for k, v in tensors.items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return run_dir


def test_a_weak_reward_model_warns_in_the_dry_run_and_blocks_yes_unless_allowed(tmp_path: Path,
                                                                                   tiny_model: Path) -> None:
    (tmp_path / "dead").mkdir()
    dead = _dead_reward_model(tmp_path, tiny_model)
    config = policy_config(tmp_path, tiny_model, dead)
    dry = cli("--config", str(config), "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "weak" in dry.stdout and "near-constant" in dry.stdout and "--yes stops here" in dry.stdout
    blocked = cli("--config", str(config), "--yes", cwd=tmp_path)
    assert blocked.returncode == 2, blocked.stdout + blocked.stderr
    text = blocked.stdout + blocked.stderr
    assert "params.reward_model" in text and "allow_weak_reward_model" in text and "Traceback" not in text
    assert not (tmp_path / "policy" / "events.jsonl").exists()
    allowed = cli("--config", str(config), "--yes", "--set", "params.allow_weak_reward_model=true", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert read_events(tmp_path / "policy" / "events.jsonl")[-1]["status"] == "completed"


def test_the_config_rules_of_an_online_run(tmp_path: Path, tiny_model: Path) -> None:
    from engine.config import parse_config_text
    from engine.errors import ConfigError

    def problems(params: dict) -> str:
        raw = {"task": "llm-grpo", "base_model": "m", "project_name": "p",
               "data": {"column_mapping": {"prompt_text_column": "prompt"}}, "params": params}
        try:
            parse_config_text(yaml.safe_dump(raw))
        except ConfigError as e:
            return str(e)
        return ""

    assert "params.reward_model: is missing" in problems({})
    assert "must hold whole groups" in problems({"reward_model": "r", "batch_size": 3, "gradient_accumulation": 1})
    assert "1 weight(s) for 2 reward model(s)" in problems({"reward_model": ["a", "b"], "reward_weights": [1.0]})
    assert "must be numbers" in problems({"reward_model": "r", "reward_weights": "x"})
    assert problems({"reward_model": ["a", "b"], "reward_weights": [1, 0.5]}) == ""
    with pytest.raises(ConfigError, match="(?s)needs the prompt.*build prompts with data.prompt_template"):
        parse_config_text("task: llm-grpo\nbase_model: m\nproject_name: p\ndata:\n  chat_template: chatml\n"
                          "params:\n  reward_model: r\n")
    cfg = parse_config_text(yaml.safe_dump({"task": "llm-rloo", "base_model": "m", "project_name": "p",
                                            "data": {"column_mapping": {"prompt_text_column": "prompt"}},
                                            "params": {"reward_model": "r"}}))
    assert num_generations(cfg.params) == 2 and cfg.params.trainer == "rloo"


def test_a_prompt_that_ends_with_the_answer_and_prompts_over_the_limit(in_tmp: Path, tiny_model: Path,
                                                                       reward_run: Path) -> None:
    from engine.errors import DataError
    from engine.preview import build_preview

    answered = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": answered * 3}, task="llm-grpo", chat_template="chatml",
                      column_mapping={"prompt_text_column": "messages"}, params={"reward_model": str(reward_run)})
    with pytest.raises(DataError, match="ends with an assistant turn"):
        build_preview(cfg)
    long = [{"prompt": "word " * 80}] + PROMPTS
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": long}, task="llm-grpo", chat_template="tokenizer",
                      column_mapping={"prompt_text_column": "prompt"},
                      params={"reward_model": str(reward_run), "max_prompt_length": 40, "num_generations": 2})
    preview = build_preview(cfg)
    train = preview.splits[0]
    assert train.skipped == 1 and train.lengths[0].over == 1  # left out, not cut
    assert preview.reward is not None and "<the sampled answer>" in preview.reward.views[0][0]


def test_the_memory_estimate_counts_the_reward_model_and_the_generation_cache(tiny_model: Path,
                                                                              reward_run: Path) -> None:
    from engine.config import parse_config_text
    from engine.memory import estimate_memory
    from engine.model_info import read_model_info

    raw = {"task": "llm-grpo", "base_model": str(tiny_model), "project_name": "p",
           "data": {"column_mapping": {"prompt_text_column": "prompt"}},
           "params": {"reward_model": str(reward_run), "peft": False}}
    info = read_model_info(str(tiny_model))
    labels = [label for label, _ in estimate_memory(info, parse_config_text(yaml.safe_dump(raw)), gpu_total=None).parts]
    assert "reward model" in labels and "generation cache" in labels and "reference model" not in labels
    raw["params"]["kl_beta"] = 0.04  # a KL term: the reference model's weights too, without LoRA
    labels = [label for label, _ in estimate_memory(info, parse_config_text(yaml.safe_dump(raw)), gpu_total=None).parts]
    assert "reference model" in labels


def test_the_example_configs_train_sft_then_a_reward_model_then_grpo(tmp_path: Path) -> None:
    """configs/reward-then-grpo/, as the README says to run it (from one directory, step by step)."""
    example = ROOT / "configs" / "reward-then-grpo"
    for step in ("sft", "reward", "grpo"):
        # two steps of reward training make a weak reward model, which the gate would rightly stop
        out = cli("--config", str(example / f"{step}.yaml"), "--yes", "--set", "params.max_steps=2",
                  *(["--set", "params.allow_weak_reward_model=true"] if step == "grpo" else []), cwd=tmp_path)
        assert out.returncode == 0, step + out.stdout + out.stderr
    run_dir = tmp_path / "runs" / "reward-then-grpo" / "grpo"
    assert read_events(run_dir / "events.jsonl")[-1]["status"] == "completed"
    assert json.loads((run_dir / "training_params.json").read_text())["trainer"] == "grpo"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())  # local paths made absolute: it reruns anywhere
    assert saved["base_model"] == str(tmp_path / "runs/reward-then-grpo/sft")
    assert saved["params"]["reward_model"] == str(tmp_path / "runs/reward-then-grpo/reward")


def test_vllm_is_chosen_only_where_it_can_run(tmp_path: Path, tiny_model: Path, reward_run: Path) -> None:
    """vLLM (TRL's colocate mode) is a GPU-only path: asked for on this CPU it is refused before the run, and the
    selection says why wherever it falls back."""
    from types import SimpleNamespace

    from engine.online import generation

    asked, not_asked = SimpleNamespace(use_vllm=True), SimpleNamespace(use_vllm=False)
    assert generation(not_asked, on_cuda=True).backend == "transformers"
    assert generation(asked, on_cuda=False).backend == "transformers"
    assert "vLLM needs a CUDA GPU" in generation(asked, on_cuda=False).why
    import importlib.util

    if importlib.util.find_spec("vllm") is None:  # as here: a GPU alone is not enough
        assert "vllm package is not installed" in generation(asked, on_cuda=True).why
    out = cli("--config", str(policy_config(tmp_path, tiny_model, reward_run, use_vllm=True)), "--dry-run",
              cwd=tmp_path)
    assert out.returncode == 2 and "params.use_vllm" in out.stdout + out.stderr, out.stdout + out.stderr
    assert "cannot run here: vLLM needs a CUDA GPU" in out.stdout + out.stderr


def test_grpo_with_qlora_trains(in_tmp: Path, tiny_model: Path, reward_run: Path) -> None:
    """int4 QLoRA as for the other trainers (bitsandbytes runs on this CPU)."""
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": PROMPTS}, task="llm-grpo", chat_template="tokenizer",
                      column_mapping={"prompt_text_column": "prompt"},
                      params={**QUICK, "reward_model": str(reward_run), "num_generations": 2,
                              "max_completion_length": 8, "peft": True, "quantization": "int4"})
    cfg.project_name = str(in_tmp / "qlora")
    code, run_dir, events = run(cfg)
    assert code == 0, [e for e in events if e["type"] == "error"]
    assert any(e["type"] == "step" and "reward" in (e.get("metrics") or {}) for e in events)
    assert (run_dir / "adapter_model.safetensors").exists()


def test_grpo_on_two_processes_is_one_run(tmp_path: Path, tiny_model: Path, reward_run: Path) -> None:
    """`accelerate launch` over gloo: each rank samples for its share of the prompts, one event stream."""
    config = policy_config(tmp_path, tiny_model, reward_run, num_processes=2, max_steps=2)
    out = cli("--config", str(config), "--yes", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    events = read_events(tmp_path / "policy" / "events.jsonl")
    started = next(e for e in events if e["type"] == "run_started")
    assert started["launch"]["world_size"] == 2 and events[-1]["status"] == "completed"
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == sorted(set(steps)) and max(steps) == 2
    assert all("reward" in e["metrics"] for e in events if e["type"] == "step" and e.get("loss") is not None)


def test_a_reward_model_that_is_no_llmtune_run_is_checked_on_a_pairs_file(tmp_path: Path, tiny_model: Path,
                                                                          reward_run: Path) -> None:
    """A plain sequence-classification directory (as a hub model would be): the gate says it cannot check it, and
    with params.reward_pairs scores it on those pairs, rendered with its own template."""
    from engine.reward_gate import load_reward_model
    from engine.reward_model import inspect_reward_model

    model, tokenizer = load_reward_model(inspect_reward_model(str(reward_run)), dtype=torch.float32)
    plain = tmp_path / "plain-reward"
    model.save_pretrained(str(plain))
    tokenizer.save_pretrained(str(plain))
    assert inspect_reward_model(str(plain)).kind == "model"
    config = policy_config(tmp_path, tiny_model, plain)
    out = cli("--config", str(config), "--dry-run", cwd=tmp_path)
    assert out.returncode == 0 and "not checked" in out.stdout and "params.reward_pairs" in out.stdout, out.stdout
    write_files(tmp_path, {"pairs.jsonl": PAIRS})
    out = cli("--config", str(config), "--dry-run", "--set", f"params.reward_pairs={tmp_path / 'pairs.jsonl'}",
              cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "chosen above rejected on" in out.stdout and "6 pairs of" in out.stdout and "pairs.jsonl" in out.stdout
    missing = cli("--config", str(config), "--dry-run", "--set", "params.reward_pairs=nowhere.jsonl", cwd=tmp_path)
    assert missing.returncode == 2 and "params.reward_pairs" in missing.stdout + missing.stderr
