"""Do LoRA's `params.target_modules` name modules of the model? Checked before launch: peft says so only inside
the training process, once the weights are loaded, and the run fails there.

The model is built from its config on the meta device (no weights read, no memory used), which takes
milliseconds even for billions of parameters. torch and transformers are imported inside the functions, so
importing this module is cheap. It takes the model's local directory or hub id, already resolved.
"""

from __future__ import annotations

import functools
from pathlib import Path

ALL_LINEAR = "all-linear"


def parse_targets(text: str | None) -> list[str] | None:
    """The names in a target_modules value, split as the trainer splits them; None for all-linear."""
    if text is None or text.strip() == ALL_LINEAR:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def matches(module: str, target: str) -> bool:
    """peft's rule for a list of names: the module's full name is the target, or ends with `.target`."""
    return module == target or module.endswith("." + target)


def unknown_targets(targets: list[str], modules: list[str]) -> list[str]:
    """The targets that match no module."""
    return [t for t in targets if not any(matches(m, t) for m in modules)]


def model_modules(model: str, *, reward: bool) -> tuple[list[str], list[str]] | None:
    """(every module name, the distinct short names of its linear layers but the output head) of `model`
    (a local directory, or a hub id read from the local cache only); None when its config cannot be read or
    the model cannot be built from it (other checks report a missing model)."""
    config_file = Path(model) / "config.json"
    try:
        stamp = config_file.stat().st_mtime_ns  # a local model re-saved in place is read again
    except (OSError, ValueError):
        stamp = None
    return _modules(model, reward, stamp)


@functools.lru_cache(maxsize=8)
def _modules(model: str, reward: bool, stamp: int | None) -> tuple[list[str], list[str]] | None:
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # building from a config warns about things that matter for training only
        try:
            config = AutoConfig.from_pretrained(model, local_files_only=True)
            with torch.device("meta"):
                if reward:
                    config.num_labels = 1
                    built = AutoModelForSequenceClassification.from_config(config)
                else:
                    built = AutoModelForCausalLM.from_config(config)
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception:  # noqa: BLE001 - an unreadable or unbuildable config: nothing to say here
        return None
    heads = {id(m) for m in (built.get_output_embeddings(), getattr(built, "score", None)) if m is not None}
    names, linear = [], []
    for name, module in built.named_modules():
        names.append(name)
        # transformers' Conv1D (GPT-2 style) is a linear layer too, and peft wraps it as one
        if id(module) not in heads and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"):
            linear.append(name.rsplit(".", 1)[-1])
    return names, list(dict.fromkeys(linear))
