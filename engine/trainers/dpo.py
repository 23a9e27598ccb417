"""DPO with TRL's DPOTrainer over `prompt_ids` / `chosen_ids` / `rejected_ids`. TRL 1.16 has no
max_prompt_length / max_completion_length any more; the rows are cut to them (and to block_size) already.
With LoRA the frozen base (adapter disabled) is the reference; without, `model_ref` or a copy of the base."""

from __future__ import annotations

from typing import Any

from trl import DPOConfig, DPOTrainer

from engine.trainers.common import Job, training_args
from engine.trainers.model import LoadedModel, load_model, lora_config


class PretokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer re-tokenizes text columns unconditionally; our rows are tokenized already."""

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        return dataset


def build(job: Job, callbacks: list[Any]) -> tuple[Any, LoadedModel]:
    cfg = job.cfg
    loaded = load_model(cfg, job.tokenizer)
    ref_model = None
    if not cfg.params.peft:
        ref_model = load_model(cfg, job.tokenizer, name=cfg.params.model_ref or cfg.base_model).model
        ref_model.eval()
    args = training_args(job, DPOConfig, beta=cfg.params.dpo_beta, max_length=None)
    trainer = PretokenizedDPOTrainer(model=loaded.model, ref_model=ref_model, args=args,
                                     train_dataset=job.dataset(job.train), eval_dataset=job.dataset(job.valid),
                                     processing_class=job.tokenizer, peft_config=lora_config(cfg, loaded),
                                     callbacks=callbacks)
    return trainer, loaded
