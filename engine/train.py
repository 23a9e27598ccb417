"""One training run, inside the training process: data -> rows -> model -> TRL trainer -> saved results, with
every stage reported to events.jsonl. `engine.run` calls `train(run_dir)` and exits with what it returns.

Exit codes (also in the final event): 0 completed, 2 a problem with the config or the data, 1 failed,
130 stopped on request (a checkpoint was saved).
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from engine import launch
from engine.config import RunConfig, load_config
from engine.errors import DataError, UserError
from engine.events import EVENTS_FILE, EventWriter
from engine.launch import LOG_FILE
from engine.rundir import CONFIG_FILE, MERGED_DIR, write_training_params

log = logging.getLogger("llmtune")
EXIT_OK, EXIT_FAILED, EXIT_USER, EXIT_STOPPED = 0, 1, 2, 130
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "tokenizers", "llmtune")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def train(run_dir: Path, *, resume: bool = False) -> int:
    """Train the config in RUN_DIR/config.yaml; with `resume`, continue from the last checkpoint."""
    writer = EventWriter(run_dir / EVENTS_FILE) if rank() == 0 else None
    run = Run(run_dir, writer, resume)
    try:
        return run.execute()
    except UserError as e:
        return run.finish_failed("user", e.render(), EXIT_USER)
    except Exception as e:  # noqa: BLE001 - every failure must end the event stream with a reason
        traceback.print_exc()  # stderr is train.log
        kind, message = _describe(e)
        return run.finish_failed(kind, message, EXIT_FAILED)
    finally:
        if writer:
            writer.close()


class Run:
    def __init__(self, run_dir: Path, writer: EventWriter | None, resume: bool = False) -> None:
        self.run_dir = run_dir
        self.writer = writer
        self.resume = resume
        self.trainer: Any = None  # while training: failures report the step it reached
        self.final_step = 0

    @property
    def step(self) -> int:
        return self.trainer.state.global_step if self.trainer is not None else self.final_step

    def emit(self, type: str, **fields: Any) -> None:
        if self.writer:
            self.writer.emit(type, **fields)
        if type in ("status", "log"):
            log.info(fields.get("message", ""))

    def execute(self) -> int:
        from engine.preview import checked_block_size, load_and_format, prepare_tokenizer
        from engine.trainers.rows import build_rows

        cfg = load_config(self.run_dir / CONFIG_FILE, check_env=True)
        self.emit("status", phase="loading data", message=f"reading {cfg.data.path} and the tokenizer")
        tokenizer, setup = prepare_tokenizer(cfg)
        block_size, note = checked_block_size(cfg, tokenizer)
        rows = [build_rows(cfg, tokenizer, setup, fs, block_size) for fs in load_and_format(cfg, tokenizer, setup)]
        train_rows, valid_rows = rows[0], (rows[1] if len(rows) > 1 else None)
        for r in rows:
            for n in r.notes:
                self.emit("log", level="warning", message=n)
        if not train_rows.rows:
            raise DataError([cfg.problem("params.block_size", "no training example has a trained token within "
                                         f"block_size {block_size}", "raise block_size, or check the data with "
                                         "--dry-run")])
        write_training_params(cfg, self.run_dir)
        return self._train(cfg, tokenizer, setup, block_size, note, train_rows, valid_rows)

    def _train(self, cfg: RunConfig, tokenizer: Any, setup: Any, block_size: int, note: str, train_rows: Any,
               valid_rows: Any) -> int:
        from engine.trainers import builder
        from engine.trainers.common import Job, total_steps
        from engine.trainers.progress import ProgressCallback, TokenCounter

        job = Job(cfg, self.run_dir, tokenizer, setup, block_size, train_rows, valid_rows,
                  world_size=int(os.environ.get("WORLD_SIZE", "1")))
        self.emit("status", phase="loading model", message=f"loading {cfg.base_model}")
        counter = TokenCounter()
        progress = ProgressCallback(self.writer, self.run_dir, counter)
        trainer, loaded = builder(cfg.trainer)(job, [progress])
        counter.attach(trainer)
        for n in loaded.notes + setup.notes:
            self.emit("log", level="info", message=n)
        for w in loaded.warnings:
            self.emit("log", level="warning", message=w)
        data = {"train": train_rows.stats.as_dict()}
        if valid_rows is not None:
            data["valid"] = valid_rows.stats.as_dict()
        self.emit("run_started", run_dir=str(self.run_dir), pid=os.getpid(), trainer=cfg.trainer, task=cfg.task,
                  base_model=cfg.base_model, config=_config_dict(cfg), versions=versions(), device=device_info(),
                  data=data, total_steps=total_steps(job), epochs=float(cfg.params.epochs),
                  batch_size=cfg.params.batch_size * cfg.params.gradient_accumulation * job.world_size,
                  output_dir=str(self.run_dir), block_size=block_size, block_size_note=note,
                  trainable_parameters=_trainable(trainer.model), total_parameters=_total(trainer.model))
        if "stop" in launch.pending(self.run_dir):  # asked to stop while the data and model were loading
            launch.clear(self.run_dir, "stop")
            self.emit("run_finished", status="stopped", exit_code=EXIT_STOPPED, step=0, metrics={}, output=None,
                      merged=None)
            return EXIT_STOPPED
        checkpoint = self._checkpoint_to_resume(cfg)
        self.trainer = trainer
        trainer.train(resume_from_checkpoint=checkpoint)
        if (valid_rows is not None and valid_rows.rows and cfg.params.eval_strategy != "no"
                and progress.last_eval_step != self.step):
            trainer.evaluate()  # the run ended between evaluations (max_steps, a stop request)
        metrics = _final_metrics(trainer, progress.final_metrics)
        stopped = progress.stop_requested
        status = "stopped" if stopped else "completed"
        self.emit("status", phase="saving", message=f"saving the {'adapter' if cfg.params.peft else 'model'} "
                  f"to {self.run_dir}")
        trainer.save_model(str(self.run_dir))
        tokenizer.save_pretrained(str(self.run_dir))
        resized = loaded.resized_to
        self.final_step, self.trainer = trainer.state.global_step, None
        del trainer, loaded  # free the training model before the merge loads the base again
        gc.collect()
        merged = self._merge(cfg, tokenizer) if cfg.params.peft and cfg.params.merge_adapter and not stopped else None
        from engine.model_card import write_model_card

        write_model_card(cfg, self.run_dir, status=status, metrics=metrics, data=data, resized_to=resized,
                         merged=merged)
        if cfg.hub.push_to_hub and not stopped:
            self._push(cfg)
        if stopped:
            launch.clear(self.run_dir, "stop")
        code = EXIT_STOPPED if stopped else EXIT_OK
        self.emit("run_finished", status=status, exit_code=code, step=self.step, metrics=metrics,
                  output=str(self.run_dir), merged=str(merged) if merged else None)
        return code

    def _checkpoint_to_resume(self, cfg: RunConfig) -> str | None:
        if not self.resume:
            return None
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = get_last_checkpoint(str(self.run_dir))
        if checkpoint is None:
            raise DataError([cfg.problem("project_name", f"{self.run_dir} holds no checkpoint-* folder to resume from",
                                         "start the run anew with --yes (and a free project_name)")])
        self.emit("status", phase="resuming", message=f"resuming from {checkpoint}")
        return checkpoint

    def _merge(self, cfg: RunConfig, tokenizer: Any) -> Path | None:
        from engine.trainers.merge import merge_adapter

        self.emit("status", phase="merging", message="merging the adapter into the base model")
        _free_gpu()
        try:
            return merge_adapter(cfg, self.run_dir, tokenizer, self.run_dir / MERGED_DIR)
        except Exception as e:  # noqa: BLE001 - the adapter is saved; a failed merge must not lose it
            traceback.print_exc()
            self.emit("log", level="error", message=f"merging the adapter failed ({type(e).__name__}: {e}); the "
                      f"adapter is kept in {self.run_dir}; the traceback is in {self.run_dir / LOG_FILE}")
            return None

    def _push(self, cfg: RunConfig) -> None:
        from engine.hub import push, repo_id

        self.emit("status", phase="pushing", message=f"pushing the result to the Hugging Face Hub ({repo_id(cfg)})")
        try:
            url = push(cfg, self.run_dir)
            self.emit("log", level="info", message=f"pushed to {url}")
        except Exception as e:  # noqa: BLE001 - the result is saved locally; say why the push failed
            traceback.print_exc()
            self.emit("log", level="error", message=f"pushing to the Hub failed ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); the result is kept in "
                      f"{self.run_dir}: upload it later with `huggingface-cli upload {repo_id(cfg)} {self.run_dir}`")

    def finish_failed(self, kind: str, message: str, code: int) -> int:
        log.error(message)
        self.emit("error", kind=kind, message=message, log=str(self.run_dir / LOG_FILE))
        self.emit("run_finished", status="failed", exit_code=code, step=self.step, metrics={}, output=None,
                  merged=None)
        return code


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
    from engine.config import to_dict

    return to_dict(cfg)


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
