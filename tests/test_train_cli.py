"""`llmtune-tui --config FILE --yes` and `llmtune-tui demo` as a user runs them: real CLI processes that start
real training processes on the tiny model. Also every example in configs/ trains (in this process, briefly).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.events import read_events
from engine.run_files import CONFIG_FILE
from engine.rundir import prepare
from engine.train import train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "autotrain-orpo-llama3.yaml")
QUICK = ["--set", "params.max_steps=2", "--set", "params.disable_gradient_checkpointing=true"]


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tui.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for_step(run_dir: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "events.jsonl").exists() and any(e["type"] == "step"
                                                       for e in read_events(run_dir / "events.jsonl")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no step event in {run_dir} after {timeout}s")


def wait_finished(run_dir: Path, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        events = read_events(run_dir / "events.jsonl")
        if events and events[-1]["type"] == "run_finished":
            return events[-1]
        time.sleep(0.2)
    raise AssertionError(f"the run in {run_dir} did not finish in {timeout}s")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_config_trains(example: Path, tmp_path: Path) -> None:
    cfg = load_config(example, ["params.max_steps=1", "params.disable_gradient_checkpointing=true",
                                f"project_name={tmp_path / 'run'}"], check_env=True)
    run_dir = prepare(cfg)
    assert train(run_dir) == 0, (run_dir / "events.jsonl").read_text()[-2000:]
    assert read_events(run_dir / "events.jsonl")[-1]["status"] == "completed"


def test_yes_trains_headless_and_the_resolved_config_reruns(tmp_path: Path) -> None:
    out = cli("--config", str(ROOT / "configs/sft-chat.yaml"), "--yes", *QUICK, "--set",
              f"project_name={tmp_path / 'first'}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "config valid" in text and "data train" in text and "started the training process" in text
    assert "run started: sft on llmtune/tiny-random" in text and "step 2/2" in text
    assert "eval step 2" in text and "completed: 2/2 steps" in text and "Traceback" not in text + out.stderr
    first = tmp_path / "first"
    assert (first / "adapter_model.safetensors").exists() and (first / "train.log").stat().st_size > 0
    # the run directory's config.yaml reproduces the run, from any directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = cli("--config", str(first / CONFIG_FILE), "--yes", "--set", f"project_name={tmp_path / 'second'}",
                cwd=elsewhere)
    assert again.returncode == 0, again.stdout + again.stderr
    finals = [read_events(d / "events.jsonl")[-1] for d in (first, tmp_path / "second")]
    assert finals[0]["metrics"]["final_loss"] == pytest.approx(finals[1]["metrics"]["final_loss"], rel=1e-4)
    # ... but not into a directory that holds results
    refused = cli("--config", str(first / CONFIG_FILE), "--yes", cwd=elsewhere)
    assert refused.returncode == 2 and "is not free" in refused.stderr and "project_name" in refused.stderr


def test_bad_data_exits_2_before_anything_starts(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"messages": []}\n{"messages": "oops"\n')
    (tmp_path / "run.yaml").write_text(f"task: llm-sft\nbase_model: {tiny_model}\nproject_name: out\n"
                                       "data:\n  path: .\n  column_mapping: {text_column: messages}\n")
    out = cli("--config", "run.yaml", "--yes", cwd=tmp_path)
    assert out.returncode == 2 and "train.jsonl:2: not valid JSON" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "out").exists()


def test_a_failing_run_exits_1_with_the_reason_and_the_log(tmp_path: Path) -> None:
    out = cli("--config", str(ROOT / "configs/generic-text.yaml"), "--yes", *QUICK, "--set",
              "params.optimizer=galore_adamw", "--set", f"project_name={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 1
    assert "training failed" in out.stdout and "galore" in out.stdout.lower()
    assert str(tmp_path / "run" / "train.log") in out.stdout
    assert "Traceback" in (tmp_path / "run" / "train.log").read_text()  # the traceback is in the log only


def test_ctrl_c_stops_the_run_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_cli("--config", str(ROOT / "configs/generic-text.yaml"), "--yes", "--set", "params.max_steps=100000",
                     "--set", "params.logging_steps=1", "--set", f"project_name={run_dir}", cwd=tmp_path)
    try:
        wait_for_step(run_dir)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert "stopping: the run saves a checkpoint" in output
    events = read_events(run_dir / "events.jsonl")
    final = events[-1]
    assert final["status"] == "stopped" and final["exit_code"] == 130
    assert (run_dir / f"checkpoint-{final['step']}" / "model.safetensors").exists()
    saved = [e["step"] for e in events if e["type"] == "checkpoint"]
    assert saved[-1] == final["step"] and len(saved) == len(set(saved))  # the epoch's end after a stop
    # does not save the step the stop saved a second time
    assert not (run_dir / "control" / "stop").exists()  # the request was handled and cleared


def test_the_run_survives_its_terminal_going_away(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_cli("--config", str(ROOT / "configs/generic-text.yaml"), "--yes", "--set", "params.max_steps=40",
                     "--set", "params.logging_steps=1", "--set", f"project_name={run_dir}", cwd=tmp_path)
    wait_for_step(run_dir)
    proc.kill()  # the CLI (the terminal's process) dies at once
    proc.wait()
    final = wait_finished(run_dir)
    assert final["status"] == "completed" and final["step"] == 40


def test_demo_trains_and_answers(tmp_path: Path) -> None:
    out = cli("demo", "--set", "params.epochs=1", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "completed: 60/60 steps" in out.stdout and "The trained model answers" in out.stdout
    assert out.stdout.count("  A: ") == 3
    runs = list((tmp_path / "runs").glob("demo-*"))
    assert len(runs) == 1 and json.loads((runs[0] / "training_params.json").read_text())["epochs"] == 1


def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_cli("--config", str(ROOT / "configs/generic-text.yaml"), "--yes", "--set", "params.max_steps=100000",
                     "--set", "params.logging_steps=1", "--set", f"project_name={run_dir}", cwd=tmp_path)
    wait_for_step(run_dir)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    stopped_at = read_events(run_dir / "events.jsonl")[-1]["step"]
    refused = cli("--config", str(run_dir / CONFIG_FILE), "--yes", cwd=tmp_path)  # never overwritten
    assert refused.returncode == 2 and f"llmtune-tui resume {run_dir}" in refused.stderr
    proc = start_cli("resume", str(run_dir), cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline:  # the resumed segment's steps continue from the checkpoint
        events = read_events(run_dir / "events.jsonl")
        starts = [i for i, e in enumerate(events) if e["type"] == "run_started"]
        steps = [e["step"] for e in events[starts[-1]:] if e["type"] == "step"] if len(starts) == 2 else []
        if steps:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert steps and steps[0] == stopped_at + 1, (stopped_at, steps)
    assert "resuming" in output and "resuming from" in (run_dir / "train.log").read_text()
    final = read_events(run_dir / "events.jsonl")[-1]
    assert final["status"] == "stopped" and final["step"] > stopped_at


def test_resume_refuses_a_run_with_nothing_to_resume(tmp_path: Path) -> None:
    out = cli("resume", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "cannot resume" in out.stderr and "no config.yaml" in out.stderr


def test_runs_lists_each_run_with_its_status_progress_and_losses(tmp_path: Path) -> None:
    fixtures = ROOT / "tests" / "fixtures" / "events"
    for name in ("normal", "failed", "stopped"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "events.jsonl").write_text((fixtures / f"{name}.jsonl").read_text())
    (tmp_path / "runs" / "cut").mkdir()  # no final event and no process: it ended without saying so
    lines = (fixtures / "normal.jsonl").read_text().splitlines(keepends=True)[:12]
    (tmp_path / "runs" / "cut" / "events.jsonl").write_text("".join(lines))
    out = cli("runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:] if line.strip()}
    assert rows["normal"][1:5] == ["completed", "sft", "24/24", "10.1878"] and rows["normal"][5] == "10.2874"
    assert rows["failed"][1:4] == ["failed", "default", "11/184"] and rows["failed"][4] == "nan"
    assert rows["stopped"][1:4] == ["stopped", "orpo", "31/250"]
    assert rows["cut"][1:4] == ["ended?", "sft", "8/24"]
    assert "no runs under" in cli("runs", "nowhere", cwd=tmp_path).stdout
