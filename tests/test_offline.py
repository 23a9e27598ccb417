"""One reading of the offline switches (engine/offline.py), as huggingface_hub and datasets read them, used by
model lookups, tokenizers and hub datasets alike; and one list of what a connection error looks like."""

from __future__ import annotations

import subprocess
import sys

import pytest

import engine.data
import engine.model_info
from engine.offline import datasets_offline, hub_offline, is_connection_error
from imports import ROOT

SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@pytest.fixture
def switches(monkeypatch: pytest.MonkeyPatch):
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)

    def set_(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_any_true_spelling_turns_it_on(switches, value: str) -> None:
    switches(HF_HUB_OFFLINE=value)
    assert hub_offline() and datasets_offline()


def test_nothing_set_is_online(switches) -> None:
    assert not hub_offline() and not datasets_offline()


def test_the_hub_switch_falls_back_to_transformers_as_huggingface_hub_does(switches) -> None:
    switches(TRANSFORMERS_OFFLINE="1")
    assert hub_offline()
    switches(HF_HUB_OFFLINE="0")  # set, so TRANSFORMERS_OFFLINE is not read (huggingface_hub.constants)
    assert not hub_offline()


def test_the_datasets_switch_is_for_datasets_only(switches) -> None:
    switches(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="0")
    assert datasets_offline() and not hub_offline()


def test_the_readers_agree_with_the_libraries(switches) -> None:
    """huggingface_hub and datasets read the switches at import: ask a fresh interpreter for each setting."""
    for env in ({}, {"HF_HUB_OFFLINE": "1"}, {"TRANSFORMERS_OFFLINE": "yes"}, {"HF_HUB_OFFLINE": "0",
                "TRANSFORMERS_OFFLINE": "1"}, {"HF_DATASETS_OFFLINE": "1"}):
        for name in SWITCHES:
            switches(**{name: env.get(name, "")})
        code = "import huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        assert out.stdout.strip() == str(hub_offline()), env


def test_engine_modules_use_the_one_reading() -> None:
    assert engine.model_info.hub_offline is hub_offline
    for module in (engine.data, engine.model_info):
        source = (ROOT / "engine" / f"{module.__name__.split('.')[-1]}.py").read_text()
        assert "_OFFLINE\")" not in source and "\"NetworkError\"" not in source, module.__name__


def test_connection_errors_by_kind_and_by_name() -> None:
    class LocalEntryNotFoundError(Exception):
        pass

    class OfflineModeIsEnabled(Exception):
        pass

    class ConnectTimeout(Exception):
        pass

    for error in (ConnectionError("refused"), TimeoutError(), LocalEntryNotFoundError(), OfflineModeIsEnabled(),
                  ConnectTimeout()):
        assert is_connection_error(error), error
    for error in (ValueError("Unknown split"), FileNotFoundError("x"), KeyError("y")):
        assert not is_connection_error(error), error
