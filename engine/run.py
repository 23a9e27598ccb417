"""`python -m engine.run RUN_DIR [--resume]`: the training process. Started detached by engine.launch (its own session,
stdin closed, output appended to RUN_DIR/train.log), it trains the config in RUN_DIR/config.yaml.

Signals: SIGINT asks for a clean stop (a checkpoint is saved), as the stop request of a UI does; SIGTERM ends
the run at once, recording it as killed; SIGHUP (a terminal going away) is ignored.
"""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TextIO

from engine.exit_codes import ExitCode
from engine.run_files import RunDir


class RankPrefixed(io.TextIOBase):
    """A stream that starts every line with `[rank N] `: the other ranks of a run share train.log with rank 0."""

    def __init__(self, stream: TextIO, rank: int) -> None:
        self.stream, self.prefix, self.at_line_start = stream, f"[rank {rank}] ", True

    def write(self, text: str) -> int:
        out = []
        for piece in re.split(r"(?<=\n)", text):  # \n only: a progress bar's \r goes on the same line
            if piece:
                out.append(self.prefix + piece if self.at_line_start else piece)
                self.at_line_start = piece.endswith("\n")
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return False


def _setup_environment() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    rank = int(os.environ.get("RANK", "0"))
    if rank:  # the other ranks: their lines marked, and only what goes wrong (rank 0 says the rest once)
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        sys.stdout, sys.stderr = RankPrefixed(sys.stdout, rank), RankPrefixed(sys.stderr, rank)
    logging.basicConfig(level=logging.WARNING if rank else logging.INFO, stream=sys.stdout,
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
        code = ExitCode.STOPPED
        if int(os.environ.get("RANK", "0")) == 0:
            from engine.events import EventWriter, other_rank_failed, read_events, summarize

            events = RunDir(run_dir).events
            seen = read_events(events)
            step = summarize(seen).step or 0
            # In a run of several processes, the launcher ends rank 0 when another rank failed: that rank's
            # error (written just before it exited) is why the run ends.
            failed = other_rank_failed(seen)
            code = ExitCode.FAILED if failed else ExitCode.STOPPED
            with EventWriter(events) as w:
                w.run_finished(status="failed" if failed else "killed", exit_code=code, step=step)
        sys.stdout.flush()
        os._exit(code)

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
