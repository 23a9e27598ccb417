"""The run directory's protocol: the name of every file a run writes there, and who writes it. The launcher,
the training process, the UI and the hub upload all take their names from here; `RunDir(path)` gives the paths.

The module-level names are relative to the run directory (what the manifest books, what the hub leaves out).
Standard library only: both sides of the protocol import it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"  # the resolved config the run trains, written before it starts (engine.rundir)
PARAMS_FILE = "training_params.json"  # AutoTrain's flat record of the parameters
EVENTS_FILE = "events.jsonl"  # the event stream (engine.events): all the UI ever reads of the run's progress
LOG_FILE = "train.log"  # the training process's stdout and stderr, appended to across resumes
PID_FILE = "run.pid"  # the training process's id (engine.launch)
CONTROL_DIR = "control"  # requests to the run (engine.control), one file each
REQUESTS = ("stop", "checkpoint")  # the request files: whoever wrote them (the dashboard, `touch`), only a request
PROTOCOL_FILES = tuple(f"{CONTROL_DIR}/{name}" for name in REQUESTS)
MANIFEST_FILE = ".llmtune.json"  # what llmtune wrote here (engine.manifest)
RESERVE_FILE = ".llmtune-reserve"  # room kept to report a full disk (engine.train)
MODEL_CARD = "README.md"  # engine.model_card
MERGED_DIR = "merged"  # the adapter merged into the base model
CHECKPOINT_PREFIX = "checkpoint-"  # transformers' checkpoint-N directories
CHECKPOINT_GLOB = f"{CHECKPOINT_PREFIX}*"
CHECKPOINT_MARKER = "llmtune_checkpoint.json"  # in checkpoint-N, written last: the save is complete
# Written by transformers: TensorBoard logs, the pickled training arguments; the model files whose presence says
# the directory holds a trained result.
TENSORBOARD_DIR = "runs"
TRAINING_ARGS = "training_args.bin"
MODEL_FILES = ("adapter_config.json", "model.safetensors")

_CHECKPOINT = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(name: str) -> int | None:
    """N of a `checkpoint-N` name; None for any other name."""
    m = _CHECKPOINT.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class RunDir:
    """Every path of one run directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def params(self) -> Path:
        return self.path / PARAMS_FILE

    @property
    def events(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def pid(self) -> Path:
        return self.path / PID_FILE

    @property
    def control(self) -> Path:
        return self.path / CONTROL_DIR

    def request(self, what: str) -> Path:
        """The file of one request (engine.control checks the name)."""
        return self.control / what

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def reserve(self) -> Path:
        return self.path / RESERVE_FILE

    @property
    def model_card(self) -> Path:
        return self.path / MODEL_CARD

    @property
    def merged(self) -> Path:
        return self.path / MERGED_DIR

    def checkpoint(self, step: int) -> Path:
        return self.path / checkpoint_name(step)

    def holds_result(self) -> bool:
        """A trained model, an adapter, a merged model or checkpoints are there."""
        return any(self.path.glob(CHECKPOINT_GLOB)) or any((self.path / name).exists()
                                                             for name in (*MODEL_FILES, MERGED_DIR))


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary name and rename, so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_dir_of(cfg: Any) -> Path:
    """A config's run directory: its project_name, relative to the current directory."""
    return Path(cfg.project_name).expanduser().absolute()
