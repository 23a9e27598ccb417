"""ORPO with TRL's ORPOTrainer, which TRL 1.16 keeps in `trl.experimental.orpo`. Its own tokenization is
replaced by the rows built in rows.py (prompt/chosen/rejected ids and labels, already cut to the limits)."""

from __future__ import annotations

import os
from typing import Any

from engine.trainers.common import Job, training_args
from engine.trainers.model import LoadedModel, load_model, lora_config

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _trainer_classes() -> tuple[type, type]:
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:  # older TRL kept it at the top level
        from trl import ORPOConfig, ORPOTrainer  # type: ignore[attr-defined,no-redef]
    return ORPOConfig, ORPOTrainer


def build(job: Job, callbacks: list[Any]) -> tuple[Any, LoadedModel]:
    config_class, trainer_class = _trainer_classes()

    class PretokenizedORPOTrainer(trainer_class):  # type: ignore[misc,valid-type]
        def tokenize_row(self, feature: dict, model: Any = None) -> dict:
            return {}  # the row already holds every column tokenize_row would make

    cfg = job.cfg
    loaded = load_model(cfg, job.tokenizer)
    args = training_args(job, config_class, beta=cfg.params.dpo_beta, max_length=job.block_size,
                         max_completion_length=cfg.params.max_completion_length)
    trainer = PretokenizedORPOTrainer(model=loaded.model, args=args, train_dataset=job.dataset(job.train),
                                      eval_dataset=job.dataset(job.valid), processing_class=job.tokenizer,
                                      peft_config=lora_config(cfg, loaded), callbacks=callbacks)
    return trainer, loaded
