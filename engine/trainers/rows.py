"""Formatted splits -> the pre-tokenized rows each TRL trainer takes, with the statistics the run reports.

The ids and masks come from the data pipeline (engine.pipeline), which the preview shows, so what is trained
is exactly what was previewed; the trainer's spec (engine.tasks) names the row shape. Handing TRL raw text
instead would let it re-add EOS, drop over-long reward pairs and mask prompt/completion boundaries its own way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.encoding import Encoded, EncodedPair, pack_blocks
from engine.formatting import FormattedSplit
from engine.pipeline import Prepared

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
    rows: list[dict[str, Any]]
    stats: SplitStats
    notes: list[str] = field(default_factory=list)


def build_rows(prepared: Prepared, fs: FormattedSplit) -> TrainerRows:
    encoded = prepared.encoded(fs)
    base = {"rows": fs.rows, "dropped": sum(fs.dropped.values()), "source": fs.source}
    shape = prepared.cfg.spec.rows
    if shape == "blocks":
        return _blocks(fs, encoded, prepared.block_size, base)
    if shape == "masked":
        return _masked(fs, encoded, prepared.block_size, base)
    return _pairs(shape, fs, encoded, base)


def _blocks(fs: FormattedSplit, encoded: list[Encoded], block_size: int, base: dict) -> TrainerRows:
    blocks = pack_blocks(encoded, block_size)
    rows = [{"input_ids": b, "labels": list(b)} for b in blocks]
    tokens = sum(len(b) for b in blocks)
    # The first token of each block has nothing before it to be predicted from.
    stats = SplitStats(**base, examples=len(rows), tokens=tokens, trained_tokens=tokens - len(blocks), truncated=0)
    return TrainerRows(fs.split, rows, stats)


def _masked(fs: FormattedSplit, encoded: list[Encoded], block_size: int, base: dict) -> TrainerRows:
    rows, tokens, trained, truncated, skipped = [], 0, 0, 0, 0
    for e in encoded:
        ids = e.ids[:block_size]
        labels = [i if t else IGNORE for i, t in zip(ids, e.trained[:block_size])]
        truncated += len(e) > block_size
        n_trained = sum(1 for x in labels if x != IGNORE)
        if not n_trained:
            skipped += 1
            continue
        rows.append({"input_ids": ids, "labels": labels})
        tokens += len(ids)
        trained += n_trained
    return _result(fs, rows, base, tokens, trained, truncated, skipped,
                   "example(s) have no trained token within block_size and are left out (the dry run shows "
                   "them); raise block_size to keep them")


def _pairs(shape: str, fs: FormattedSplit, pairs: list[EncodedPair], base: dict) -> TrainerRows:
    rows, tokens, trained, truncated, skipped = [], 0, 0, 0, 0
    for p in pairs:
        truncated += bool(p.prompt_cut or p.chosen_cut or p.rejected_cut)
        if shape == "scored":  # whole texts, each cut to block_size
            chosen = p.chosen_full.ids[:len(p.chosen_full) - p.chosen_cut]
            rejected = p.rejected_full.ids[:len(p.rejected_full) - p.rejected_cut]
            rows.append({"chosen_ids": chosen, "rejected_ids": rejected})
            tokens += len(chosen) + len(rejected)
            trained += len(chosen) + len(rejected)
            continue
        prompt, chosen, rejected = p.prompt_ids, p.chosen_ids, p.rejected_ids
        if not chosen or not rejected:
            skipped += 1
            continue
        rows.append(_orpo_row(prompt, chosen, rejected) if shape == "labelled-pairs"
                    else {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
        tokens += 2 * len(prompt) + len(chosen) + len(rejected)
        trained += len(chosen) + len(rejected)
    return _result(fs, rows, base, tokens, trained, truncated, skipped,
                   "pair(s) have an empty chosen or rejected answer once the prompt is cut to its limits, and "
                   "are left out; raise block_size or lower max_prompt_length")


def _result(fs: FormattedSplit, rows: list[dict[str, Any]], base: dict, tokens: int, trained: int, truncated: int,
            skipped: int, skipped_note: str) -> TrainerRows:
    stats = SplitStats(**base, examples=len(rows), tokens=tokens, trained_tokens=trained, truncated=truncated,
                       skipped=skipped)
    return TrainerRows(fs.split, rows, stats, [f"{fs.split}: {skipped} {skipped_note}"] if skipped else [])


def _orpo_row(prompt: list[int], chosen: list[int], rejected: list[int]) -> dict[str, list[int]]:
    """The columns TRL's (experimental) ORPO trainer produces from text, built from our ids instead."""
    row: dict[str, list[int]] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        ids = prompt + answer
        row[f"{name}_input_ids"] = ids
        row[f"{name}_attention_mask"] = [1] * len(ids)
        row[f"{name}_labels"] = [IGNORE] * len(prompt) + answer
    return row
