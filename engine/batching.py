"""How training examples are put into batches (`params.batching`), chosen for the trainer and the machine.

- padded: batches in random order, each padded to its longest example (AutoTrain's and TRL's default). With
  examples of 20 to 650 tokens, half of what such a batch computes is padding.
- grouped: batches of examples of similar length (GroupedSampler: the examples drawn at random, cut into
  mega-batches of 50 batches, each sorted by length and cut into batches; then the batches are shuffled, so
  the order stays random at the batch level), padded as little as that leaves. transformers'
  LengthGroupedSampler is not used: it keeps each mega-batch in order from longest to shortest, and on small
  data (one mega-batch) a whole epoch runs from the longest examples to the shortest, which trains measurably
  worse (the demo's final loss 1.07 against 0.18). The loss of a batch does not depend on its padding
  (masked out), so this trains on the same examples with the same per-token loss, only faster.
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
                + ("are whole blocks already" if spec.packs else "are the answers it samples" if spec.online else
                   "pair a prompt with two answers"))
    if not (on_cuda and flash_attention):
        return ("it needs flash-attention's variable-length kernels, on a CUDA GPU with flash_attn installed and "
                "params.use_flash_attention_2: true; any other attention would let the packed examples attend to "
                "each other")
    return None


def choose_batching(asked: str, spec: TrainerSpec, *, on_cuda: bool, flash_attention: bool) -> Batching:
    """The batching a run uses: what params.batching asks, or for `auto` the fastest that is exact here.
    `packed` asked where it cannot run raises ValueError (the config check says it before that)."""
    if spec.online and asked != "packed":  # the trainer draws each prompt num_generations times, in its own order
        return Batching("padded", f"{spec.label} batches the answers it samples, a group per prompt")
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
               "labelled-pairs": ("chosen_input_ids", "rejected_input_ids"), "prompts": ("prompt_ids",)}[shape]
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


class GroupedSampler:
    """Indices for batches of `batch_size` examples of similar length, in random batch order (see above).

    Seeded by `seed` and the epoch (the trainer calls set_epoch), so a resumed run sees the order an
    uninterrupted one would. Only the last batches of an epoch can be short: whole batches are shuffled, the
    rest comes last, so the data loader's cuts fall on the groups' edges."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, megabatch: int = GROUP_MEGABATCH) -> None:
        self.lengths, self.batch_size, self.seed, self.megabatch = lengths, max(1, batch_size), seed, megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Any:
        import torch

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.megabatch
        whole, rest = [], []
        for start in range(0, len(order), size):
            group = sorted(order[start:start + size], key=lambda i: self.lengths[i], reverse=True)
            cut = len(group) // self.batch_size * self.batch_size
            whole += [group[i:i + self.batch_size] for i in range(0, cut, self.batch_size)]
            rest += group[cut:]
        rest.sort(key=lambda i: self.lengths[i], reverse=True)
        batches = [whole[i] for i in torch.randperm(len(whole), generator=generator).tolist()]
        batches += [rest[i:i + self.batch_size] for i in range(0, len(rest), self.batch_size)]
        return iter([i for batch in batches for i in batch])


def padding_share(lengths: list[int], batch: int) -> float:
    """The share of a batch's tokens that are padding, over consecutive batches of `batch` rows."""
    total = padded = 0
    for i in range(0, len(lengths), batch):
        chunk = lengths[i:i + batch]
        total += sum(chunk)
        padded += max(chunk) * len(chunk)
    return 1 - total / padded if padded else 0.0
