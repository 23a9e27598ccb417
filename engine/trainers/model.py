"""Loading the model to train: dtype, int4/int8 quantization, attention kernel, embeddings for added tokens,
and the LoRA config. Shared by every trainer; imports torch and transformers (the training process only)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.batching import flash_attention
from engine.config import RunConfig, resolve_local
from engine.precision import load_dtype_name
from engine.tinymodel import resolve_model

log = logging.getLogger("llmtune")


@dataclass
class LoadedModel:
    model: Any
    dtype: torch.dtype
    attention: str
    resized_to: int | None  # embeddings resized to this many rows for tokens a template added
    new_token_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # something asked for that this machine cannot do


def model_path(cfg: RunConfig, name: str | None = None) -> str:
    name = resolve_model(name or cfg.base_model)
    local = resolve_local(name, cfg.base_dir)
    return str(local) if local else name


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_dtype(cfg: RunConfig) -> torch.dtype:
    """The dtype weights are loaded in (the rule: engine.precision)."""
    return getattr(torch, load_dtype_name(cfg.params))


def quantization_config(cfg: RunConfig) -> Any | None:
    q = cfg.params.quantization if cfg.params.peft else None
    if not q:
        return None
    from transformers import BitsAndBytesConfig

    if q == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.params.mixed_precision or "", torch.float32)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def attention_implementation(cfg: RunConfig, warnings: list[str]) -> str:
    if cfg.params.use_flash_attention_2:
        if flash_attention(cfg.params, on_cuda=device() == "cuda"):
            return "flash_attention_2"
        why = "no CUDA GPU" if device() != "cuda" else "the flash_attn package is not installed"
        warnings.append(f"use_flash_attention_2: {why}; using PyTorch SDPA attention instead")
    return "sdpa"


def load_model(cfg: RunConfig, tokenizer: Any, *, name: str | None = None) -> LoadedModel:
    """The model with the head the trainer's spec names: a language-model head, or a one-label sequence
    classification head (reward)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    notes: list[str] = []
    warnings: list[str] = []
    quant = quantization_config(cfg)
    dtype = load_dtype(cfg)
    attention = attention_implementation(cfg, warnings)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attention, "token": cfg.hub.token or None}
    if quant is not None:
        kwargs["quantization_config"] = quant
        # each process of a run of several loads its quantized copy on its own GPU (accelerate's LOCAL_RANK)
        gpu = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())) if device() == "cuda" else None
        kwargs["device_map"] = {"": gpu if gpu is not None else "cpu"}
    if cfg.spec.scores:
        kwargs["num_labels"] = 1
        model = AutoModelForSequenceClassification.from_pretrained(model_path(cfg, name), **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path(cfg, name), **kwargs)
    if quant is not None:
        _keep_4bit_trainable_on_cpu(model)
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # the reward head finds the last token by it
    resized, new_ids = _fit_embeddings(model, tokenizer)
    if resized:
        notes.append(f"the chat template added {len(new_ids)} token(s); embeddings resized to {resized} rows")
    if not cfg.params.disable_gradient_checkpointing:
        model.config.use_cache = False  # the cache is useless in training and clashes with checkpointing
    return LoadedModel(model, dtype, attention, resized, new_ids, notes, warnings)


def _fit_embeddings(model: Any, tokenizer: Any) -> tuple[int | None, list[int]]:
    """Resize only when a token id is beyond the embedding matrix: many models have spare rows already."""
    rows = model.get_input_embeddings().weight.shape[0]
    vocab = len(tokenizer)
    new_ids = [i for i in range(rows, vocab)]
    if vocab <= rows:
        return None, []
    # mean_resizing: new rows start at the mean embedding, so untrained new tokens do not blow up the logits
    model.resize_token_embeddings(vocab, mean_resizing=True)
    return vocab, new_ids


def _keep_4bit_trainable_on_cpu(model: Any) -> None:
    """bitsandbytes 0.50 on CPUs with AVX512-BF16 repacks 4-bit weights after the first no-grad forward (an
    eval step); after that no gradient flows back through the layer. Turning the fast path off avoids it."""
    if device() != "cpu":
        return
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def lora_config(cfg: RunConfig, loaded: LoadedModel) -> Any | None:
    if not cfg.params.peft:
        return None
    from peft import LoraConfig

    targets = cfg.params.target_modules or "all-linear"
    target_modules: str | list[str] = ("all-linear" if targets.strip() == "all-linear"
                                       else [t.strip() for t in targets.split(",") if t.strip()])
    extra: dict[str, Any] = {}
    if loaded.new_token_ids:
        # Tokens the template added start untrained: train just their embedding rows, not the whole matrix.
        extra["trainable_token_indices"] = {_embedding_name(loaded.model): loaded.new_token_ids}
    return LoraConfig(r=cfg.params.lora_r, lora_alpha=cfg.params.lora_alpha, lora_dropout=cfg.params.lora_dropout,
                      target_modules=target_modules, bias="none",
                      task_type="SEQ_CLS" if cfg.spec.scores else "CAUSAL_LM", **extra)


def _embedding_name(model: Any) -> str:
    embeddings = model.get_input_embeddings()
    return next(name.rsplit(".", 1)[-1] for name, module in model.named_modules() if module is embeddings)
