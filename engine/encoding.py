"""Examples -> token ids with the exact loss mask, as both the preview and the trainers use them.

A token is trained when any of its characters lies in one of the example's trained spans, so a token that
merges the end of a prompt with the start of its completion (" positive" after "Sentiment:") is learned, not
silently masked. The first token of a sequence never is: nothing precedes it to predict it from. Text
rendered by a chat template already holds its special tokens (BOS included), so it is tokenized without
adding any; plain text gets the tokenizer's own (usually BOS), as AutoTrain's generic trainer does.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from dataclasses import dataclass
from typing import Any

from engine.formatting import PairExample, PromptExample, Span, TextExample
from engine.tasks import TrainerSpec
from engine.work_progress import Report, Tally

BATCH = 512


@dataclass
class Encoded:
    ids: list[int]
    trained: list[bool]
    offsets: list[tuple[int, int]]  # character range of each token in the text

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EncodedPair:
    """A preference pair: prompt+chosen and prompt+rejected tokenized whole (so tokens at the boundary merge
    as they will at inference), split at the first trained token, then cut to the configured lengths: the
    prompt keeps its end, completions their start."""

    chosen_full: Encoded
    rejected_full: Encoded
    n_prompt: int  # leading tokens shared by both: the prompt
    prompt_cut: int  # tokens cut from the start of the prompt (max_prompt_length)
    chosen_cut: int  # tokens cut from the end of each completion (max_completion_length, block_size)
    rejected_cut: int

    @property
    def prompt_ids(self) -> list[int]:
        return self.chosen_full.ids[self.prompt_cut:self.n_prompt]

    @property
    def chosen_ids(self) -> list[int]:
        return self.chosen_full.ids[self.n_prompt:len(self.chosen_full) - self.chosen_cut]

    @property
    def rejected_ids(self) -> list[int]:
        return self.rejected_full.ids[self.n_prompt:len(self.rejected_full) - self.rejected_cut]


def encode_texts(tokenizer: Any, texts: list[str], spans: list[list[Span]], *, add_special_tokens: bool,
                 progress: Report | None = None, what: str = "tokenizing") -> list[Encoded]:
    out: list[Encoded] = []
    tally = Tally(progress, what, len(texts), unit="texts")
    for start in range(0, len(texts), BATCH):
        batch = tokenize_batch(tokenizer, texts[start:start + BATCH], add_special_tokens)
        for (ids, offsets), text_spans in zip(batch, spans[start:start + BATCH]):
            out.append(Encoded(ids, trained_mask(offsets, text_spans), offsets))
        tally.add(len(batch))
    tally.finish()
    return out


def tokenize_batch(tokenizer: Any, texts: list[str], add_special_tokens: bool
                   ) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """(ids, character offsets) per text. A fast tokenizer with no truncation, padding or special-token
    splitting set is asked directly (what transformers' __call__ does then, without converting every
    encoding to a BatchEncoding: half the time of tokenizing); any other goes through __call__."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if (backend is not None and getattr(backend, "truncation", 0) is None and getattr(backend, "padding", 0) is None
            and getattr(backend, "encode_special_tokens", None) == getattr(tokenizer, "split_special_tokens", False)):
        return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
    batch = tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                      return_attention_mask=False)
    return [(list(ids), [tuple(o) for o in offsets]) for ids, offsets in zip(batch["input_ids"],
                                                                               batch["offset_mapping"])]


def trained_mask(offsets: list[tuple[int, int]], spans: list[Span]) -> list[bool]:
    """Token i is trained when i > 0, it covers a character, and a character of it lies in one of the spans.

    Tokens come in text order, so the tokens reaching into a span are one run, found by bisection: a few
    C-level passes over the offsets instead of a Python test per token (a fifth of tokenizing). Offsets out of
    order (a tokenizer that reorders, or overlapping added tokens) take the test per token."""
    n = len(offsets)
    if not n:
        return []
    starts, ends = zip(*offsets)
    if not (all(map(operator.le, starts, starts[1:])) and all(map(operator.le, ends, ends[1:]))):
        return [i > 0 and e > s and any(s < b and a < e for a, b in spans) for i, (s, e) in enumerate(offsets)]
    mask = bytearray(n)
    for a, b in spans:
        lo, hi = bisect.bisect_right(ends, a), bisect.bisect_left(starts, b)  # e > a from lo on; s < b before hi
        if hi > lo:
            mask[lo:hi] = b"\x01" * (hi - lo)
    for i in itertools.compress(range(n), map(operator.eq, starts, ends)):
        mask[i] = 0  # covers no character (an added BOS): nothing of it lies in a span
    mask[0] = 0
    return list(map(bool, mask))


def encode_examples(tokenizer: Any, examples: list[TextExample], *, add_special_tokens: bool,
                    progress: Report | None = None, what: str = "tokenizing") -> list[Encoded]:
    return encode_texts(tokenizer, [e.text for e in examples], [e.spans for e in examples],
                        add_special_tokens=add_special_tokens, progress=progress, what=what)


def encode_pairs(tokenizer: Any, examples: list[PairExample], *, add_special_tokens: bool,
                 max_prompt_length: int | None, max_completion_length: int | None, max_length: int,
                 progress: Report | None = None, what: str = "tokenizing") -> list[EncodedPair]:
    texts, spans = [], []
    for e in examples:
        for completion in (e.chosen, e.rejected):
            text = e.prompt + completion
            texts.append(text)
            spans.append([(len(e.prompt), len(text))])
    encoded = encode_texts(tokenizer, texts, spans, add_special_tokens=add_special_tokens, progress=progress,
                           what=what)
    pairs = []
    for i in range(len(examples)):
        chosen, rejected = encoded[2 * i], encoded[2 * i + 1]
        n_prompt = min(_prompt_len(chosen), _prompt_len(rejected))
        prompt_cut = max(0, n_prompt - max_prompt_length) if max_prompt_length else 0
        room = max(0, max_length - (n_prompt - prompt_cut))
        if max_completion_length:
            room = min(room, max_completion_length)
        pairs.append(EncodedPair(chosen, rejected, n_prompt, prompt_cut,
                                 max(0, len(chosen) - n_prompt - room), max(0, len(rejected) - n_prompt - room)))
    return pairs


def encode_split(tokenizer: Any, examples: list, *, spec: TrainerSpec, add_special_tokens: bool, block_size: int,
                 max_prompt_length: int | None, max_completion_length: int | None,
                 progress: Report | None = None, what: str = "tokenizing") -> list[Encoded] | list[EncodedPair]:
    """The one tokenization the preview shows and the trainers train on. Pairs scored whole (reward) are cut
    to block_size only; DPO/ORPO prompts and completions are also cut to their own limits. GRPO/RLOO prompts are
    never cut (engine.split_counts leaves the over-long out) and have no trained token: the answers are sampled."""
    if spec.online:
        return encode_prompts(tokenizer, examples, add_special_tokens=add_special_tokens, progress=progress, what=what)
    if spec.pairwise:
        limits = spec.prompt_limits
        return encode_pairs(tokenizer, examples, add_special_tokens=add_special_tokens,
                            max_prompt_length=max_prompt_length if limits else None,
                            max_completion_length=max_completion_length if limits else None,
                            max_length=block_size, progress=progress, what=what)
    return encode_examples(tokenizer, examples, add_special_tokens=add_special_tokens, progress=progress, what=what)


def encode_prompts(tokenizer: Any, examples: list[PromptExample], *, add_special_tokens: bool,
                   progress: Report | None = None, what: str = "tokenizing") -> list[Encoded]:
    """The prompts' ids as TRL's online trainers make them: a rendered conversation without added special tokens
    (apply_chat_template's), plain text with them (the tokenizer's __call__)."""
    return encode_texts(tokenizer, [e.text for e in examples], [[] for _ in examples],
                        add_special_tokens=add_special_tokens, progress=progress, what=what)


def _prompt_len(e: Encoded) -> int:
    for i, t in enumerate(e.trained):
        if t:
            return i
    return len(e)


def pack_blocks(encoded: list[Encoded], block_size: int) -> list[list[int]]:
    """Generic CLM: join all texts and cut them into blocks. AutoTrain drops the last partial block (all of a
    small data set, if it is shorter than one block); it is kept here, shorter."""
    stream = [t for e in encoded for t in e.ids]
    return [stream[i:i + block_size] for i in range(0, len(stream), block_size)]
