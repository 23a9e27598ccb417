"""Fixtures shared by the whole suite: no network, nothing written to the real home, a tiny local model."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set in pytest_configure, not in a fixture: huggingface_hub and datasets read these when first
# imported, which can happen while test modules are collected, before any fixture runs.
_OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
_hf_home: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _hf_home
    os.environ.update(_OFFLINE)
    # datasets caches even local files under HF_HOME: keep that out of the real home too.
    _hf_home = tempfile.mkdtemp(prefix="llmtune-test-hf-")
    os.environ["HF_HOME"] = _hf_home


def pytest_unconfigure(config: pytest.Config) -> None:
    if _hf_home:
        shutil.rmtree(_hf_home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _llmtune_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """LLMTUNE_HOME (cached tiny model, settings) in a session temp dir, never ~/.cache/llmtune."""
    home = tmp_path_factory.mktemp("llmtune-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMTUNE_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama (tokenizer, chat template, weights), built once per session (~0.2 s)."""
    from engine.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run a test in its own directory, so relative paths (`data.path: .`) and shown locations are short."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
