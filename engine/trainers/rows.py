"""Formatted splits -> the pre-tokenized rows each TRL trainer takes, with the statistics the run reports.

The ids and masks come from the data pipeline (engine.pipeline), which the preview shows, so what is trained
is exactly what was previewed; the trainer's spec (engine.tasks) names the row shape. Handing TRL raw text
instead would let it re-add EOS, drop over-long reward pairs and mask prompt/completion boundaries its own way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.encoding import Encoded, EncodedPair, pack_blocks
from engine.formatting import FormattedSplit
from engine.pipeline import Prepared
from engine.split_counts import SplitCounts, count_blocks, counts_of
from engine.tasks import TrainerSpec

IGNORE = -100  # label of a token with no loss


@dataclass
class SplitStats:
    rows: int  # rows read from the file
    dropped: int  # rows the formatter could not use (reported with their location before training)
    examples: int  # training examples (blocks for the generic trainer)
    tokens: int  # tokens kept (after truncation)
    trained_tokens: int  # tokens with a loss
    truncated: int  # examples cut to the length limits
    skipped: int = 0  # examples left with no trained token after truncation: nothing to learn, left out
    source: str = ""  # where the rows came from, e.g. "5% of train: 3 rows of train.jsonl held out with seed 42"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainerRows:
    split: str
    rows: Any  # list[dict] (formatted in memory) or a datasets.Dataset (the data pipeline's memory-mapped Arrow)
    stats: SplitStats
    notes: list[str] = field(default_factory=list)


def build_rows(prepared: Prepared, fs: FormattedSplit) -> TrainerRows:
    """The rows of a split formatted in memory (the data pipeline, engine.dataset_prep, streams them instead)."""
    cfg, block_size = prepared.cfg, prepared.block_size
    encoded = prepared.encoded(fs)
    counts = counts_of(cfg.spec, cfg.params, encoded, block_size)
    if cfg.spec.packs:
        count_blocks(counts, block_size)
        rows = [{"input_ids": b, "labels": list(b)} for b in pack_blocks(encoded, block_size)]
    else:
        rows = chunk_rows(cfg.spec.rows, encoded, block_size, fs.examples, cfg.params.max_prompt_length)
    stats = split_stats(fs.rows, sum(fs.dropped.values()), fs.source, counts)
    return TrainerRows(fs.split, rows, stats, skipped_notes(cfg.spec, fs.split, counts.skipped))


def split_stats(rows: int, dropped: int, source: str, counts: SplitCounts) -> SplitStats:
    return SplitStats(rows=rows, dropped=dropped, examples=counts.examples, tokens=counts.tokens,
                      trained_tokens=counts.trained, truncated=counts.truncated, skipped=counts.skipped, source=source)


def skipped_notes(spec: TrainerSpec, split: str, skipped: int) -> list[str]:
    if not skipped:
        return []
    why = ("pair(s) have an empty chosen or rejected answer once the prompt is cut to its limits, and are left out; "
           "raise block_size or lower max_prompt_length" if spec.pairwise else
           "prompt(s) are longer than max_prompt_length and are left out (a cut prompt loses the turn it answers); "
           "raise max_prompt_length to keep them" if spec.online else
           "example(s) have no trained token within block_size and are left out (the dry run shows them); raise "
           "block_size to keep them")
    return [f"{split}: {skipped} {why}"]


def chunk_rows(shape: str, encoded: list[Encoded] | list[EncodedPair], block_size: int, examples: list[Any] = (),
               prompt_limit: int = 0) -> list[dict[str, Any]]:
    """The rows of some encoded examples, for every shape but "blocks" (packed across examples): examples left
    with nothing to train on are left out, as engine.split_counts counts them. Prompts (GRPO, RLOO) need their
    `examples` too, and are left out beyond `prompt_limit` tokens."""
    if shape == "prompts":
        return [{"prompt_ids": e.ids, "prompt": json.dumps(x.prompt, ensure_ascii=False)}
                for e, x in zip(encoded, examples) if len(e.ids) <= prompt_limit]
    if shape == "masked":
        rows = []
        for e in encoded:
            ids = e.ids[:block_size]
            labels = [i if t else IGNORE for i, t in zip(ids, e.trained[:block_size])]
            if any(x != IGNORE for x in labels):
                rows.append({"input_ids": ids, "labels": labels})
        return rows
    rows = []
    for p in encoded:
        if shape == "scored":  # whole texts, each cut to block_size
            rows.append({"chosen_ids": p.chosen_full.ids[:len(p.chosen_full) - p.chosen_cut],
                         "rejected_ids": p.rejected_full.ids[:len(p.rejected_full) - p.rejected_cut]})
            continue
        prompt, chosen, rejected = p.prompt_ids, p.chosen_ids, p.rejected_ids
        if chosen and rejected:
            rows.append(_orpo_row(prompt, chosen, rejected) if shape == "labelled-pairs"
                        else {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


def _orpo_row(prompt: list[int], chosen: list[int], rejected: list[int]) -> dict[str, list[int]]:
    """The columns TRL's (experimental) ORPO trainer produces from text, built from our ids instead."""
    row: dict[str, list[int]] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        ids = prompt + answer
        row[f"{name}_input_ids"] = ids
        row[f"{name}_attention_mask"] = [1] * len(ids)
        row[f"{name}_labels"] = [IGNORE] * len(prompt) + answer
    return row
