"""The private TRL/transformers methods llmtune overrides or wraps, pinned to the signatures we wrote against
(TRL 1.16, transformers 5): a TRL or transformers upgrade that renames, re-shapes or stops calling one fails here,
loudly, instead of training silently on re-tokenized rows or losing the non-finite guard."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _dpo() -> type:
    from trl import DPOTrainer

    return DPOTrainer


def _orpo() -> type:
    from engine.trainers.orpo import _trainer_classes

    return _trainer_classes()[1]


def _trainer() -> type:
    from transformers import Trainer

    return Trainer


def _grpo() -> type:
    from trl import GRPOTrainer

    return GRPOTrainer


def _rloo() -> type:
    from trl import RLOOTrainer

    return RLOOTrainer


# (class, method, the signature without annotations, what of ours relies on it and what to re-check)
PINNED: list[tuple[Callable[[], type], str, str, str]] = [
    (_dpo, "_prepare_dataset", "(self, dataset, processing_class, args, dataset_name)",
     "engine/trainers/dpo.py overrides it to return our pre-tokenized rows untouched: check DPOTrainer.__init__ "
     "still routes train/eval datasets through it and which columns it expects (prompt_ids, chosen_ids, "
     "rejected_ids) in trainers/rows.py"),
    (_orpo, "tokenize_row", "(self, feature, model=None)",
     "engine/trainers/orpo.py overrides it to add nothing (rows are tokenized already): check ORPOTrainer "
     "still maps the datasets through it and the column names it makes, against trainers/rows.py"),
    (_trainer, "training_step", "(self, model, inputs, num_items_in_batch=None)",
     "engine/trainers/progress.py (TokenCounter) and nonfinite.py wrap it, passing (model, inputs, *args): "
     "check the arguments and that it still returns the step's loss"),
    (_grpo, "_prepare_inputs", "(self, generation_batch)",
     "engine/trainers/progress.py (TokenCounter) wraps it on GRPO/RLOO to count the prompt and answer tokens of "
     "each batch it makes: check it still returns prompt_mask and completion_mask"),
    (_rloo, "_prepare_inputs", "(self, generation_batch)",
     "as GRPOTrainer._prepare_inputs (engine/trainers/progress.py)"),
    (_grpo, "_tokenize_prompts", "(self, prompts)",
     "tests/test_online.py compares its ids with the pipeline's (the preview's): check prompts are still "
     "rendered with apply_chat_template(add_generation_prompt=True) or tokenized as text"),
    (_trainer, "_get_grad_norm", "(self, model, grad_norm=None)",
     "engine/trainers/nonfinite.py wraps it to see each step's gradient norm: check the inner training loop "
     "still calls it once per optimizer step and returns the norm"),
]


def _bare(method: Any) -> str:
    """The signature with annotations dropped: a moved type (datasets.Dataset...) is not a change we rely on."""
    signature = inspect.signature(method)
    return str(signature.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                             for p in signature.parameters.values()],
                                 return_annotation=inspect.Signature.empty))


@pytest.mark.parametrize(("cls", "name", "expected", "why"), PINNED,
                         ids=[f"{pin[0].__name__[1:]}.{pin[1]}" for pin in PINNED])
def test_overridden_private_method_keeps_its_signature(cls: Callable[[], type], name: str, expected: str,
                                                       why: str) -> None:
    import transformers
    import trl

    klass = cls()
    versions = f"trl {trl.__version__}, transformers {transformers.__version__}"
    method = getattr(klass, name, None)
    assert callable(method), f"{klass.__name__}.{name} is gone ({versions}). {why}."
    assert _bare(method) == expected, (f"{klass.__name__}.{name} changed ({versions}): {_bare(method)}, "
                                       f"was {expected}. {why}; then update this pin.")
    calls = inspect.getsource(inspect.getmodule(klass))  # it still calls the method we replace
    assert f"self.{name}" in calls, f"{klass.__name__} no longer calls self.{name} ({versions}). {why}."


def test_our_dpo_override_takes_what_trl_passes() -> None:
    from engine.trainers.dpo import PretokenizedDPOTrainer

    assert _bare(PretokenizedDPOTrainer._prepare_dataset) == _bare(_dpo()._prepare_dataset)


def test_the_grpo_losses_the_params_table_offers_are_trls() -> None:
    """engine.params.GRPO_LOSSES copies GRPOConfig.loss_type's values (the validator imports no TRL)."""
    import dataclasses
    import re

    from trl import GRPOConfig

    from engine.params import GRPO_LOSSES

    help_text = next(f for f in dataclasses.fields(GRPOConfig) if f.name == "loss_type").metadata["help"]
    supported = help_text.split("Supported values are", 1)[1].split(".", 1)[0]
    assert tuple(re.findall(r"'(\w+)'", supported)) == GRPO_LOSSES
