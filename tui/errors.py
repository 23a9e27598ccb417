"""How the CLI ends on an error: user errors as plain messages (exit 2), anything else with a log (exit 1)."""

from __future__ import annotations

import datetime as dt
import sys
import traceback
from pathlib import Path

from engine.errors import UserError
from engine.exit_codes import ExitCode


def log_dir() -> Path:
    from engine.tinymodel import llmtune_home

    return llmtune_home() / "logs"


def report_user_error(error: UserError) -> ExitCode:
    print(f"error: {error.render()}", file=sys.stderr)
    return ExitCode.USER


def write_error_log(error: BaseException) -> Path | None:
    """Write the traceback to a new file under log_dir(); None when it cannot be written."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        directory = log_dir()
        directory.mkdir(parents=True, exist_ok=True)
        stamp = f"error-{dt.datetime.now():%Y%m%d-%H%M%S}"
        for n in range(1, 1000):  # two errors in one second get two files
            path = directory / (f"{stamp}.log" if n == 1 else f"{stamp}-{n}.log")
            try:
                with path.open("x", encoding="utf-8") as f:
                    f.write(text)
                return path
            except FileExistsError:
                continue
    except OSError:
        return None
    return None


def report_fix(error: BaseException) -> str:
    """The fix line of a problem that is a bug caught in the wizard: the log now holding its traceback."""
    path = write_error_log(error)
    return f"please report it with the traceback in {path}" if path else "please report it"


def report_internal_error(error: BaseException) -> ExitCode:
    """Write the traceback to a log file and point to it: no traceback on the terminal."""
    path = write_error_log(error)
    if path is not None:
        where = f"the traceback is in {path}"
    else:  # still no traceback on the terminal: where it failed is enough to report it
        frame = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
        at = f" (at {Path(frame[0].filename).name}:{frame[0].lineno})" if frame else ""
        where = f"the traceback could not be written to {log_dir()}{at}"
    print(f"internal error: {type(error).__name__}: {error}\n{where}\n"
          "This is a bug in llmtune; please report it with that log.", file=sys.stderr)
    return ExitCode.FAILED
