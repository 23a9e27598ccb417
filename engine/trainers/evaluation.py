"""The eval loss, the same whatever the eval batches hold.

transformers' evaluation loop takes each eval batch's mean loss, counts it once per example of a full batch,
and averages those: a batch of 4 short answers weighs as much as a batch of 4 long ones, and the short last
batch as much as a full one. So the eval loss moved with how the eval set was cut into batches (its order, its
batch size, grouping by length). Here each batch's mean is weighed by what it is a mean of: its trained
tokens (SFT and the generic trainer: a per-token loss), its rows (reward, DPO, ORPO: a per-pair loss), and
the eval loss is their weighted mean: the mean over every trained token (pair) of the eval set, one number
whatever the batching.
"""

from __future__ import annotations

import math
from typing import Any

PER_TOKEN = ("masked", "blocks")  # the trainers' row shapes (engine.tasks) whose loss is a per-token mean


def batch_weight(inputs: dict[str, Any], shape: str) -> int:
    """How many terms a batch's mean loss averages: the predicted tokens (a label other than -100 after the
    shift by one; padding-free batches mark each sequence's first position so), or the rows."""
    if shape in PER_TOKEN:
        return int((inputs["labels"][..., 1:] != -100).sum())
    return next(len(v) for v in inputs.values() if hasattr(v, "shape") and v.dim() >= 1)


def weigh_eval_loss(trainer: Any, shape: str) -> None:
    """Make `trainer`'s eval loss the weighted mean above (its prediction step and evaluation loop are wrapped
    on the instance, as engine.trainers.common.apply_batching does with the sampler)."""
    sums = [0.0, 0]  # weighted loss, weight: this process's share (several processes add theirs up at the end)
    step, loop = trainer.prediction_step, trainer.evaluation_loop

    def prediction_step(model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> Any:
        loss, logits, labels = step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if loss is not None:
            value = float(loss.detach().float().mean())
            if math.isfinite(value):  # as transformers' logging_nan_inf_filter leaves non-finite losses out
                weight = batch_weight(inputs, shape)
                sums[0] += value * weight
                sums[1] += weight
        return loss, logits, labels

    def evaluation_loop(*args: Any, **kwargs: Any) -> Any:
        sums[:] = [0.0, 0]
        output = loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        total, weight = sums
        if trainer.accelerator.num_processes > 1:
            import torch

            both = trainer.accelerator.reduce(torch.tensor([total, float(weight)], device=trainer.args.device),
                                              reduction="sum")
            total, weight = (float(x) for x in both)
        if weight and f"{prefix}_loss" in output.metrics:
            output.metrics[f"{prefix}_loss"] = total / weight
        return output

    trainer.prediction_step = prediction_step
    trainer.evaluation_loop = evaluation_loop
