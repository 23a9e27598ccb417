"""How training examples are put into batches (`params.batching`), chosen for the trainer and the machine.

- padded: batches in random order, each padded to its longest example (AutoTrain's and TRL's default). With
  examples of 20 to 650 tokens, half of what such a batch computes is padding.
- grouped: batches of examples of similar length (transformers' LengthGroupedSampler: random mega-batches of
  batch x accumulation x 50 examples, sorted by length inside, so the order stays random at the group level),
  padded as little as that leaves. The loss of a batch does not depend on its padding (masked out), so this
  trains on the same examples with the same per-token loss, only faster.
- packed: no padding at all: the examples of a batch are laid end to end with their own position ids, which
  flash-attention's variable-length kernels keep apart (TRL's padding_free). Only there: with any other
  attention kernel the examples would attend to each other, so it is refused.

`auto` (the default) picks packed for SFT with flash-attention on a CUDA GPU, padded for the generic trainer
(its blocks are all block_size long: nothing to group), and grouped otherwise. Light: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.tasks import TrainerSpec

BATCHING = ("auto", "padded", "grouped", "packed")
GROUP_MEGABATCH = 50  # LengthGroupedSampler's: mega-batches of 50 batches are sorted by length


@dataclass(frozen=True)
class Batching:
    mode: str  # "padded", "grouped" or "packed"
    why: str

    def describe(self) -> str:
        return f"{self.mode} ({self.why})"

    def as_dict(self) -> dict[str, str]:
        return {"mode": self.mode, "why": self.why}


def packing_refusal(spec: TrainerSpec, *, on_cuda: bool, flash_attention: bool) -> str | None:
    """Why `packed` cannot run here, or None when it can."""
    if spec.rows != "masked":
        return (f"packing without padding is built for SFT only; {spec.trainer} batches "
                + ("are whole blocks already" if spec.packs else "pair a prompt with two answers"))
    if not (on_cuda and flash_attention):
        return ("it needs flash-attention's variable-length kernels, on a CUDA GPU with flash_attn installed and "
                "params.use_flash_attention_2: true; any other attention would let the packed examples attend to "
                "each other")
    return None


def choose_batching(asked: str, spec: TrainerSpec, *, on_cuda: bool, flash_attention: bool) -> Batching:
    """The batching a run uses: what params.batching asks, or for `auto` the fastest that is exact here.
    `packed` asked where it cannot run raises ValueError (the config check says it before that)."""
    if asked == "padded":
        return Batching("padded", "params.batching: padded")
    if asked == "grouped":
        return Batching("grouped", "params.batching: grouped")
    refusal = packing_refusal(spec, on_cuda=on_cuda, flash_attention=flash_attention)
    if asked == "packed":
        if refusal:
            raise ValueError(f"params.batching: packed cannot run here: {refusal}")
        return Batching("packed", "params.batching: packed")
    if refusal is None:
        return Batching("packed", "auto: SFT with flash-attention packs examples without padding")
    if spec.packs:
        return Batching("padded", f"auto: {spec.trainer} trains on blocks of block_size tokens, nothing to group")
    return Batching("grouped", "auto: batches of examples of similar length, to pad less")


def flash_attention(params: Any, *, on_cuda: bool) -> bool:
    """Whether the model is loaded with flash-attention 2 (engine.trainers.model.attention_implementation asks
    the same): asked for, on a CUDA GPU, with the flash_attn package installed."""
    import importlib.util

    return bool(params.use_flash_attention_2 and on_cuda and importlib.util.find_spec("flash_attn") is not None)


def machine_batching(cfg: Any, *, on_cuda: bool) -> Batching:
    """choose_batching for a config on a machine with or without a CUDA GPU (packed asked for where it cannot
    run is refused by the config check first)."""
    return choose_batching(cfg.params.batching, cfg.spec, on_cuda=on_cuda,
                           flash_attention=flash_attention(cfg.params, on_cuda=on_cuda))


def row_lengths(rows: Any, shape: str) -> list[int]:
    """What padding a row sets: its longest sequence once collated (a pair's prompt goes with each answer).
    `rows`: a datasets.Dataset (read column-wise, without making the rows) or a list of row dicts."""
    columns = {"masked": ("input_ids",), "blocks": ("input_ids",), "scored": ("chosen_ids", "rejected_ids"),
               "pairs": ("chosen_ids", "rejected_ids"),
               "labelled-pairs": ("chosen_input_ids", "rejected_input_ids")}[shape]
    extra = ("prompt_ids",) if shape == "pairs" else ()
    if isinstance(rows, list):
        return [sum(len(r[c]) for c in extra) + max(len(r[c]) for c in columns) for r in rows]
    import pyarrow.compute as pc

    def lengths(name: str) -> Any:
        return pc.list_value_length(rows.data.column(name))

    longest = lengths(columns[0])
    for name in columns[1:]:
        longest = pc.max_element_wise(longest, lengths(name))
    for name in extra:
        longest = pc.add(longest, lengths(name))
    return [int(n) for n in longest.to_pylist()]


def padding_share(lengths: list[int], batch: int) -> float:
    """The share of a batch's tokens that are padding, over consecutive batches of `batch` rows."""
    total = padded = 0
    for i in range(0, len(lengths), batch):
        chunk = lengths[i:i + batch]
        total += sum(chunk)
        padded += max(chunk) * len(chunk)
    return 1 - total / padded if padded else 0.0
