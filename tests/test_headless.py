"""Launching detached runs and following them headless: real child processes replaying recorded events."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from engine import control, launch
from engine.launch import RunHandle
from tui.headless import PlainDisplay, follow

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "events"
REPLAY = Path(__file__).with_name("replay_events.py")


def replay(run_dir: Path, fixture: str, *flags: str) -> RunHandle:
    command = [sys.executable, str(REPLAY), str(run_dir), str(FIXTURES / fixture), *flags]
    return launch.start(run_dir, command=command)


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def follow_plain(handle: RunHandle) -> tuple[int, str]:
    out = StringIO()
    code = follow(handle, console=Console(file=out, force_terminal=False, width=100), poll_interval=0.02)
    return code, out.getvalue()


def test_headless_imports_stay_light() -> None:
    code = ("import sys, tui.headless; "
            "print(sorted(m for m in ('torch', 'transformers', 'textual', 'engine.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("fixture, code", [("normal.jsonl", 0), ("with_eval.jsonl", 0), ("failed.jsonl", 1),
                                           ("user_error.jsonl", 2), ("stopped.jsonl", 130)])
def test_exit_code_follows_how_the_run_ended(tmp_path: Path, fixture: str, code: int) -> None:
    assert follow_plain(replay(tmp_path, fixture))[0] == code


STEP_LINE = re.compile(r"^step (\d+)/120 epoch \d\.\d\d loss \d\.\d{4} lr \d\.\d\de[-+]\d\d tok/s \d+ "
                       r"eta \d:\d\d:\d\d mem \d+\.\dG/79\.2G$")


def test_plain_output_has_throttled_steps_and_every_other_line(tmp_path: Path) -> None:
    code, out = follow_plain(replay(tmp_path, "with_eval.jsonl"))
    assert code == 0
    lines = out.splitlines()
    steps = [int(m[1]) for line in lines if (m := STEP_LINE.match(line))]
    assert steps[0] == 1 and steps[-1] == 120 and steps == sorted(steps)
    assert 10 < len(steps) < 60  # about one per 5 s of the run's time, not one per step
    assert len([line for line in lines if line.startswith("step ")]) == len(steps)  # all in the documented form
    assert "loading model: Qwen/Qwen2.5-1.5B-Instruct on cuda (bf16, LoRA r 16)" in lines
    assert "warning: train.jsonl: 6 rows have an empty rejected response and were dropped" in lines
    assert any(line.startswith("run started: dpo on Qwen/Qwen2.5-1.5B-Instruct (cuda NVIDIA H100 80GB HBM3)")
               for line in lines)
    assert "data train: 960 examples, 801,244 tokens (402,117 trained), 14 truncated, 6 rows dropped" in lines
    evals = [line for line in lines if line.startswith("eval ")]
    assert evals[0].startswith("eval step 60 epoch 1.00 eval_loss 0.3915 rewards/chosen -0.2131")
    assert lines[lines.index(evals[0]) - 1].startswith("step 60/120")  # its step's metrics just above
    assert "checkpoint step 120: /data/runs/qwen-dpo/checkpoint-120" in lines
    # elapsed: wall time, loading included
    assert re.search(r"^completed: 120/120 steps, final loss 0\.\d{4}, eval loss 0\.3377, elapsed 0:03:20$", out, re.M)
    assert "output: /data/runs/qwen-dpo\nmerged: /data/runs/qwen-dpo/merged" in out


def test_steps_between_logging_steps_show_the_last_logged_metrics() -> None:
    """Progress-only step events carry loss/lr/grad_norm as null; the display keeps the last logged ones."""
    out = StringIO()
    display = PlainDisplay(Console(file=out, force_terminal=False, width=200))
    base = {"type": "step", "total_steps": 2, "epoch": 0.5, "tokens_per_s": 10.0, "elapsed": 1.0}
    display.show({**base, "step": 1, "time": 0.0, "loss": 2.5, "lr": 1e-4, "grad_norm": 0.5})
    display.show({**base, "step": 2, "time": 100.0, "loss": None, "lr": None, "grad_norm": None})
    assert out.getvalue().splitlines()[-1].startswith("step 2/2 epoch 0.50 loss 2.5000 lr 1.00e-04")


def test_failed_run_shows_the_error_and_the_log(tmp_path: Path) -> None:
    code, out = follow_plain(replay(tmp_path, "failed.jsonl"))
    assert code == 1
    assert "step 11/184 epoch 0.06 loss nan" in out  # the last step shows even between throttled lines
    assert "error (oom): CUDA ran out of memory at step 12" in out
    assert "failed: 11/184 steps, final loss nan, elapsed 0:00:30" in out
    assert "log: /data/runs/llama-text/train.log" in out
    assert "without a final event" not in out


def test_user_error_is_exit_code_2(tmp_path: Path) -> None:
    code, out = follow_plain(replay(tmp_path, "user_error.jsonl"))
    assert code == 2
    assert "error (user): data/support/train.jsonl: column 'messages'" in out
    assert "failed: 0 steps" in out


def test_terminal_display_runs_to_the_same_end(tmp_path: Path) -> None:
    out = StringIO()
    code = follow(replay(tmp_path, "with_eval.jsonl"), console=Console(file=out, force_terminal=True, width=140),
                  poll_interval=0.02)
    text = out.getvalue()
    assert code == 0
    assert "eval step 120 epoch 2.00 eval_loss 0.3377" in text and "completed" in text


def test_sigint_handler_is_restored(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    follow_plain(replay(tmp_path, "user_error.jsonl"))
    assert signal.getsignal(signal.SIGINT) is before


def test_stop_request_ends_the_run_as_stopped(tmp_path: Path) -> None:
    handle = replay(tmp_path, "normal.jsonl", "--wait-stop")

    def stop_after_the_last_step() -> None:
        deadline = time.monotonic() + 10
        while '"step": 24, "total_steps": 24' not in read_text(tmp_path / "events.jsonl"):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        control.request(tmp_path, "stop")

    threading.Thread(target=stop_after_the_last_step, daemon=True).start()
    code, out = follow_plain(handle)
    assert code == 130
    assert "stopped: 24/24 steps" in out and f"checkpoint: {tmp_path / 'checkpoint-24'}" in out
    assert control.pending(tmp_path) == set()  # the run cleared the request it handled


def test_run_dying_without_a_final_event_shows_the_log_tail(tmp_path: Path) -> None:
    code, out = follow_plain(replay(tmp_path, "normal.jsonl", "--die-after", "12"))
    assert code == 1
    assert "the run ended without a final event: it was killed by SIGKILL" in out
    assert f"last 5 lines of {tmp_path / 'train.log'}:" in out
    assert "  torch.OutOfMemoryError: CUDA out of memory (replayed)" in out


def test_newer_schema_is_followed_with_a_warning(tmp_path: Path) -> None:
    events = [{"v": 2, "type": "hologram", "time": 1.0},  # unknown types are skipped
              {"v": 2, "type": "run_finished", "time": 2.0, "status": "completed", "exit_code": 0, "step": 5,
               "metrics": {}, "output": "out", "merged": None}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    code, out = follow_plain(launch.start(tmp_path, command=[sys.executable, "-c", ""]))
    assert code == 0 and out.count("schema version 2, this llmtune reads version 1") == 1
    assert "completed: 5 steps" in out and "output: out" in out


def test_process_ending_quietly_with_no_events_is_a_failure(tmp_path: Path) -> None:
    code, out = follow_plain(launch.start(tmp_path, command=[sys.executable, "-c", "print('bye')"]))
    assert code == 1
    assert "the run ended without a final event: exit code 0" in out and "  bye" in out


def test_start_detaches_into_a_new_session_and_logs_output(tmp_path: Path) -> None:
    code = ("import sys, time; print('stdin', repr(sys.stdin.read())); print('to', 'stderr', file=sys.stderr); "
            "sys.stdout.flush(); sys.stderr.flush(); time.sleep(30)")
    handle = launch.start(tmp_path, command=[sys.executable, "-c", code])
    try:
        assert os.getsid(handle.pid) != os.getsid(0) and os.getpgid(handle.pid) == handle.pid
        assert launch.read_pid(tmp_path) == handle.pid and handle.alive() and handle.returncode() is None
        log = tmp_path / "train.log"
        deadline = time.monotonic() + 5
        while "to stderr" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "stdin ''\nto stderr\n" in log.read_text()
        attached = launch.attach(tmp_path)
        assert attached is not None and attached.pid == handle.pid and attached.alive()
    finally:
        launch.kill(handle, grace=1)
    assert handle.returncode() == -signal.SIGTERM and not attached.alive()


@pytest.mark.parametrize("flags, returncode", [((), -signal.SIGTERM), (("--ignore-term",), -signal.SIGKILL)])
def test_kill_ends_the_run_even_when_it_ignores_sigterm(tmp_path: Path, flags: tuple, returncode: int) -> None:
    handle = replay(tmp_path, "normal.jsonl", "--ignore-stop", *flags)
    deadline = time.monotonic() + 5
    while not (tmp_path / "events.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the handler is set before the first event is written
    started = time.monotonic()
    launch.kill(handle, grace=0.3)
    assert not handle.alive() and handle.returncode() == returncode
    assert time.monotonic() - started < 2


def test_attach_refuses_a_pid_that_is_not_the_run(tmp_path: Path) -> None:
    assert launch.attach(tmp_path) is None  # no run.pid
    (tmp_path / "run.pid").write_text(f"{os.getpid()}\n")  # alive, but some other process
    assert launch.attach(tmp_path) is None
    (tmp_path / "run.pid").write_text("garbage\n")
    assert launch.read_pid(tmp_path) is None


def test_following_an_attached_run(tmp_path: Path) -> None:
    started = replay(tmp_path, "stopped.jsonl", "--delay", "0.02")
    handle = launch.attach(tmp_path)
    assert handle is not None and handle.process is None
    assert follow_plain(handle)[0] == 130
    started.process.wait(5)


def test_requests_are_files_in_the_control_dir(tmp_path: Path) -> None:
    assert control.pending(tmp_path / "missing") == set()
    control.request(tmp_path, "stop")
    control.request(tmp_path, "checkpoint")
    assert control.pending(tmp_path) == {"stop", "checkpoint"}
    assert sorted(os.listdir(tmp_path / "control")) == ["checkpoint", "stop"]  # no temporary files left
    control.clear(tmp_path, "stop")
    control.clear(tmp_path, "stop")  # twice is fine
    assert control.pending(tmp_path) == {"checkpoint"}
    with pytest.raises(ValueError, match="unknown run request 'pause'"):
        control.request(tmp_path, "pause")


# ---- Ctrl-C, in a follower of its own (as on a terminal, SIGINT reaches the follower, never the run) ----

FOLLOWER = """
import sys
from pathlib import Path
from engine import launch
from tui.headless import PlainDisplay, follow
run_dir, replay, fixture, *flags = sys.argv[1:]
handle = launch.start(Path(run_dir), command=[sys.executable, replay, run_dir, fixture, *flags])
sys.exit(follow(handle, poll_interval=0.02))
"""


def start_follower(run_dir: Path, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-u", "-c", FOLLOWER, str(run_dir), str(REPLAY), str(FIXTURES / "normal.jsonl"), *flags]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def read_until(process: subprocess.Popen, text: str, seen: list[str], timeout: float = 10) -> str:
    """The follower's output so far, once it holds `text` (output is kept in `seen` across calls)."""
    deadline = time.monotonic() + timeout
    while text not in "".join(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} in the output: {''.join(seen)}"
        if select.select([process.stdout], [], [], left)[0]:
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"the follower ended without printing {text!r}: {''.join(seen)}"
            seen.append(chunk.decode())
    return "".join(seen)


def finish(process: subprocess.Popen, seen: list[str]) -> tuple[int, str]:
    rest, _ = process.communicate(timeout=10)
    return process.returncode, "".join(seen) + rest.decode()


def test_ctrl_c_once_stops_the_run_cleanly(tmp_path: Path) -> None:
    follower, seen = start_follower(tmp_path, "--wait-stop"), []
    read_until(follower, "run started", seen)
    follower.send_signal(signal.SIGINT)
    read_until(follower, "stopping: the run saves a checkpoint and ends; press Ctrl-C again to stop at once", seen)
    code, out = finish(follower, seen)
    assert code == 130
    assert re.search(r"^stopped: \d+/24 steps", out, re.M) and "Traceback" not in out


def test_ctrl_c_twice_kills_the_run(tmp_path: Path) -> None:
    follower, seen = start_follower(tmp_path, "--ignore-stop"), []
    read_until(follower, "run started", seen)
    follower.send_signal(signal.SIGINT)
    read_until(follower, "stopping:", seen)
    follower.send_signal(signal.SIGINT)
    code, out = finish(follower, seen)
    assert code == 130
    assert "killing the run" in out and "killed: " in out and "Traceback" not in out
    run = RunHandle(tmp_path, launch.read_pid(tmp_path))
    assert not run.alive()
