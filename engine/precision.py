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


PRECISION_KEY = "params.mixed_precision"


def choose_precision(cfg: Any) -> tuple[str | None, str]:
    """(mixed_precision, why): what the config says, or, when it leaves the key out, bf16 where this machine runs
    it natively (a CUDA GPU with bf16; a CPU with AMX or AVX512-BF16: 1.3-1.4x faster here with the same loss
    curve, shared/STACK-NOTES.md) and full precision elsewhere. Probing imports torch."""
    if PRECISION_KEY not in cfg.defaulted:
        value = cfg.params.mixed_precision
        return value, f"{PRECISION_KEY}: {value or 'null (full precision)'}"
    from engine.capabilities import probe

    caps = probe()
    bf16 = caps.bf16
    native = ("emulated" not in bf16.reason if caps.device == "cuda" else
              "native" in bf16.reason and "no native" not in bf16.reason)
    if bf16.ok and native:
        return "bf16", f"auto: {bf16.reason.rstrip('.')}"
    return None, f"auto: full precision (fp32): {bf16.reason.rstrip('.')}"


def resolve_precision(cfg: Any) -> None:
    """Write the choice into `cfg` (the run directory's copy of the config), explicit from then on."""
    cfg.params.mixed_precision = choose_precision(cfg)[0]
    cfg.defaulted.discard(PRECISION_KEY)
