"""User-facing errors: every problem names where it is, what is wrong, and how to fix it.

A `UserError` carries a list of `Problem`s so that validation can report every problem at once.
The CLI prints them and exits with code 2, never with a traceback; anything else is an internal error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_UNSET: Any = object()

# Config keys whose values are secrets: a Problem about one never shows its value, whoever builds it (the
# validator, the wizard, a message about a conflict). `params.token` is AutoTrain's spelling of hub.token.
SECRET_KEYS: tuple[str, ...] = ("hub.token", "params.token")
SHOW_LIMIT = 80  # characters of a value shown in a message
_KEY_LIMIT = 120  # characters of a key (a user's typo can be a whole paragraph)


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

    def __post_init__(self) -> None:
        if self.value is not _UNSET and self.key in SECRET_KEYS:
            object.__setattr__(self, "value", _UNSET)  # frozen: set once, here, before anyone can render it

    def __deepcopy__(self, memo: dict) -> Problem:
        return self  # immutable; a copy would also lose the identity of the _UNSET marker

    def __copy__(self) -> Problem:
        return self

    def render(self, source: str | None = None) -> str:
        where = self.key if len(self.key) <= _KEY_LIMIT else self.key[:_KEY_LIMIT - 3] + "..."
        if self.value is not _UNSET:
            where = f"{where} = {show_value(self.value)}"
        if source and self.line:
            where = f"{source}:{self.line}: {where}"
        text = f"{where}: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


def show_value(value: Any, limit: int = SHOW_LIMIT) -> str:
    """`value` as repr would write it, cut to `limit` characters. Built piece by piece and stopped once the
    limit is reached, so a huge string, a number of thousands of digits (whose str() Python refuses) or a huge
    or deeply nested structure is never rendered whole."""
    out = _Writer(limit + 1)
    try:
        _write(value, out, depth=0, path=set())
    except _Full:
        pass
    text = "".join(out.parts)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Full(Exception):
    """The text reached its limit: stop rendering."""


class _Writer:
    def __init__(self, budget: int) -> None:
        self.parts: list[str] = []
        self.left = budget

    def write(self, text: str) -> None:
        self.parts.append(text[:self.left])
        self.left -= len(text)
        if self.left <= 0:
            raise _Full


_MAX_DEPTH = 8  # deeper containers are shown as [...] / {...}
_DIGITS_PER_BIT = 0.30103


def _write(value: Any, out: _Writer, *, depth: int, path: set[int]) -> None:
    if isinstance(value, (str, bytes, bytearray)):
        out.write(repr(value[:out.left + 1]))  # only the part that can be shown is ever repr'd
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        out.write(repr(value))
    elif isinstance(value, int):
        bits = abs(value).bit_length()
        if bits * _DIGITS_PER_BIT > SHOW_LIMIT:
            sign = "-" if value < 0 else ""
            out.write(f"<{sign}a whole number of about {int(bits * _DIGITS_PER_BIT) + 1} digits>")
        else:
            out.write(repr(value))
    elif isinstance(value, (list, tuple, set, frozenset, dict)):
        opening, closing = ("{", "}") if isinstance(value, (dict, set, frozenset)) else \
            ("(", ")") if isinstance(value, tuple) else ("[", "]")
        if id(value) in path or depth >= _MAX_DEPTH:
            out.write(f"{opening}...{closing}")  # refers to itself, or too deep to be worth showing
            return
        path.add(id(value))
        out.write(opening)
        items = value.items() if isinstance(value, dict) else ((item, _UNSET) for item in value)
        for i, (item, mapped) in enumerate(items):
            if i:
                out.write(", ")
            _write(item, out, depth=depth + 1, path=path)
            if mapped is not _UNSET:
                out.write(": ")
                _write(mapped, out, depth=depth + 1, path=path)
        if isinstance(value, tuple) and len(value) == 1:
            out.write(",")
        out.write(closing)
        path.discard(id(value))
    else:  # dates, paths and other small scalars
        try:
            text = str(value)
        except Exception:  # noqa: BLE001 - a value that cannot describe itself is still named by its type
            text = f"<{type(value).__name__}>"
        out.write(text)


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
