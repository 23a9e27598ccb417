"""GRPO and RLOO (TRL's GRPOTrainer, RLOOTrainer): the policy samples num_generations answers to each prompt, the
reward model(s) score them, and the policy is pushed towards the answers scored above their group.

The prompts come from the data pipeline as TRL takes them (a message list, rendered by TRL with the policy's
template for the policy and with each reward model's own for that model; or plain text), next to the ids the
preview showed. The reward model is loaded as the run that trained it saved it (engine.reward_model: an adapter
merged into its base), in the policy's precision, and given to TRL as a module with its own tokenizer. TRL loads
a reference model only when the KL coefficient is above 0 (with LoRA: the base with the adapter switched off).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import torch
from transformers import TrainerCallback

from engine.online import completion_length, generation, kl_beta, num_generations, reward_models, reward_weights
from engine.reward_gate import load_reward_model
from engine.reward_model import inspect_reward_model
from engine.trainers.common import Job, training_args
from engine.trainers.model import LoadedModel, device, load_model, lora_config


def build_online(job: Job, callbacks: list[Any], config_class: type, trainer_class: type,
                 **extra: Any) -> tuple[Any, LoadedModel]:
    cfg, p = job.cfg, job.cfg.params
    loaded = load_model(cfg, job.tokenizer)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(p.mixed_precision or "", torch.float32)
    scorers, tokenizers = [], []
    for name in reward_models(p):
        model, tokenizer = load_reward_model(inspect_reward_model(name, cfg.base_dir), dtype=dtype)
        scorers.append(model)
        tokenizers.append(tokenizer)
    group = num_generations(p)
    sampler = generation(p, on_cuda=device() == "cuda")
    vllm = {"use_vllm": True, "vllm_mode": "colocate"} if sampler.backend == "vllm" else {"use_vllm": False}
    args = training_args(
        job, config_class, num_generations=group, max_completion_length=completion_length(p), beta=kl_beta(p),
        temperature=p.temperature, top_p=p.top_p, num_iterations=p.num_iterations, reward_weights=reward_weights(p),
        # every eval batch holds whole groups of answers, as the training batches do
        per_device_eval_batch_size=group * math.ceil(p.batch_size / group), **vllm, **extra)
    trainer = trainer_class(model=loaded.model, reward_funcs=scorers, args=args, train_dataset=prompts(job, job.train),
                            eval_dataset=prompts(job, job.valid), processing_class=job.tokenizer,
                            reward_processing_classes=tokenizers, peft_config=lora_config(cfg, loaded),
                            callbacks=callbacks)
    loaded.notes.append(f"sampling: {sampler.why}")
    writer = next((c.writer for c in callbacks if getattr(c, "writer", None) is not None), None)
    if writer is not None:  # rank 0
        trainer.add_callback(LatestAnswer(trainer, writer))
    return trainer, loaded


class LatestAnswer(TrainerCallback):
    """A log event with the latest sampled answer and its reward, at the first logged step and then at most every
    SHOW_EVERY_S: the dashboard's log shows what the policy is writing as the reward moves."""

    SHOW_EVERY_S = 30.0
    CHARS = 300

    def __init__(self, trainer: Any, writer: Any) -> None:
        self.trainer, self.writer, self.shown = trainer, writer, -math.inf

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs_ = getattr(self.trainer, "_logs", {})
        due = time.monotonic() - self.shown >= self.SHOW_EVERY_S
        if "loss" not in (logs or {}) or not logs_.get("completion") or not due:
            return
        self.shown = time.monotonic()
        prompt, answer = logs_["prompt"][-1], logs_["completion"][-1]
        rewards = {name: values[-1] for name, values in logs_.get("rewards", {}).items() if values}
        scored = ", ".join(f"{name} {value:.3g}" for name, value in rewards.items())
        message = (f"sampled at step {state.global_step} (reward {scored}): {_short(_text(prompt), 120)!r} -> "
                   f"{_short(_text(answer), self.CHARS)!r}")
        logging.getLogger("llmtune").info(message)  # train.log too, as the run's other notes
        self.writer.log(level="info", message=message)


def _text(value: Any) -> str:
    """A prompt or answer as TRL logs it: text, or messages (the last one's content)."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    return str(value)


def _short(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 3] + "..."


def prompts(job: Job, rows: Any) -> Any:
    """The rows with the prompt as TRL takes it (the pipeline stores it as JSON text)."""
    dataset = job.dataset(rows)
    if dataset is None:
        return None
    return dataset.map(lambda row: {"prompt": json.loads(row["prompt"])}, remove_columns=["prompt_ids"])
