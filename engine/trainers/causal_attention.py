"""Right-padded batches attend without their padding mask (params.causal_attention_kernel, engine.kernels).

In a causal model a token attends to itself and the tokens before it. Every trainer here pads on the right, so a
row's pads come after all its real tokens: causal attention alone already keeps every real token from seeing a
pad, and the padding mask changes only what the pads themselves compute (their positions carry no label: no
loss, no reward, no log-probability reads them). With the mask, PyTorch's SDPA runs its general kernel with an
explicit (batch, 1, length, length) mask; without it, its causal kernel, which on this 2-core CPU ran a step's
attention about twice as fast (forward and backward). The real tokens' outputs are the same up to float
rounding (tested for every trainer: the same loss with and without).

The mask is dropped in a forward pre-hook on the model's backbone, per batch, only where that is exact:
- a 2-D mask whose every row is ones then zeros (right padding); a left-padded batch (generation's prompts)
  keeps it;
- no key/value cache (training and scoring forwards, not generation steps);
- not a mixture-of-experts model (its load-balancing loss counts tokens by the mask) nor an encoder-decoder.
"""

from __future__ import annotations

from typing import Any

import torch


def mask_refusal(config: Any) -> str | None:
    """Why a model with this config must keep its padding mask, or None."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model (its encoder attends both ways)"
    if any(getattr(text, k, None) for k in ("num_experts", "num_local_experts", "output_router_logits")):
        return "a mixture-of-experts model (its load-balancing loss counts tokens by the padding mask)"
    return None


def right_padded(mask: torch.Tensor) -> bool:
    """Every row is ones followed by zeros (or all ones)."""
    return mask.dim() == 2 and bool((mask[:, 1:] <= mask[:, :-1]).all())


def _drop_mask(module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    mask = kwargs.get("attention_mask")
    cached = kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None  # transformers 5.x: cache
    if mask is not None and not cached and right_padded(mask):
        kwargs["attention_mask"] = None
    return args, kwargs


def backbone(model: Any) -> Any:
    """The transformer under its head: through peft's wrapper, then transformers' `base_model` (LlamaModel...)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, "base_model", inner)


def drop_padding_masks(*models: Any) -> list[str]:
    """Hook each model (the trained one, a separate reference model) whose padding mask can go; what was done
    (for train.log)."""
    kept, hooked = [], 0
    for model in models:
        if model is None:
            continue
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        refusal = mask_refusal(inner.config)
        if refusal:
            kept.append(f"{type(inner).__name__} keeps its padding mask: {refusal}")
            continue
        backbone(model).register_forward_pre_hook(_drop_mask, with_kwargs=True)
        hooked += 1
    if hooked:
        kept.append(f"attention: right-padded batches run without their padding mask ({hooked} model(s))")
    return kept
