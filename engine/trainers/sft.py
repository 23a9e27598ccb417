"""SFT (and the generic causal LM) with TRL's SFTTrainer over rows of `input_ids` + `labels`: the labels carry
the exact mask the preview shows (-100 on prompts and user turns), so TRL neither re-templates nor re-masks."""

from __future__ import annotations

from typing import Any

from trl import SFTConfig, SFTTrainer

from engine.trainers.common import Job, training_args
from engine.trainers.model import LoadedModel, load_model, lora_config


def build(job: Job, callbacks: list[Any]) -> tuple[Any, LoadedModel]:
    loaded = load_model(job.cfg, job.tokenizer)
    args = training_args(job, SFTConfig, max_length=job.block_size, packing=False,
                         padding_free=job.batching.mode == "packed",
                         assistant_only_loss=False, completion_only_loss=None)
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=job.dataset(job.train),
                         eval_dataset=job.dataset(job.valid), processing_class=job.tokenizer,
                         peft_config=lora_config(job.cfg, loaded), callbacks=callbacks)
    return trainer, loaded
