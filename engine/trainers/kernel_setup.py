"""Putting the chosen kernels (engine.kernels) into the training process: what the process patches while it
trains (the CPU log-prob head, attention's fp32 gradient, the allocator's setting) and what each built trainer's
models get (the fused LoRA A, causal attention without the padding mask)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from engine.kernels import Kernels


def checked(kernels: Kernels) -> tuple[Kernels, list[str]]:
    """The kernels with the CPU log-prob head off where the installed TRL is not the one it fits, and why."""
    if not kernels.logprob_head:
        return kernels, []
    from engine.trainers.logprob_head import trl_head_refusal

    refusal = trl_head_refusal()
    if refusal is None:
        return kernels, []
    return (replace(kernels, logprob_head=False, logprob_head_why=refusal),
            [f"the CPU log-prob head is off: {refusal}; TRL's own head runs (slower on a CPU)"])


@contextlib.contextmanager
def process_patches(kernels: Kernels) -> Iterator[None]:
    """What the process runs with while it trains (restored after, but for the allocator's setting, which
    glibc cannot take back: harmless for the rest of a process, and the training process exits after its run)."""
    if kernels.malloc_reuse:
        from engine.allocator import keep_freed_blocks

        keep_freed_blocks()
    with contextlib.ExitStack() as patches:
        if kernels.logprob_head:
            from engine.trainers.logprob_head import cpu_logprob_head

            patches.enter_context(cpu_logprob_head())
        if kernels.attention_grad:
            from engine.trainers.attention_grad import cpu_attention_grad

            patches.enter_context(cpu_attention_grad())
        yield


def apply_to_trainer(trainer: Any, kernels: Kernels) -> list[str]:
    """The kernels that live in the models of a built trainer; what was done, for train.log."""
    lines = []
    if kernels.lora_dropout:
        from engine.trainers.lora_dropout import fuse_lora_dropout

        lines.append(f"LoRA dropout fused into {fuse_lora_dropout(trainer.model)} LoRA layers")
    if kernels.causal_attention:
        from engine.trainers.causal_attention import drop_padding_masks

        lines += drop_padding_masks(trainer.model, getattr(trainer, "ref_model", None))
    return lines
