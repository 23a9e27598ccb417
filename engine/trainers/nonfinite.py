"""A run whose loss or gradient norm turns NaN or infinite is stopped, not carried on to "completed".

transformers hides non-finite losses from its logs (`logging_nan_inf_filter`, off in our training args) and
keeps training on NaN weights. The guard sees every micro-batch's loss and every optimizer step's gradient
norm; a non-finite step never gets a checkpoint (it could hold NaN weights and, with save_total_limit, push
the last good one out), and after LIMIT such steps in a row the run stops. One device sync per optimizer
step, as transformers' own NaN filter already costs per micro-batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LIMIT = 3  # consecutive non-finite optimizer steps before the run is stopped


@dataclass
class Divergence:
    first_step: int  # the first step of the non-finite streak
    step: int  # the step at which the run was stopped
    what: str  # what was non-finite at the first step, e.g. "loss nan" or "grad norm inf"


class TrainingDiverged(Exception):
    """The run stopped because its numbers are no longer finite; the message says what, where and what next."""


class NonFiniteGuard:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.streak = 0
        self.first: tuple[int, str] | None = None
        self.tripped: Divergence | None = None
        self._loss: Any = None  # the sum of this step's micro-batch losses, on the device (no sync)
        self._norm: Any = None
        self._trainer: Any = None

    def attach(self, trainer: Any) -> None:
        import torch  # here, not at import: engine.train imports this module before torch is needed

        step = trainer.training_step

        def watched(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            loss = step(model, inputs, *args, **kwargs)
            if torch.is_tensor(loss):
                value = loss.detach().float().sum()
                self._loss = value if self._loss is None else self._loss + value  # NaN/inf stay non-finite
            return loss

        trainer.training_step = watched
        norm = getattr(trainer, "_get_grad_norm", None)
        if callable(norm):
            def watched_norm(*args: Any, **kwargs: Any) -> Any:
                self._norm = norm(*args, **kwargs)
                return self._norm

            trainer._get_grad_norm = watched_norm
        self._trainer = trainer

    def check(self, step: int, control: Any) -> None:
        """At the end of an optimizer step: count it if non-finite, veto its checkpoint, stop after `limit`."""
        loss, norm = _float(self._loss), _float(self._norm)
        self._loss = self._norm = None
        accelerator = getattr(self._trainer, "accelerator", None)
        skipped = bool(getattr(accelerator, "optimizer_step_was_skipped", False))  # fp16's scaler skipped it
        bad = []
        if loss is not None and not math.isfinite(loss):
            bad.append(f"loss {loss}")
        if norm is not None and not math.isfinite(norm) and not skipped:
            bad.append(f"grad norm {norm}")
        if _any_rank(bool(bad)):
            bad = bad or ["loss on another process"]
        else:
            self.streak, self.first = 0, None
            return
        self.streak += 1
        if self.first is None:
            self.first = (step, " and ".join(bad))
        self.veto(control)
        if self.streak >= self.limit and self.tripped is None:
            control.should_training_stop = True
            self.tripped = Divergence(self.first[0], step, self.first[1])

    def veto(self, control: Any) -> None:
        """No checkpoint and no evaluation while the numbers are not finite."""
        if self.streak or self.tripped:
            control.should_save = False
            control.should_evaluate = False


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _any_rank(flag: bool) -> bool:
    """Every process must stop on the same step, or the others wait for it forever."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device="cuda" if torch.cuda.is_available() else "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def nonfinite_parameters(model: Any, limit: int = 5) -> list[str]:
    """Names of trainable parameters holding NaN or infinity (at most `limit`): never saved as a result."""
    import torch

    names = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and p.is_floating_point() and p.numel() and not bool(torch.isfinite(p).all()):
                names.append(name)
                if len(names) >= limit:
                    break
    return names
