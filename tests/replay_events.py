"""A stand-in for a training run in tests: replays a recorded events file into RUN_DIR/events.jsonl.

    python tests/replay_events.py RUN_DIR FIXTURE [--delay S] [--wait-stop] [--ignore-stop]
                                  [--ignore-term] [--die-after N]

It behaves as the real child does toward its followers: appends one flushed line at a time, and on a
stop request (RUN_DIR/control/stop) saves a "checkpoint" and ends with run_finished status stopped; a
checkpoint request writes a checkpoint event and goes on.
--wait-stop drops the fixture's run_finished and waits for a stop request after the last line;
--ignore-stop never honours one (the run only ends when killed); --ignore-term ignores SIGTERM;
--die-after N writes N lines, prints a traceback and kills itself with SIGKILL, as the OOM killer would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from engine import control  # noqa: E402
from engine.events import EventWriter  # noqa: E402
from engine.run_files import EVENTS_FILE  # noqa: E402

WAIT_LIMIT = 20.0  # seconds; a test that forgets to stop or kill the replay does not leave it running


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--wait-stop", action="store_true")
    parser.add_argument("--ignore-stop", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--die-after", type=int)
    return parser.parse_args()


def stop_asked(args: argparse.Namespace) -> bool:
    return not args.ignore_stop and "stop" in control.pending(args.run_dir)


def end_stopped(args: argparse.Namespace, step: int) -> None:
    control.clear(args.run_dir, "stop")
    checkpoint = str(args.run_dir / f"checkpoint-{step}")
    with EventWriter(args.run_dir / EVENTS_FILE) as writer:
        writer.emit("log", level="info", message=f"stop requested: saving a checkpoint at step {step}, then ending")
        writer.emit("checkpoint", step=step, path=checkpoint)
        writer.emit("run_finished", status="stopped", exit_code=130, step=step, metrics={}, output=checkpoint,
                    merged=None)


def checkpoint_if_asked(args: argparse.Namespace, step: int) -> None:
    if "checkpoint" in control.pending(args.run_dir):
        control.clear(args.run_dir, "checkpoint")
        with EventWriter(args.run_dir / EVENTS_FILE) as writer:
            writer.emit("checkpoint", step=step, path=str(args.run_dir / f"checkpoint-{step}"))


def die() -> None:
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "engine/trainers/sft.py", line 88, in train', file=sys.stderr)
    print("torch.OutOfMemoryError: CUDA out of memory (replayed)", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    args = parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"replaying {args.fixture.name} into {args.run_dir}", flush=True)
    lines = args.fixture.read_text(encoding="utf-8").splitlines(keepends=True)
    if args.wait_stop:
        lines = [line for line in lines if json.loads(line)["type"] != "run_finished"]
    step = 0
    with open(args.run_dir / EVENTS_FILE, "a", encoding="utf-8") as out:
        for count, line in enumerate(lines):
            if count == args.die_after:
                die()
            if stop_asked(args):
                end_stopped(args, step)
                return 130
            checkpoint_if_asked(args, step)
            out.write(line)
            out.flush()
            step = json.loads(line).get("step", step)
            time.sleep(args.delay)
    deadline = time.monotonic() + WAIT_LIMIT
    while (args.wait_stop or args.ignore_stop) and time.monotonic() < deadline:
        if stop_asked(args):
            end_stopped(args, step)
            return 130
        checkpoint_if_asked(args, step)
        time.sleep(0.01)
    return 3 if args.wait_stop or args.ignore_stop else 0


if __name__ == "__main__":
    sys.exit(main())
