"""The run directory (`project_name`): what is written before a run starts, and what a finished one holds.

Before: `config.yaml`, the resolved config, loadable as is to reproduce the run (local paths made absolute,
secrets kept as `${VAR}` or left out). After: the model or adapter with its tokenizer and chat template,
`training_params.json` (AutoTrain's flat layout), `events.jsonl`, `train.log`, checkpoints, `README.md`.
Light: no torch.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from engine.config import RunConfig, resolve_local, to_dict, to_yaml
from engine.errors import ConfigError, Problem
from engine.events import EVENTS_FILE, read_events, summarize
from engine.launch import CONTROL_DIR, LOG_FILE, PID_FILE, attach

CONFIG_FILE = "config.yaml"
PARAMS_FILE = "training_params.json"
MERGED_DIR = "merged"
# Files a run writes: a new run may replace these when the previous one never got to train.
RUN_FILES = (CONFIG_FILE, PARAMS_FILE, EVENTS_FILE, LOG_FILE, PID_FILE, CONTROL_DIR)


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.project_name).expanduser().absolute()


def resolved(cfg: RunConfig) -> RunConfig:
    """A copy whose local data and model paths are absolute, so the config works from any directory. A token
    written literally becomes `${HF_TOKEN}`: the training process gets it in its environment (child_env)."""
    out = copy.deepcopy(cfg)
    if out.hub.token and "hub.token" not in out.env_refs:
        out.env_refs["hub.token"] = "${HF_TOKEN}"
    for obj, attr in ((out.data, "path"), (out, "base_model"), (out.params, "model_ref")):
        value = getattr(obj, attr)
        local = resolve_local(value, cfg.base_dir) if value else None
        if local is not None:
            setattr(obj, attr, str(local.absolute()))
    return out


def check_free(cfg: RunConfig) -> list[Problem]:
    """A run directory that holds a trained model or checkpoints is never overwritten."""
    run_dir = run_dir_of(cfg)
    if not run_dir.exists():
        return []
    if not run_dir.is_dir():
        return [cfg.problem("project_name", f"{run_dir} exists and is not a directory",
                            "choose another project_name", cfg.project_name)]
    events = run_dir / EVENTS_FILE
    summary = summarize(read_events(events)) if events.exists() else None
    trained = any(run_dir.glob("checkpoint-*")) or any((run_dir / n).exists() for n in
                                                         ("adapter_config.json", "model.safetensors", MERGED_DIR))
    if summary is not None and summary.status is None and attach(run_dir) is not None:
        why = f"a run is still going on in it (its progress: {run_dir / EVENTS_FILE})"
    elif trained or (summary is not None and summary.status == "completed"):
        why = "it already holds a trained model or checkpoints from an earlier run"
    elif any(p.name not in RUN_FILES for p in run_dir.iterdir()):
        why = "it holds files that are not from an llmtune run"
    else:
        return []
    fix = f"choose another project_name (e.g. --set project_name={cfg.project_name}-2), or delete the directory"
    if not check_resumable(run_dir):
        fix = f"continue that run with: llmtune-tui resume {run_dir}; or {fix}"
    return [cfg.problem("project_name", f"the run directory {run_dir} is not free: {why}", fix, cfg.project_name)]


def prepare(cfg: RunConfig) -> Path:
    """Create the run directory with the resolved config; refuse one holding an earlier run's results."""
    problems = check_free(cfg)
    if problems:
        raise ConfigError(problems, source=str(cfg.source) if cfg.source else None)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:  # leftovers of a run that failed before training
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (run_dir / CONFIG_FILE).write_text(
        "# The resolved config of this run: llmtune-tui --config THIS_FILE --yes reproduces it\n"
        "# (set another project_name to keep this run's results).\n" + to_yaml(resolved(cfg)), encoding="utf-8")
    return run_dir


def child_env(cfg: RunConfig) -> dict[str, str]:
    """What the training process needs in its environment beyond ours: a literal token as HF_TOKEN."""
    if cfg.hub.token and "hub.token" not in cfg.env_refs:
        return {"HF_TOKEN": cfg.hub.token}
    return {}


def check_resumable(run_dir: Path) -> list[Problem]:
    """A run can be resumed when it has a checkpoint, is not running and did not complete."""
    def problem(message: str, fix: str) -> list[Problem]:
        return [Problem("RUN_DIR", message, fix, str(run_dir))]

    if not (run_dir / CONFIG_FILE).exists():
        return problem("is not an llmtune run directory (no config.yaml)", "give the project_name of a run")
    if not any(run_dir.glob("checkpoint-*")):
        return problem("holds no checkpoint to resume from", "start it anew: llmtune-tui --config "
                       f"{run_dir / CONFIG_FILE} --yes --set project_name=NEW")
    if attach(run_dir) is not None:
        return problem("is still running", f"its progress is in {run_dir / EVENTS_FILE}")
    events = run_dir / EVENTS_FILE
    if events.exists() and summarize(read_events(events)).status == "completed":
        return problem("completed already", "to train further, start a new run from its config with more epochs")
    return []


def write_training_params(cfg: RunConfig, run_dir: Path) -> None:
    """AutoTrain's flat training_params.json (secrets left out), for tools that read it."""
    d = to_dict(cfg)
    flat: dict[str, Any] = {"model": d["base_model"], "project_name": d["project_name"], "data_path": d["data"]["path"],
                            "train_split": d["data"]["train_split"], "valid_split": d["data"]["valid_split"],
                            "chat_template": d["data"]["chat_template"], "log": d["log"],
                            **d["data"]["column_mapping"], **d["params"],
                            "username": d["hub"].get("username"), "push_to_hub": d["hub"].get("push_to_hub")}
    (run_dir / PARAMS_FILE).write_text(json.dumps(flat, indent=2, default=str) + "\n", encoding="utf-8")
