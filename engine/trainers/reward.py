"""Reward modelling with TRL's RewardTrainer: a one-label sequence-classification head scores chosen above
rejected. Pairs arrive already cut to block_size (TRL would drop over-long pairs instead), so max_length is
off here."""

from __future__ import annotations

from typing import Any

import torch
from trl import RewardConfig, RewardTrainer

from engine.trainers.common import Job, training_args
from engine.trainers.model import LoadedModel, load_model, lora_config, quantization_config


def build(job: Job, callbacks: list[Any]) -> tuple[Any, LoadedModel]:
    loaded = load_model(job.cfg, job.tokenizer)
    args = training_args(job, RewardConfig, max_length=None)
    trainer = RewardTrainer(model=loaded.model, args=args, train_dataset=job.dataset(job.train),
                            eval_dataset=job.dataset(job.valid), processing_class=job.tokenizer,
                            peft_config=lora_config(job.cfg, loaded), callbacks=callbacks)
    if quantization_config(job.cfg) is not None:
        _score_head_in_fp32(trainer.model)
    return trainer, loaded


def _score_head_in_fp32(model: Any) -> None:
    """With a quantized base TRL turns every trainable weight to bf16. LoRA layers cast their input to match;
    the score head does not, and fails on fp32 hidden states. Kept in fp32 (bf16 autocast still applies)."""
    for name, param in model.named_parameters():
        if param.requires_grad and "lora_" not in name and param.dtype != torch.float32:
            param.data = param.data.float()
