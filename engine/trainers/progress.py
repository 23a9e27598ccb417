"""The training loop's side of the event stream: step metrics, evaluations and checkpoints as events, token
counts from the batches themselves, and the stop / checkpoint requests a UI leaves in the run directory."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from engine import launch
from engine.events import EventWriter

STEP_EVERY_S = 1.0  # a step event without loss at most this often between logging steps (progress bars)


class TokenCounter:
    """Counts the real (non-padding) tokens and the trained tokens of every micro-batch the trainer trains on.
    It wraps `trainer.training_step`, not the collator: the data loader collates a batch ahead, and eval
    batches share the collator."""

    def __init__(self) -> None:
        self.tokens = 0
        self.trained = 0

    def attach(self, trainer: Any) -> None:
        step = trainer.training_step

        def counted(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.count(inputs)
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = counted

    def count(self, batch: dict[str, Any]) -> None:
        masks = [v for k, v in batch.items() if k.endswith("attention_mask") and torch.is_tensor(v)]
        tokens = int(sum(m.sum() for m in masks)) if masks else int(batch["input_ids"].numel())
        labels = [v for k, v in batch.items() if k.endswith("labels") and torch.is_tensor(v)]
        if labels:
            trained = int(sum((x[..., 1:] != -100).sum() for x in labels))  # label 0 is never predicted
        elif torch.is_tensor(batch.get("completion_mask")):
            trained = int(batch["completion_mask"].sum())
        else:  # reward: whole texts are scored
            trained = tokens
        self.tokens += tokens
        self.trained += trained


class ProgressCallback(TrainerCallback):
    def __init__(self, writer: EventWriter | None, run_dir: Path, counter: TokenCounter) -> None:
        self.writer = writer  # None on ranks other than 0
        self.run_dir = run_dir
        self.counter = counter
        self.stop_requested = False
        self.last_eval_step = -1
        self.final_metrics: dict[str, float] = {}
        self._start = time.time()
        self._train_time = 0.0  # seconds spent in training steps (evaluations and saves excluded)
        self._step_began = 0.0
        self._last = (0.0, 0, 0)  # train time, tokens, trained tokens at the last step event
        self._last_emit = 0.0

    # -- the loop

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._start = time.time()
        self._emit("status", phase="training", message=f"training for {state.max_steps} steps")

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        self._step_began = time.time()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self._train_time += time.time() - self._step_began
        requests = self._requests()
        if "checkpoint" in requests:
            control.should_save = True
            if self.writer:
                launch.clear(self.run_dir, "checkpoint")
        if "stop" in requests:
            control.should_save = True
            control.should_training_stop = True
            self.stop_requested = True
        logging_step = bool(args.logging_steps) and (state.global_step % args.logging_steps == 0 or
                                                     (state.global_step == 1 and args.logging_first_step))
        if not logging_step and time.time() - self._last_emit >= STEP_EVERY_S:
            self._step(state, {})

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self._step(state, logs)
        elif "eval_loss" in logs:
            self.last_eval_step = state.global_step
            metrics = {k[5:]: v for k, v in logs.items() if k.startswith("eval_") and k != "eval_loss"
                       and not k.endswith(("_runtime", "_per_second", "num_tokens"))}
            self._emit("eval", step=state.global_step, epoch=_round(state.epoch), eval_loss=logs["eval_loss"],
                       metrics=metrics)
        elif "train_runtime" in logs:
            self.final_metrics.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self._emit("checkpoint", step=state.global_step, path=str(path))

    # -- helpers

    def _step(self, state: TrainerState, logs: dict[str, float]) -> None:
        now = time.time()
        t0, tok0, tr0 = self._last
        dt = self._train_time - t0
        tokens, trained = self.counter.tokens, self.counter.trained
        self._emit("step", step=state.global_step, total_steps=state.max_steps, epoch=_round(state.epoch),
                   loss=logs.get("loss"), lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                   tokens=tokens, trained_tokens=trained,
                   tokens_per_s=(tokens - tok0) / dt if dt > 0 else None,
                   trained_tokens_per_s=(trained - tr0) / dt if dt > 0 else None,
                   elapsed=now - self._start, memory=memory())
        self._last = (self._train_time, tokens, trained)
        self._last_emit = now

    def _requests(self) -> set[str]:
        """Rank 0 reads the requests; every rank must act on the same step or the processes hang."""
        found = launch.pending(self.run_dir) if self.writer else set()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flags = torch.tensor([int("stop" in found), int("checkpoint" in found)])
            if torch.cuda.is_available():
                flags = flags.cuda()
            torch.distributed.broadcast(flags, src=0)
            found = {name for name, on in zip(("stop", "checkpoint"), flags.tolist()) if on}
        return found

    def _emit(self, type: str, **fields: Any) -> None:
        if self.writer:
            self.writer.emit(type, **fields)


def memory() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        with open("/proc/self/statm") as f:
            out["rss"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        pass
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            try:
                free, total = torch.cuda.mem_get_info(i)
            except RuntimeError:
                total = None
            gpus.append({"index": i, "allocated": torch.cuda.memory_allocated(i),
                         "reserved": torch.cuda.memory_reserved(i), "peak": torch.cuda.max_memory_allocated(i),
                         "total": total})
        out["gpus"] = gpus
    return out


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)
