"""`merge_adapter: true`: the LoRA adapter merged into a fresh copy of the base model in its own dtype (never
into a quantized base), saved with the tokenizer so `from_pretrained` loads it alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.trainers.model import model_path


def merge_adapter(cfg: RunConfig, run_dir: Path, tokenizer: Any, out_dir: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": "auto", "token": cfg.hub.token or None}
    if cfg.spec.scores:
        base = AutoModelForSequenceClassification.from_pretrained(model_path(cfg), num_labels=1, **kwargs)
    else:
        base = AutoModelForCausalLM.from_pretrained(model_path(cfg), **kwargs)
    merged = merged_model(base, tokenizer, run_dir)
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def merged_model(base: Any, tokenizer: Any, adapter_dir: Path) -> Any:
    """The adapter in `adapter_dir` merged into `base` (loaded in its own dtype), with the embedding rows the
    chat template added and the pad token the score head reads."""
    from peft import PeftModel

    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows come from the adapter
    if base.config.pad_token_id is None:
        base.config.pad_token_id = tokenizer.pad_token_id
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
