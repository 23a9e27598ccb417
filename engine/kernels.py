"""Fused kernels, chosen for the machine and model: Liger's (`params.liger_kernel`: auto|on|off) and LoRA's
dropout fused into its matmul (`params.lora_dropout_kernel`: auto|on|off), both our additions.

Liger replaces a model's RMSNorm, RoPE and SwiGLU (and, outside TRL's SFT, which fuses its own LM head, the
LM head with the cross-entropy) with Triton kernels: less memory and more speed on a CUDA GPU, for the model
types it knows. transformers applies them with `use_liger_kernel`. Triton needs CUDA, so `auto` turns them on
only with a CUDA GPU, the liger_kernel package installed and a model type it supports; `on` where that is not
so is refused by the config check, with the reason. Light: no torch (liger's table of model types is read only
where it is installed and a GPU is there).

The fused LoRA dropout (engine.trainers.lora_dropout) is the same dropout drawn and applied inside the LoRA A
matmul: on a CPU, torch's dropout draws its mask slowly and every LoRA module keeps its own dropped copy of its
input. `auto` turns it on for LoRA runs with dropout on the CPU, where it was measured; on a GPU peft's dropout
is torch's fused kernel, and `on` there is refused.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

SWITCH = ("auto", "on", "off")  # the choices of each kernel key
KEY = "params.liger_kernel"
LORA_DROPOUT_KEY = "params.lora_dropout_kernel"


@dataclass(frozen=True)
class Kernels:
    liger: bool
    why: str
    lora_dropout: bool = False
    lora_dropout_why: str = f"{LORA_DROPOUT_KEY}: off"

    def describe(self) -> str:
        return (f"Liger {'on' if self.liger else 'off'} ({self.why}); LoRA dropout "
                f"{'fused' if self.lora_dropout else 'as peft does it'} ({self.lora_dropout_why})")

    def as_dict(self) -> dict[str, Any]:
        return {"liger": self.liger, "why": self.why, "lora_dropout": self.lora_dropout,
                "lora_dropout_why": self.lora_dropout_why}


def liger_refusal(*, on_cuda: bool, installed: bool, model_type: str | None,
                  supported: Collection[str] | None) -> str | None:
    """Why Liger's kernels cannot run here, or None when they can."""
    if not on_cuda:
        return "its Triton kernels need a CUDA GPU"
    if not installed:
        return "the liger_kernel package is not installed (pip install liger-kernel)"
    if supported is not None and model_type not in supported:
        return f"liger_kernel has no kernels for model type {model_type or 'unknown'}"
    return None


def choose_kernels(asked: str, *, on_cuda: bool, installed: bool, model_type: str | None,
                   supported: Collection[str] | None) -> Kernels:
    """What params.liger_kernel asks, or for `auto` on exactly where it can run. `on` where it cannot raises
    ValueError (the config check says it before that)."""
    if asked == "off":
        return Kernels(False, f"{KEY}: off")
    refusal = liger_refusal(on_cuda=on_cuda, installed=installed, model_type=model_type, supported=supported)
    if asked == "on":
        if refusal:
            raise ValueError(f"{KEY}: on cannot run here: {refusal}")
        return Kernels(True, f"{KEY}: on")
    if refusal:
        return Kernels(False, f"auto: {refusal}")
    return Kernels(True, "auto: fused RMSNorm, RoPE, SwiGLU and cross-entropy on this GPU")


def lora_dropout_refusal(*, on_cuda: bool) -> str | None:
    """Why the fused LoRA dropout cannot run here, or None when it can."""
    if on_cuda:
        return "it is built and measured for CPU runs; on a GPU peft's dropout is torch's fused kernel already"
    return None


def choose_lora_dropout(asked: str, *, on_cuda: bool, peft: bool, dropout: float) -> tuple[bool, str]:
    """(fused, why): what params.lora_dropout_kernel asks, or for `auto` fused wherever it can run. `on` where
    it cannot raises ValueError (the config check says it before that)."""
    if asked == "off":
        return False, f"{LORA_DROPOUT_KEY}: off"
    if not peft:
        return False, "no LoRA (params.peft: false)"
    if dropout <= 0:
        return False, "params.lora_dropout: 0, nothing to drop"
    refusal = lora_dropout_refusal(on_cuda=on_cuda)
    if asked == "on":
        if refusal:
            raise ValueError(f"{LORA_DROPOUT_KEY}: on cannot run here: {refusal}")
        return True, f"{LORA_DROPOUT_KEY}: on"
    if refusal:
        return False, f"auto: {refusal}"
    return True, ("auto: the mask drawn and applied inside the LoRA matmul on this CPU, the same dropout "
                  "(1.25x faster steps than peft's here)")


def on_refusals(params: Any, *, on_cuda: bool) -> list[tuple[str, str]]:
    """(key, reason) for each kernel key set to `on` that cannot run on this machine: the config check's list,
    so a new kernel key is added here once. Liger's model type is checked by liger where it runs."""
    out = []
    if params.liger_kernel == "on":
        refusal = liger_refusal(on_cuda=on_cuda, installed=liger_installed(), model_type=None, supported=None)
        if refusal:
            out.append((KEY, refusal))
    if params.lora_dropout_kernel == "on":
        refusal = lora_dropout_refusal(on_cuda=on_cuda)
        if refusal:
            out.append((LORA_DROPOUT_KEY, refusal))
    return out


def asks_on(params: Any) -> bool:
    """Whether any kernel key is set to `on` (the only setting the config check has to ask the machine about)."""
    return "on" in (params.liger_kernel, params.lora_dropout_kernel)


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def liger_model_types() -> Collection[str] | None:
    """The model types liger_kernel patches (its own table), or None when it cannot tell."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:  # an older or broken install: let transformers decide, and say what it did
        return None
    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def machine_kernels(cfg: Any, *, on_cuda: bool, model_type: str | None = None) -> Kernels:
    """choose_kernels and choose_lora_dropout for a config on a machine with or without a CUDA GPU;
    `model_type` (config.json's, from engine.model_info, which the caller reads: this module sits below
    engine.config) unknown: not checked."""
    p = cfg.params
    known = on_cuda and p.liger_kernel != "off" and model_type is not None and liger_installed()
    liger = choose_kernels(p.liger_kernel, on_cuda=on_cuda, installed=liger_installed(), model_type=model_type,
                           supported=liger_model_types() if known else None)
    fused, why = choose_lora_dropout(p.lora_dropout_kernel, on_cuda=on_cuda, peft=p.peft, dropout=p.lora_dropout)
    return replace(liger, lora_dropout=fused, lora_dropout_why=why)
