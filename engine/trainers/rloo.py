"""RLOO with TRL's RLOOTrainer: each answer's reward against the mean of the other answers to its prompt
(REINFORCE leave-one-out; engine.trainers.online holds what GRPO and RLOO share)."""

from __future__ import annotations

from typing import Any

from trl import RLOOConfig, RLOOTrainer

from engine.trainers.common import Job
from engine.trainers.model import LoadedModel
from engine.trainers.online import build_online


def build(job: Job, callbacks: list[Any]) -> tuple[Any, LoadedModel]:
    return build_online(job, callbacks, RLOOConfig, RLOOTrainer)
