"""Experiment trackers (`log:`; engine.trackers, engine.trainers.tracking), each with its package installed here:
a run of a few steps on the tiny model logs offline (W&B) or locally (MLflow's mlruns/, Trackio's database), and
the tracker's own files hold the trainer's loss series, what llmtune adds (trained tokens/s, the run's choices
and data, the final metrics) and the outcome; the run_started event says where. No secret from the environment
reaches any file the run or the tracker writes. Without the package (made unimportable in the CLI's process,
nothing uninstalled), the real CLI refuses the run before anything starts, naming `log`, the package and the
install command; so does W&B online without a key.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.config import parse_config_text
from engine.rundir import child_env
from engine.trackers import environment_problems
from support import ROOT, make_config, run
from tui.format import run_started_lines

SECRETS = {"HF_TOKEN": "hf_SECRETtokenNeverWritten0123456789",
           "WANDB_API_KEY": "SECRETwandbkeyNeverWritten0123456789abcd"}


@pytest.fixture
def tracked(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network, the trackers' files under the test's directory, secrets in the environment."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(in_tmp / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (in_tmp / "wandb-dir").mkdir()
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(name, "")  # recorded, so that what the run sets is undone after the test
        monkeypatch.delenv(name)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return in_tmp


def trained(directory: Path, tiny_model: Path, log: str) -> tuple[Path, list[dict], dict]:
    """3 steps of 2 epochs of 2: evaluated at step 2 and, as the run ends between evaluations, at step 3 (after
    the trainer's callbacks saw training end)."""
    cfg = make_config(directory, tiny_model, "sft", params={"peft": True, "quantization": None, "max_steps": 3,
                                                            "valid_fraction": 0.34})
    cfg.log = log
    cfg.hub.token = SECRETS["HF_TOKEN"]  # a literal token: the run gets it in its environment, never in a file
    assert child_env(cfg) == {"HF_TOKEN": SECRETS["HF_TOKEN"]}
    code, run_dir, events = run(cfg)
    assert code == 0, (run_dir / "train.log").read_text()[-3000:]
    started = next(e for e in events if e["type"] == "run_started")
    return run_dir, events, started["tracker"]


def losses(events: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events if e["type"] == "step" and e["loss"] is not None}


def eval_losses(events: list[dict]) -> dict[int, float]:
    return {e["step"]: e["eval_loss"] for e in events if e["type"] == "eval"}


def train_examples(events: list[dict]) -> int:
    return next(e for e in events if e["type"] == "run_started")["data"]["train"]["examples"]


def assert_no_secret(*directories: Path) -> None:
    for directory in directories:
        files = [p for p in directory.rglob("*") if p.is_file()]
        assert files, directory
        for path in files:
            data = path.read_bytes()
            for name, value in SECRETS.items():
                assert value.encode() not in data, f"{name} in {path}"


# ---------------------------------------------------------------- W&B


def wandb_records(path: Path) -> list[Any]:
    """The records of a .wandb file: W&B's LevelDB-style log (32 KiB blocks of chunks, each with a 7-byte header:
    CRC, length, type full/first/middle/last) after a 7-byte file header, each record a protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunk, out = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # a block's padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def _items(items: Any) -> dict[str, Any]:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_wandb_logs_offline_with_the_loss_series_and_llmtunes_values(tracked: Path, tiny_model: Path) -> None:
    run_dir, events, where = trained(tracked, tiny_model, "wandb")
    assert where["mode"] == "offline" and where["project"] == where["run"] == "run"
    offline = Path(where["where"])
    assert offline.parent == tracked / "wandb-dir" / "wandb" and where["hint"] == f"upload later: wandb sync {offline}"
    records = wandb_records(next(offline.glob("run-*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    logged = {h["train/global_step"]: h["train/loss"] for h in history if "train/loss" in h}
    assert logged == pytest.approx(losses(events)) and len(logged) == 3
    evaluated = {h["train/global_step"]: h["eval/loss"] for h in history if "eval/loss" in h}
    assert evaluated == pytest.approx(eval_losses(events)) and sorted(evaluated) == [2, 3]
    assert any(h.get("llmtune/trained_tokens_per_s", 0) > 0 for h in history)
    config: dict[str, Any] = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update(_items(r.config.update))
    described = config["llmtune"]["value"] if "value" in config["llmtune"] else config["llmtune"]
    assert described["batching"] and "mixed_precision" in described
    assert described["data"]["train"]["examples"] == train_examples(events)
    summary: dict[str, Any] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    final = events[-1]["metrics"]
    assert summary["llmtune/status"] == "completed"
    assert summary["llmtune/final/final_loss"] == pytest.approx(final["final_loss"])
    assert summary["llmtune/final/trained_tokens"] > 0
    assert kinds[-1] == "exit" and records[-1].exit.exit_code == 0
    assert_no_secret(run_dir, tracked / "wandb-dir")


# ---------------------------------------------------------------- MLflow


def test_mlflow_logs_to_a_local_mlruns_with_the_loss_series_and_llmtunes_values(tracked: Path,
                                                                                 tiny_model: Path) -> None:
    run_dir, events, where = trained(tracked, tiny_model, "mlflow")
    mlrun = Path(where["where"])
    assert where["mode"] == "local" and mlrun.parent.parent == tracked / "mlruns"  # mlruns/EXPERIMENT/RUN
    assert where["hint"] == f"view: mlflow ui --backend-store-uri {(tracked / 'mlruns').as_uri()}"
    series = {int(step): float(value) for _, value, step in
              (line.split() for line in (mlrun / "metrics" / "loss").read_text().splitlines())}
    assert series == pytest.approx(losses(events)) and len(series) == 3
    evaluated = {int(step): float(value) for _, value, step in
                 (line.split() for line in (mlrun / "metrics" / "eval_loss").read_text().splitlines())}
    assert evaluated == pytest.approx(eval_losses(events)) and sorted(evaluated) == [2, 3]
    assert [d.name for d in mlrun.parent.iterdir() if d.is_dir()] == [mlrun.name]  # one run: the last eval too
    assert (mlrun / "metrics" / "llmtune" / "trained_tokens_per_s").read_text().strip()
    assert float((mlrun / "metrics/llmtune/final/final_loss").read_text().split()[1]) == pytest.approx(
        events[-1]["metrics"]["final_loss"])
    assert (mlrun / "params" / "llmtune.data.train.examples").read_text() == str(train_examples(events))
    assert (mlrun / "params" / "llmtune.batching").read_text()
    assert (mlrun / "tags" / "llmtune.status").read_text() == "completed"
    assert (mlrun / "tags" / "mlflow.runName").read_text() == "run"
    assert "status: 3" in (mlrun / "meta.yaml").read_text()  # FINISHED
    assert_no_secret(run_dir, tracked / "mlruns")


# ---------------------------------------------------------------- Trackio


def test_trackio_logs_locally_with_the_loss_series_and_llmtunes_values(tracked: Path, tiny_model: Path) -> None:
    run_dir, events, where = trained(tracked, tiny_model, "trackio")
    db = Path(where["where"])
    assert where["mode"] == "local" and db.name == "run.db" and where["hint"] == 'view: trackio show --project "run"'
    with sqlite3.connect(db) as con:
        rows = [json.loads(m) for (m,) in con.execute("select metrics from metrics where run_name = 'run'")]
        configs = [json.loads(c) for (c,) in con.execute("select config from configs where run_name = 'run'")]
    logged = {r["train/global_step"]: r["train/loss"] for r in rows if "train/loss" in r}
    assert logged == pytest.approx(losses(events)) and len(logged) == 3
    evaluated = {r["train/global_step"]: r["eval/loss"] for r in rows if "eval/loss" in r}
    assert evaluated == pytest.approx(eval_losses(events)) and sorted(evaluated) == [2, 3]
    assert any(r.get("llmtune/trained_tokens_per_s", 0) > 0 for r in rows)
    assert any(r.get("llmtune/final/final_loss") == pytest.approx(events[-1]["metrics"]["final_loss"]) for r in rows)
    # the run's config survives its openings (each replaces it): transformers' and llmtune's
    assert len(configs) == 1 and configs[0]["llmtune"]["data"]["train"]["examples"] == train_examples(events)
    assert configs[0]["learning_rate"] == pytest.approx(1e-3)
    assert_no_secret(run_dir, db.parent)


def test_tensorboard_says_where_it_logs(tracked: Path, tiny_model: Path) -> None:
    run_dir, _, where = trained(tracked, tiny_model, "tensorboard")
    assert where == {"name": "tensorboard", "label": "TensorBoard", "mode": "local", "where": str(run_dir / "runs"),
                     "project": "run", "run": "run", "hint": f"view: tensorboard --logdir {run_dir / 'runs'}"}
    assert list((run_dir / "runs").rglob("events.out.tfevents.*"))


# ---------------------------------------------------------------- the real CLI


def cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def test_log_wandb_from_autotrains_flags_trains_offline_and_the_header_says_where(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true", **SECRETS}
    out = cli("llm", "--train", "--log", "wandb", "--project-name", "runs/w", "--model", "llmtune/tiny-random",
              "--data-path", str(ROOT / "configs/data/chat"), "--text-column", "messages", "--trainer", "sft",
              "--chat-template", "tokenizer", "--peft", "--quantization", "None", "--max-steps", "2",
              "--batch-size", "2", "--block-size", "128", "--disable-gc", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    offline = next((tmp_path / "wandb").glob("offline-run-*"))  # W&B's own place: ./wandb
    assert f"tracker: W&B (offline): {offline}" in out.stdout
    assert f"upload later: wandb sync {offline}" in out.stdout and "completed: 2/2 steps" in out.stdout
    history = [_items(r.history.item) for r in wandb_records(next(offline.glob("run-*.wandb")))
               if r.WhichOneof("record_type") == "history"]
    assert [h["train/global_step"] for h in history if "train/loss" in h] == [1, 2]
    assert_no_secret(tmp_path / "runs", tmp_path / "wandb")


BLOCKER = """\
import os, sys
for name in os.environ.get("LLMTUNE_TEST_UNINSTALLED", "").split(","):
    if name:
        sys.modules[name] = None  # as if not installed: `import` fails, find_spec finds nothing
"""


@pytest.mark.parametrize(("log", "package", "install"), [
    ("wandb", "wandb", "pip install 'llmtune[wandb]'"),
    ("mlflow", "mlflow-skinny", "pip install 'llmtune[mlflow]'"),
    ("trackio", "trackio", "pip install 'llmtune[trackio]'"),
    ("tensorboard", "tensorboard", "pip install tensorboard"),
])
def test_a_tracker_that_is_not_installed_is_refused_before_anything_starts(tmp_path: Path, log: str, package: str,
                                                                          install: str) -> None:
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'blocker'}{os.pathsep}{ROOT}", "WANDB_MODE": "offline",
           "LLMTUNE_TEST_UNINSTALLED": log}
    out = cli("--config", str(ROOT / "configs/sft-chat.yaml"), "--yes", "--set", f"log={log}", "--set",
              f"project_name={tmp_path / 'run'}", cwd=tmp_path, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert f"log = '{log}'" in text and f"needs the {package} package; it is not installed here" in text
    assert install in text and "or set log: none" in text and "Traceback" not in text
    assert not (tmp_path / "run").exists()  # nothing started


def test_the_flag_is_blamed_when_the_tracker_came_from_log(tmp_path: Path) -> None:
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'blocker'}{os.pathsep}{ROOT}", "LLMTUNE_TEST_UNINSTALLED": "wandb"}
    out = cli("llm", "--train", "--log", "wandb", "--project-name", "runs/w", "--model", "llmtune/tiny-random",
              "--data-path", str(ROOT / "configs/data/chat"), "--text-column", "messages", "--trainer", "sft",
              cwd=tmp_path, env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "(from --log) logs to W&B, which needs the wandb package" in out.stdout + out.stderr
    assert not (tmp_path / "runs").exists()


def test_wandb_online_without_a_key_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"))  # no `wandb login`
    out = cli("--config", str(ROOT / "configs/sft-chat.yaml"), "--dry-run", "--set", "log=wandb", cwd=tmp_path,
              env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "W&B has no API key here" in text and "export WANDB_API_KEY=..." in text and "WANDB_MODE=offline" in text
    offline = cli("--config", str(ROOT / "configs/sft-chat.yaml"), "--dry-run", "--set", "log=wandb", cwd=tmp_path,
                  env={**env, "WANDB_MODE": "offline"})
    assert offline.returncode == 0, offline.stdout + offline.stderr


# ---------------------------------------------------------------- pieces


def test_mlflow_set_up_so_that_the_run_would_fail_is_refused(tmp_path: Path) -> None:
    cfg = parse_config_text("task: llm-sft\nbase_model: llmtune/tiny-random\nlog: mlflow\n")

    def refusal(**environ: str) -> str:
        return " ".join(p.render() for p in environment_problems(cfg, environ))

    assert refusal() == ""
    assert "DISABLE_MLFLOW_INTEGRATION" in refusal(DISABLE_MLFLOW_INTEGRATION="true")
    assert "needs SQLAlchemy" in refusal(MLFLOW_TRACKING_URI="sqlite:///mlflow.db") or _has("sqlalchemy")
    assert refusal(MLFLOW_TRACKING_URI="http://localhost:5000") == ""
    assert "not know" in " ".join(p.render() for p in environment_problems(
        parse_config_text("task: llm-sft\nbase_model: llmtune/tiny-random\nlog: wandb\n"), {"WANDB_MODE": "offlin"}))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_the_header_says_where_the_run_is_logged() -> None:
    event = {"trainer": "sft", "base_model": "m", "device": {"kind": "cpu"}, "total_steps": 2, "epochs": 1,
             "batch_size": 2, "tracker": {"name": "wandb", "label": "W&B", "mode": "offline",
                                          "where": "/w/wandb/offline-run-1", "hint": "upload later: wandb sync X"}}
    lines = run_started_lines(event)
    assert lines[1:] == ["tracker: W&B (offline): /w/wandb/offline-run-1", "tracker: upload later: wandb sync X"]
    online = {**event, "tracker": {"label": "W&B", "mode": "online", "where": "https://wandb.ai/me/p/runs/1"}}
    assert run_started_lines(online)[1:] == ["tracker: W&B (online): https://wandb.ai/me/p/runs/1"]


async def test_the_dashboard_header_says_where_the_run_is_logged(tmp_path: Path) -> None:
    from engine.events import read_events
    from support import until
    from tui.app import WizardApp
    from tui.dashboard import DashboardScreen

    events = read_events(ROOT / "tests/fixtures/events/normal.jsonl")
    where = {"name": "wandb", "label": "W&B", "mode": "online", "where": "https://wandb.ai/me/run/runs/abc",
             "project": "run", "run": "run"}
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "events.jsonl").write_text("".join(json.dumps({**e, "tracker": where} if e["type"] == "run_started"
                                                             else e) + "\n" for e in events))
    app = WizardApp(attach=(run_dir, None))
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen) and "W&B" in app.screen.sub_title,
                    "the tracker in the header", workers=False)
        assert app.screen.sub_title.endswith(" · W&B (online): https://wandb.ai/me/run/runs/abc")


def test_a_tracker_that_cannot_start_ends_the_run_before_the_model_loads(tracked: Path, tiny_model: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = make_config(tracked, tiny_model, "sft", params={"peft": True, "quantization": None})
    cfg.log = "mlflow"
    code, _, events = run(cfg)
    error = next(e for e in events if e["type"] == "error")
    assert code == 2 and error["kind"] == "user" and "MLflow could not start its run" in error["message"]
    assert "MLFLOW_TRACKING_URI" in error["message"]  # the fix
    assert not any(e["type"] == "status" and e["phase"] == "loading model" for e in events)


class Failing:
    """A tracker whose server went away after the start."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def config(self, values: dict) -> None:
        pass

    def metrics(self, values: dict, step: int) -> None:
        raise ConnectionError("the server went away")

    def end(self, status: str, exit_code: int, final: dict, step: int) -> None:
        self.ended.append(status)


def test_a_tracker_failing_while_training_is_said_once_and_the_run_goes_on() -> None:
    from engine.trainers.tracking import TrackerFeed

    warnings: list[str] = []
    failing = Failing()
    feed = TrackerFeed(failing, {"label": "MLflow"}, warnings.append)  # type: ignore[arg-type]
    for step in (1, 2, 3):
        feed({"type": "step", "step": step, "loss": 1.0, "tokens": 10 * step, "trained_tokens": 5 * step})
    feed({"type": "run_finished", "status": "completed", "exit_code": 0, "step": 3, "metrics": {}})
    assert warnings == ["MLflow could not log the step's metrics (ConnectionError: the server went away); training "
                        "goes on without logging to it (the traceback is in train.log)"]
    assert failing.ended == ["completed"]  # the end is still tried: the run is marked as ended where it can be
