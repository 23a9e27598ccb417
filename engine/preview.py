"""What the model will be trained on, without training: samples with trained/masked/cut spans, row counts,
rows dropped and why, and token length statistics. The dry run prints it; the wizard shows it; tests read it.

Loads the tokenizer only (never the weights); formats and tokenizes every row through the data pipeline
(engine.pipeline) the trainers use. This module only builds the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.chat_templates import TemplateSetup
from engine.config import RunConfig
from engine.encoding import Encoded, EncodedPair
from engine.errors import DataError, Problem
from engine.formatting import FormattedSplit
from engine.pipeline import Prepared, encode_examples_for, prepare
from engine.split_counts import LengthStats, SplitCounts, count_blocks, counts_of
from engine.work_progress import Report

# A sample part carries at most this much text, its first and last halves: ten times what the dry run and the
# wizard show (they keep the start and the end too), so a 10 MB cell does not make 10 MB of segments.
PREVIEW_PART_CHARS = 20_000


@dataclass
class Segment:
    text: str
    kind: str  # "trained", "masked" or "cut" (beyond a length limit: the model never sees it)
    omitted: int = 0  # characters of the part left out right after this text (the middle of a long part)


@dataclass
class Part:
    title: str  # "text", or "prompt" / "chosen" / "rejected"
    segments: list[Segment]
    tokens: int
    trained: int
    cut: int


@dataclass
class Sample:
    location: str
    parts: list[Part]

    @property
    def trained(self) -> int:
        return sum(p.trained for p in self.parts)

    @property
    def no_trained_tokens(self) -> bool:
        return self.trained == 0


@dataclass
class SplitReport:
    formatted: FormattedSplit
    lengths: list[LengthStats]
    trained_tokens: int
    total_tokens: int
    no_trained: int  # examples left with no trained token (e.g. the answer was cut off)
    notes: list[str] = field(default_factory=list)
    skipped: int = 0  # examples the training process leaves out for it (engine.trainers.rows): SFT, DPO, ORPO


@dataclass
class Preview:
    cfg: RunConfig
    tokenizer_name: str
    block_size: int
    block_size_note: str
    template: TemplateSetup
    splits: list[SplitReport]
    samples: list[Sample]
    warnings: list[Problem]
    reward: Any = None  # GRPO/RLOO: the reward model gate (engine.reward_model.RewardGate)


def build_preview(cfg: RunConfig, *, n_samples: int = 3, tokenizer: Any | None = None,
                  limit: int | None = None, progress: Report | None = None) -> Preview:
    """The report of every row (prepared through the cache, engine.dataset_prep, so that the training process
    reads the same rows without preparing them again), or, with a `limit`, of the first rows read: then the
    cached report of every row when there is one, else those rows formatted in memory."""
    from engine.dataset_prep import PreparedData, find_prepared, prepare_dataset

    if limit is None:
        return preview_of(prepare_dataset(cfg, tokenizer=tokenizer, progress=progress, n_samples=n_samples),
                          n_samples)
    found = find_prepared(cfg, tokenizer=tokenizer, n_samples=n_samples)
    if isinstance(found, PreparedData):
        return preview_of(found, n_samples)
    prepared = prepare(cfg, tokenizer=found[0], setup=found[1], limit=limit)  # set up once: its notes kept
    reports, samples = [], []
    for fs in prepared.splits:
        report, split_samples = _report(prepared, fs, n_samples)
        reports.append(report)
        if fs.split == "train":
            samples = split_samples
    return Preview(cfg, cfg.base_model, prepared.block_size, prepared.block_size_note, prepared.setup, reports,
                   samples, list(cfg.warnings), _gate(cfg, prepared.tokenizer, prepared.splits[0].examples[:n_samples]))


def preview_of(data: Any, n_samples: int) -> Preview:
    """The preview of prepared data (engine.dataset_prep.PreparedData): its counts, and samples made from the
    first examples it kept."""
    cfg = data.cfg
    reports = [report_of(cfg, s.formatted, s.counts, data.block_size) for s in data.splits]
    train = data.splits[0].formatted
    examples = train.examples[:n_samples]
    encoded = encode_examples_for(cfg, data.tokenizer, data.setup, examples, data.block_size)
    samples = samples_of(cfg, data.tokenizer, data.block_size, examples, encoded)
    return Preview(cfg, cfg.base_model, data.block_size, data.block_size_note, data.setup, reports, samples,
                   list(cfg.warnings), _gate(cfg, data.tokenizer, examples))


def _gate(cfg: RunConfig, tokenizer: Any, examples: list) -> Any:
    """GRPO/RLOO: the reward model gate (it loads the reward model to score its validation pairs)."""
    if not cfg.spec.online:
        return None
    from engine.reward_gate import reward_gate

    return reward_gate(cfg, tokenizer, [e.prompt for e in examples])


def _report(prepared: Prepared, fs: FormattedSplit, n_samples: int) -> tuple[SplitReport, list[Sample]]:
    cfg, block_size = prepared.cfg, prepared.block_size
    encoded = prepared.encoded(fs)
    counts = counts_of(cfg.spec, cfg.params, encoded, block_size)
    return report_of(cfg, fs, counts, block_size), samples_of(cfg, prepared.tokenizer, block_size,
                                                                 fs.examples[:n_samples], encoded)


def samples_of(cfg: RunConfig, tokenizer: Any, block_size: int, examples: list, encoded: list) -> list[Sample]:
    """The samples of these examples, as their trainer sees them."""
    if cfg.spec.online:  # the prompt as the policy reads it: masked (nothing of it is trained), or left out whole
        limit = cfg.params.max_prompt_length
        return [Sample(e.location, [_part("prompt", tokenizer, e.text, enc, 0, len(enc),
                                          len(enc) if len(enc) <= limit else 0)])
                for e, enc in zip(examples, encoded)]
    if cfg.spec.pairwise:
        reward = cfg.spec.whole_texts
        return [_pair_sample(tokenizer, e.location, e.prompt + e.chosen, e.prompt + e.rejected, p, reward)
                for e, p in zip(examples, encoded)]
    packed = cfg.spec.packs  # joined into blocks: a long text continues in the next one, nothing is cut
    return [Sample(e.location, [_part("text", tokenizer, e.text, enc, 0, len(enc),
                                      len(enc) if packed else block_size)])
            for e, enc in zip(examples, encoded)]


def report_of(cfg: RunConfig, fs: FormattedSplit, counts: SplitCounts, block_size: int) -> SplitReport:
    """The report of a split from its counts (engine.split_counts), however they were counted."""
    lengths = [t.stats() for t in counts.lengths]
    report = SplitReport(fs, lengths, counts.trained_tokens, counts.total_tokens, counts.no_trained,
                         skipped=counts.skipped)
    if cfg.spec.packs:
        blocks = SplitCounts([], stream_tokens=counts.stream_tokens)
        last = count_blocks(blocks, block_size)
        report.notes.append(f"{fs.used} texts, {counts.stream_tokens} tokens, joined and cut into {blocks.examples} "
                            f"block(s) of {block_size}" + (f" (the last has {last})" if last < block_size else ""))
        lengths[0].over = 0  # nothing is truncated: long texts continue in the next block
        report.no_trained = report.skipped = 0  # the generic trainer keeps every block
    return report


def training_problems(preview: Preview) -> list[Problem]:
    """Why training would stop before its first step, found before it starts: the training process (engine.train)
    refuses a train split in which every example is left out for having no trained token within the limits."""
    train = next((r for r in preview.splits if r.formatted.split == "train"), None)
    if train is None or not train.formatted.used or train.skipped < train.formatted.used:
        return []
    cfg, n = preview.cfg, train.formatted.used
    if cfg.spec.online:
        return [cfg.problem("params.max_prompt_length", f"every prompt of the train split ({n}) is longer than "
                            f"max_prompt_length {cfg.params.max_prompt_length} tokens, and is left out",
                            "raise params.max_prompt_length; the dry run (--dry-run) shows the prompts' lengths",
                            cfg.params.max_prompt_length)]
    pairs = cfg.spec.prompt_limits
    why = ("an empty chosen or rejected answer once the prompt is cut to its limits" if pairs else
           "no trained token left after truncation")
    fix = ("raise params.block_size, or lower params.max_prompt_length" if pairs else "raise params.block_size")
    return [cfg.problem("params.block_size", f"no training example has a trained token within block_size "
                        f"{preview.block_size}: all {n} example(s) of the train split have {why}",
                        f"{fix}; the dry run (--dry-run) shows where each sample is cut", cfg.params.block_size)]


def reward_problems(preview: Preview) -> list[Problem]:
    """A weak reward model (engine.reward_model.RewardCheck.weak) unless params.allow_weak_reward_model: an RL run
    against it would spend its compute on noise."""
    gate, cfg = preview.reward, preview.cfg
    if gate is None or not gate.weak or gate.allow_weak:
        return []
    return [cfg.problem("params.reward_model", "is weak: " + "; ".join(gate.weak), "train it further or on more "
                        "pairs (--dry-run shows how it scores), or set params.allow_weak_reward_model: true to run "
                        "against it anyway", cfg.params.reward_model)]


def check_reward_model(preview: Preview) -> None:
    """Raise ConfigError (exit 2) for reward_problems: `--yes` and the wizard's launch stop here; the dry run only
    warns."""
    from engine.errors import ConfigError

    problems = reward_problems(preview)
    if problems:
        raise ConfigError(problems, source=str(preview.cfg.source) if preview.cfg.source else None)


def check_trainable(preview: Preview) -> None:
    """Raise DataError (exit 2) when training_problems finds nothing to train: the dry run, `--yes` and the
    wizard's launch stop here rather than start a run that would fail at once."""
    problems = training_problems(preview)
    if problems:
        raise DataError(problems, source=str(preview.cfg.source) if preview.cfg.source else None,
                        title="nothing to train")


# ---------------------------------------------------------------- samples as segments


def _part(title: str, tokenizer: Any, text: str, enc: Encoded, lo: int, hi: int, keep_to: int,
          keep_from: int = 0, max_chars: int | None = PREVIEW_PART_CHARS) -> Part:
    """Segments of tokens lo..hi of `enc`; tokens before keep_from or from keep_to on are cut. The counts are
    exact; the text is kept to max_chars (its start and end; None keeps all)."""
    runs: list[tuple[str, list[str]]] = []  # (kind, pieces): joined once, as repeated += grows quadratically
    prev_end = enc.offsets[lo][0] if lo < hi and lo > 0 else 0
    trained = cut = 0
    for i in range(lo, hi):
        s, e = enc.offsets[i]
        if i < keep_from or i >= keep_to:
            kind = "cut"
            cut += 1
        elif enc.trained[i]:
            kind = "trained"
            trained += 1
        else:
            kind = "masked"
        piece = text[prev_end:e] if e > s else tokenizer.convert_ids_to_tokens(enc.ids[i])  # added BOS etc.
        prev_end = max(prev_end, e)
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(piece)
        else:
            runs.append((kind, [piece]))
    if hi == len(enc) and prev_end < len(text) and runs:
        runs[-1][1].append(text[prev_end:])
    segments = [Segment("".join(pieces), kind) for kind, pieces in runs]
    return Part(title, _keep_ends(segments, max_chars), hi - lo, trained, cut)


def _keep_ends(segments: list[Segment], max_chars: int | None) -> list[Segment]:
    """The first and last max_chars/2 characters of the segments; the last segment before the gap records how
    many characters were left out, so a display can still say exactly how much it does not show."""
    total = sum(len(seg.text) for seg in segments)
    if max_chars is None or total <= max_chars:
        return segments
    head, tail_start = max_chars // 2, total - (max_chars - max_chars // 2)
    out: list[Segment] = []
    pos = 0
    for seg in segments:
        end = pos + len(seg.text)
        if pos < head:
            out.append(Segment(seg.text[:head - pos], seg.kind))
            if end >= head:
                out[-1].omitted = tail_start - head
        if end > tail_start:
            out.append(Segment(seg.text[max(0, tail_start - pos):], seg.kind))
        pos = end
    return out


def _pair_sample(tokenizer: Any, location: str, chosen_text: str, rejected_text: str, pair: EncodedPair,
                 reward: bool) -> Sample:
    c, r, n = pair.chosen_full, pair.rejected_full, pair.n_prompt
    if reward:  # whole texts are scored; nothing is masked
        return Sample(location, [
            _part("chosen", tokenizer, chosen_text, _all_trained(c), 0, len(c), len(c) - pair.chosen_cut),
            _part("rejected", tokenizer, rejected_text, _all_trained(r), 0, len(r), len(r) - pair.rejected_cut)])
    return Sample(location, [
        _part("prompt", tokenizer, chosen_text, c, 0, n, n, keep_from=pair.prompt_cut),
        _part("chosen", tokenizer, chosen_text, c, n, len(c), len(c) - pair.chosen_cut),
        _part("rejected", tokenizer, rejected_text, r, n, len(r), len(r) - pair.rejected_cut)])


def _all_trained(e: Encoded) -> Encoded:
    return Encoded(e.ids, [True] * len(e), e.offsets)
