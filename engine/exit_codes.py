"""How a run and a command end: one set of exit codes for the training process (its exit status and its final
event's `exit_code`), the `--yes` follower, the dashboard and the CLI. Standard library only."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # completed
    FAILED = 1  # the run failed, or an internal error (a bug: the message names the log holding the traceback)
    USER = 2  # a problem with the config or the data (a message, no traceback)
    STOPPED = 130  # stopped on request (a checkpoint was saved), interrupted (Ctrl-C) or killed

    @property
    def meaning(self) -> str:
        """The outcome in a few words, as the follower reports a process's exit status."""
        return _MEANINGS[self]

    @classmethod
    def of(cls, code: object) -> ExitCode | None:
        """The ExitCode an exit status stands for; None for any other value (a signal, a foreign code)."""
        if isinstance(code, bool) or not isinstance(code, int):
            return None
        try:
            return cls(code)
        except ValueError:
            return None


_MEANINGS = {ExitCode.OK: "completed", ExitCode.FAILED: "failed",
             ExitCode.USER: "failed on a config or data problem", ExitCode.STOPPED: "stopped"}
