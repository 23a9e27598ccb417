"""The block size a run trains with: `params.block_size`, or for -1 the smallest of model_max_length, the
tokenizer's limit and AUTO_BLOCK_CAP. One rule for the pipeline (with the tokenizer) and the memory estimate
(with the model's context length instead). Light: no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import RunConfig

AUTO_BLOCK_CAP = 1024  # what block_size -1 picks at most, as AutoTrain does
NO_LIMIT = 100_000_000  # tokenizers without a limit report a huge sentinel


def auto_block_size(model_max_length: int, limit: int | None) -> int:
    """What block_size -1 picks, given the tokenizer's (or the model's) limit, None when unknown."""
    return max(1, min([model_max_length, AUTO_BLOCK_CAP] + ([limit] if limit else [])))


def resolve_block_size(cfg: RunConfig, tokenizer: Any) -> tuple[int, str]:
    """(the block size, a line saying how it was chosen)."""
    limit = tokenizer.model_max_length
    limit_text = "no limit" if limit >= NO_LIMIT else str(limit)
    requested = cfg.params.block_size
    if requested == -1:
        picked = auto_block_size(cfg.params.model_max_length, limit)
        return picked, (f"block_size -1 picked {picked} = min(model_max_length {cfg.params.model_max_length}, "
                        f"tokenizer limit {limit_text}, {AUTO_BLOCK_CAP})")
    if requested > limit:
        return limit, f"block_size {requested} exceeds the tokenizer's limit; using {limit}"
    return requested, f"block_size {requested}"


def checked_block_size(cfg: RunConfig, tokenizer: Any) -> tuple[int, str]:
    """resolve_block_size, then the length rules that need it (-1 is known only once the tokenizer is)."""
    from engine.config import length_problems
    from engine.errors import ConfigError

    block_size, note = resolve_block_size(cfg, tokenizer)
    problems = length_problems(cfg, block_size)
    if problems:
        raise ConfigError(problems, source=str(cfg.source) if cfg.source else None)
    return block_size, note
