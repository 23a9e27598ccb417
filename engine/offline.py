"""Whether the Hugging Face Hub may be asked, and whether an error means it could not be reached: one reading of
the offline switches for models, tokenizers and datasets, read as the libraries themselves read them, so
llmtune says "offline" exactly when they would refuse to go online. Standard library only."""

from __future__ import annotations

import os

_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's and datasets' ENV_VARS_TRUE_VALUES
# Words in the class names (the whole MRO) of the errors requests, httpx, huggingface_hub and datasets raise
# when there is no route to the hub, or offline mode forbids one.
_CONNECTION_WORDS = ("Connect", "Timeout", "Offline", "LocalEntryNotFound", "NetworkError")


def _true(value: str | None) -> bool:
    return (value or "").strip().upper() in _TRUE


def hub_offline() -> bool:
    """Offline for models and tokenizers: huggingface_hub reads HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE when that
    is unset or empty (transformers has no switch of its own any more)."""
    return _true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))


def datasets_offline() -> bool:
    """Offline for hub datasets: datasets' own HF_DATASETS_OFFLINE, or the hub client's switch (which datasets
    downloads through)."""
    return hub_offline() or _true(os.environ.get("HF_DATASETS_OFFLINE"))


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` says the hub could not be reached (or was not to be asked), not that the thing is missing."""
    names = " ".join(cls.__name__ for cls in type(error).__mro__)
    return isinstance(error, (ConnectionError, TimeoutError)) or any(word in names for word in _CONNECTION_WORDS)
