"""User-facing errors: every problem names where it is, what is wrong, and how to fix it.

A `UserError` carries a list of `Problem`s so that validation can report every problem at once.
The CLI prints them and exits with code 2, never with a traceback; anything else is an internal error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_UNSET: Any = object()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config or a data set.

    key: where it is, as a dotted config key (`params.block_size`) or a data location (`train.jsonl:17`).
    message: what is wrong, stating the rule that was broken.
    fix: how to fix it, or None where the message says it all.
    value: the offending value, shown as `key = value` when given.
    line: the line in the config file that holds the key, when known.
    """

    key: str
    message: str
    fix: str | None = None
    value: Any = _UNSET
    line: int | None = None

    def __deepcopy__(self, memo: dict) -> Problem:
        return self  # immutable; a copy would also lose the identity of the _UNSET marker

    def __copy__(self) -> Problem:
        return self

    def render(self, source: str | None = None) -> str:
        where = self.key
        if self.value is not _UNSET:
            where = f"{self.key} = {_show(self.value)}"
        if source and self.line:
            where = f"{source}:{self.line}: {where}"
        text = f"{where}: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class UserError(Exception):
    """A problem the user can fix (config, data, environment). Exit code 2, no traceback."""

    problems: list[Problem]
    source: str | None = None  # the file the problems are about, e.g. the config path
    title: str = field(default="")

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = self.title or f"{n} problem{'s' if n != 1 else ''}"
        if self.source:
            head = f"{self.source}: {head}"
        body = "\n".join("  " + p.render(self.source).replace("\n", "\n  ") for p in self.problems)
        return f"{head}\n{body}" if body else head

    def __str__(self) -> str:
        return self.render()


class ConfigError(UserError):
    """The config is invalid."""


class DataError(UserError):
    """The data cannot be read or does not fit the config."""


def data_error(key: str, message: str, fix: str | None = None) -> DataError:
    """A DataError with one problem: the common case when reading a file."""
    return DataError([Problem(key, message, fix)], title="cannot use the data")
