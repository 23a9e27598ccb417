"""`python -m engine.run RUN_DIR [--resume]`: the training process. Started detached by engine.launch (its own session,
stdin closed, output appended to RUN_DIR/train.log), it trains the config in RUN_DIR/config.yaml.

Signals: SIGINT asks for a clean stop (a checkpoint is saved), as the stop request of a UI does; SIGTERM ends
the run at once, recording it as killed; SIGHUP (a terminal going away) is ignored.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from engine.exit_codes import ExitCode
from engine.run_files import RunDir


def _setup_environment() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # bitsandbytes 8-bit logs a cast message on every matmul on the CPU.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    for name in ("httpx", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _install_signal_handlers(run_dir: Path) -> None:
    from engine import control

    def stop(signum: int, frame: FrameType | None) -> None:
        control.request(run_dir, "stop")

    def killed(signum: int, frame: FrameType | None) -> None:
        if int(os.environ.get("RANK", "0")) == 0:
            from engine.events import EventWriter, read_events, summarize

            events = RunDir(run_dir).events
            step = summarize(read_events(events)).step or 0
            with EventWriter(events) as w:
                w.run_finished(status="killed", exit_code=ExitCode.STOPPED, step=step)
        sys.stdout.flush()
        os._exit(ExitCode.STOPPED)

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, killed)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    resume = "--resume" in args
    args = [a for a in args if a != "--resume"]
    if len(args) != 1:
        print("usage: python -m engine.run RUN_DIR [--resume]", file=sys.stderr)
        return ExitCode.USER
    run_dir = Path(args[0]).absolute()
    _setup_environment()
    _install_signal_handlers(run_dir)
    from engine.train import train

    return train(run_dir, resume=resume)


if __name__ == "__main__":
    sys.exit(main())
