"""The training loop's side of the event stream: step metrics, evaluations and checkpoints as events, token
counts from the batches themselves, and the stop / checkpoint requests a UI leaves in the run directory.

It also keeps the run directory's books: a checkpoint about to be saved is listed in the manifest first (a
save cut short by a full disk or a kill is still known to be ours), a saved one gets its completion marker
with the token counts a resume continues from, and non-finite steps get no checkpoint at all.

And it rotates the checkpoints itself, in transformers' place: `save_total_limit` as transformers applies it
(the oldest go first; the newest, the one to resume from, and the best one stay), except that a checkpoint
asked for by hand (`control/checkpoint`: the dashboard's `c`) is kept, marked `kept` in its completion
marker, and not counted in the limit. transformers' own rotation would delete it at the next save."""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from engine import checkpoints, gpu_memory
from engine.control import clear, pending
from engine.events import EventWriter
from engine.exit_codes import ExitCode
from engine.manifest import Manifest
from engine.run_files import LOG_FILE, checkpoint_name
from engine.trainers.nonfinite import NonFiniteGuard
from engine.trainers.watchdog import Watchdog, WatchdogThread, hang_message, last_lines_by_rank

STEP_EVERY_S = 1.0  # a step event without loss at most this often between logging steps (progress bars)
# What a trainer logs that a step event carries in fields of its own, or that is not a metric of the model.
OWN_FIELDS = frozenset({"loss", "learning_rate", "grad_norm", "epoch", "num_tokens", "num_input_tokens_seen"})


class TokenCounter:
    """Counts the real (non-padding) tokens and the trained tokens of every micro-batch the trainer trains on.
    It wraps `trainer.training_step`, not the collator: the data loader collates a batch ahead, and eval
    batches share the collator."""

    def __init__(self, tokens: int = 0, trained: int = 0) -> None:
        self.tokens = tokens  # a resumed run starts from the counts of its checkpoint; every rank's, summed
        self.trained = trained
        self.pending = [0, 0]  # this process's tokens and trained tokens since the last optimizer step

    def attach(self, trainer: Any) -> None:
        if hasattr(trainer, "_generate_and_score_completions"):  # GRPO, RLOO: batches are made in the step
            prepare = trainer._prepare_inputs

            def prepared(inputs: Any) -> Any:
                batch = prepare(inputs)
                if trainer.model.training:
                    self.count(batch)
                return batch

            trainer._prepare_inputs = prepared
            return
        step = trainer.training_step

        def counted(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.count(inputs)
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = counted

    def count(self, batch: dict[str, Any]) -> None:
        if torch.is_tensor(batch.get("prompt_mask")) and torch.is_tensor(batch.get("completion_mask")):
            trained = int(batch["completion_mask"].sum())  # sampled answers (GRPO, RLOO): what the loss is on
            self._add(int(batch["prompt_mask"].sum()) + trained, trained)
            return
        masks = [v for k, v in batch.items() if k.endswith("attention_mask") and torch.is_tensor(v)]
        tokens = int(sum(m.sum() for m in masks)) if masks else int(batch["input_ids"].numel())
        labels = [v for k, v in batch.items() if k.endswith("labels") and torch.is_tensor(v)]
        if labels:
            trained = int(sum((x[..., 1:] != -100).sum() for x in labels))  # label 0 is never predicted
        elif torch.is_tensor(batch.get("completion_mask")):
            trained = int(batch["completion_mask"].sum())
        else:  # reward: whole texts are scored
            trained = tokens
        self._add(tokens, trained)

    def _add(self, tokens: int, trained: int) -> None:
        self.tokens += tokens
        self.trained += trained
        self.pending[0] += tokens
        self.pending[1] += trained

    def settle(self, tokens: int, trained: int) -> None:
        """Make the totals every rank's: `tokens` and `trained` are this step's counts summed over the ranks
        (this process's own are in the totals already)."""
        self.tokens += tokens - self.pending[0]
        self.trained += trained - self.pending[1]
        self.pending = [0, 0]


class ProgressCallback(TrainerCallback):
    def __init__(self, writer: EventWriter | None, run_dir: Path, counter: TokenCounter,
                 guard: NonFiniteGuard | None = None, manifest: Manifest | None = None,
                 on_saved: Callable[[], None] | None = None) -> None:
        self.writer = writer  # None on ranks other than 0
        self.run_dir = run_dir
        self.counter = counter
        self.guard = guard or NonFiniteGuard()
        self.manifest = manifest  # None on ranks other than 0: one process keeps the books
        self.on_saved = on_saved  # after each checkpoint (rank 0): e.g. rewrite the model card
        self.stop_requested = False
        self.last_eval_step = -1
        self.last_save_step = -1
        self.saving: str | None = None  # the checkpoint being saved, until it is complete
        self.save_total_limit: int | None = None  # taken over from transformers at the start of training
        self.keep_step: int | None = None  # the step whose checkpoint was asked for by hand
        self.final_metrics: dict[str, float] = {}
        self._start = time.time()
        self._train_time = 0.0  # seconds spent in training steps (evaluations and saves excluded)
        self._step_began = 0.0
        self._last = (0.0, counter.tokens, counter.trained)  # train time, tokens, trained tokens at the last step event
        self._last_emit = 0.0
        self.watchdog: Watchdog | None = None  # rank 0 of a run of several processes
        self._watchdog_thread: WatchdogThread | None = None

    # -- the loop

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._start = time.time()
        if args.save_total_limit is not None:  # llmtune rotates (on_save); transformers would delete kept ones
            self.save_total_limit, args.save_total_limit = args.save_total_limit, None
        # `step`: where training begins (a resumed run: its checkpoint's step); step events' `elapsed` counts
        # from this event, so followers time the run's pace from here.
        if self.writer:
            self.writer.status(phase="training", message=f"training for {state.max_steps} steps",
                               step=state.global_step)
        if self.writer and args.world_size > 1:
            self._start_watchdog(args.world_size, state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self._watchdog_thread is not None:
            self._watchdog_thread.stop()

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                           **kwargs: Any) -> None:
        if self.watchdog is not None:
            self.watchdog.beat()

    def _start_watchdog(self, world_size: int, state: TrainerState) -> None:
        writer = self.writer
        assert writer is not None
        log = Path(self.run_dir) / LOG_FILE
        self.watchdog = Watchdog()

        def warn(quiet: float, usual: float | None) -> None:
            usual_text = f"; a step usually takes {usual:.1f} s" if usual is not None else ""
            writer.log(level="warning", message=f"no training progress for {quiet:.0f} s{usual_text}: a process "
                       f"may be stuck; the run fails after {self.watchdog.limits()[1]:.0f} s without progress "
                       f"(each rank's log is in {log})")

        def fail(quiet: float, usual: float | None) -> None:
            message = hang_message(quiet, usual, last_lines_by_rank(log, world_size))
            writer.error(kind="hang", message=message, log=str(log))
            writer.run_finished(status="failed", exit_code=ExitCode.FAILED, step=state.global_step)

        self._watchdog_thread = WatchdogThread(self.watchdog, warn, fail)
        self._watchdog_thread.start()

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        self._step_began = time.time()
        if self.watchdog is not None:
            self.watchdog.step_begin()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self._train_time += time.time() - self._step_began
        requests = self.requests()
        if self.watchdog is not None:
            self.watchdog.step_end()
        if "checkpoint" in requests:
            control.should_save = True
            self.keep_step = state.global_step
            if self.writer:
                clear(self.run_dir, "checkpoint")
        if "stop" in requests:
            control.should_save = True
            control.should_training_stop = True
            self.stop_requested = True
        self.guard.check(state.global_step, control)  # last: it vetoes the checkpoints asked for above
        self._before_save(state, control)
        logging_step = bool(args.logging_steps) and (state.global_step % args.logging_steps == 0 or
                                                     (state.global_step == 1 and args.logging_first_step))
        if not logging_step and time.time() - self._last_emit >= STEP_EVERY_S:
            self._step(state, {})

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self._step(state, logs, metrics=trainer_metrics(logs))
        elif "eval_loss" in logs:
            self.last_eval_step = state.global_step
            metrics = {k[5:]: v for k, v in logs.items() if k.startswith("eval_") and k != "eval_loss"
                       and not k.endswith(("_runtime", "_per_second", "num_tokens"))}
            if self.writer:
                self.writer.eval(step=state.global_step, epoch=_round(state.epoch), eval_loss=logs["eval_loss"],
                                 metrics=metrics)
        elif "train_runtime" in logs:
            self.final_metrics.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        # A stop breaks out of the epoch, and transformers then ends the epoch anyway: with save_strategy
        # "epoch" it would save the checkpoint the stop just saved a second time (minutes for a large model).
        # This runs after DefaultFlowCallback's on_epoch_end, which asked for that save.
        if control.should_save and state.global_step == self.last_save_step:
            control.should_save = False
        self.guard.veto(control)
        self._before_save(state, control)

    def _before_save(self, state: TrainerState, control: TrainerControl) -> None:
        if control.should_save:
            self.saving = checkpoint_name(state.global_step)
            if self.watchdog is not None:  # a save is not a stall, however long it takes
                self.watchdog.paused = True
            if self.manifest is not None:
                self.manifest.add(self.saving, tree=True)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.last_save_step = state.global_step
        if self.watchdog is not None:
            self.watchdog.paused = False
            self.watchdog.beat()
        path = Path(args.output_dir) / checkpoint_name(state.global_step)
        kept = self.keep_step == state.global_step
        self.keep_step = None
        if self.writer:
            checkpoints.write_marker(path, tokens=self.counter.tokens, trained_tokens=self.counter.trained,
                                     world_size=args.world_size, **({"kept": True} if kept else {}))
            self._rotate(path, state)
            if self.on_saved is not None:
                self.on_saved()
        self.saving = None
        if self.writer:
            self.writer.checkpoint(step=state.global_step, path=str(path), kept=kept)

    def _rotate(self, saved: Path, state: TrainerState) -> None:
        """Delete the oldest checkpoints beyond `save_total_limit`, as transformers would, but never one asked
        for by hand (marked `kept`; not counted either), the one just saved or the best one."""
        limit = self.save_total_limit
        if limit is None or limit <= 0:
            return
        best = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
        rotating = [p for p in checkpoints.all_checkpoints(saved.parent) if not is_kept(p)]
        excess = len(rotating) - limit
        for old in rotating:  # oldest first
            if excess <= 0:
                break
            if old == saved or old == best:
                continue
            if self.manifest is not None and old.parent.resolve() == self.manifest.run_dir.resolve():
                self.manifest.remove_owned(under=old.name)  # only what llmtune wrote there
            else:
                shutil.rmtree(old, ignore_errors=True)
            excess -= 1

    # -- helpers

    def _step(self, state: TrainerState, logs: dict[str, float], metrics: dict[str, float] | None = None) -> None:
        if not self.writer:  # only rank 0 writes: the others need not read memory (NVML, /proc) at all
            return
        now = time.time()
        t0, tok0, tr0 = self._last
        dt = self._train_time - t0
        tokens, trained = self.counter.tokens, self.counter.trained
        self.writer.step(step=state.global_step, total_steps=state.max_steps, epoch=_round(state.epoch),
                         loss=logs.get("loss"), lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                         tokens=tokens, trained_tokens=trained,
                         tokens_per_s=(tokens - tok0) / dt if dt > 0 else None,
                         trained_tokens_per_s=(trained - tr0) / dt if dt > 0 else None,
                         elapsed=now - self._start, memory=memory(), metrics=metrics)
        self._last = (self._train_time, tokens, trained)
        self._last_emit = now

    def requests(self) -> set[str]:
        """The stop / checkpoint requests, and the step's token counts: every rank's, summed. Rank 0 reads the
        requests and every rank must act on the same step, or the processes hang: one sum over the ranks (the
        others add no request) carries both, once per optimizer step."""
        found = pending(self.run_dir) if self.writer else set()
        counts = self.counter.pending
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            values = torch.tensor([int("stop" in found), int("checkpoint" in found), *counts], dtype=torch.int64)
            if torch.cuda.is_available():
                values = values.cuda()
            torch.distributed.all_reduce(values)
            stop, checkpoint, *counts = values.tolist()
            found = {name for name, on in (("stop", stop), ("checkpoint", checkpoint)) if on}
        self.counter.settle(*counts)
        return found


def trainer_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """The trainer's own metrics in a training log (DPO's `rewards/margins`, SFT's `mean_token_accuracy`, a
    reward model's `accuracy`, ...): every number but those a step event has fields for and the counters."""
    return {k: v for k, v in logs.items() if k not in OWN_FIELDS and not k.endswith(("_runtime", "_per_second"))
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def is_kept(checkpoint: Path) -> bool:
    """A checkpoint asked for by hand: rotation leaves it alone."""
    return (checkpoints.read_marker(checkpoint) or {}).get("kept") is True


def memory() -> dict[str, Any]:
    """The `memory` field of a step event: the process's RAM, and per GPU the driver's and torch's view.
    Every reading is guarded: a value that cannot be read is left out (rss) or None, never an exception."""
    out: dict[str, Any] = {}
    if (rss := _rss()) is not None:
        out["rss"] = rss
    if (rss_peak := _rss_peak()) is not None:
        out["rss_peak"] = rss_peak
    if torch.cuda.is_available():
        out["gpus"] = _gpus()
    return out


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux
        return None


def _rss_peak() -> int | None:
    try:
        import resource  # not on Windows

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere


@functools.cache
def _torch_uuids(count: int) -> tuple[str, ...] | None:
    """torch's devices as UUIDs, which NVML can look up whatever CUDA_VISIBLE_DEVICES says; None if unknown."""
    try:
        return tuple(str(torch.cuda.get_device_properties(i).uuid) for i in range(count))
    except Exception:  # no `uuid` (old or exotic builds), a device that will not answer
        return None


def _gpus() -> list[dict[str, Any]]:
    count = torch.cuda.device_count()
    readings: list[Any] | None = None
    uuids = _torch_uuids(count)
    if uuids is not None:
        try:
            readings = gpu_memory.nvml_readings(uuids)
        except Exception:  # NVML misbehaving must not stop training
            readings = None
    gpus = []
    for i in range(count):
        nvml = readings[i] if readings else {}
        total = nvml.get("total")
        if total is None:
            try:  # the properties, not mem_get_info: that would create a CUDA context on every device
                total = torch.cuda.get_device_properties(i).total_memory
            except Exception:
                total = None
        try:
            allocated, reserved = torch.cuda.memory_allocated(i), torch.cuda.memory_reserved(i)
            peak = torch.cuda.max_memory_reserved(i)
        except Exception:
            allocated = reserved = peak = None
        gpus.append({"index": i, "name": nvml.get("name"), "used": nvml.get("used"), "total": total,
                     "allocated": allocated, "reserved": reserved, "peak": peak})
    return gpus


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)
