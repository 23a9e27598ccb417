"""One module per TRL trainer. Each `build(job)` returns (trainer, loaded model) over pre-tokenized rows.

The generic causal-LM trainer (`trainer: default`) is SFT over packed blocks with every token trained: the
difference lives in `rows.py`, so both use `sft.build`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from engine.tasks import spec


def builder(trainer: str) -> Callable[..., Any]:
    """The `build` of the module the trainer's spec names (engine.tasks)."""
    return importlib.import_module(spec(trainer).build_module).build
