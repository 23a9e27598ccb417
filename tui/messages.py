"""What the wizard's steps tell the app, and what the app ends with. The app (tui.app) owns the wizard's state:
a step never sets it, it posts one of these (Step.tell_app) and the app's handler does; steps read the state
back through Step.wizard. Kept apart from tui.app so that steps can import them without importing the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message

from engine.data import Table
from engine.model_info import ModelInfo


@dataclass
class WizardResult:
    """What the app ends with: the config saved last (if any), and the runs it launched or watched, in order
    (they go on running: the app only reads them)."""

    config_path: Path | None
    runs: list[Path] = field(default_factory=list)


@dataclass
class ModelInfoChanged(Message):
    """The Model step read what config.json says about the model; None while a new one is read, or when no
    model is chosen (never a stale model for the memory estimate)."""

    info: ModelInfo | None


@dataclass
class DataPreviewed(Message):
    """The Data step read the train split's first rows (None: unreadable) and found these splits."""

    table: Table | None
    splits: list[str]


@dataclass
class CapabilitiesRead(Message):
    """The Parameters step probed this machine once (engine.capabilities.probe()): what it runs, and the
    GPU's memory in bytes (None: no CUDA)."""

    capabilities: Any
    gpu_total: int | None


@dataclass
class ConfigSaved(Message):
    """The Review step wrote the config to `path`; `text` is what it wrote (to tell whether it changed since)."""

    path: Path
    text: str


@dataclass
class RunLaunched(Message):
    """The Review step started training the saved config: the app shows the run's dashboard."""

    run_dir: Path
    handle: Any  # engine.launch.RunHandle


@dataclass
class ExitRequested(Message):
    """The Review step's Exit: the app ends with the config saved last and the runs it showed."""
