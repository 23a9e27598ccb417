"""Training end to end on the tiny model with the real TRL trainers: every trainer with LoRA and full, a few
steps each. The run goes through `engine.train.train(run_dir)` in this process (what the training process
runs); test_train_cli.py starts real training processes through the CLI.

Each run is checked for: exit code, finite losses, events that match the schema, and a saved result that
loads with from_pretrained (and peft for adapters) and generates text (or scores it, for reward models).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.config import RunConfig, load_config
from engine.errors import ConfigError
from engine.events import validate_event
from engine.run_files import CONFIG_FILE, MERGED_DIR, PARAMS_FILE
from engine.rundir import prepare
from support import CHATS, PAIRS, SETUPS, make_config, run

pytestmark = pytest.mark.usefixtures("in_tmp")

def check_events(events: list[dict]) -> dict:
    for e in events:
        assert validate_event(e) == [], e
    kinds = [e["type"] for e in events]
    assert kinds.count("run_started") == 1 and kinds[-1] == "run_finished"
    losses = [e["loss"] for e in events if e["type"] == "step" and e["loss"] is not None]
    assert losses and all(math.isfinite(x) for x in losses)
    steps = [e for e in events if e["type"] == "step"]
    assert steps[-1]["tokens"] > 0 and 0 < steps[-1]["trained_tokens"] <= steps[-1]["tokens"]
    assert "rss" in steps[-1]["memory"]
    return events[-1]


def generate(model: Any, tokenizer: Any) -> str:
    ids = tokenizer("What is 1 plus 2?", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    return tokenizer.decode(out[0])


def load_result(run_dir: Path, cfg: RunConfig, tiny_model: Path) -> tuple[Any, Any]:
    """Load the saved result the way the model card says."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    auto = AutoModelForSequenceClassification if cfg.trainer == "reward" else AutoModelForCausalLM
    extra = {"num_labels": 1} if cfg.trainer == "reward" else {}
    if not cfg.params.peft:
        return auto.from_pretrained(run_dir, **extra), tokenizer
    from peft import PeftModel

    base = auto.from_pretrained(tiny_model, **extra)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))
    return PeftModel.from_pretrained(base, run_dir), tokenizer


@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("trainer", list(SETUPS))
def test_each_trainer_trains_saves_and_loads(in_tmp: Path, tiny_model: Path, trainer: str, peft: bool) -> None:
    cfg = make_config(in_tmp, tiny_model, trainer, params={"peft": peft, "quantization": None})
    code, run_dir, events = run(cfg)
    assert code == 0, (run_dir / "train.log").read_text()[-3000:] if (run_dir / "train.log").exists() else events
    final = check_events(events)
    assert final["status"] == "completed" and final["step"] == 2
    started = next(e for e in events if e["type"] == "run_started")
    assert started["trainer"] == trainer and started["total_steps"] == 2 and started["data"]["train"]["examples"]
    assert (started["trainable_parameters"] < started["total_parameters"]) == peft
    saved = {p.name for p in run_dir.iterdir()}
    assert ("adapter_config.json" in saved) == peft and ("model.safetensors" in saved) == (not peft)
    assert {"tokenizer.json", "README.md", CONFIG_FILE, PARAMS_FILE, "events.jsonl"} <= saved
    model, tokenizer = load_result(run_dir, cfg, tiny_model)
    if trainer == "reward":
        scores = model(**tokenizer(["It is 3.", "It is 4."], return_tensors="pt", padding=True)).logits
        assert scores.shape == (2, 1) and torch.isfinite(scores).all()
    else:
        generate(model, tokenizer)
    card = (run_dir / "README.md").read_text()
    assert "## How to load it" in card and cfg.base_model in card


def test_template_tokens_with_lora_then_merge_loads_alone(in_tmp: Path, tiny_model: Path) -> None:
    """chatml adds two tokens the tiny model lacks: the embeddings grow, only those rows train beside LoRA,
    and the merged model loads on its own with the tokenizer and template used in training."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": True, "quantization": None, "merge_adapter": True})
    code, run_dir, events = run(cfg)
    assert code == 0
    assert any("embeddings resized to 2002" in e.get("message", "") for e in events if e["type"] == "log")
    final = check_events(events)
    assert final["merged"] == str(run_dir / MERGED_DIR)
    merged = AutoModelForCausalLM.from_pretrained(run_dir / MERGED_DIR)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / MERGED_DIR)
    assert merged.get_input_embeddings().weight.shape[0] == len(tokenizer) == 2002
    assert "<|im_start|>" in tokenizer.chat_template
    adapter, _ = load_result(run_dir, cfg, tiny_model)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 1 plus 2?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():  # the merge is the adapter: same logits
        assert torch.allclose(merged(ids).logits, adapter(ids).logits, atol=1e-4)
    generate(merged, tokenizer)


def test_validation_split_reports_eval_loss(in_tmp: Path, tiny_model: Path) -> None:
    files = {"train.jsonl": CHATS, "valid.jsonl": CHATS[:2]}
    cfg = make_config(in_tmp, tiny_model, "sft", files=files, train_split="train", valid_split="valid",
                      params={"peft": True, "quantization": None, "max_steps": 3, "eval_strategy": "steps",
                              "eval_steps": 2})
    code, run_dir, events = run(cfg)
    assert code == 0
    evals = [e for e in events if e["type"] == "eval"]
    # every 2 steps, and once more at the end because the run stopped between evaluations
    assert [e["step"] for e in evals] == [2, 3] and all(math.isfinite(e["eval_loss"]) for e in evals)
    assert "valid" in next(e for e in events if e["type"] == "run_started")["data"]
    assert events[-1]["metrics"]["eval_loss"] == evals[-1]["eval_loss"]


def test_dpo_pairs_are_cut_to_the_configured_lengths(in_tmp: Path, tiny_model: Path) -> None:
    long_pairs = [{**p, "prompt": p["prompt"] + " Please think step by step about it." * 6} for p in PAIRS]
    cfg = make_config(in_tmp, tiny_model, "dpo", files={"train.jsonl": long_pairs},
                      params={"peft": True, "quantization": None, "max_prompt_length": 16, "block_size": 24})
    code, run_dir, events = run(cfg)
    assert code == 0
    stats = next(e for e in events if e["type"] == "run_started")["data"]["train"]
    assert stats["examples"] == len(PAIRS) and stats["truncated"] == len(PAIRS)


def test_int4_lora_keeps_gradients_flowing_after_an_evaluation(in_tmp: Path, tiny_model: Path) -> None:
    """bitsandbytes 0.50 on AVX512-BF16 CPUs stops gradients after a no-grad forward unless the fast path is off."""
    from peft import get_peft_model

    from engine.pipeline import prepare_tokenizer
    from engine.trainers.model import load_model, lora_config

    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": True, "quantization": "int4"},
                      chat_template="tokenizer")
    tokenizer, _ = prepare_tokenizer(cfg)
    loaded = load_model(cfg, tokenizer)
    model = get_peft_model(loaded.model, lora_config(cfg, loaded))
    ids = tokenizer("The fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        model(ids)
    model.train()
    model(ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), \
        [n for n, g in grads.items() if g is None or g.abs().sum() == 0]


@pytest.mark.parametrize("quantization", ["int4", "int8"])
def test_reward_model_with_quantization_trains(in_tmp: Path, tiny_model: Path, quantization: str) -> None:
    cfg = make_config(in_tmp, tiny_model, "reward", params={"peft": True, "quantization": quantization})
    code, run_dir, events = run(cfg)
    assert code == 0, (run_dir / "train.log").read_text()[-2000:] if (run_dir / "train.log").exists() else events
    check_events(events)


def test_tensorboard_logs_and_training_params(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "default", params={"peft": False})
    cfg.log = "tensorboard"
    code, run_dir, _ = run(cfg)
    assert code == 0
    assert list((run_dir / "runs").rglob("events.out.tfevents.*"))
    params = json.loads((run_dir / PARAMS_FILE).read_text())
    assert params["model"] == cfg.base_model and params["trainer"] == "default" and params["max_steps"] == 2


def test_resolved_config_reloads_with_absolute_paths(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": True, "quantization": None})
    run_dir = prepare(cfg)
    again = load_config(run_dir / CONFIG_FILE, check_env=True)
    from engine.precision import choose_precision

    # what the config leaves open is chosen for this machine and written in (engine.precision, checkpointing)
    expected = dataclasses.replace(cfg.params, mixed_precision=choose_precision(cfg)[0])
    assert Path(again.data.path).is_absolute() and again.params == expected and again.task == cfg.task


def test_a_run_directory_with_results_is_not_overwritten(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "default", params={"peft": False})
    code, run_dir, _ = run(cfg)
    assert code == 0
    with pytest.raises(ConfigError, match="already holds a trained model"):
        prepare(cfg)


def test_a_run_that_failed_before_training_can_be_started_again(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": False, "block_size": 4})
    code, run_dir, events = run(cfg)  # the prompt fills all 4 tokens: nothing left to train
    assert code == 2 and events[-1]["status"] == "failed"
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "user" and "block_size" in error["message"]
    cfg.params.block_size = 64
    code, _, _ = run(cfg)
    assert code == 0


def test_a_training_failure_ends_the_stream_with_the_reason(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": False, "optimizer": "galore_adamw"})
    code, run_dir, events = run(cfg)  # GaLore needs a package that is not installed
    assert code == 1
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "internal" and "galore" in error["message"].lower()
    assert error["log"] == str(run_dir / "train.log")
    assert events[-1] == {**events[-1], "status": "failed", "exit_code": 1}


def test_a_failed_merge_keeps_the_adapter_and_says_why(in_tmp: Path, tiny_model: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.trainers.merge

    def broken(*args: Any, **kwargs: Any) -> Path:
        raise MemoryError("not enough memory to load the base model")

    monkeypatch.setattr(engine.trainers.merge, "merge_adapter", broken)
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": True, "quantization": None, "merge_adapter": True})
    code, run_dir, events = run(cfg)
    assert code == 0 and events[-1]["status"] == "completed" and events[-1]["merged"] is None
    error = next(e for e in events if e["type"] == "log" and e["level"] == "error")
    assert "merging the adapter failed (MemoryError" in error["message"] and str(run_dir) in error["message"]
    assert (run_dir / "adapter_model.safetensors").exists() and not (run_dir / MERGED_DIR).exists()


def test_push_to_hub_failure_keeps_the_result_and_says_how_to_upload(in_tmp: Path, tiny_model: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.rundir import child_env

    cfg = make_config(in_tmp, tiny_model, "default", params={"peft": False})
    cfg.hub.push_to_hub, cfg.hub.username, cfg.hub.token = True, "someone", "hf_not_a_token"
    # a literal token is never written to the run directory: the training process gets it as HF_TOKEN
    for name, value in child_env(cfg).items():
        monkeypatch.setenv(name, value)
    code, run_dir, events = run(cfg)  # offline in tests: the push cannot succeed
    assert "hf_not_a_token" not in (run_dir / CONFIG_FILE).read_text()
    assert "${HF_TOKEN}" in (run_dir / CONFIG_FILE).read_text()
    assert code == 0 and (run_dir / "model.safetensors").exists()
    error = next(e for e in events if e["type"] == "log" and e["level"] == "error")
    assert "pushing to the Hub failed" in error["message"] and "huggingface-cli upload someone/run" in error["message"]
