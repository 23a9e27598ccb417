"""Nothing lost, nothing silently wrong, in the run directory and the training process: llmtune only touches
files it wrote, never the config it runs, stops a run whose numbers turn non-finite without saving NaN weights,
keeps checkpoints that a resume can trust, and resumes with the counts and the hub token the run started with.
Real training on the tiny model (in this process, as the training process runs it) and real CLI processes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine import checkpoints, control, launch
from engine.errors import ConfigError
from engine.events import EventWriter, read_events
from engine.manifest import Manifest
from engine.run_files import CHECKPOINT_MARKER, CONFIG_FILE, MANIFEST_FILE
from engine.rundir import check_resumable, prepare, resume_token
from support import make_config, run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("in_tmp")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


# ---------------------------------------------------------------- the user's files


def test_a_project_directory_with_the_users_files_is_refused_and_left_as_it_was(in_tmp: Path,
                                                                                 tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft")
    own = Path(cfg.project_name) / "control" / "deploy.sh"
    own.parent.mkdir(parents=True)
    own.write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(ConfigError) as refused:
        prepare(cfg)
    assert "control/deploy.sh" in str(refused.value) and "did not write" in str(refused.value)
    assert own.read_text() == "#!/bin/sh\necho mine\n"
    assert sorted(p.name for p in Path(cfg.project_name).rglob("*")) == ["control", "deploy.sh"]


def test_the_config_file_being_run_is_never_overwritten(in_tmp: Path) -> None:
    run_dir = in_tmp / "runs" / "mine"
    run_dir.mkdir(parents=True)
    mine = run_dir / CONFIG_FILE
    text = (ROOT / "configs" / "sft-chat.yaml").read_text().replace("project_name: runs/sft-chat",
                                                                   f"project_name: {run_dir}")
    text = text.replace("data/chat", str(ROOT / "configs" / "data" / "chat")) + "# my own comment\n"
    mine.write_text(text)
    out = cli("--config", str(mine), "--yes", "--set", "params.max_steps=1", cwd=in_tmp)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "the config file you are running" in out.stderr and "Traceback" not in out.stderr
    assert mine.read_text() == text


def test_a_run_that_never_trained_is_replaced_but_a_file_added_since_is_not(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": False, "block_size": 4})
    code, run_dir, _ = run(cfg)  # nothing to train within 4 tokens: fails before training
    assert code == 2
    assert {CONFIG_FILE, "events.jsonl", MANIFEST_FILE} <= set(Manifest(run_dir).entries)
    (run_dir / "notes.txt").write_text("mine")
    cfg.params.block_size = 64
    with pytest.raises(ConfigError, match="notes.txt"):
        prepare(cfg)
    (run_dir / "notes.txt").unlink()
    assert run(cfg)[0] == 0  # the leftovers were all llmtune's


def test_the_manifest_lists_what_a_run_wrote_and_only_that_is_removed(in_tmp: Path) -> None:
    run_dir = in_tmp / "run"
    run_dir.mkdir()
    (run_dir / "theirs.txt").write_text("x")
    manifest = Manifest(run_dir)
    with manifest.recording():
        (run_dir / "sub").mkdir()
        (run_dir / "sub" / "ours.bin").write_bytes(b"1")
    (run_dir / "sub" / "theirs-too.txt").write_text("y")
    assert manifest.foreign() == ["sub/theirs-too.txt", "theirs.txt"]
    manifest.remove_owned()
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")) == [
        MANIFEST_FILE, "sub", "sub/theirs-too.txt", "theirs.txt"]

    # a checkpoint is booked whole before it is saved: a kill in the middle leaves files no listing recorded
    manifest.add("checkpoint-7", tree=True)
    (run_dir / "checkpoint-7" / "optimizer.pt").parent.mkdir()
    (run_dir / "checkpoint-7" / "optimizer.pt").write_bytes(b"half")
    assert manifest.foreign() == ["sub/theirs-too.txt", "theirs.txt"]
    manifest.remove_owned(under="checkpoint-7")
    assert not (run_dir / "checkpoint-7").exists() and (run_dir / "theirs.txt").exists()


def test_a_run_that_failed_after_writing_its_parameters_can_be_started_again(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": False, "optimizer": "galore_adamw"})
    code, run_dir, _ = run(cfg)  # GaLore's package is not installed: fails once the trainer is built
    assert code == 1 and (run_dir / "training_params.json").exists() and (run_dir / "README.md").exists()
    cfg.params.optimizer = "adamw_torch"
    assert run(cfg)[0] == 0  # everything it left was llmtune's


# ---------------------------------------------------------------- non-finite numbers


def test_a_run_whose_loss_turns_nan_fails_without_saving_nan_weights(in_tmp: Path, tiny_model: Path) -> None:
    import torch
    from safetensors.torch import load_file

    # lr 1e30 is a finite number the validator accepts: the first update throws the weights to infinity
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": False, "lr": 1e30, "warmup_ratio": 0.0,
                                                          "max_steps": 20, "save_steps": 1})
    code, run_dir, events = run(cfg)
    assert code == 1
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "diverged" and "non-finite" in error["message"] and "at step" in error["message"]
    assert events[-1]["status"] == "failed" and events[-1]["step"] < 20  # stopped, not carried on
    losses = [e["loss"] for e in events if e["type"] == "step" and e["loss"] is not None]
    assert any(not math.isfinite(x) for x in losses)  # the log says NaN, as it is: transformers would hide it
    assert not (run_dir / "model.safetensors").exists()  # no result
    kept = checkpoints.complete_checkpoints(run_dir)
    assert kept and str(kept[-1]) in error["message"]
    weights = load_file(kept[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())  # the checkpoint kept is a good one
    assert "did not complete (failed)" in (run_dir / "README.md").read_text()


# ---------------------------------------------------------------- checkpoints and resume


def _set_params(run_dir: Path, **params: object) -> None:
    path = run_dir / CONFIG_FILE
    data = yaml.safe_load(path.read_text())
    data["params"].update(params)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_resume_uses_only_complete_checkpoints_and_keeps_counting_tokens(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": False, "max_steps": 2, "save_steps": 1,
                                                          "save_total_limit": 2})
    code, run_dir, first = run(cfg)
    assert code == 0
    marker = checkpoints.read_marker(run_dir / "checkpoint-2")
    last_step = [e for e in first if e["type"] == "step"][-1]
    assert marker is not None and marker["tokens"] == last_step["tokens"] > 0
    # checkpoint-2 cut short (as a full disk leaves it): resume must take checkpoint-1, and delete the rest
    for name in ("trainer_state.json", "scheduler.pt", CHECKPOINT_MARKER):
        (run_dir / "checkpoint-2" / name).unlink()
    assert checkpoints.last_complete(run_dir) == run_dir / "checkpoint-1"
    at_1 = checkpoints.read_marker(run_dir / "checkpoint-1")
    _set_params(run_dir, max_steps=3)
    code, _, events = run(cfg, resume=True)
    assert code == 0
    resumed = events[len(first):]
    assert any("checkpoint-2 was not saved completely" in e.get("message", "") for e in resumed)
    assert any(e.get("phase") == "resuming" and "checkpoint-1" in e["message"] for e in resumed)
    steps = [e for e in resumed if e["type"] == "step"]
    assert steps[0]["step"] == 2 and steps[0]["tokens"] > at_1["tokens"] > 0  # counted on, not from 0


def test_resume_waits_for_a_stopped_run_to_end_its_process(in_tmp: Path) -> None:
    run_dir = in_tmp / "run"
    (run_dir / "checkpoint-3").mkdir(parents=True)
    checkpoints.write_marker(run_dir / "checkpoint-3", tokens=1, trained_tokens=1)
    (run_dir / CONFIG_FILE).write_text("task: llm-sft\n")
    with EventWriter(run_dir / "events.jsonl") as w:
        w.emit("run_finished", status="stopped", exit_code=130, step=3, metrics={}, output=None, merged=None)
    handle = launch.start(run_dir, command=[sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        assert "is still running" in check_resumable(run_dir)[0].message  # no wait: refused
        assert check_resumable(run_dir, wait=30) == []  # waits for the process to end
    finally:
        launch.kill(handle)


def test_a_killed_runs_model_card_is_ours_and_says_it_did_not_finish(in_tmp: Path) -> None:
    run_dir = in_tmp / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(ROOT / "configs/generic-text.yaml"),
                             "--yes", "--set", "params.max_steps=100000", "--set", "params.save_steps=2",
                             "--set", "params.logging_steps=1", "--set", f"project_name={run_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=in_tmp,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 120
        while not checkpoints.complete_checkpoints(run_dir):
            assert time.time() < deadline, "no checkpoint"
            time.sleep(0.2)
        pid = launch.read_pid(run_dir)
        assert pid
        os.killpg(pid, signal.SIGKILL)  # as the OOM killer would: no handler runs
        proc.wait(timeout=60)
    finally:
        proc.kill()
    card = (run_dir / "README.md").read_text()
    assert "This run has not finished" in card and "[None]" not in card and "## How to load it" in card


# ---------------------------------------------------------------- the hub token on resume


def test_resume_pushes_only_with_the_token_the_run_started_with(in_tmp: Path, tiny_model: Path) -> None:
    cfg = make_config(in_tmp, tiny_model, "sft")
    cfg.hub.push_to_hub, cfg.hub.username, cfg.hub.token = True, "someone", "hf_the_right_token"
    run_dir = prepare(cfg)
    assert not any("hf_the_right_token" in p.read_text() for p in run_dir.rglob("*") if p.is_file())
    # started with a token written in the config file: resume reads it there again
    (in_tmp / "run.yaml").write_text(yaml.safe_dump({"task": "llm-sft", "hub": {"token": "hf_the_right_token"}}))
    env, note = resume_token(run_dir, {})
    assert env == {"HF_TOKEN": "hf_the_right_token"} and "written in" in note and "run.yaml" in note
    assert resume_token(run_dir, {"HF_TOKEN": "hf_the_right_token"})[1].startswith("hub token: the token in $HF_TOKEN")
    with pytest.raises(ConfigError) as wrong:
        resume_token(run_dir, {"HF_TOKEN": "hf_someone_elses"})
    text = str(wrong.value)
    assert "not the token this run started with" in text
    assert "hf_someone_elses" not in text and "hf_the_right_token" not in text
    (in_tmp / "run.yaml").unlink()
    with pytest.raises(ConfigError, match="no token is available"):
        resume_token(run_dir, {})


# ---------------------------------------------------------------- a full disk


def _mount_tmpfs(path: Path, size_mb: int) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                         capture_output=True)
    return out.returncode == 0


def _wait(what: str, condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _events(run_dir: Path) -> list[dict]:
    return read_events(run_dir / "events.jsonl") if (run_dir / "events.jsonl").exists() else []


def test_a_disk_that_fills_during_a_checkpoint_fails_clearly_and_the_run_resumes(in_tmp: Path) -> None:
    disk = in_tmp / "disk"
    if not _mount_tmpfs(disk, 48):
        pytest.skip("needs root to mount a small tmpfs")
    run_dir = disk / "run"
    filler = disk / "filler"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--config", str(ROOT / "configs/generic-text.yaml"), "--set", "params.max_steps=100000",
            "--set", "params.save_steps=1000000", "--set", "params.logging_steps=1", "--set",
            "params.disable_gradient_checkpointing=true", "--set", f"project_name={run_dir}"]
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tui.cli", *args, "--yes"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=in_tmp, env=env)
        _wait("a step", lambda: any(e["type"] == "step" for e in _events(run_dir)))
        control.request(run_dir, "checkpoint")
        _wait("the first checkpoint", lambda: checkpoints.complete_checkpoints(run_dir))
        good = checkpoints.complete_checkpoints(run_dir)[0]
        free = checkpoints.free_bytes(disk)
        assert free is not None
        with open(filler, "wb") as f:  # leave less room than half a checkpoint
            f.write(bytes(max(0, free - checkpoints.size_on_disk(good) // 3)))
        control.request(run_dir, "checkpoint")
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 1, output
        assert "disk full while saving checkpoint-" in output and "needs about" in output, output
        assert f"resume {run_dir}" in output and "Traceback" not in output
        error = next(e for e in _events(run_dir) if e["type"] == "error")
        assert error["kind"] == "disk_full" and "MB free" in error["message"]
        partial = [p for p in checkpoints.all_checkpoints(run_dir) if not checkpoints.is_complete(p)]
        assert partial, "the interrupted checkpoint is there, and not complete"
        assert "Traceback" in (run_dir / "train.log").read_text()  # the log was written to the end

        filler.unlink()
        resumed = subprocess.Popen([sys.executable, "-m", "tui.cli", "resume", str(run_dir)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, cwd=in_tmp, env=env)
        before = len(_events(run_dir))
        _wait("a step after resuming", lambda: any(e["type"] == "step" for e in _events(run_dir)[before:]))
        control.request(run_dir, "stop")
        output, _ = resumed.communicate(timeout=180)
        assert resumed.returncode == 130, output
        assert f"resuming from {good}" in output
        assert f"{partial[0].name} was not saved completely" in output and "deleted it" in output
        # gone, or saved again (complete) if the resumed run stopped at that very step
        assert all(checkpoints.is_complete(p) for p in checkpoints.all_checkpoints(run_dir))
    finally:
        for p in (proc, locals().get("resumed")):
            if p is not None and p.poll() is None:
                p.kill()
        pid = launch.read_pid(run_dir)
        if pid and launch.attach(run_dir):
            os.killpg(pid, signal.SIGKILL)
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_before_training_starts_is_a_warning(in_tmp: Path, tiny_model: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 2**20)
    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": False})
    code, _, events = run(cfg)
    assert code == 0
    warning = next(e for e in events if e["type"] == "log" and "free" in e["message"])
    assert warning["level"] == "warning" and "may fail when saving" in warning["message"]
    assert json.dumps(warning).count("MB") >= 2


# ---------------------------------------------------------------- the event stream


def test_runs_skips_and_counts_events_that_are_not_readable(in_tmp: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from tui.runs_list import print_runs

    run_dir = in_tmp / "runs" / "one"
    with EventWriter(run_dir / "events.jsonl") as w:
        w.emit("status", phase="training", message="going")
        w.emit("step", step=3, total_steps=10, epoch=0.3, loss=1.5, lr=None, grad_norm=None, tokens=9,
               trained_tokens=9, tokens_per_s=None, trained_tokens_per_s=None, elapsed=1.0, memory={})
    with open(run_dir / "events.jsonl", "a") as f:  # valid JSON, not valid events
        f.write('{"v": 1, "type": "step", "time": "NaN", "step": 4}\n')
        f.write('{"v": 1, "type": "step", "time": 1e300, "step": 5}\n')
        f.write('{"v": 1, "type": "step", "time": 1700000000, "step": "six"}\n')
    out = StringIO()
    assert print_runs(in_tmp / "runs", Console(file=out, width=120)) == 0
    text = out.getvalue()
    assert "one" in text and "3/10" in text and "3 line(s) of events.jsonl are not readable" in text


_CHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
from engine.events import EventWriter
events = os.path.join(sys.argv[1], "events.jsonl")
w = EventWriter(events)
w.emit("status", phase="training", message="going")
time.sleep(0.6)
os.unlink(events)  # someone deletes the file while the run goes on
time.sleep(0.6)
if sys.argv[2] == "final":
    w.emit("run_finished", status="completed", exit_code=0, step=1, metrics={{}}, output=None, merged=None)
"""


@pytest.mark.parametrize("final", [True, False], ids=["final-event-after", "no-event-after"])
def test_following_a_run_whose_events_file_is_deleted(in_tmp: Path, final: bool) -> None:
    from io import StringIO

    from rich.console import Console

    from tui.headless import follow

    run_dir = in_tmp / "run"
    script = _CHILD.format(root=str(ROOT))
    handle = launch.start(run_dir, command=[sys.executable, "-c", script, str(run_dir),
                                            "final" if final else "none"])
    out = StringIO()
    code = follow(handle, console=Console(file=out, width=200), poll_interval=0.05)
    text = out.getvalue()
    assert code == 0, text
    if final:  # the writer made the file again: the follower read the end as usual
        assert "completed" in text and "without a final event" not in text
    else:
        assert "was deleted while the run was going on" in text and "exit code 0 (completed)" in text
        assert "without a final event" not in text


def test_yes_refuses_a_run_with_nothing_to_train_before_starting_it(in_tmp: Path) -> None:
    run_dir = in_tmp / "run"
    out = cli("--config", str(ROOT / "configs/sft-chat.yaml"), "--yes", "--set", "params.block_size=16",
              "--set", f"project_name={run_dir}", cwd=in_tmp)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "nothing to train" in out.stderr and "no training example has a trained token" in out.stderr
    assert "started the training process" not in out.stdout and not run_dir.exists()
