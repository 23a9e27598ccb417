"""What every trainer shares: the prepared job and the TrainingArguments built from our params.

TRL's configs default to gradient checkpointing and bf16 on; every such default is set here explicitly from
the config, so a run does what its YAML says whatever the installed TRL prefers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.batching import Batching, GroupedSampler, row_lengths
from engine.chat_templates import TemplateSetup
from engine.config import RunConfig
from engine.kernels import Kernels
from engine.plan import samples_per_epoch, steps_of, steps_per_epoch
from engine.trackers import TRACKERS, project, run_name
from engine.trainers.evaluation import weigh_eval_loss
from engine.trainers.model import device
from engine.trainers.rows import TrainerRows

REPORTERS = {name: name for name in TRACKERS}  # `log` -> transformers' report_to (the same names)


@dataclass
class Job:
    cfg: RunConfig
    run_dir: Path
    tokenizer: Any
    setup: TemplateSetup
    block_size: int
    train: TrainerRows
    valid: TrainerRows | None
    world_size: int = 1
    batching: Batching = Batching("padded", "params.batching: padded")
    kernels: Kernels = Kernels(False, "params.liger_kernel: off")

    def dataset(self, rows: TrainerRows | None) -> Any:
        """The rows as a datasets.Dataset: the data pipeline's memory-mapped Arrow as it is, or made from a list."""
        import datasets

        if rows is None:
            return None
        # What a trainer maps over the rows goes to a temporary directory, never into the cache entry's.
        datasets.disable_caching()
        return datasets.Dataset.from_list(rows.rows) if isinstance(rows.rows, list) else rows.rows


def total_steps(job: Job) -> int:
    return steps_of(job.cfg.params, len(job.train.rows), job.world_size)  # the arithmetic the wizard shows


def epochs_run(job: Job) -> float:
    """The epochs the run covers: params.epochs, or what max_steps amounts to."""
    p = job.cfg.params
    if p.max_steps <= 0:
        return float(p.epochs)
    per_epoch = steps_per_epoch(samples_per_epoch(p, len(job.train.rows)), batch_size=p.batch_size,
                                gradient_accumulation=p.gradient_accumulation, world_size=job.world_size)
    return round(p.max_steps / per_epoch, 4)


def logging_steps(job: Job) -> int:
    """-1: about 50 points over the run, at least every 25 steps."""
    if job.cfg.params.logging_steps > 0:
        return job.cfg.params.logging_steps
    return max(1, min(25, total_steps(job) // 50))


def training_args(job: Job, config_class: type, **extra: Any) -> Any:
    p, cfg = job.cfg.params, job.cfg
    has_valid = job.valid is not None and bool(job.valid.rows)
    steps = total_steps(job)
    eval_strategy = p.eval_strategy if has_valid else "no"
    save_strategy = "steps" if p.save_steps else "epoch"
    on_gpu = device() == "cuda"
    kwargs: dict[str, Any] = dict(
        output_dir=str(job.run_dir),
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation,
        auto_find_batch_size=p.auto_find_batch_size,
        learning_rate=p.lr,
        num_train_epochs=p.epochs,
        max_steps=p.max_steps,
        warmup_steps=p.warmup_ratio if p.warmup_ratio < 1 else steps,  # a float below 1 is a ratio
        optim=p.optimizer,
        lr_scheduler_type=p.scheduler,
        weight_decay=p.weight_decay,
        max_grad_norm=p.max_grad_norm,
        seed=p.seed,
        bf16=p.mixed_precision == "bf16",
        fp16=p.mixed_precision == "fp16",
        **_checkpointing(config_class, not p.disable_gradient_checkpointing),
        logging_strategy="steps",
        logging_steps=logging_steps(job),
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN (transformers would hide it); see nonfinite.py
        eval_strategy=eval_strategy,
        eval_steps=(p.eval_steps or logging_steps(job)) if eval_strategy == "steps" else None,
        save_strategy=save_strategy,
        save_steps=p.save_steps if p.save_steps else 500,
        save_total_limit=p.save_total_limit,
        report_to=[REPORTERS[cfg.log]] if cfg.log in REPORTERS else "none",
        run_name=run_name(job.run_dir),  # the tracker's run (engine.trackers); Trackio's callback opens it by name
        project=project(cfg.log, job.run_dir),  # only Trackio reads it
        include_num_input_tokens_seen="no",  # we count tokens ourselves (trained ones too)
        disable_tqdm=True,  # progress goes to events.jsonl; bars would garble train.log
        use_cpu=not on_gpu,
        dataloader_pin_memory=on_gpu,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False if job.world_size > 1 else None,
        dataset_num_proc=None,
        use_liger_kernel=job.kernels.liger,
    )
    kwargs.update(extra)
    names = {f.name for f in fields(config_class)}
    if "dataset_num_proc" not in names:
        del kwargs["dataset_num_proc"]  # GRPO and RLOO prepare no dataset of their own
    if "project" not in names:
        del kwargs["project"]  # transformers before 5.x
    return config_class(**kwargs)


def apply_batching(trainer: Any, job: Job) -> None:
    """How the trainer cuts the data into batches (engine.batching). Grouped: training batches sampled by
    length. Grouped and packed: eval batches in order of length, longest first (deterministic, and the least
    padding). Every mode: the eval loss weighed so that it does not depend on the eval batches
    (engine.trainers.evaluation). Padded and packed training need nothing here (packed is the SFT collator's
    padding_free, set in its args)."""
    shape = job.cfg.spec.rows
    if job.cfg.spec.online:  # TRL samples its own batches (each prompt num_generations times); its eval loss stands
        return
    weigh_eval_loss(trainer, shape)
    if job.batching.mode == "padded":
        return
    if job.valid is not None and job.valid.rows:
        eval_lengths = row_lengths(job.valid.rows, shape)
        longest_first = sorted(range(len(eval_lengths)), key=lambda i: -eval_lengths[i])
        trainer._get_eval_sampler = lambda *args, **kwargs: longest_first
    if job.batching.mode != "grouped":
        return
    lengths = row_lengths(job.train.rows, shape)
    # per device: each process's batches (with several, accelerate shards the index stream by whole batches)
    size = trainer.args.per_device_train_batch_size

    def grouped_sampler(*args: Any, **kwargs: Any) -> Any:
        return GroupedSampler(lengths, size * job.world_size, job.cfg.params.seed)

    trainer._get_train_sampler = grouped_sampler


def _checkpointing(config_class: type, on: bool) -> dict[str, Any]:
    """transformers 5.x renamed gradient checkpointing to activation checkpointing (the old name warns)."""
    names = {f.name for f in fields(config_class)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {f"{prefix}_checkpointing": on, f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}}
