"""`hub.push_to_hub: true`: the trained result goes to a private repo `username/<project name>` on the Hugging
Face Hub once training is done. Checkpoints and the run's own bookkeeping stay local."""

from __future__ import annotations

from pathlib import Path

from engine import run_files as names
from engine.config import RunConfig

# What stays local: checkpoints and the run's own bookkeeping.
LOCAL_ONLY = [names.CHECKPOINT_GLOB, f"{names.CHECKPOINT_GLOB}/**", names.EVENTS_FILE, names.LOG_FILE, names.PID_FILE,
              f"{names.CONTROL_DIR}/**", names.MANIFEST_FILE, names.RESERVE_FILE, names.TRAINING_ARGS,
              f"{names.TENSORBOARD_DIR}/**"]


def repo_id(cfg: RunConfig) -> str:
    return f"{cfg.hub.username}/{Path(cfg.project_name).name}"


def push(cfg: RunConfig, run_dir: Path) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=cfg.hub.token or None)
    repo = repo_id(cfg)
    api.create_repo(repo, private=True, exist_ok=True)
    api.upload_folder(folder_path=str(run_dir), repo_id=repo, ignore_patterns=LOCAL_ONLY,
                      commit_message="llmtune: trained model")
    return f"https://huggingface.co/{repo}"
