"""The numbers of a split, counted chunk by chunk in bounded memory: what the dry run reports (lengths, trained
tokens, examples left with none) and what the trainer gets (examples, tokens, truncated, skipped).

The data pipeline (engine.dataset_prep) counts each chunk of encoded examples on its own and adds the counts
up; the preview and the rows of a split formatted in memory count all of it as one chunk. Length statistics
are exact: a histogram of lengths, whose size grows with the longest example, never with the rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from engine.encoding import Encoded, EncodedPair


@dataclass
class LengthStats:
    name: str  # what was measured, e.g. "sequence", "prompt", "prompt+chosen"
    count: int
    min: int
    median: float
    p95: int
    max: int
    limit: int | None  # the length it is cut to
    over: int  # how many exceed the limit (and are truncated)


@dataclass
class LengthTally:
    """A histogram of lengths: exact median, p95, min and max of any number of examples."""

    name: str
    limit: int | None
    counts: Counter = field(default_factory=Counter)

    def add(self, n: int) -> None:
        self.counts[n] += 1

    def merge(self, other: LengthTally) -> None:
        self.counts.update(other.counts)

    def stats(self) -> LengthStats:
        total = sum(self.counts.values())
        if not total:
            return LengthStats(self.name, 0, 0, 0, 0, 0, self.limit, 0)
        lengths = sorted(self.counts)

        def kth(k: int) -> int:  # the k-th (0-based) of the lengths in order
            seen = 0
            for n in lengths:
                seen += self.counts[n]
                if k < seen:
                    return n
            return lengths[-1]

        middle = total // 2
        median: float = kth(middle) if total % 2 else (kth(middle - 1) + kth(middle)) / 2
        p95 = kth(min(total - 1, int(round(0.95 * (total - 1)))))
        over = sum(c for n, c in self.counts.items() if self.limit and n > self.limit)
        return LengthStats(self.name, total, lengths[0], median, p95, lengths[-1], self.limit, over)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit": self.limit, "counts": {str(k): v for k, v in self.counts.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LengthTally:
        return cls(d["name"], d["limit"], Counter({int(k): v for k, v in d["counts"].items()}))


@dataclass
class SplitCounts:
    """Sums over a split's examples (chunks add up with `merge`)."""

    lengths: list[LengthTally]
    encoded: int = 0  # examples counted
    trained_tokens: int = 0  # as the preview reports them (within the limits)
    total_tokens: int = 0
    no_trained: int = 0  # examples left with no trained token (or an empty answer, for pairs)
    # What the trainer gets (engine.trainers.rows): for the generic trainer, the blocks are counted on packing.
    examples: int = 0
    tokens: int = 0
    trained: int = 0
    truncated: int = 0
    skipped: int = 0
    stream_tokens: int = 0  # the generic trainer: tokens of all texts, before they are cut into blocks

    def merge(self, other: SplitCounts) -> None:
        for mine, theirs in zip(self.lengths, other.lengths):
            mine.merge(theirs)
        for name in ("encoded", "trained_tokens", "total_tokens", "no_trained", "examples", "tokens", "trained",
                     "truncated", "skipped", "stream_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it rebuilds Counters wrongly
        d["lengths"] = [t.as_dict() for t in self.lengths]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitCounts:
        return cls(**{**d, "lengths": [LengthTally.from_dict(t) for t in d["lengths"]]})


def empty_counts(spec: Any, params: Any, block_size: int) -> SplitCounts:
    """The tallies a split of this trainer measures, with nothing counted yet."""
    if spec.online:
        return SplitCounts([LengthTally("prompt", params.max_prompt_length)])
    if not spec.pairwise:
        return SplitCounts([LengthTally("sequence", block_size)])
    if spec.whole_texts:
        return SplitCounts([LengthTally("chosen", block_size), LengthTally("rejected", block_size)])
    return SplitCounts([LengthTally("prompt", params.max_prompt_length),
                        LengthTally("prompt+chosen", block_size), LengthTally("prompt+rejected", block_size)])


def counts_of(spec: Any, params: Any, encoded: list, block_size: int) -> SplitCounts:
    """The counts of some encoded examples (a chunk, or a whole split) of this trainer."""
    counts = empty_counts(spec, params, block_size)
    if spec.online:
        count_prompts(counts, encoded, params.max_prompt_length)
    elif spec.pairwise:
        count_pairs(counts, encoded, spec.whole_texts)
    else:
        count_texts(counts, encoded, block_size, spec.packs)
    return counts


def count_texts(counts: SplitCounts, encoded: list[Encoded], block_size: int, packs: bool) -> None:
    """Add text examples (generic, SFT). Packed texts are cut into blocks later: nothing is truncated here."""
    sequence = counts.lengths[0]
    for e in encoded:
        n = len(e)
        sequence.add(n)
        counts.encoded += 1
        if packs:
            counts.stream_tokens += n
            continue
        trained = sum(e.trained[:block_size])
        counts.trained_tokens += trained
        counts.total_tokens += min(n, block_size)
        counts.truncated += n > block_size
        if trained:
            counts.examples += 1
            counts.tokens += min(n, block_size)
            counts.trained += trained
        else:
            counts.no_trained += 1
            counts.skipped += 1  # SFT leaves it out: nothing within block_size to learn from
    if packs:
        counts.trained_tokens = counts.total_tokens = counts.stream_tokens


def count_prompts(counts: SplitCounts, prompts: list[Encoded], limit: int) -> None:
    """Add GRPO/RLOO prompts: one longer than `limit` is left out (cutting a conversation would lose the turn it
    answers); the answers are sampled in training, so no token here is trained."""
    for e in prompts:
        n = len(e)
        counts.lengths[0].add(n)
        counts.encoded += 1
        if n > limit:
            counts.skipped += 1
            continue
        counts.total_tokens += n
        counts.examples += 1
        counts.tokens += n


def count_pairs(counts: SplitCounts, pairs: list[EncodedPair], whole_texts: bool) -> None:
    """Add preference pairs (reward, DPO, ORPO), cut to their limits as engine.encoding cuts them."""
    for x in pairs:
        counts.encoded += 1
        if whole_texts:
            counts.lengths[0].add(len(x.chosen_full))
            counts.lengths[1].add(len(x.rejected_full))
        else:
            counts.lengths[0].add(x.n_prompt)
            counts.lengths[1].add(len(x.chosen_full))
            counts.lengths[2].add(len(x.rejected_full))
        chosen, rejected, prompt = x.chosen_ids, x.rejected_ids, x.prompt_ids
        kept = 2 * len(prompt) + len(chosen) + len(rejected)
        counts.total_tokens += kept
        counts.trained_tokens += kept if whole_texts else len(chosen) + len(rejected)
        counts.truncated += bool(x.prompt_cut or x.chosen_cut or x.rejected_cut)
        empty = not chosen or not rejected
        counts.no_trained += empty
        if whole_texts:  # whole texts are scored, each cut to block_size: every pair is kept
            c = len(x.chosen_full) - x.chosen_cut
            r = len(x.rejected_full) - x.rejected_cut
            counts.examples += 1
            counts.tokens += c + r
            counts.trained += c + r
        elif empty:  # DPO and ORPO leave it out
            counts.skipped += 1
        else:
            counts.examples += 1
            counts.tokens += kept
            counts.trained += len(chosen) + len(rejected)


def count_blocks(counts: SplitCounts, block_size: int) -> int:
    """The generic trainer's blocks, once every text is counted: the stream cut into block_size pieces (the last
    shorter). Returns the length of the last block."""
    total = counts.stream_tokens
    blocks = -(-total // block_size)
    counts.examples, counts.tokens = blocks, total
    counts.trained = total - blocks  # the first token of each block has nothing before it to be predicted from
    return total - (blocks - 1) * block_size if blocks else 0
