"""Fused kernels, chosen for the machine and model, each with its key (auto|on|off, our additions): Liger's
(`params.liger_kernel`), LoRA's dropout fused into its matmul (`params.lora_dropout_kernel`), the LM head's
log-probabilities on the CPU (`params.logprob_kernel`) and attention without the padding mask for right-padded
batches (`params.causal_attention_kernel`), attention's gradient in fp32 on the CPU
(`params.attention_grad_kernel`), and glibc's allocator keeping freed blocks (`params.malloc_reuse`,
engine.allocator). SWITCHES lists them: the summary line, the run_started event and the
config check's refusals read it.

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

The CPU log-prob head (engine.trainers.logprob_head) scores only the positions with a label, a block of tokens
at a time, where TRL's fused LM head scores every position in fp32 off a GPU. `auto`: on for CPU runs of the
trainers whose loss comes from TRL's fused head (SFT, generic, DPO, GRPO, RLOO); on a GPU TRL's Triton kernel
does the same already, and `on` there is refused.

Causal attention without the padding mask (engine.trainers.causal_attention): exact for right-padded batches of
a causal model, and PyTorch runs its causal kernel instead of the masked one. `auto`: on for CPU runs, where it
was measured; `on` runs it on a GPU too.

Attention's gradient in fp32 (engine.trainers.attention_grad): PyTorch's CPU flash kernel's bf16 backward is
1.3-3x slower than its fp32 one; the forward stays bf16. `auto`: on for CPU runs; on a GPU `on` is refused.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from engine.allocator import allocator_refusal

SWITCH = ("auto", "on", "off")  # the choices of each kernel key
KEY = "params.liger_kernel"
LORA_DROPOUT_KEY = "params.lora_dropout_kernel"
LOGPROB_KEY = "params.logprob_kernel"
CAUSAL_KEY = "params.causal_attention_kernel"
ATTENTION_GRAD_KEY = "params.attention_grad_kernel"
MALLOC_KEY = "params.malloc_reuse"


@dataclass(frozen=True)
class Switch:
    """One kernel key: the Kernels fields it sets (`attr`, and `attr`_why, Liger's being `why`) and its words."""
    attr: str
    key: str
    label: str
    on: str
    off: str

    @property
    def why_attr(self) -> str:
        return "why" if self.attr == "liger" else f"{self.attr}_why"

    @property
    def param(self) -> str:
        return self.key.removeprefix("params.")


SWITCHES = (
    Switch("liger", KEY, "Liger", "on", "off"),
    Switch("lora_dropout", LORA_DROPOUT_KEY, "LoRA dropout", "fused", "as peft does it"),
    Switch("logprob_head", LOGPROB_KEY, "log-probs", "llmtune's CPU head", "TRL's head"),
    Switch("causal_attention", CAUSAL_KEY, "attention", "causal, no padding mask", "with the padding mask"),
    Switch("attention_grad", ATTENTION_GRAD_KEY, "attention gradient", "fp32 on the CPU", "as PyTorch computes it"),
    Switch("malloc_reuse", MALLOC_KEY, "allocator", "reuses large blocks", "glibc's defaults"),
)


@dataclass(frozen=True)
class Kernels:
    liger: bool
    why: str
    lora_dropout: bool = False
    lora_dropout_why: str = f"{LORA_DROPOUT_KEY}: off"
    logprob_head: bool = False
    logprob_head_why: str = f"{LOGPROB_KEY}: off"
    causal_attention: bool = False
    causal_attention_why: str = f"{CAUSAL_KEY}: off"
    attention_grad: bool = False
    attention_grad_why: str = f"{ATTENTION_GRAD_KEY}: off"
    malloc_reuse: bool = False
    malloc_reuse_why: str = f"{MALLOC_KEY}: off"

    def describe(self) -> str:
        return "; ".join(f"{s.label} {s.on if getattr(self, s.attr) else s.off} ({getattr(self, s.why_attr)})"
                         for s in SWITCHES)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for s in SWITCHES for name in (s.attr, s.why_attr)}


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


def _decide(asked: str, key: str, refusal: str | None, auto_why: str, auto_off: str | None = None
            ) -> tuple[bool, str]:
    """(on, why) by the rule every kernel key follows: `off` is off; `on` runs, or raises ValueError where
    `refusal` says it cannot (the config check says it before that); `auto` runs wherever nothing refuses it
    and `auto_off` (where it can run but llmtune does not choose it) is None."""
    if asked == "off":
        return False, f"{key}: off"
    if asked == "on":
        if refusal:
            raise ValueError(f"{key}: on cannot run here: {refusal}")
        return True, f"{key}: on"
    if refusal or auto_off:
        return False, f"auto: {refusal or auto_off}"
    return True, f"auto: {auto_why}"


def choose_kernels(asked: str, *, on_cuda: bool, installed: bool, model_type: str | None,
                   supported: Collection[str] | None) -> Kernels:
    """What params.liger_kernel asks, or for `auto` on exactly where it can run (_decide's rule)."""
    refusal = liger_refusal(on_cuda=on_cuda, installed=installed, model_type=model_type, supported=supported)
    return Kernels(*_decide(asked, KEY, refusal, "fused RMSNorm, RoPE, SwiGLU and cross-entropy on this GPU"))


def lora_dropout_refusal(*, on_cuda: bool) -> str | None:
    """Why the fused LoRA dropout cannot run here, or None when it can."""
    if on_cuda:
        return "it is built and measured for CPU runs; on a GPU peft's dropout is torch's fused kernel already"
    return None


def choose_lora_dropout(asked: str, *, on_cuda: bool, peft: bool, dropout: float) -> tuple[bool, str]:
    """(fused, why): what params.lora_dropout_kernel asks, or for `auto` fused wherever it can run (_decide's
    rule)."""
    if asked != "off" and not peft:
        return False, "no LoRA (params.peft: false)"
    why = ("no dropout to draw; the LoRA A matmul reads its input without peft's fp32 copy" if dropout <= 0 else
           "the mask drawn and applied inside the LoRA matmul on this CPU, the same dropout, and the input read "
           "without peft's fp32 copy (1.4x faster steps than peft's here)")
    return _decide(asked, LORA_DROPOUT_KEY, lora_dropout_refusal(on_cuda=on_cuda), why)


def logprob_refusal(*, on_cuda: bool) -> str | None:
    """Why the CPU log-prob head cannot run here, or None when it can."""
    if on_cuda:
        return "on a GPU TRL's Triton kernel scores only the labelled positions already"
    return None


def choose_logprob_head(asked: str, *, on_cuda: bool, fused_head: bool) -> tuple[bool, str]:
    """(on, why) for params.logprob_kernel; `fused_head`: the trainer's loss comes from TRL's fused LM head."""
    if asked != "off" and not fused_head:
        return False, "this trainer's loss does not go through TRL's fused LM head"
    return _decide(asked, LOGPROB_KEY, logprob_refusal(on_cuda=on_cuda),
                   "only the positions with a label scored, a block of tokens at a time (TRL's own head scores "
                   "every position in fp32 off a GPU)")


def choose_causal_attention(asked: str, *, on_cuda: bool) -> tuple[bool, str]:
    """(on, why) for params.causal_attention_kernel: exact wherever batches are right-padded, measured on CPUs."""
    return _decide(asked, CAUSAL_KEY, None, "right-padded batches attend without their padding mask (a causal "
                   "model's real tokens never see the pads after them), so PyTorch runs its causal kernel",
                   auto_off=f"not measured on a GPU yet ({CAUSAL_KEY}: on runs it there)" if on_cuda else None)


def attention_grad_refusal(*, on_cuda: bool) -> str | None:
    """Why the fp32 attention gradient cannot run here, or None when it can."""
    if on_cuda:
        return "it is built for PyTorch's CPU flash-attention kernel, whose bf16 backward is the slow one"
    return None


def choose_attention_grad(asked: str, *, on_cuda: bool) -> tuple[bool, str]:
    """(on, why) for params.attention_grad_kernel (engine.trainers.attention_grad): auto on for CPU runs."""
    return _decide(asked, ATTENTION_GRAD_KEY, attention_grad_refusal(on_cuda=on_cuda),
                   "bf16 runs compute attention's gradient with the CPU flash kernel's fp32 backward, 1.3-3x faster "
                   "than its bf16 one here and closer to exact (the forward stays bf16); fp32 runs are unchanged")


def choose_malloc_reuse(asked: str, *, on_cuda: bool) -> tuple[bool, str]:
    """(on, why) for params.malloc_reuse (engine.allocator): glibc only; auto on for CPU runs, where measured."""
    return _decide(asked, MALLOC_KEY, allocator_refusal(), "glibc keeps one step's large blocks for the next "
                   "instead of handing them back and page-faulting them in again",
                   auto_off=(f"measured for CPU runs, where each step's large buffers come from malloc "
                             f"({MALLOC_KEY}: on to try)") if on_cuda else None)


REFUSALS = {"liger": lambda on_cuda: liger_refusal(on_cuda=on_cuda, installed=liger_installed(), model_type=None,
                                                   supported=None),
            "lora_dropout": lambda on_cuda: lora_dropout_refusal(on_cuda=on_cuda),
            "logprob_head": lambda on_cuda: logprob_refusal(on_cuda=on_cuda),
            "attention_grad": lambda on_cuda: attention_grad_refusal(on_cuda=on_cuda),
            "malloc_reuse": lambda on_cuda: allocator_refusal()}  # causal attention runs anywhere


def on_refusals(params: Any, *, on_cuda: bool) -> list[tuple[str, str]]:
    """(key, reason) for each kernel key set to `on` that cannot run on this machine: the config check's list.
    Liger's model type is checked by liger where it runs."""
    out = []
    for s in SWITCHES:
        refusal = REFUSALS[s.attr](on_cuda) if s.attr in REFUSALS and getattr(params, s.param) == "on" else None
        if refusal:
            out.append((s.key, refusal))
    return out


def asks_on(params: Any) -> bool:
    """Whether any kernel key is set to `on` (the only setting the config check has to ask the machine about)."""
    return any(getattr(params, s.param) == "on" for s in SWITCHES)


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
    head, head_why = choose_logprob_head(p.logprob_kernel, on_cuda=on_cuda, fused_head=cfg.spec.fused_lm_head)
    causal, causal_why = choose_causal_attention(p.causal_attention_kernel, on_cuda=on_cuda)
    grad, grad_why = choose_attention_grad(p.attention_grad_kernel, on_cuda=on_cuda)
    malloc, malloc_why = choose_malloc_reuse(p.malloc_reuse, on_cuda=on_cuda)
    return replace(liger, lora_dropout=fused, lora_dropout_why=why, logprob_head=head, logprob_head_why=head_why,
                   causal_attention=causal, causal_attention_why=causal_why, attention_grad=grad,
                   attention_grad_why=grad_why, malloc_reuse=malloc,
                   malloc_reuse_why=malloc_why)
