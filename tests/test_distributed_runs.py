"""Two training processes over gloo on this CPU machine, launched by `accelerate launch` through the real CLI:
one event stream, no step twice, world size 2, one saved model that loads, a stop that reaches both ranks and a
resume on two processes, and a rank that fails ending the run with its error instead of a hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_train_cli import ROOT, cli, wait_for_step

from engine.events import read_events

TWO = ["--set", "params.num_processes=2", "--set", "params.disable_gradient_checkpointing=true"]


def steps_of(events: list[dict]) -> list[int]:
    return [e["step"] for e in events if e["type"] == "step"]


def check_one_stream(run_dir: Path) -> list[dict]:
    events = read_events(run_dir / "events.jsonl")
    started = [e for e in events if e["type"] == "run_started"]
    assert len(started) == 1 and started[0]["launch"]["world_size"] == 2 and started[0]["launch"]["backend"] == "ddp"
    assert "accelerate.commands.launch" in started[0]["launch"]["command"]
    steps = steps_of(events)
    assert steps == sorted(set(steps)), steps  # rank 1 writes no step events
    return events


def test_sft_on_two_processes_is_one_run_with_one_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = cli("--config", str(ROOT / "configs/sft-chat.yaml"), "--yes", *TWO, "--set", "params.max_steps=4",
              "--set", "params.logging_steps=1", "--set", f"project_name={run_dir}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 processes, ddp" in out.stdout and ", 2 processes (ddp)" in out.stdout  # the summary, run_started
    events = check_one_stream(run_dir)
    final = events[-1]
    assert final["status"] == "completed" and final["step"] == 4
    started = next(e for e in events if e["type"] == "run_started")
    assert started["batch_size"] == 2 * 1 * 2  # per device x accumulation x world size
    # tokens are every rank's: more than one process alone trains per step
    steps = [e for e in events if e["type"] == "step" and e["loss"] is not None]
    assert steps[-1]["tokens"] > 0 and steps[-1]["tokens_per_s"] > 0
    log = (run_dir / "train.log").read_text()
    assert "[rank 1] " in log and "Traceback" not in log
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(run_dir)  # the one saved adapter loads
    assert model is not None and not (run_dir / "checkpoint-4" / "rank1").exists()


def test_dpo_on_two_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = cli("--config", str(ROOT / "configs/dpo.yaml"), "--yes", *TWO, "--set", "params.max_steps=3",
              "--set", "params.logging_steps=1", "--set", f"project_name={run_dir}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    events = check_one_stream(run_dir)
    assert events[-1]["status"] == "completed" and events[-1]["step"] == 3
    assert any("rewards/margins" in (e.get("metrics") or {}) for e in events if e["type"] == "step")


def test_a_stop_reaches_both_ranks_and_the_run_resumes_on_two(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(ROOT / "configs/generic-text.yaml"),
                             "--yes", *TWO, "--set", "params.max_steps=100000", "--set", "params.logging_steps=1",
                             "--set", f"project_name={run_dir}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for_step(run_dir)
        proc.send_signal(signal.SIGINT)  # the CLI asks for a stop: rank 0 reads it, the sum tells rank 1
        output, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    events = check_one_stream(run_dir)
    stopped_at = events[-1]["step"]
    assert events[-1]["status"] == "stopped" and (run_dir / f"checkpoint-{stopped_at}" / "model.safetensors").exists()
    # resume runs on the same two processes (the run's config.yaml holds num_processes: 2) and continues
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "resume", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            events = read_events(run_dir / "events.jsonl")
            starts = [i for i, e in enumerate(events) if e["type"] == "run_started"]
            if len(starts) == 2 and steps_of(events[starts[-1]:]):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    events = read_events(run_dir / "events.jsonl")
    second = events[[i for i, e in enumerate(events) if e["type"] == "run_started"][-1]:]
    assert second[0]["launch"]["world_size"] == 2 and steps_of(second)[0] == stopped_at + 1
    assert second[-1]["status"] == "stopped" and "resumes on" not in (run_dir / "train.log").read_text()


FAILING_RANK = '''
import os
if os.environ.get("RANK") == "1":
    from engine.trainers import progress

    original = progress.ProgressCallback.on_step_end

    def failing(self, args, state, control, **kwargs):
        if state.global_step >= 2:
            raise RuntimeError("rank 1 broke on purpose")
        return original(self, args, state, control, **kwargs)

    progress.ProgressCallback.on_step_end = failing
'''


def test_a_failing_rank_ends_the_run_with_its_error(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAILING_RANK)  # imported at start-up by every process of the run
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(ROOT / "configs/generic-text.yaml"),
                          "--yes", *TWO, "--set", "params.max_steps=50", "--set", "params.logging_steps=1",
                          "--set", f"project_name={run_dir}"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, env={**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"})
    assert out.returncode == 1, out.stdout + out.stderr
    events = read_events(run_dir / "events.jsonl")
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["rank"] == 1 and "rank 1 broke on purpose" in errors[0]["message"]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "failed"
    assert "rank 1 broke on purpose" in out.stdout


def processes_of(run_dir: Path) -> list[int]:
    """The live processes of a run (its launcher and ranks carry LLMTUNE_RUN_DIR in their environment)."""
    from engine.launch import RUN_DIR_ENV, _pid_alive

    mark = f"{RUN_DIR_ENV}={run_dir.resolve()}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0") and _pid_alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_killing_a_run_ends_the_launcher_and_every_rank(tmp_path: Path) -> None:
    from engine import launch
    from engine.config import load_config
    from tui.train_start import start_run

    cfg = load_config(ROOT / "configs/generic-text.yaml", ["params.num_processes=2", "params.max_steps=100000",
                                                          "params.logging_steps=1", f"project_name={tmp_path / 'run'}"],
                      check_env=True)
    handle = start_run(cfg)
    run_dir = handle.run_dir
    try:
        wait_for_step(run_dir)
        assert len(processes_of(run_dir)) >= 3  # the launcher and two ranks
        launch.kill(handle)
    finally:
        launch.kill(handle)
    deadline = time.time() + 30
    while processes_of(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert processes_of(run_dir) == []
    final = read_events(run_dir / "events.jsonl")[-1]
    assert final["type"] == "run_finished" and final["status"] == "killed"


def test_resuming_on_another_process_count_says_so(tmp_path: Path) -> None:
    import yaml

    run_dir = tmp_path / "run"
    first = cli("--config", str(ROOT / "configs/generic-text.yaml"), "--yes", "--set", "params.max_steps=2",
                "--set", "params.save_steps=1", "--set", f"project_name={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (run_dir / "events.jsonl").write_text("")  # as if it had stopped: resume refuses a completed run
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["params"].update(num_processes=2, max_steps=4)  # edited by hand: two processes from now on
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = cli("resume", str(run_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "saved by 1 process(es) and the run resumes on 2" in out.stdout
    events = read_events(run_dir / "events.jsonl")
    assert events[-1]["status"] == "completed" and steps_of(events)[0] == 3
