"""The key of a prepared dataset: a hash of everything that changes what the data pipeline produces.

Two runs with the same key get the same ids and masks, so a prepared dataset stored under it can be reused by
the dry run, the wizard, `--yes` and the training process (issue 14). Anything that changes the result must
be in here: the data files (path, size, modification time), the splits and the hold-out, the column mapping
and templates, the chat template's text, the tokenizer (its vocabulary, special tokens and template), the
trainer, the block size and length limits, and the pipeline's own version. Light: no torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.chat_templates import TemplateSetup
from engine.config import RunConfig
from engine.data import DataSource, resolve_split

# Raise whenever formatting, encoding or the row shapes change what they produce: old entries then miss.
PIPELINE_VERSION = 1


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Size and modification time, as `datasets` keys local files: an edited file misses even at equal size."""
    stat = path.stat()
    return {"path": str(path.absolute()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def source_fingerprint(source: DataSource) -> dict[str, Any]:
    if source.kind == "file" and source.path is not None:
        return {"kind": "file", "format": source.format, **file_fingerprint(source.path)}
    return {"kind": "hub", "id": source.dataset_id, "config": source.config_name, "split": source.split}


def data_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """Where each split's rows come from, with the hold-out that makes a validation split out of train."""
    d, p = cfg.data, cfg.params
    splits = {role: resolve_split(d.path, split, base_dir=cfg.base_dir, split_key=f"data.{role}_split")
              for role, split in d.splits()}
    held_out = {"fraction": p.valid_fraction, "seed": p.seed} if p.valid_fraction and not d.valid_split else None
    return {"splits": {role: source_fingerprint(s) for role, s in splits.items()}, "held_out": held_out}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what the tokenizer does to text: its full definition when it is a fast tokenizer (vocabulary,
    merges, normalizer, added tokens), else its vocabulary; plus its special tokens and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = {"class": type(tokenizer).__name__, "special": tokenizer.special_tokens_map,
             "added": {str(k): str(v) for k, v in tokenizer.added_tokens_decoder.items()},
             "chat_template": getattr(tokenizer, "chat_template", None),
             "padding_side": tokenizer.padding_side, "model_max_length": tokenizer.model_max_length}
    digest = hashlib.sha256(body.encode())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cache_key(cfg: RunConfig, tokenizer: Any, setup: TemplateSetup, block_size: int) -> str:
    """The key of what `engine.pipeline.prepare(cfg)` produces with this tokenizer and block size."""
    d, p, cm = cfg.data, cfg.params, cfg.data.column_mapping
    parts = {
        "version": PIPELINE_VERSION,
        "trainer": cfg.trainer,
        "data": data_fingerprint(cfg),
        "columns": {"text": cm.text_column, "prompt": cm.prompt_text_column, "rejected": cm.rejected_text_column},
        "templates": {"prompt": d.prompt_template, "completion": d.completion_template},
        "chat_template": {"name": setup.name, "text": setup.template},
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "eos": tokenizer.eos_token,
        "lengths": {"block_size": block_size, "max_prompt_length": p.max_prompt_length,
                    "max_completion_length": p.max_completion_length, "model_max_length": p.model_max_length},
        "text": {"add_eos_token": p.add_eos_token, "train_on_all_tokens": p.train_on_all_tokens},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
