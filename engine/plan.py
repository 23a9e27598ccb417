"""How long a run is: optimizer steps from the number of training examples, and an estimate of the time
they take where there is a sound basis for one. The wizard's Preview and Review and the dry run show it.

Steps are exact arithmetic, the trainer's own (engine.trainers.common.total_steps agrees, tested): the
examples are batched per process, `gradient_accumulation` batches make one optimizer step, and that is
repeated for every epoch, unless `max_steps` says how many.

The duration is an estimate and says what it rests on: tokens processed x the FLOPs per token of the
parameters that compute (forward 2, backward 4 for full fine-tuning, 2 with LoRA, which computes no
gradient for the frozen weights; +2 when gradient checkpointing recomputes the forward; +2 for DPO's
reference model) / an assumed share of the GPU's published peak at the run's precision. Only GPUs whose
peak is in the table below get one, and only for bf16/fp16 runs: a CPU, an unknown device or fp32 has
no sound figure, and then only the steps are shown. Padding, evaluation, data loading and the start-up
are not counted.

Standard library only: the wizard calls it on the main thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.tasks import spec
from engine.units import human_count, human_duration

# Dense (no sparsity) bf16/fp16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, by a piece of the
# name torch and NVML report (most specific first). fp32 training (no mixed precision) is not estimated.
PEAK_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("H200", 989.0, "H200"),
    ("H100 PCIe", 756.0, "H100 PCIe"),
    ("H100", 989.0, "H100 SXM"),
    ("A100", 312.0, "A100"),
    ("L40S", 362.0, "L40S"),
    ("L4", 121.0, "L4"),
    ("T4", 65.0, "T4 (fp16)"),
)
ASSUMED_UTILIZATION = 0.30  # the share of the peak a fine-tuning run reaches, assumed (typically 20-40%)


def steps_per_epoch(examples: int, *, batch_size: int, gradient_accumulation: int, world_size: int = 1) -> int:
    batches = math.ceil(examples / (batch_size * world_size))
    return max(1, math.ceil(batches / gradient_accumulation))


def optimizer_steps(examples: int, *, batch_size: int, gradient_accumulation: int, epochs: int,
                    max_steps: int = -1, world_size: int = 1) -> int:
    """The optimizer steps of a run over `examples` training examples (blocks, for the generic trainer)."""
    if max_steps > 0:
        return max_steps
    return steps_per_epoch(examples, batch_size=batch_size, gradient_accumulation=gradient_accumulation,
                           world_size=world_size) * epochs


def samples_per_epoch(params: Any, examples: int) -> int:
    """What one epoch batches: the examples, or for GRPO/RLOO num_generations answers to each prompt, each batch of
    them trained on num_iterations times (TRL's RepeatSampler)."""
    from engine.online import num_generations

    if not spec(getattr(params, "trainer", "default")).online:
        return examples
    return examples * num_generations(params) * params.num_iterations


def steps_of(params: Any, examples: int, world_size: int = 1) -> int:
    """optimizer_steps with a Params' batch_size, gradient_accumulation, epochs and max_steps."""
    return optimizer_steps(samples_per_epoch(params, examples), batch_size=params.batch_size,
                           gradient_accumulation=params.gradient_accumulation, epochs=params.epochs,
                           max_steps=params.max_steps, world_size=world_size)


# ---------------------------------------------------------------- examples, from a preview's train report


@dataclass(frozen=True)
class Examples:
    """The training examples of the train split: counted, or extrapolated from the first rows read."""

    count: int
    tokens: int  # tokens kept per epoch (after truncation; padding not counted)
    how: str  # "exact", "about" (scaled up from the rows read) or "at least" (more rows than read, count unknown)


def train_examples(report: Any, trainer: str, block_size: int, *, rows_read: int | None = None,
                   read_limit: int | None = None, total_rows: int | None = None,
                   valid_fraction: float = 0.0) -> Examples:
    """From an engine.preview.SplitReport of the train split: the examples the training process keeps (SFT,
    DPO and ORPO leave out those with nothing to train; the generic trainer packs every token into blocks).

    `rows_read`: the rows of the split read (the report's, plus those held out of them for validation);
    `read_limit`: the rows the preview read at most; `total_rows`: the split's rows, when known and more
    than were read; `valid_fraction`: the share of the train rows to hold out, when the report's rows still
    hold them."""
    fs = report.formatted
    kept = fs.used - report.skipped
    tokens = report.total_tokens
    read = fs.rows if rows_read is None else rows_read
    how = "exact"
    scale = 1.0
    if total_rows is not None and read and total_rows > read:
        scale, how = total_rows / read, "about"
    elif total_rows is None and read_limit is not None and read >= read_limit:
        how = "at least"
    if valid_fraction > 0:
        scale *= 1 - valid_fraction
        how = "about" if how == "exact" else how
    tokens = round(tokens * scale)
    if spec(trainer).packs:
        count = math.ceil(tokens / block_size) if tokens else 0
    else:
        count = round(kept * scale)
    return Examples(count, tokens, how)


# ---------------------------------------------------------------- the duration estimate


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # what it rests on, in words and numbers


def device_peak(device_name: str | None) -> tuple[float, str] | None:
    """(TFLOP/s, the GPU as named in the table) for a device name torch or NVML reports; None if unknown."""
    if not device_name:
        return None
    name = device_name.upper()
    for piece, tflops, label in PEAK_TFLOPS:
        if piece.upper() in name:
            return tflops, label
    return None


def flops_per_token(params: Any, trainer: str) -> int:
    """FLOPs per token per parameter: forward 2, backward 4 (2 with LoRA), +2 recompute, +2 DPO reference."""
    per = 2 + (2 if params.peft else 4)
    if not params.disable_gradient_checkpointing:
        per += 2
    if spec(trainer).reference_model:  # the reference's forward pass (with LoRA: the adapter switched off)
        per += 2
    return per


def estimate_duration(tokens: int, parameters: int | None, params: Any, trainer: str, *, device: str | None,
                      device_name: str | None) -> tuple[Estimate | None, str]:
    """(the estimate, "") or (None, why there is none)."""
    if not parameters:
        return None, "the model's parameter count is unknown"
    if params.mixed_precision not in ("bf16", "fp16"):  # first: the same words on every machine
        return None, "fp32 training: only bf16/fp16 peaks are known"
    if device != "cuda":
        return None, f"no sound throughput figure for {device.upper() + ' training' if device else 'this device'}"
    if spec(trainer).online:  # sampling one token at a time dominates, and the answers' lengths are not known
        return None, "GRPO/RLOO spend most of a step sampling answers, whose lengths are known only as it runs"
    peak = device_peak(device_name)
    if peak is None:
        return None, f"no published peak for {device_name or 'this GPU'} in llmtune's table"
    tflops, label = peak
    per = flops_per_token(params, trainer)
    seconds = tokens * per * parameters / (tflops * 1e12 * ASSUMED_UTILIZATION)
    basis = (f"{human_count(tokens)} tokens x {per} x {human_count(parameters)} parameters / {ASSUMED_UTILIZATION:.0%} "
             f"(assumed) of the {label}'s {tflops:g} TFLOP/s {params.mixed_precision} peak; padding and "
             "evaluation not counted")
    return Estimate(seconds, basis), ""


# ---------------------------------------------------------------- the plan, and its words


@dataclass(frozen=True)
class Plan:
    examples: Examples
    steps: int
    per_epoch: int
    tokens: int  # tokens processed over the whole run
    estimate: Estimate | None
    no_estimate: str  # why there is no estimate
    world_size: int = 1  # processes, each taking its own batch every micro-step (engine.distributed)


def make_plan(cfg: Any, examples: Examples, *, parameters: int | None, device: str | None,
              device_name: str | None, world_size: int = 1) -> Plan:
    p = cfg.params
    per_epoch = steps_per_epoch(samples_per_epoch(p, examples.count), batch_size=p.batch_size,
                                gradient_accumulation=p.gradient_accumulation, world_size=world_size)
    steps = steps_of(p, examples.count, world_size)
    if p.max_steps > 0:  # each step takes batch_size x gradient_accumulation examples per process
        seen = p.max_steps * p.batch_size * p.gradient_accumulation * world_size
    else:
        seen = samples_per_epoch(p, examples.count) * p.epochs
    tokens = round(examples.tokens / examples.count * seen) if examples.count else 0  # GRPO/RLOO: prompts only
    estimate, why = estimate_duration(tokens, parameters, p, cfg.trainer, device=device, device_name=device_name)
    return Plan(examples, steps, per_epoch, tokens, estimate, why, world_size)


def steps_line(plan: Plan, cfg: Any) -> str:
    """`12 optimizer steps (24 examples, batch 2 x accumulation 1, 1 epoch)`."""
    p, ex = cfg.params, plan.examples
    what = "block" if spec(cfg.trainer).packs else "example"
    count = f"{ex.how} {ex.count:,}" if ex.how != "exact" else f"{ex.count:,}"
    items = f"{count} {what}{_s(ex.count)}"
    if spec(cfg.trainer).online:
        from engine.online import num_generations

        repeats = f" x {p.num_iterations} iterations" if p.num_iterations > 1 else ""
        items = f"{count} prompt{_s(ex.count)} x {num_generations(p)} answers{repeats}"
    steps = f"{ex.how} {plan.steps:,}" if ex.how != "exact" and p.max_steps <= 0 else f"{plan.steps:,}"
    if p.max_steps > 0:
        return f"{steps} optimizer step{_s(plan.steps)} (max_steps; an epoch of {items} takes {plan.per_epoch:,})"
    processes = f" x {plan.world_size} processes" if plan.world_size > 1 else ""
    return (f"{steps} optimizer step{_s(plan.steps)} ({items}, batch {p.batch_size} x "
            f"accumulation {p.gradient_accumulation}{processes}, {p.epochs} epoch{_s(p.epochs)})")


def duration_line(plan: Plan) -> str:
    if plan.estimate is None:
        return f"not estimated ({plan.no_estimate})"
    at_least = "at least " if plan.examples.how == "at least" else ""
    return f"{at_least}about {human_duration(plan.estimate.seconds)} (an estimate: {plan.estimate.basis})"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def plan_for_preview(preview: Any, *, read_limit: int | None = None, total_rows: int | None = None,
                     parameters: int | None = None, device: str | None = None,
                     device_name: str | None = None, world_size: int = 1) -> Plan | None:
    """The plan of the run an engine.preview.Preview shows (None without a train split)."""
    cfg = preview.cfg
    train = next((r for r in preview.splits if r.formatted.split == "train"), None)
    if train is None:
        return None
    fraction, held = _held_out(preview)
    examples = train_examples(train, cfg.trainer, preview.block_size, rows_read=split_rows_read(preview),
                              read_limit=read_limit, total_rows=total_rows, valid_fraction=0.0 if held else fraction)
    return make_plan(cfg, examples, parameters=parameters, device=device, device_name=device_name,
                     world_size=world_size)


def _held_out(preview: Any) -> tuple[float, bool]:
    """(params.valid_fraction where it applies, whether the preview's valid split holds those rows already)."""
    cfg = preview.cfg
    fraction = 0.0 if cfg.data.valid_split else float(getattr(cfg.params, "valid_fraction", 0.0) or 0.0)
    held = fraction > 0 and any(r.formatted.split == "valid" for r in preview.splits)
    return fraction, held


def split_rows_read(preview: Any) -> int:
    """The rows of data.train_split the preview read: its train rows, and the valid ones held out of them."""
    _, held = _held_out(preview)
    return sum(r.formatted.rows for r in preview.splits
               if r.formatted.split == "train" or (held and r.formatted.split == "valid"))
