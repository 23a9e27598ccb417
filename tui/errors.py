"""How the CLI ends on an error: user errors as plain messages (exit 2), anything else with a log (exit 1)."""

from __future__ import annotations

import datetime as dt
import sys
import traceback
from pathlib import Path

from engine.errors import UserError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


def log_dir() -> Path:
    from engine.tinymodel import llmtune_home

    return llmtune_home() / "logs"


def report_user_error(error: UserError) -> int:
    print(f"error: {error.render()}", file=sys.stderr)
    return EXIT_USER


def write_error_log(error: BaseException) -> Path | None:
    """Write the traceback to a new file under log_dir(); None when it cannot be written."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        directory = log_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"error-{dt.datetime.now():%Y%m%d-%H%M%S}.log"
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def report_internal_error(error: BaseException) -> int:
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
    return EXIT_INTERNAL
