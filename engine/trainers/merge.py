"""`merge_adapter: true`: the LoRA adapter merged into a fresh copy of the base model in its own dtype (never
into a quantized base), saved with the tokenizer so `from_pretrained` loads it alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.trainers.model import model_path


def merge_adapter(cfg: RunConfig, run_dir: Path, tokenizer: Any, out_dir: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": "auto", "token": cfg.hub.token or None}
    if cfg.spec.scores:
        base = AutoModelForSequenceClassification.from_pretrained(model_path(cfg), num_labels=1, **kwargs)
    else:
        base = AutoModelForCausalLM.from_pretrained(model_path(cfg), **kwargs)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows come from the adapter
    if base.config.pad_token_id is None:
        base.config.pad_token_id = tokenizer.pad_token_id
    merged = PeftModel.from_pretrained(base, str(run_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
