"""Liger's fused kernels (`params.liger_kernel`: auto|on|off, our addition), chosen for the machine and model.

Liger replaces a model's RMSNorm, RoPE and SwiGLU (and, outside TRL's SFT, which fuses its own LM head, the
LM head with the cross-entropy) with Triton kernels: less memory and more speed on a CUDA GPU, for the model
types it knows. transformers applies them with `use_liger_kernel`. Triton needs CUDA, so `auto` turns them on
only with a CUDA GPU, the liger_kernel package installed and a model type it supports; `on` where that is not
so is refused by the config check, with the reason. Light: no torch (liger's table of model types is read only
where it is installed and a GPU is there).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

LIGER = ("auto", "on", "off")
KEY = "params.liger_kernel"


@dataclass(frozen=True)
class Kernels:
    liger: bool
    why: str

    def describe(self) -> str:
        return f"{'on' if self.liger else 'off'} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return {"liger": self.liger, "why": self.why}


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
    """choose_kernels for a config on a machine with or without a CUDA GPU; `model_type` (config.json's, from
    engine.model_info, which the caller reads: this module sits below engine.config) unknown: not checked."""
    asked = cfg.params.liger_kernel
    known = on_cuda and asked != "off" and model_type is not None and liger_installed()
    return choose_kernels(asked, on_cuda=on_cuda, installed=liger_installed(), model_type=model_type,
                          supported=liger_model_types() if known else None)
