"""The training process's side of `log:` (engine.trackers): the tracker's run, and what llmtune adds to it.

transformers' callbacks (`report_to`) log the trainer's own metrics (loss, lr, grad norm, evaluations). llmtune
starts the tracker's run itself, before the `run_started` event, so that the event (and the `--yes` header and
the dashboard that show it) can say where the run is logged: W&B's offline directory or the run's URL, MLflow's
run, Trackio's database. The callbacks then log into that run (W&B and MLflow reuse an active run; Trackio's
callback opens its run by the project and run name llmtune gives it, see training_args).

What llmtune adds reaches the tracker by following the event stream (a listener of the EventWriter), so the
tracker gets what events.jsonl says: the batching and precision choices and the data statistics of
`run_started` (logged as config once the trainer's callbacks have set the run up: Trackio keeps only the config
it has before its first log), the token throughput of each logging step, and `run_finished`'s final metrics
and status, after which llmtune ends the run (a failed run is marked failed). A tracker that fails while
training is said once as a warning; the run goes on without it.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse
from urllib.request import url2pathname

from transformers import TrainerCallback

from engine.errors import Problem, UserError
from engine.run_files import TENSORBOARD_DIR
from engine.trackers import TRACKERS, is_file_store, mlflow_uri, project, run_name

STEP_FIELDS = ("tokens_per_s", "trained_tokens_per_s", "tokens", "trained_tokens")
PREFIX = "llmtune"


class TrackerRun:
    """One tracker's run, on rank 0. `start` returns the run_started `tracker` field's mode, where, hint."""

    name = ""
    fix = "see the tracker's own message in train.log; or set log: none"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.project = project(self.name, run_dir)
        self.run = run_name(run_dir)

    def start(self) -> tuple[str, str, str | None]:
        raise NotImplementedError

    def config(self, values: dict[str, Any]) -> None:
        """Values that describe the run (nested dicts), logged once."""

    def metrics(self, values: dict[str, float], step: int) -> None:
        """Numbers at an optimizer step."""

    def end(self, status: str, exit_code: int, final: dict[str, float], step: int) -> None:
        """The final metrics, then the run ended with the outcome."""


class TensorBoardRun(TrackerRun):
    """Only where transformers' TensorBoard callback writes (TENSORBOARD_LOGGING_DIR, else RUN_DIR/runs/)."""

    name = "tensorboard"

    def start(self) -> tuple[str, str, str | None]:
        where = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(self.run_dir.absolute() / TENSORBOARD_DIR)
        return "local", where, f"view: tensorboard --logdir {where}"


class WandbRun(TrackerRun):
    """wandb.init reads WANDB_ENTITY, WANDB_MODE, WANDB_DIR and the key (WANDB_API_KEY or `wandb login`) itself;
    llmtune passes the project (WANDB_PROJECT, else the run's name) and the run's name."""

    name = "wandb"
    fix = ("check the network and the W&B key (WANDB_API_KEY or `wandb login`), or log offline with "
           "WANDB_MODE=offline and upload later with `wandb sync`; or set log: none")

    def start(self) -> tuple[str, str, str | None]:
        import wandb

        self.wandb = wandb.init(project=self.project, name=self.run)
        mode = str(getattr(self.wandb.settings, "mode", "online"))
        if mode in ("offline", "dryrun"):
            where = str(self.wandb.settings.sync_dir)
            return "offline", where, f"upload later: wandb sync {where}"
        if mode == "disabled":
            return "disabled", "nowhere (WANDB_MODE=disabled)", None
        return "online", str(self.wandb.url), None

    def config(self, values: dict[str, Any]) -> None:
        self.wandb.config.update(values, allow_val_change=True)

    def metrics(self, values: dict[str, float], step: int) -> None:
        # against transformers' x axis (its callback defines train/global_step as every metric's step)
        self.wandb.log({**_prefixed(values, "/"), "train/global_step": step})

    def end(self, status: str, exit_code: int, final: dict[str, float], step: int) -> None:
        self.wandb.summary.update({**_prefixed(final, "/final/"), f"{PREFIX}/status": status})
        self.wandb.finish(exit_code=0 if status in ("completed", "stopped") else exit_code or 1)


class MlflowRun(TrackerRun):
    """MLFLOW_TRACKING_URI (else ./mlruns), the experiment MLFLOW_EXPERIMENT_NAME (else the run's name), and
    MLFLOW_RUN_ID to continue a run. llmtune's own values go through a client by run id: the fluent API's
    active run belongs to one thread, and a run's end may be written by another (the hang watchdog)."""

    name = "mlflow"
    fix = "check MLFLOW_TRACKING_URI (unset, MLflow logs to ./mlruns); or set log: none"
    STATUS = {"completed": "FINISHED", "stopped": "KILLED", "killed": "KILLED"}

    def start(self) -> tuple[str, str, str | None]:
        import mlflow

        uri = mlflow_uri()
        if is_file_store(uri):  # MLflow 3 refuses its file store unless asked: a local mlruns/ is asked for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment(self.project)
        # transformers' callback starts a run of its own when MLFLOW_RUN_ID is set: it must attach to this one
        run_id = os.environ.pop("MLFLOW_RUN_ID", None)
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else self.run)
        self.mlflow, self.client, self.run_id = mlflow, mlflow.MlflowClient(), run.info.run_id
        if is_file_store(uri):
            where = str(Path(url2pathname(urlparse(run.info.artifact_uri).path)).parent)
            return "local", where, f"view: mlflow ui --backend-store-uri {uri}"
        return "server", f"{_without_query(uri).rstrip('/')}/#/experiments/{experiment.experiment_id}/runs/" \
                         f"{self.run_id}", None

    def config(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flat(values, ".")
        params = [Param(k, str(v)[:500]) for k, v in flat.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a request
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                    for k, v in _prefixed(values, "/").items()])

    def end(self, status: str, exit_code: int, final: dict[str, float], step: int) -> None:
        self.metrics({f"final/{k}": v for k, v in final.items()}, step)
        self.client.set_tag(self.run_id, f"{PREFIX}.status", status)
        active = self.mlflow.active_run()
        state = self.STATUS.get(status, "FAILED")
        if active is not None and active.info.run_id == self.run_id:
            self.mlflow.end_run(state)
        else:
            self.client.set_terminated(self.run_id, state)


class TrackioRun(TrackerRun):
    """Local by default (TRACKIO_DIR, else $HF_HOME/trackio); TRACKIO_SPACE_ID or TRACKIO_SERVER_URL log remotely.
    transformers' callback opens and ends the run (it ends it when training ends, and opens it again for an
    evaluation after that). Trackio stores a run's config with the first log after each opening, replacing what
    it had: llmtune keeps the config of the first opening and opens the run once more with it for the end."""

    name = "trackio"
    kept: dict[str, Any] | None = None

    def start(self) -> tuple[str, str, str | None]:
        import trackio.utils

        self.trackio = trackio
        if space := os.environ.get("TRACKIO_SPACE_ID"):
            return "space", f"https://huggingface.co/spaces/{space}", None
        if server := os.environ.get("TRACKIO_SERVER_URL"):
            return "server", _without_query(server), None  # its query may hold the write token
        canonical = getattr(trackio.utils, "canonical_project_name", lambda p: p)
        where = str(Path(trackio.utils.TRACKIO_DIR) / f"{canonical(self.project)}.db")
        return "local", where, f"view: trackio show --project \"{self.project}\""

    def _current(self) -> Any:
        return self.trackio.context_vars.current_run.get()

    def config(self, values: dict[str, Any]) -> None:
        run = self._current()
        if run is not None:  # transformers' callback has opened it, and not logged yet
            run.config.update(values)
            self.kept = run.config

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self._current() is not None:
            self.trackio.log({**_prefixed(values, "/"), "train/global_step": step})

    def end(self, status: str, exit_code: int, final: dict[str, float], step: int) -> None:
        if self._current() is not None:  # opened again by a last evaluation, without the config
            self.trackio.finish()
        config = {k: v for k, v in (self.kept or {}).items() if not k.startswith("_")}  # _Created etc.: its own
        self.trackio.init(project=self.project, name=self.run, resume="allow", config=config or None)
        self.trackio.log({**_prefixed(final, "/final/"), "train/global_step": step})
        self.trackio.finish()


RUNS: dict[str, type[TrackerRun]] = {"tensorboard": TensorBoardRun, "wandb": WandbRun, "mlflow": MlflowRun,
                                     "trackio": TrackioRun}


class TrackerFeed(TrainerCallback):
    """Follows the event stream into the tracker's run (`__call__`, an EventWriter listener), and logs the
    run's description once the trainer's callbacks have set the run up (`on_train_begin`: ours come after
    theirs). `where`: the run_started event's `tracker` field."""

    def __init__(self, run: TrackerRun, where: dict[str, Any], warn: Callable[[str], None]) -> None:
        self.run, self.where, self.warn = run, where, warn
        self.pending: dict[str, Any] | None = None
        self.tokens: dict[str, float] = {}
        self.failed = False
        self.ended = False

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "run_started":
            self.pending = {PREFIX: run_description(event)}
        elif kind == "step":
            values = {k: event[k] for k in STEP_FIELDS if _is_number(event.get(k))}
            self.tokens = {k: values[k] for k in ("tokens", "trained_tokens") if k in values}  # the totals so far
            if event.get("loss") is not None:  # logging steps, where the trainer's own metrics are logged
                self._safely("log the step's metrics", lambda: self.run.metrics(values, int(event["step"])))
        elif kind == "run_finished" and not self.ended:
            self.ended = True
            self._end(event)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        pending, self.pending = self.pending, None
        if pending:
            self._safely("log the run's settings", lambda: self.run.config(pending))

    def _end(self, event: dict) -> None:
        """The final metrics and the outcome, then the run ended: tried even after a failure, so that the tracker
        marks it as ended where it can. A failure goes to train.log only: run_finished is the last event."""
        final = {**{k: v for k, v in (event.get("metrics") or {}).items() if _is_number(v)}, **self.tokens}
        step = event["step"] if isinstance(event.get("step"), int) else 0
        try:
            self.run.end(str(event.get("status")), int(event.get("exit_code") or 0), final, step)
        except Exception:  # noqa: BLE001 - the run has ended; the tracker's end must not change how
            traceback.print_exc()

    def _safely(self, what: str, action: Callable[[], None]) -> None:
        """A tracker's failure (its server gone, a full disk) costs its logging, not the run."""
        if self.failed:
            return
        try:
            action()
        except Exception as e:  # noqa: BLE001 - see above
            traceback.print_exc()  # train.log
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self.failed = True
            self.warn(f"{self.where['label']} could not {what} ({type(e).__name__}: {first}); training goes on "
                      "without logging to it (the traceback is in train.log)")


def start_tracker(log: str, run_dir: Path, warn: Callable[[str], None]) -> TrackerFeed | None:
    """Start the run of the tracker `log` names (None for none); a tracker that cannot start ends the run as a
    problem of the environment (UserError, exit 2), before the model is loaded."""
    kind = RUNS.get(log)
    if kind is None:
        return None
    run = kind(run_dir)
    label = TRACKERS[log].label
    try:
        mode, where, hint = run.start()
    except Exception as e:  # noqa: BLE001 - said as a problem with `log`, with what to do
        traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError([Problem("log", f"{label} could not start its run: {type(e).__name__}: {first}", run.fix,
                                 log)]) from e
    info = {"name": log, "label": label, "mode": mode, "where": where, "project": run.project, "run": run.run}
    return TrackerFeed(run, {**info, **({"hint": hint} if hint else {})}, warn)


def run_description(event: dict) -> dict[str, Any]:
    """What a run_started event says that the trainer's callbacks do not log: the run's choices and its data."""
    config = event.get("config") if isinstance(event.get("config"), dict) else {}
    params = config.get("params") if isinstance(config.get("params"), dict) else {}
    batching = event.get("batching") or {}
    kernels = event.get("kernels") or {}
    launch = event.get("launch") or {}
    out = {"trainer": event.get("trainer"), "task": event.get("task"), "base_model": event.get("base_model"),
           "chat_template": (config.get("data") or {}).get("chat_template"),
           "mixed_precision": params.get("mixed_precision"), "quantization": params.get("quantization"),
           "peft": params.get("peft"), "batching": batching.get("mode"), "batching_why": batching.get("why"),
           "liger_kernel": kernels.get("liger"), "block_size": event.get("block_size"),
           "effective_batch_size": event.get("batch_size"), "world_size": launch.get("world_size"),
           "trainable_parameters": event.get("trainable_parameters"),
           "total_parameters": event.get("total_parameters"), "data": event.get("data")}
    return {k: v for k, v in out.items() if v is not None}


def _prefixed(values: dict[str, float], sep: str) -> dict[str, float]:
    return {f"{PREFIX}{sep}{k}": v for k, v in values.items()}


def _flat(values: dict[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        out.update(_flat(v, sep, key) if isinstance(v, dict) else {key: v})
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _without_query(url: str) -> str:
    """A URL fit to show: no query (a write token may be there), no user and password."""
    p = urlparse(url)
    host = p.netloc.rsplit("@", 1)[-1]
    return urlunparse(p._replace(netloc=host, query="", fragment=""))
