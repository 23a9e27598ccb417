"""int4 where it pays: when a LoRA config leaves params.quantization out, it is chosen for the machine the run
starts on (and written into the run's config.yaml, as engine.checkpointing does).

AutoTrain then loads the base model in int4 (QLoRA). That saves memory at a price: every matmul dequantizes
its weights (bitsandbytes; on this project's CPU machine the int4 runs trained at about 0.6x the tokens per
second of the same runs without it, benchmarks/throughput.py), and the adapter learns against a rounded base.
So llmtune keeps the base in the run's precision when the memory estimate without quantization, with gradient
checkpointing on (the saver that costs only time), fits the device with room to spare; it quantizes to int4
otherwise, or when the model's size is unknown (AutoTrain's choice). An explicit value always wins, `null`
(none) included; without LoRA nothing is quantized.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from engine.config import RunConfig

KEY = "params.quantization"


@dataclass(frozen=True)
class Quantization:
    value: str | None  # "int4", "int8" or None
    why: str

    def describe(self) -> str:
        return f"{self.value or 'none'} ({self.why})"


def choose_quantization(cfg: RunConfig) -> Quantization:
    p = cfg.params
    if KEY not in cfg.defaulted:
        return Quantization(p.quantization, f"{KEY}: {p.quantization or 'null'}")
    if not p.peft:
        return Quantization(None, "no LoRA: the weights are trained as they are")
    from engine.distributed import shards_weights

    if shards_weights(p):
        return Quantization(None, f"auto: {shards_weights(p)} shards the weights over the processes (which int4 "
                                  "weights cannot be), dividing their memory already")
    from engine.checkpointing import memory_fit

    plain = copy.deepcopy(cfg)
    plain.params.quantization = None
    plain.params.disable_gradient_checkpointing = False
    try:
        fit = memory_fit(plain)
    except Exception:  # noqa: BLE001 - no size known (a hub model not cached, an odd config): AutoTrain's int4
        return _int4_where_it_runs("auto: the model's size is unknown here, so memory is saved (AutoTrain's "
                                   "default)")
    if fit.fits:
        return Quantization(None, f"auto: the estimate without it, {fit.says()}; int4 would cost time and "
                                  "exactness")
    return _int4_where_it_runs("auto: the device's memory is unknown, so memory is saved" if not fit.total else
                               f"auto: the estimate without it, {fit.says()}")


def _int4_where_it_runs(why: str) -> Quantization:
    """int4, or none where this machine cannot run it (no bitsandbytes, an unsupported device): the config
    did not ask for it, so the run goes on unquantized and the memory check says whether it fits."""
    from engine.capabilities import probe

    support = probe().support("int4")
    if support.ok:
        return Quantization("int4", why)
    return Quantization(None, f"{why}, but int4 cannot run here ({support.reason.rstrip('.')})")


def resolve_quantization(cfg: RunConfig) -> None:
    """Write the choice into `cfg` (the run directory's copy of the config), explicit from then on."""
    cfg.params.quantization = choose_quantization(cfg).value
    cfg.defaulted.discard(KEY)
