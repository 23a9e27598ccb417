"""One module per TRL trainer. Each `build(job)` returns (trainer, loaded model) over pre-tokenized rows.

The generic causal-LM trainer (`trainer: default`) is SFT over packed blocks with every token trained: the
difference lives in `rows.py`, so both use `sft.build`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

MODULES = {"default": "sft", "sft": "sft", "reward": "reward", "dpo": "dpo", "orpo": "orpo"}


def builder(trainer: str) -> Callable[..., Any]:
    return importlib.import_module(f"engine.trainers.{MODULES[trainer]}").build
