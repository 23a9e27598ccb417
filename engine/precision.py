"""The dtype a run loads the model's weights in, by name, so that the memory estimate (no torch) and the
trainer (engine.trainers.model) follow one rule."""

from __future__ import annotations

from typing import Any

BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def load_dtype_name(params: Any) -> str:
    """Full fine-tuning in fp16 keeps fp32 master weights (the grad scaler refuses fp16 parameters); LoRA can
    hold the frozen base in half precision."""
    mp = params.mixed_precision
    if mp == "bf16":
        return "bfloat16"
    if mp == "fp16" and params.peft:
        return "float16"
    return "float32"


def load_bytes(params: Any) -> int:
    """Bytes per weight in the dtype the trainer loads."""
    return BYTES[load_dtype_name(params)]
