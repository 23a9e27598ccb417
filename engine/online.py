"""Online RL from a reward model (GRPO, RLOO): what their params amount to, and what is checked before a run.

TRL's two trainers differ in their defaults (GRPO samples 8 answers per prompt and loads no reference model,
RLOO samples 2 and keeps a KL term of 0.05); an empty param takes the trainer's own default, said here once.
The reward model itself is inspected by engine.reward_model; its scoring of held-out pairs (the gate) runs in
the preview, which loads models.

Light: no torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from engine.errors import Problem
from engine.params import ONLINE_COMPLETION_LENGTH, listed_values
from engine.tasks import spec


def num_generations(params: Any) -> int:
    """Answers per prompt: params.num_generations, or the trainer's default (its spec's, TRL's)."""
    return int(params.num_generations or spec(params.trainer).default("num_generations"))  # type: ignore[arg-type]


def kl_beta(params: Any) -> float:
    if params.kl_beta is not None:
        return float(params.kl_beta)
    return float(spec(params.trainer).default("kl_beta"))  # type: ignore[arg-type]


def completion_length(params: Any) -> int:
    return params.max_completion_length or ONLINE_COMPLETION_LENGTH


def uses_reference(params: Any) -> bool:
    """A frozen reference model: only with a KL term (without LoRA, a second copy of the weights)."""
    return kl_beta(params) > 0


def reward_models(params: Any) -> list[str]:
    return listed_values(params.reward_model)


def reward_weights(params: Any) -> list[float] | None:
    """One weight per reward model, or None (1 each). ValueError for what is not a number."""
    values = listed_values(params.reward_weights)
    return [float(v) for v in values] if values else None


@dataclass(frozen=True)
class Generation:
    backend: str  # "transformers" or "vllm"
    why: str


def generation(params: Any, *, on_cuda: bool) -> Generation:
    """How the answers are sampled: transformers' generate, or vLLM in TRL's colocate mode when asked for and
    possible (a CUDA GPU with vllm installed; the config check refuses it elsewhere)."""
    if not params.use_vllm:
        return Generation("transformers", "transformers' generate (params.use_vllm: false)")
    refusal = vllm_refusal(on_cuda=on_cuda)
    if refusal:
        return Generation("transformers", f"transformers' generate: vLLM cannot run here ({refusal})")
    return Generation("vllm", "vLLM in the training process (TRL's colocate mode, params.use_vllm: true)")


def vllm_refusal(*, on_cuda: bool) -> str | None:
    if not on_cuda:
        return "vLLM needs a CUDA GPU"
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (pip install vllm)"
    return None


def static_problems(cfg: Any) -> list[Problem]:
    """The rules of an online trainer's params that need nothing but the config."""
    if not cfg.spec.online:
        return []
    p, out = cfg.params, []
    models = reward_models(p)
    if not models:
        out.append(cfg.problem("params.reward_model", f"is missing: {cfg.spec.label} learns from a reward model's "
                               "scores of the answers it samples", "set params.reward_model to the run directory of "
                               "an llm-reward run (configs/reward-then-grpo/ trains one, then uses it)",
                               show_value=False))
    try:
        weights = reward_weights(p)
    except ValueError:
        out.append(cfg.problem("params.reward_weights", "must be numbers, one per reward model",
                               "e.g. reward_weights: [1.0, 0.5]", p.reward_weights))
        weights = None
    if weights is not None and models and len(weights) != len(models):
        out.append(cfg.problem("params.reward_weights", f"gives {len(weights)} weight(s) for {len(models)} reward "
                               "model(s)", "give one weight per entry of params.reward_model", p.reward_weights))
    if p.loss_type and not cfg.spec.reads("loss_type"):
        out.append(cfg.problem("params.loss_type", f"is GRPO's; {cfg.spec.label} has one loss", "remove it",
                               p.loss_type))
    group = num_generations(p)
    batch = p.batch_size * p.gradient_accumulation * (p.num_processes or 1)
    if batch % group:
        key = "params.num_generations" if p.num_generations else "params.batch_size"
        out.append(cfg.problem(key, f"{cfg.spec.label} samples {group} answers per prompt, and a step's batch "
                               f"(batch_size {p.batch_size} x gradient_accumulation {p.gradient_accumulation}"
                               + (f" x {p.num_processes} processes" if p.num_processes else "")
                               + f" = {batch}) must hold whole groups", f"make batch_size x gradient_accumulation a "
                               f"multiple of {group}, or set params.num_generations to a divisor of {batch} (at "
                               "least 2)", getattr(p, key.split(".")[1])))
    return out


def environment_problems(cfg: Any) -> list[Problem]:
    """What this machine says about an online run: every reward model must be one (engine.reward_model refuses a
    causal LM, another task's run, a classifier with several labels, a path that cannot be read), and vLLM,
    when asked for, must be able to run."""
    if not cfg.spec.online:
        return []
    from engine.reward_model import NotARewardModel, inspect_reward_model

    out = []
    for name in reward_models(cfg.params):
        try:
            inspect_reward_model(name, cfg.base_dir)
        except NotARewardModel as e:
            out.append(cfg.problem("params.reward_model", str(e), e.fix, name))
    pairs = cfg.params.reward_pairs
    if pairs:
        from engine.model_names import resolve_local

        found = resolve_local(pairs, cfg.base_dir)
        if found is None or not found.is_file():
            out.append(cfg.problem("params.reward_pairs", "is not a file here", "give the path of a .jsonl, .csv, "
                                   ".json or .parquet file with columns prompt, chosen and rejected", pairs))
    if cfg.params.use_vllm:
        from engine.capabilities import probe

        refusal = vllm_refusal(on_cuda=probe().device == "cuda")
        if refusal:
            out.append(cfg.problem("params.use_vllm", f"cannot run here: {refusal}", "remove params.use_vllm "
                                   "(answers are sampled with transformers' generate)", True))
    return out


def describe(params: Any) -> str:
    """One line of what a run samples and how it learns from it, for the dry run and the wizard."""
    s = spec(params.trainer)
    beta = kl_beta(params)
    reference = f"KL {beta:g} to a frozen reference" if beta > 0 else "no KL term (no reference model)"
    loss = f", loss {params.loss_type or 'dapo'}" if s.reads("loss_type") else ""
    return (f"{num_generations(params)} answers per prompt, up to {completion_length(params)} tokens each, "
            f"temperature {params.temperature:g}, top_p {params.top_p:g}; {reference}{loss}")
