"""Gradient checkpointing where it pays: when the config does not set params.disable_gradient_checkpointing,
it is chosen for the machine the run starts on (and written into the run's config.yaml, so the training process
and `resume` do the same).

AutoTrain turns it on always. It saves activation memory at the cost of recomputing every layer in the backward
pass: about 1.5x the time of a step on this project's CPU machine (shared/STACK-NOTES.md). So it is kept off
when the memory estimate with it off (engine.memory) fits the device with room to spare, and on otherwise, or
when the model's size is unknown (the safe choice). An explicit value always wins.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

from engine.config import RunConfig
from engine.units import human_bytes

KEY = "params.disable_gradient_checkpointing"
ROOM = 0.8  # the estimate must fit in this share of the device's memory (the estimate is not exact)


@dataclass(frozen=True)
class Checkpointing:
    on: bool
    why: str

    def describe(self) -> str:
        return f"{'on' if self.on else 'off'} ({self.why})"


@dataclass(frozen=True)
class Fit:
    """A memory estimate against the device's memory."""
    need: int
    where: str  # "the GPU" or "RAM"
    total: int | None  # the device's memory, None when unknown

    @property
    def fits(self) -> bool:
        return bool(self.total) and self.need <= ROOM * (self.total or 0)

    def says(self) -> str:
        return (f"{human_bytes(self.need)}, {'fits' if self.fits else 'does not fit'} {self.where} "
                f"({human_bytes(self.total or 0)}){'' if self.fits else ' with room to spare'}")


def memory_fit(cfg: RunConfig) -> Fit:
    """The memory estimate (engine.memory) of `cfg` with the precision the run will have, against the memory of
    the device it will run on. Raises when the model's size is unknown here (a hub model not cached)."""
    from engine.distributed import known_topology
    from engine.memory import estimate_memory
    from engine.model_info import read_model_info
    from engine.precision import resolve_precision

    run = copy.deepcopy(cfg)
    resolve_precision(run)  # 16-bit activations take half the room
    info = read_model_info(cfg.base_model, cfg.base_dir)
    gpu_total = _gpu_total()
    need = estimate_memory(info, run, gpu_total=gpu_total, device="cuda" if gpu_total else "cpu",
                           topology=known_topology(run.params)).total
    return Fit(need, "the GPU", gpu_total) if gpu_total else Fit(need, "RAM", _ram_total())


def choose_checkpointing(cfg: RunConfig) -> Checkpointing:
    if KEY not in cfg.defaulted:
        return Checkpointing(not cfg.params.disable_gradient_checkpointing,
                             f"{KEY}: {str(cfg.params.disable_gradient_checkpointing).lower()}")
    off = copy.deepcopy(cfg)
    off.params.disable_gradient_checkpointing = True
    try:
        fit = memory_fit(off)
    except Exception:  # noqa: BLE001 - no size known (a hub model not cached, an odd config): the safe choice
        return Checkpointing(True, "auto: the model's size is unknown here, so memory is saved")
    if fit.fits:
        return Checkpointing(False, f"auto: the estimate without it, {fit.says()}; it would cost about 1.5x "
                                    "the time of a step")
    if not fit.total:
        return Checkpointing(True, "auto: the device's memory is unknown, so memory is saved")
    return Checkpointing(True, f"auto: the estimate without it, {fit.says()}")


def resolve_checkpointing(cfg: RunConfig) -> None:
    """Write the choice into `cfg` (the run directory's copy of the config), explicit from then on."""
    cfg.params.disable_gradient_checkpointing = not choose_checkpointing(cfg).on
    cfg.defaulted.discard(KEY)


def _gpu_total() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        import torch  # the CLI has loaded it for the tokenizer already; the wizard's launch may not have
    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)


def _ram_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
