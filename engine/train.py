"""One training run, inside the training process: data -> rows -> model -> TRL trainer -> saved results, with
every stage reported to events.jsonl. `engine.run` calls `train(run_dir)` and exits with what it returns.

Exit codes (engine.exit_codes, also in the final event): OK completed, USER a problem with the config or the
data, FAILED failed, STOPPED stopped on request (a checkpoint was saved).

A full disk must not silence the run: a reserve file is kept in the run directory and given up when the disk
fills, so the failure can still be written to events.jsonl and train.log, saying what was being saved and
how much room it needs. A run whose numbers turn non-finite fails (engine.trainers.nonfinite) and never
saves NaN weights as its result.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import platform
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from engine import checkpoints, control
from engine.checkpoints import mb
from engine.config import RunConfig, load_config, to_dict
from engine.errors import DataError, UserError
from engine.events import EventWriter
from engine.exit_codes import ExitCode
from engine.manifest import Manifest
from engine.run_files import CHECKPOINT_PREFIX, EVENTS_FILE, PARAMS_FILE, RESERVE_FILE, RunDir
from engine.trainers.nonfinite import TrainingDiverged

log = logging.getLogger("llmtune")
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "tokenizers", "llmtune",
            "wandb", "mlflow", "mlflow-skinny", "trackio")  # those not installed are left out


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _local_main_first() -> Any:
    """In a run of several processes, the first process of each machine prepares the data (into the cache)
    before the others read it; one process just goes on."""
    if world_size() == 1:
        return contextlib.nullcontext()
    from accelerate import PartialState

    return PartialState().local_main_process_first()


RESERVE_BYTES = 8 * 2**20  # room to write the failure (events, log, model card) once the disk is full


class DiskReserve:
    """A file of RESERVE_BYTES in the run directory, deleted when the disk is full (and at the end)."""

    def __init__(self, run_dir: Path, manifest: Manifest) -> None:
        self.path = RunDir(run_dir).reserve
        try:
            manifest.add(RESERVE_FILE)
            with open(self.path, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
                except (AttributeError, OSError):  # no fallocate here (macOS, some filesystems): write it
                    f.write(bytes(RESERVE_BYTES))
        except OSError:  # no room even for this: the run will say so when it cannot write
            self.release()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def train(run_dir: Path, *, resume: bool = False) -> ExitCode:
    """Train the config in RUN_DIR/config.yaml; with `resume`, continue from the last checkpoint."""
    manifest = Manifest(run_dir) if rank() == 0 else None
    reserve = DiskReserve(run_dir, manifest) if manifest is not None else None
    if manifest is not None:
        with contextlib.suppress(OSError):  # a full disk: said below, once the reserve is given up
            manifest.add(EVENTS_FILE)
    writer = EventWriter(RunDir(run_dir).events) if rank() == 0 else None
    run = Run(run_dir, writer, resume, manifest)
    try:
        return run.execute()
    except UserError as e:
        return run.finish_failed("user", e.render(), ExitCode.USER)
    except TrainingDiverged as e:
        return run.finish_failed("diverged", str(e), ExitCode.FAILED)
    except Exception as e:  # noqa: BLE001 - every failure must end the event stream with a reason
        free = checkpoints.free_bytes(run_dir)
        full = checkpoints.is_disk_full(e, free)
        if reserve is not None and full:
            reserve.release()  # now the reason can be written
        _print_traceback()  # stderr is train.log
        kind, message = ("disk_full", run.disk_full_message(free)) if full else _describe(e)
        return run.finish_failed(kind, message, ExitCode.FAILED)
    finally:
        if reserve is not None:
            reserve.release()
        if writer:
            writer.close()


def _print_traceback() -> None:
    try:
        traceback.print_exc()
        sys.stderr.flush()
    except OSError:  # the log's disk is full too
        pass


class Run:
    def __init__(self, run_dir: Path, writer: EventWriter | None, resume: bool = False,
                 manifest: Manifest | None = None) -> None:
        self.run_dir = run_dir
        self.files = RunDir(run_dir)
        self.writer = writer
        self.resume = resume
        self.manifest = manifest  # None on ranks other than 0
        self.trainer: Any = None  # while training: failures report the step it reached
        self.final_step = 0
        self.progress: Any = None
        self.saving: str | None = None  # what the run is writing besides checkpoints ("the adapter", ...)
        self.checkpoint_bytes: int | None = None  # about how much one checkpoint takes on disk
        self.result_bytes: int | None = None
        self.card: Any = None  # writes the model card, once the model is loaded

    @property
    def step(self) -> int:
        return self.trainer.state.global_step if self.trainer is not None else self.final_step

    def status(self, phase: str, message: str) -> None:
        """A `status` event, and the same words in train.log (every rank)."""
        if self.writer:
            self.writer.status(phase=phase, message=message)
        log.info(message)

    def log(self, level: str, message: str) -> None:
        """A `log` event, and the same words in train.log (every rank)."""
        if self.writer:
            self.writer.log(level=level, message=message)
        log.info(message)

    def finish(self, status: str, code: ExitCode, *, metrics: dict[str, Any] | None = None,
               output: str | None = None, merged: str | None = None) -> ExitCode:
        """End the event stream with the exit code the process ends with: the one place a training process
        that ends by itself writes `run_finished` (engine.run writes it for one killed by SIGTERM)."""
        if self.writer:
            self.writer.run_finished(status=status, exit_code=code, step=self.step, metrics=metrics, output=output,
                                     merged=merged)
        return code

    def recording(self) -> Any:
        """Books what a stage writes into the run directory as llmtune's (rank 0 keeps the books)."""
        return self.manifest.recording() if self.manifest is not None else contextlib.nullcontext()

    def execute(self) -> ExitCode:
        from engine.dataset_prep import prepare_dataset

        cfg = load_config(self.files.config, check_env=True)
        self.status("loading data", f"reading {cfg.data.path} and the tokenizer")
        # `--yes` prepared the rows into the cache: found there, not made again (unless the data changed since)
        with _local_main_first():
            prepared = prepare_dataset(cfg, progress=lambda line: self.status("preparing data", line))
        tokenizer, setup, block_size, note = (prepared.tokenizer, prepared.setup, prepared.block_size,
                                              prepared.block_size_note)
        if not prepared.from_cache:
            self.log("info", f"prepared the data in {prepared.seconds:.1f} s (stored in {prepared.directory})")
        rows = [prepared.trainer_rows(s) for s in prepared.splits]
        train_rows, valid_rows = rows[0], (rows[1] if len(rows) > 1 else None)
        if valid_rows is not None and not cfg.data.valid_split:  # held out by params.valid_fraction: say so
            self.log("info", f"valid: {valid_rows.stats.source}")
        for r in rows:
            for n in r.notes:
                self.log("warning", n)
        if not train_rows.rows:
            raise DataError([cfg.problem("params.block_size", "no training example has a trained token within "
                                         f"block_size {block_size}", "raise block_size, or check the data with "
                                         "--dry-run", cfg.params.block_size)])
        if self.manifest is not None:  # rank 0 writes the run directory's files
            self.manifest.add(PARAMS_FILE)
            write_training_params(cfg, self.run_dir)
        from engine.trainers.kernel_setup import checked, process_patches

        kernels, notes = checked(run_kernels(cfg))
        for n in notes:
            self.log("warning", n)
        with process_patches(kernels):
            return self._train(cfg, tokenizer, setup, block_size, note, train_rows, valid_rows, kernels)

    def _train(self, cfg: RunConfig, tokenizer: Any, setup: Any, block_size: int, note: str, train_rows: Any,
               valid_rows: Any, kernels: Any) -> ExitCode:
        from engine.model_card import write_model_card
        from engine.trainers import builder
        from engine.trainers.common import Job, apply_batching, epochs_run, total_steps
        from engine.trainers.kernel_setup import apply_to_trainer
        from engine.trainers.nonfinite import NonFiniteGuard, nonfinite_parameters
        from engine.trainers.progress import ProgressCallback, TokenCounter
        from engine.trainers.tracking import start_tracker

        job = Job(cfg, self.run_dir, tokenizer, setup, block_size, train_rows, valid_rows,
                  world_size=world_size(), batching=run_batching(cfg), kernels=kernels)
        cores = os.cpu_count() or 1
        if job.world_size > cores and not _on_cuda():
            self.log("warning", f"{job.world_size} CPU processes share {cores} cores: each runs slower than "
                     f"alone; params.num_processes: {cores} or fewer keeps one core each")
        per_step = cfg.params.batch_size * job.world_size
        if job.world_size > 1 and len(train_rows.rows) < per_step:
            self.log("warning", f"{len(train_rows.rows)} training examples, fewer than one batch of every process "
                     f"({cfg.params.batch_size} x {job.world_size} processes): accelerate repeats examples to fill "
                     "the batches. Lower params.batch_size or params.num_processes, or add data")
        checkpoint = self._checkpoint_to_resume(cfg)
        resumed = checkpoints.read_marker(checkpoint) if checkpoint else None
        counter = TokenCounter(*(_count(resumed, k) for k in ("tokens", "trained_tokens")))
        if resumed is not None and _count(resumed, "world_size") not in (0, job.world_size):
            self.log("warning", f"this checkpoint was saved by {_count(resumed, 'world_size')} process(es) and the run "
                     f"resumes on {job.world_size}: the steps go on, but the batches differ from the ones an "
                     "uninterrupted run would have had (the same count repeats them)")
        guard = NonFiniteGuard()
        progress = ProgressCallback(self.writer, self.run_dir, counter, guard, self.manifest)
        # the tracker's run (rank 0), before the model: run_started says where it logs; it follows the events
        tracker = start_tracker(cfg.log, self.run_dir, lambda m: self.log("warning", m)) if self.writer else None
        if tracker is not None and self.writer is not None:
            self.writer.listeners.append(tracker)
        self.status("loading model", f"loading {cfg.base_model}")
        with self.recording():  # TensorBoard's runs/ appears here
            trainer, loaded = builder(cfg.trainer)(job, [progress] + ([tracker] if tracker else []))
        apply_batching(trainer, job)
        self.log("info", f"batching: {job.batching.describe()}")
        self.log("info", f"kernels: {job.kernels.describe()}")
        for line in apply_to_trainer(trainer, job.kernels):
            self.log("info", line)
        counter.attach(trainer)
        guard.attach(trainer)
        # TRL's card ("a fine-tuned version of [None]"); ours below
        trainer.create_model_card = lambda *args, **kwargs: None
        for n in loaded.notes + setup.notes:
            self.log("info", n)
        for w in loaded.warnings:
            self.log("warning", w)
        data = {"train": train_rows.stats.as_dict()}
        if valid_rows is not None:
            data["valid"] = valid_rows.stats.as_dict()
        resized = loaded.resized_to

        def card(status: str, metrics: dict[str, Any] | None = None, merged: Path | None = None) -> None:
            if self.manifest is not None:  # rank 0 only
                with self.recording():
                    write_model_card(cfg, self.run_dir, status=status, metrics=metrics or {}, data=data,
                                     resized_to=resized, merged=merged, batching=job.batching.describe(),
                                     kernels=job.kernels.describe())

        self.card = card
        progress.on_saved = lambda: card("running")  # after TRL's own card, which each checkpoint rewrites
        if self.writer:
            self.writer.run_started(
                run_dir=str(self.run_dir), pid=os.getpid(), trainer=cfg.trainer, task=cfg.task,
                base_model=cfg.base_model, config=_config_dict(cfg), versions=versions(), device=device_info(),
                data=data, total_steps=total_steps(job), epochs=epochs_run(job),
                batch_size=cfg.params.batch_size * cfg.params.gradient_accumulation * job.world_size,
                output_dir=str(self.run_dir), block_size=block_size, block_size_note=note,
                trainable_parameters=_trainable(trainer.model), total_parameters=_total(trainer.model),
                batching=job.batching.as_dict(), kernels=job.kernels.as_dict(), launch=_launch(job.world_size),
                tracker=tracker.where if tracker else None)
        card("running")
        self._check_room(cfg, trainer.model, total_steps(job), checkpoint)
        if "stop" in progress.requests():  # asked to stop while the data and model were loading (every rank hears)
            control.clear(self.run_dir, "stop")
            return self.finish("stopped", ExitCode.STOPPED)
        self.trainer, self.progress = trainer, progress
        with self.recording():  # checkpoints
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if guard.tripped is not None:
            d = guard.tripped
            raise TrainingDiverged(f"the {d.what} at step {d.first_step}, and the numbers stayed non-finite for "
                                   f"{guard.limit} steps: training stopped at step {d.step}. "
                                   + self._not_saved_advice(cfg))
        if (valid_rows is not None and valid_rows.rows and cfg.params.eval_strategy != "no"
                and progress.last_eval_step != self.step):
            trainer.evaluate()  # the run ended between evaluations (max_steps, a stop request)
        broken = nonfinite_parameters(trainer.model)
        if broken:
            raise TrainingDiverged(f"after {self.step} steps the weights hold NaN or infinite values "
                                   f"({', '.join(broken)}). " + self._not_saved_advice(cfg))
        metrics = _final_metrics(trainer, progress.final_metrics)
        stopped = progress.stop_requested
        status = "stopped" if stopped else "completed"
        self.saving = "the adapter" if cfg.params.peft else "the model"
        self.status("saving", f"saving {self.saving} to {self.run_dir}")
        with self.recording():
            _gather_for_saving(trainer)
            trainer.save_model(str(self.run_dir))  # every rank: FSDP and ZeRO-3 gather the shards to save
            if self.manifest is not None:
                tokenizer.save_pretrained(str(self.run_dir))
        self.saving = None
        if self.manifest is None:  # another rank: rank 0 merges, pushes and ends the event stream
            return ExitCode.STOPPED if stopped else ExitCode.OK
        self.final_step, self.trainer = trainer.state.global_step, None
        del trainer, loaded  # free the training model before the merge loads the base again
        gc.collect()
        merged = None
        if cfg.params.peft and cfg.params.merge_adapter and not stopped:
            with self.recording():
                merged = self._merge(cfg, tokenizer)
        card(status, metrics, merged)
        if cfg.hub.push_to_hub and not stopped:
            self._push(cfg)
        if stopped:
            control.clear(self.run_dir, "stop")
        return self.finish(status, ExitCode.STOPPED if stopped else ExitCode.OK, metrics=metrics,
                           output=str(self.run_dir), merged=str(merged) if merged else None)

    def _not_saved_advice(self, cfg: RunConfig) -> str:
        last = checkpoints.last_complete(self.run_dir)
        kept = (f"The last good checkpoint is {last}" if last is not None else "No checkpoint was saved before it")
        return (f"Nothing was saved as the result. {kept}. Start a new run with a lower params.lr (it is "
                f"{cfg.params.lr:g}){', or bf16 instead of fp16' if cfg.params.mixed_precision == 'fp16' else ''}; "
                "resuming would continue with the same settings")

    def _check_room(self, cfg: RunConfig, model: Any, steps: int, resumed: Path | None) -> None:
        """Estimate what a checkpoint and the result take (for the disk-full message), and warn before training
        when the disk cannot hold them."""
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        weights = sum(p.numel() * p.element_size() for p in model.parameters()
                      if p.requires_grad or not cfg.params.peft)
        existing = checkpoints.last_complete(self.run_dir)
        estimate = weights + 8 * trainable + 2**20  # weights, Adam's two moments in fp32, the rest
        self.checkpoint_bytes = checkpoints.size_on_disk(existing) if existing else estimate
        self.result_bytes = weights
        p = cfg.params
        saves = math.ceil(steps / p.save_steps) if p.save_steps else p.epochs
        kept = 1 if resumed else min(p.save_total_limit + 1, max(saves, 1))  # one more while the next is saved
        need = kept * self.checkpoint_bytes + self.result_bytes
        free = checkpoints.free_bytes(self.run_dir)
        if free is not None and free < need:
            self.log("warning", f"the disk holding {self.run_dir} has {mb(free)} free; this run "
                     f"needs about {mb(need)} ({kept} checkpoint(s) of about {mb(self.checkpoint_bytes)} and the "
                     f"result of about {mb(self.result_bytes)}): it may fail when saving. Free some space, lower "
                     "params.save_total_limit, or choose a project_name on a larger disk")

    def disk_full_message(self, free: int | None) -> str:
        what = (self.progress.saving if self.progress is not None else None) or self.saving
        text = f"disk full while {'saving ' + what if what else 'writing'} under {self.run_dir}: {mb(free)} free"
        partial = self.run_dir / what if what and what.startswith(CHECKPOINT_PREFIX) else None
        need = self.checkpoint_bytes if partial else self.result_bytes if what else None
        if need:
            text += f", {'the checkpoint' if partial else 'it'} needs about {mb(need)}"
        if partial is not None and partial.exists() and not checkpoints.is_complete(partial):
            text += (f". The incomplete {what} ({mb(checkpoints.size_on_disk(partial))}) is never resumed from; "
                     "resume deletes it")
        last = checkpoints.last_complete(self.run_dir)
        if last is not None:
            return text + f". Free some space, then continue from {last.name}: llmtune-tui resume {self.run_dir}"
        return text + ". Free some space (or choose a project_name on a larger disk) and start the run again"

    def _checkpoint_to_resume(self, cfg: RunConfig) -> Path | None:
        if not self.resume:
            return None
        checkpoint = checkpoints.last_complete(self.run_dir)
        if checkpoint is None:
            raise DataError([cfg.problem("project_name", f"{self.run_dir} holds no complete checkpoint-* folder to "
                                         "resume from", "start the run anew with --yes (and a free project_name)")])
        for partial in checkpoints.incomplete_checkpoints(self.run_dir):
            if (checkpoints.step_of(partial) or 0) < (checkpoints.step_of(checkpoint) or 0):
                continue
            if self.manifest is not None and self.manifest.owns(partial.name):
                self.manifest.remove_owned(under=partial.name)
            done = ("deleted it" if not partial.exists() else
                    "left it, as it holds files llmtune did not write; it is never resumed from")
            self.log("warning", f"{partial.name} was not saved completely (a full disk, or the run was killed "
                     f"while saving): {done}; resuming from {checkpoint.name}")
        self.status("resuming", f"resuming from {checkpoint}")
        return checkpoint

    def _merge(self, cfg: RunConfig, tokenizer: Any) -> Path | None:
        from engine.trainers.merge import merge_adapter

        self.status("merging", "merging the adapter into the base model")
        _free_gpu()
        try:
            return merge_adapter(cfg, self.run_dir, tokenizer, self.files.merged)
        except Exception as e:  # noqa: BLE001 - the adapter is saved; a failed merge must not lose it
            traceback.print_exc()
            self.log("error", f"merging the adapter failed ({type(e).__name__}: {e}); the adapter is kept in "
                     f"{self.run_dir}; the traceback is in {self.files.log}")
            return None

    def _push(self, cfg: RunConfig) -> None:
        from engine.hub import push, repo_id

        self.status("pushing", f"pushing the result to the Hugging Face Hub ({repo_id(cfg)})")
        try:
            url = push(cfg, self.run_dir)
            self.log("info", f"pushed to {url}")
        except Exception as e:  # noqa: BLE001 - the result is saved locally; say why the push failed
            traceback.print_exc()
            self.log("error", f"pushing to the Hub failed ({type(e).__name__}: "
                     f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); the result is kept in "
                     f"{self.run_dir}: upload it later with `huggingface-cli upload {repo_id(cfg)} {self.run_dir}`")

    def _another_rank_failed(self) -> bool:
        """Rank 0 fails too when another rank failed first (its collective's peer is gone): that rank's error,
        already in the stream, is the run's; rank 0's would only say "connection closed"."""
        if world_size() == 1:
            return False
        from engine.events import other_rank_failed, read_events

        return other_rank_failed(read_events(self.files.events))

    def finish_failed(self, kind: str, message: str, code: ExitCode) -> ExitCode:
        log.error(message)
        try:
            if self.card is not None:
                self.card("failed")  # our card, marked as not completed, instead of TRL's
        except Exception:  # noqa: BLE001 - the failure itself must still be reported
            _print_traceback()
        try:
            if self.writer:
                if not self._another_rank_failed():
                    self.writer.error(kind=kind, message=message, log=str(self.files.log))
            elif world_size() > 1:  # another rank: its error is the run's, before rank 0 is ended for it
                with EventWriter(self.files.events) as w:
                    w.error(kind=kind, message=f"[rank {rank()}] {message}", log=str(self.files.log), rank=rank())
            self.finish("failed", code)
        except OSError:  # nowhere to write it: the exit code still says it
            _print_traceback()
        return code


def run_batching(cfg: RunConfig) -> Any:
    """The batching this run uses on this machine (engine.batching)."""
    from engine.batching import machine_batching

    return machine_batching(cfg, on_cuda=_on_cuda())


def run_kernels(cfg: RunConfig) -> Any:
    """The fused kernels this run uses on this machine (engine.kernels)."""
    from engine.kernels import machine_kernels
    from engine.model_info import read_model_info

    on_cuda = _on_cuda()
    model_type = read_model_info(cfg.base_model, cfg.base_dir).model_type if on_cuda else None
    return machine_kernels(cfg, on_cuda=on_cuda, model_type=model_type)


def _on_cuda() -> bool:
    from engine.trainers.model import device

    return device() == "cuda"


def _launch(world: int) -> dict[str, Any]:
    """The run_started `launch` field: what the launching process said (engine.distributed), or one process."""
    from engine.distributed import launch_info

    return launch_info() or {"world_size": world, "backend": None, "command": " ".join(sys.argv)}


def _gather_for_saving(trainer: Any) -> None:
    """FSDP saves sharded checkpoints (fast); the result is gathered into one normal model."""
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")


def _count(marker: dict[str, Any] | None, key: str) -> int:
    value = (marker or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _final_metrics(trainer: Any, summary: dict[str, float]) -> dict[str, float]:
    """The trainer's summary (train_runtime, train_loss, ...) with the last logged loss and eval loss."""
    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    if losses:
        metrics["final_loss"] = losses[-1]
    if evals:
        metrics["eval_loss"] = evals[-1]
    return metrics


def _describe(e: BaseException) -> tuple[str, str]:
    name = type(e).__name__
    if "OutOfMemory" in name or "out of memory" in str(e).lower():
        return "oom", (f"out of memory: {str(e).splitlines()[0] if str(e) else name}. Lower params.batch_size "
                       "(raise gradient_accumulation to keep the effective batch), lower block_size, turn on "
                       "auto_find_batch_size, peft and quantization: int4, or keep gradient checkpointing on")
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return "internal", f"training failed: {name}: {first}"


def _free_gpu() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _config_dict(cfg: RunConfig) -> dict[str, Any]:
    return to_dict(cfg)


def write_training_params(cfg: RunConfig, run_dir: Path) -> None:
    """AutoTrain's flat training_params.json (secrets left out), for tools that read it."""
    d = to_dict(cfg)
    flat: dict[str, Any] = {"model": d["base_model"], "project_name": d["project_name"], "data_path": d["data"]["path"],
                            "train_split": d["data"]["train_split"], "valid_split": d["data"]["valid_split"],
                            "chat_template": d["data"]["chat_template"], "log": d["log"],
                            **d["data"]["column_mapping"], **d["params"],
                            "username": d["hub"].get("username"), "push_to_hub": d["hub"].get("push_to_hub")}
    RunDir(run_dir).params.write_text(json.dumps(flat, indent=2, default=str) + "\n", encoding="utf-8")


def _trainable(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _total(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def device_info() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"kind": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"kind": "cpu", "name": platform.processor() or platform.machine(), "count": os.cpu_count() or 1}
