"""The data pipeline: config + tokenizer -> formatted splits -> encoded examples with exact masks.

The preview (engine.preview builds its report from this), the `--yes` check, the wizard and the training
process (engine.trainers.rows) all go through these functions, so what is trained is what was previewed.
Light at import: transformers is imported only when a tokenizer is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.block_size import checked_block_size
from engine.chat_templates import TemplateSetup, renderer, setup_tokenizer
from engine.config import RunConfig
from engine.data import Table, hold_out, load_split
from engine.encoding import Encoded, EncodedPair, encode_split
from engine.errors import ConfigError
from engine.formatting import FormattedSplit, format_split
from engine.work_progress import Report


@dataclass
class Prepared:
    """A config's data made ready for its trainer: the tokenizer set up for the chat template, the block size
    (with how it was chosen) and the formatted train (and valid) splits."""

    cfg: RunConfig
    tokenizer: Any
    setup: TemplateSetup
    block_size: int
    block_size_note: str
    splits: list[FormattedSplit]
    progress: Report | None = None  # lines on long work (engine.work_progress)

    def encoded(self, fs: FormattedSplit) -> list[Encoded] | list[EncodedPair]:
        return encode_for_training(self.cfg, self.tokenizer, self.setup, fs, self.block_size,
                                   progress=self.progress)


def prepare(cfg: RunConfig, *, tokenizer: Any | None = None, limit: int | None = None,
            progress: Report | None = None, setup: TemplateSetup | None = None) -> Prepared:
    """Load (or take) the tokenizer, check the block size, read and format the splits (the first `limit` rows
    of each, or all). `progress` gets a line at most once a second while formatting and tokenizing. With
    `setup`, the tokenizer is already set up for the chat template (by prepare_tokenizer)."""
    if setup is None or tokenizer is None:
        tokenizer, setup = prepare_tokenizer(cfg, tokenizer)
    block_size, note = checked_block_size(cfg, tokenizer)
    splits = load_and_format(cfg, tokenizer, setup, limit=limit, progress=progress)
    return Prepared(cfg, tokenizer, setup, block_size, note, splits, progress)


def load_tokenizer(cfg: RunConfig) -> Any:
    """The model's tokenizer, with a clear error when it is neither local nor downloadable."""
    from engine.config import resolve_local
    from engine.tinymodel import resolve_model

    name = resolve_model(cfg.base_model)
    local = resolve_local(name, cfg.base_dir)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(local) if local else name, token=cfg.hub.token or None)
    except Exception as e:  # OSError when offline/not found, ValueError for odd tokenizer files
        from engine.offline import hub_offline

        offline = hub_offline()  # one reading of the offline switches (also "true", "yes", "on")
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = "is not in the local Hugging Face cache" + (" and HF_HUB_OFFLINE=1" if offline else
                                                            " and could not be downloaded")
        raise ConfigError([cfg.problem("base_model", f"cannot load its tokenizer: the model {where} ({reason})",
                                       "download it first on a machine with internet (huggingface-cli download "
                                       f"{cfg.base_model}), or point base_model at a local model directory",
                                       cfg.base_model)]) from None


def prepare_tokenizer(cfg: RunConfig, tokenizer: Any | None = None) -> tuple[Any, TemplateSetup]:
    tokenizer = tokenizer or load_tokenizer(cfg)
    setup = setup_tokenizer(tokenizer, cfg.data.chat_template, padding=cfg.params.padding,
                            model_max_length=cfg.params.model_max_length)
    return tokenizer, setup


def load_and_format(cfg: RunConfig, tokenizer: Any, setup: TemplateSetup, *, limit: int | None = None,
                    progress: Report | None = None) -> list[FormattedSplit]:
    """Read the train (and valid) split and format it for the trainer. The one place splits are made, for the
    preview and the training process alike: without data.valid_split, params.valid_fraction holds out part of
    the train rows as the valid split (engine.data.hold_out; of the rows read, with a `limit`)."""
    render = renderer(tokenizer) if setup.is_chat else None
    out = []
    for role, split in cfg.data.splits():
        table: Table = load_split(cfg.data.path, split, base_dir=cfg.base_dir, token=cfg.hub.token or None,
                                  limit=limit, split_key=f"data.{role}_split")
        parts = [(role, table)]
        if role == "train" and cfg.params.valid_fraction and not cfg.data.valid_split:
            parts = list(zip(("train", "valid"), hold_out(table, cfg.params.valid_fraction, cfg.params.seed)))
        out += [format_split(t, cfg, setup, render, tokenizer.eos_token, split=r, progress=progress)
                for r, t in parts]
    return out


def encode_for_training(cfg: RunConfig, tokenizer: Any, setup: TemplateSetup, fs: FormattedSplit,
                        block_size: int, progress: Report | None = None) -> list[Encoded] | list[EncodedPair]:
    """The one tokenization the preview shows and the trainers train on."""
    return encode_examples_for(cfg, tokenizer, setup, fs.examples, block_size, progress=progress,
                               what=f"tokenizing {fs.split}")


def encode_examples_for(cfg: RunConfig, tokenizer: Any, setup: TemplateSetup, examples: list, block_size: int,
                        progress: Report | None = None, what: str = "tokenizing") -> list[Encoded] | list[EncodedPair]:
    """encode_split with the config's lengths: a split formatted in memory, or a chunk of one (engine.dataset_prep)."""
    p = cfg.params
    return encode_split(tokenizer, examples, spec=cfg.spec, add_special_tokens=not setup.is_chat,
                        block_size=block_size, max_prompt_length=p.max_prompt_length,
                        max_completion_length=p.max_completion_length, progress=progress, what=what)
