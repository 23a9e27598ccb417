"""GRPO with TRL's GRPOTrainer: answers are scored against the mean and spread of their own group (engine.trainers.
online holds what GRPO and RLOO share)."""

from __future__ import annotations

from typing import Any

from trl import GRPOConfig, GRPOTrainer

from engine.trainers.common import Job
from engine.trainers.model import LoadedModel
from engine.trainers.online import build_online


def build(job: Job, callbacks: list[Any]) -> tuple[Any, LoadedModel]:
    return build_online(job, callbacks, GRPOConfig, GRPOTrainer, loss_type=job.cfg.params.loss_type or "dapo")
