"""The event stream: the contract between a training run and everything that watches it.

A run writes `RUN_DIR/events.jsonl`, one JSON object per line (UTF-8, flushed after each line, rank 0
only). The headless follower, the dashboard and the tests only ever read this file, so they can attach,
detach and re-attach at any time. The schema is documented in the README ("Event stream"); `EVENT_FIELDS`
and `FIELD_TYPES` below are its machine-readable form.

Versioning: every event carries `"v": SCHEMA_VERSION`. Adding an event type or a field keeps the
version (readers ignore what they do not know); removing or renaming a field, or changing its meaning
or unit, bumps it.

Standard library only: the writer runs inside the training process and the reader inside the UI,
neither of which should pay for the other's imports.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# Required fields per event type, besides v/type/time. Further fields may appear.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "run_started": ("run_dir", "pid", "trainer", "task", "base_model", "config", "versions", "device",
                    "data", "total_steps", "epochs", "batch_size", "output_dir"),
    "status": ("phase", "message"),
    "step": ("step", "total_steps", "epoch", "loss", "lr", "grad_norm", "tokens", "trained_tokens",
             "tokens_per_s", "trained_tokens_per_s", "elapsed", "memory"),
    "eval": ("step", "epoch", "eval_loss", "metrics"),
    "checkpoint": ("step", "path"),
    "log": ("level", "message"),
    "error": ("kind", "message", "log"),
    "run_finished": ("status", "exit_code", "step", "metrics", "output", "merged"),
}

_INT = (int,)
_NUM = (int, float)
_NUM_OR_NULL = (int, float, type(None))
_STR_OR_NULL = (str, type(None))

# The basic type of every field named in EVENT_FIELDS (one meaning per name across event types).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "v": _INT, "type": (str,), "time": _NUM,
    "run_dir": (str,), "pid": _INT, "trainer": (str,), "task": (str,), "base_model": (str,),
    "config": (dict,), "versions": (dict,), "device": (dict,), "data": (dict,), "total_steps": _INT,
    "epochs": _NUM, "batch_size": _INT, "output_dir": (str,),
    "phase": (str,), "message": (str,),
    "step": _INT, "epoch": _NUM, "loss": _NUM_OR_NULL, "lr": _NUM_OR_NULL, "grad_norm": _NUM_OR_NULL,
    "tokens": _INT, "trained_tokens": _INT, "tokens_per_s": _NUM_OR_NULL,
    "trained_tokens_per_s": _NUM_OR_NULL, "elapsed": _NUM, "memory": (dict,),
    "eval_loss": _NUM_OR_NULL, "metrics": (dict,),
    "path": (str,), "level": (str,), "kind": (str,), "log": (str,),
    "status": (str,), "exit_code": _INT, "output": _STR_OR_NULL, "merged": _STR_OR_NULL,
    "kept": (bool,), "rank": _INT, "launch": (dict,), "tracker": (dict,),
}

# Closed vocabularies: a value outside these is a writer bug.
FIELD_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("log", "level"): ("info", "warning", "error"),
    ("error", "kind"): ("user", "internal", "oom", "diverged", "disk_full", "hang"),
    ("run_finished", "status"): ("completed", "stopped", "failed", "killed"),
}

# JSON has no NaN or infinities: they travel as these strings.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# Free text and opaque dicts: a string "NaN" in these is text, not a number.
_TEXT_FIELDS = frozenset({"type", "run_dir", "trainer", "task", "base_model", "config", "versions",
                          "device", "output_dir", "phase", "message", "path", "level", "kind", "log",
                          "status", "output", "merged", "launch", "tracker"})


def _sanitize(value: Any) -> Any:
    """A JSON-safe copy: non-finite floats as strings, tensors/numpy scalars as numbers, paths as text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ("NaN" if math.isnan(value) else
                                                   "Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_sanitize(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy and torch scalars, without importing either
    if callable(item):
        try:
            return _sanitize(item())
        except (TypeError, ValueError):  # not a one-element array after all
            pass
    return str(value)


def _restore(value: Any) -> Any:
    """Undo `_sanitize` for numbers: "NaN"/"Infinity"/"-Infinity" back to floats, nested too."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


def _restored(event: dict) -> dict:
    """An event as read back: the numbers of its number fields restored, its text fields left as written."""
    return {k: v if k in _TEXT_FIELDS else _restore(v) for k, v in event.items()}


_TIME_RANGE = (0.0, 1e11)  # unix seconds: 1970 to the year 5138; anything else is not a time


def decode_event(line: bytes | str) -> dict | None:
    """One line -> an event, or None when it is not one: not a JSON object, a `time` that is no plausible
    unix time, or a known field of the wrong type (a corrupt or foreign line that would trip every reader)."""
    try:
        event = json.loads(line)
        if not isinstance(event, dict):
            return None
        event = _restored(event)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    when = event.get("time")
    if (isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when)
            or not _TIME_RANGE[0] <= when < _TIME_RANGE[1]):
        return None
    for name, value in event.items():
        types = FIELD_TYPES.get(name)
        if types is not None and value is not None and not _has_type(value, types):
            return None
    return event


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    """bool is an int to Python, not to us: a bool is only of a field typed bool."""
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


class EventWriter:
    """Appends events to a file, one flushed line each, so a reader never waits on a buffer.

    Thread-safe: the trainer's callback and a background sampler may both emit. A file deleted while the
    run goes on is created again at the next event (readers follow the new file), and a line that a full
    disk cut short is ended before the next one, so that line is lost and not the next.

    `listeners` get each event once it is written, as a reader reads it back (the experiment tracker's feed,
    engine.trainers.tracking); a listener must not raise.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._lock = threading.Lock()
        self._cut = False  # the last write failed part way: the file may end in a partial line
        self.listeners: list[Callable[[dict], None]] = []

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, type: str, **fields: Any) -> dict:
        """Write one event (adds `v` and `time`) and return it as written. Unchecked: the typed helpers below
        are how the training process writes; this is for replays and tests."""
        return self._write(_sanitize({"v": SCHEMA_VERSION, "type": type, "time": time.time(), **fields}))

    def _write(self, event: dict) -> dict:
        line = json.dumps(event, ensure_ascii=False, allow_nan=False) + "\n"
        with self._lock:
            if os.fstat(self._fd).st_nlink == 0:  # deleted under us: writing on would reach no reader
                os.close(self._fd)
                self._fd, self._cut = self._open(), False
            try:
                encoded = line.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate in some text: ASCII JSON escapes carry it
                encoded = (json.dumps(event, allow_nan=False) + "\n").encode("ascii")
            data = (b"\n" if self._cut else b"") + encoded
            self._cut = True
            while data:  # one write() for a line in practice; a short write on a full disk raises next time
                written = os.write(self._fd, data)
                data = data[written:]
            self._cut = False
        for listener in list(self.listeners):  # outside the lock: a listener may write an event itself
            listener(_restored(event))
        return event

    def _checked(self, type: str, **fields: Any) -> dict:
        """Write an event of the schema; one that breaks it (a writer bug) raises ValueError, unwritten."""
        event = _sanitize({"v": SCHEMA_VERSION, "type": type, "time": time.time(), **fields})
        problems = validate_event(_restored(event))
        if problems:
            raise ValueError(f"not a valid {type} event: {'; '.join(problems)}")
        return self._write(event)

    # One typed helper per event type (README, "Event stream"). Fields are written in the order of the
    # parameters: the recorded fixtures hold them so.

    def run_started(self, *, run_dir: str, pid: int, trainer: str, task: str, base_model: str,
                    config: Mapping[str, Any], versions: Mapping[str, str], device: Mapping[str, Any],
                    data: Mapping[str, Any], total_steps: int, epochs: float, batch_size: int, output_dir: str,
                    block_size: int, block_size_note: str, trainable_parameters: int,
                    total_parameters: int, batching: Mapping[str, str] | None = None,
                    kernels: Mapping[str, Any] | None = None, launch: Mapping[str, Any] | None = None,
                    tracker: Mapping[str, Any] | None = None) -> dict:
        """`batching`: how batches are made ({"mode", "why"}, engine.batching); `kernels`: whether Liger's fused
        kernels run ({"liger", "why"}, engine.kernels); `launch`: the processes ({"world_size", "backend",
        "command", ...}, engine.distributed); `tracker`: where `log:` logs ({"name", "label", "mode", "where",
        "project", "run", "hint"}, engine.trainers.tracking)."""
        return self._checked("run_started", run_dir=run_dir, pid=pid, trainer=trainer, task=task,
                             base_model=base_model, config=config, versions=versions, device=device, data=data,
                             total_steps=total_steps, epochs=epochs, batch_size=batch_size, output_dir=output_dir,
                             block_size=block_size, block_size_note=block_size_note,
                             trainable_parameters=trainable_parameters, total_parameters=total_parameters,
                             **({"batching": dict(batching)} if batching else {}),
                             **({"kernels": dict(kernels)} if kernels else {}),
                             **({"launch": dict(launch)} if launch else {}),
                             **({"tracker": dict(tracker)} if tracker else {}))

    def status(self, *, phase: str, message: str, step: int | None = None) -> dict:
        """`step`: with phase "training", the step training begins at (step events' `elapsed` counts from here)."""
        return self._checked("status", phase=phase, message=message, **({} if step is None else {"step": step}))

    def step(self, *, step: int, total_steps: int, epoch: float, loss: float | None, lr: float | None,
             grad_norm: float | None, tokens: int, trained_tokens: int, tokens_per_s: float | None,
             trained_tokens_per_s: float | None, elapsed: float, memory: Mapping[str, Any],
             metrics: Mapping[str, float] | None = None) -> dict:
        """`metrics`: the trainer's own (reward margins, token accuracy, ...), left out when it logged none."""
        return self._checked("step", step=step, total_steps=total_steps, epoch=epoch, loss=loss, lr=lr,
                             grad_norm=grad_norm, tokens=tokens, trained_tokens=trained_tokens,
                             tokens_per_s=tokens_per_s, trained_tokens_per_s=trained_tokens_per_s, elapsed=elapsed,
                             memory=memory, **({"metrics": metrics} if metrics else {}))

    def eval(self, *, step: int, epoch: float, eval_loss: float | None,
             metrics: Mapping[str, float]) -> dict:
        return self._checked("eval", step=step, epoch=epoch, eval_loss=eval_loss, metrics=metrics)

    def checkpoint(self, *, step: int, path: str, kept: bool) -> dict:
        """`kept`: asked for by hand, so rotation leaves it."""
        return self._checked("checkpoint", step=step, path=path, kept=kept)

    def log(self, *, level: str, message: str) -> dict:
        return self._checked("log", level=level, message=message)

    def error(self, *, kind: str, message: str, log: str, rank: int | None = None) -> dict:
        """`log`: the file holding the details (the traceback); `rank`: in a run of several processes, the one
        that failed when it is not rank 0 (which writes every other event)."""
        return self._checked("error", kind=kind, message=message, log=log, **({} if rank is None else {"rank": rank}))

    def run_finished(self, *, status: str, exit_code: int, step: int, metrics: Mapping[str, float] | None = None,
                     output: str | None = None, merged: str | None = None) -> dict:
        """The last event of a training process; `exit_code` is the one it exits with (engine.exit_codes)."""
        return self._checked("run_finished", status=status, exit_code=int(exit_code), step=step,
                             metrics=dict(metrics or {}), output=output, merged=merged)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _complete_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Split into complete lines and the unfinished rest (a line still being written)."""
    head, sep, rest = data.rpartition(b"\n")
    if not sep:
        return [], data
    return head.split(b"\n"), rest


def _decode_lines(lines: list[bytes]) -> tuple[list[dict], int]:
    """The events among the lines, and how many non-blank lines were not events."""
    events, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        event = decode_event(line)
        if event is None:
            bad += 1
        else:
            events.append(event)
    return events, bad


def read_events(path: Path) -> list[dict]:
    """Every complete event in the file; a partial last line is left for later, corrupt lines skipped."""
    return read_events_counted(path)[0]


def read_events_counted(path: Path) -> tuple[list[dict], int]:
    """read_events, and how many lines were skipped as corrupt (readers say so rather than fail)."""
    lines, _ = _complete_lines(Path(path).read_bytes())
    return _decode_lines(lines)


class EventTail:
    """Follows a growing events file without blocking. The file need not exist yet. `skipped` counts the
    lines that were not events; `vanished` says the file was there and is gone (deleted under the run).

    The file is kept open between polls: a file deleted and written again (EventWriter does that) then gets
    another inode than the one held, so the new file is always told apart and read from its start."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: Any = None
        self._offset = 0
        self._partial = b""
        self.skipped = 0
        self.vanished = False

    def poll(self) -> list[dict]:
        """The complete events written since the last poll."""
        data = self._read_held()
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            self.vanished = self._file is not None
            return self._decode(data)
        self.vanished = False
        held = os.fstat(self._file.fileno()) if self._file is not None else None
        if held is None or (held.st_ino, held.st_dev) != (current.st_ino, current.st_dev):
            events = self._decode(data)  # the end of the old file first
            self._open()
            return events + self._decode(self._read_held())
        return self._decode(data)

    def _open(self) -> None:
        if self._file is not None:
            self._file.close()
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            self._file = None
        self._offset, self._partial = 0, b""

    def _read_held(self) -> bytes:
        if self._file is None:
            return b""
        if os.fstat(self._file.fileno()).st_size < self._offset:  # truncated: read it again from the start
            self._offset, self._partial = 0, b""
        self._file.seek(self._offset)
        data = self._file.read()
        self._offset += len(data)
        return data

    def _decode(self, data: bytes) -> list[dict]:
        lines, self._partial = _complete_lines(self._partial + data)
        events, bad = _decode_lines(lines)
        self.skipped += bad
        return events

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", dict: "an object", bool: "true or false",
             type(None): "null"}
    if float in types:
        types = tuple(t for t in types if t is not int)
    return " or ".join(names.get(t, t.__name__) for t in types)


def _type_problem(name: str, value: Any) -> str | None:
    types = FIELD_TYPES.get(name)
    if types is None:
        return None
    if not _has_type(value, types):
        return f"{name} should be {_type_name(types)}, got {json.dumps(value, default=str)[:60]}"
    return None


def validate_event(event: dict) -> list[str]:
    """What is wrong with one event (as `read_events` returns it) against schema version 1; [] if nothing.

    Stricter than a reader: an unknown type is reported here (likely a typo in a writer), while
    readers skip it.
    """
    if not isinstance(event, dict):
        return [f"an event should be a JSON object, got {type(event).__name__}"]
    problems = [f"missing field {name!r}" for name in ("v", "type", "time") if name not in event]
    if "v" in event and event["v"] != SCHEMA_VERSION:
        problems.append(f"unknown schema version {event['v']!r} (this reader knows {SCHEMA_VERSION})")
    kind = event.get("type")
    required = EVENT_FIELDS.get(kind) if isinstance(kind, str) else None
    if "type" in event and required is None:
        problems.append(f"unknown event type {kind!r} (known: {', '.join(EVENT_FIELDS)})")
    problems += [f"{kind}: missing field {name!r}" for name in required or () if name not in event]
    for name in ("v", "type", "time", *(required or ())):
        if name in event and (problem := _type_problem(name, event[name])):
            problems.append(f"{kind}: {problem}" if required else problem)
    for (etype, name), choices in FIELD_CHOICES.items():
        if kind == etype and isinstance(event.get(name), str) and event[name] not in choices:
            problems.append(f"{kind}: {name} should be one of {', '.join(choices)}, got {event[name]!r}")
    return problems


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class RunSummary:
    """A run's state folded from its events; `status` stays None while the run has not finished.

    Time is kept per segment: one training process's events (a resume appends a new segment to the same
    file). A segment begins with the file's first event, with the first event after a `run_finished`, with a
    `status` of phase `loading data` (what a starting process writes first: one that died without a final
    event is followed by the next one's) or with a second `run_started`. See `run_time` and `eta`."""

    status: str | None = None
    phase: str | None = None          # the last status phase ("loading model", "training", ...)
    message: str | None = None        # the last status message
    trainer: str | None = None
    base_model: str | None = None
    run_dir: str | None = None
    output_dir: str | None = None
    pid: int | None = None
    total_steps: int | None = None
    step: int = 0
    epoch: float | None = None
    loss: float | None = None         # the last logged training loss
    eval_loss: float | None = None    # the last evaluation loss
    reward: float | None = None       # online RL (GRPO, RLOO): the last mean reward of the sampled answers
    lr: float | None = None
    tokens_per_s: float | None = None
    elapsed: float | None = None      # seconds of training, from the last step event (of its own process)
    started: float | None = None      # unix time of the first event
    ended: float | None = None        # unix time of run_finished
    output: str | None = None
    merged: str | None = None
    error: str | None = None          # the last error's message
    error_kind: str | None = None
    log: str | None = None            # the log holding details (the error's, else none yet)
    exit_code: int | None = None
    checkpoint: str | None = None     # the last checkpoint's path
    metrics: dict[str, Any] = field(default_factory=dict)  # run_finished's final metrics
    warnings: int = 0
    unknown_version: Any = None       # the first `v` seen that is not SCHEMA_VERSION
    segments: int = 0                 # the segments seen (processes: 1, plus one per resume)
    time_before: float = 0.0          # wall seconds of the segments before the current one
    segment_started: float | None = None  # unix time of the current segment's first event
    segment_last: float | None = None     # ... and of its latest
    # The current segment's pace, for the ETA: where its training began (step, seconds of training) and
    # where its latest step event is.
    pace_from: tuple[int, float] | None = None
    pace_to: tuple[int, float] | None = None
    _segment_closed: bool = field(default=False, repr=False)   # its run_finished was read
    _segment_launched: bool = field(default=False, repr=False)  # its run_started was read

    @property
    def finished(self) -> bool:
        return self.status is not None

    @classmethod
    def continuing(cls, earlier: RunSummary) -> RunSummary:
        """A summary for the events that follow `earlier`'s (a resumed run followed from its new segment
        on): nothing of the earlier segments but their time, which `run_time` goes on adding to."""
        run_time = earlier.run_time
        return cls(segments=earlier.segments, time_before=run_time or 0.0)

    @property
    def run_time(self) -> float | None:
        """Wall seconds the run's processes took, summed over its segments, each from its first event to its
        latest (loading, training, evaluations and saving included; the time between segments, when no
        process ran, left out). From the events alone: the same in every follower, on every re-attach."""
        if self.segment_started is None or self.segment_last is None:
            return None
        return self.time_before + (self.segment_last - self.segment_started)

    @property
    def eta(self) -> float | None:
        """Seconds left: the steps left at the pace of the current segment (its steps over its training
        time), so a resumed run is timed by what it does now, not by the steps an earlier process did."""
        if self.pace_to is None or self.total_steps is None:
            return None
        start = self.pace_from if self.pace_from is not None else (0, 0.0) if self.segments <= 1 else None
        if start is None:
            return None
        steps, seconds = self.pace_to[0] - start[0], self.pace_to[1] - start[1]
        if steps <= 0 or seconds < 0:
            return None
        return seconds / steps * max(self.total_steps - self.pace_to[0], 0)

    def update(self, event: dict) -> RunSummary:
        """Fold one event in; unknown types and fields are ignored, as the schema asks of readers."""
        when = _number(event.get("time"))
        if self.started is None and when is not None:
            self.started = when
        if when is not None:
            self._clock(event, when)
        if self.unknown_version is None and event.get("v") != SCHEMA_VERSION:
            self.unknown_version = event.get("v")
        handler = getattr(self, f"_on_{event.get('type')}", None)
        if handler is not None:
            handler(event)
        return self

    def _clock(self, event: dict, when: float) -> None:
        kind = event.get("type")
        opens = (self.segment_started is None or self._segment_closed
                 or (kind == "status" and event.get("phase") == "loading data")
                 or (kind == "run_started" and self._segment_launched))
        if opens:
            if self.segment_started is not None and self.segment_last is not None:
                self.time_before += self.segment_last - self.segment_started
                # A new process: what the earlier segment ended with no longer holds.
                self.status = self.exit_code = self.ended = self.error = self.error_kind = None
                self.metrics = {}
            self.segments += 1
            self.segment_started = self.segment_last = when
            self.pace_from = self.pace_to = None
            self._segment_closed = self._segment_launched = False
        else:
            self.segment_last = max(self.segment_last or when, when)
        if kind == "run_started":
            self._segment_launched = True
        elif kind == "run_finished":
            self._segment_closed = True
        elif kind == "status" and event.get("phase") == "training" and _int(event.get("step")) is not None:
            self.pace_from = (event["step"], 0.0)  # step events' `elapsed` counts from this event
        elif kind == "step" and _int(event.get("step")) is not None and _number(event.get("elapsed")) is not None:
            self.pace_to = (event["step"], float(event["elapsed"]))
            if self.pace_from is None and self.segments > 1:  # an older writer: no start step, time from here
                self.pace_from = self.pace_to

    def _on_status(self, e: dict) -> None:
        self.phase, self.message = e.get("phase"), e.get("message")

    def _on_run_started(self, e: dict) -> None:
        # A resumed run appends to the same file: what the earlier segment ended with no longer holds.
        self.status = self.exit_code = self.ended = self.error = self.error_kind = None
        for name in ("trainer", "base_model", "run_dir", "output_dir", "pid", "total_steps"):
            if e.get(name) is not None:
                setattr(self, name, e[name])

    def _on_step(self, e: dict) -> None:
        self.step = e["step"] if isinstance(e.get("step"), int) else self.step
        self.total_steps = e.get("total_steps") or self.total_steps
        self.epoch = _number(e.get("epoch")) if e.get("epoch") is not None else self.epoch
        for name in ("loss", "lr", "tokens_per_s", "elapsed"):
            if (value := _number(e.get(name))) is not None:
                setattr(self, name, value)
        metrics = e.get("metrics")
        if isinstance(metrics, dict) and (reward := _number(metrics.get("reward"))) is not None:
            self.reward = reward

    def _on_eval(self, e: dict) -> None:
        if (value := _number(e.get("eval_loss"))) is not None:
            self.eval_loss = value

    def _on_checkpoint(self, e: dict) -> None:
        self.checkpoint = e.get("path")

    def _on_log(self, e: dict) -> None:
        if e.get("level") in ("warning", "error"):
            self.warnings += 1

    def _on_error(self, e: dict) -> None:
        self.error, self.error_kind, self.log = e.get("message"), e.get("kind"), e.get("log")

    def _on_run_finished(self, e: dict) -> None:
        self.status = e.get("status") or "failed"
        self.exit_code = e.get("exit_code")
        self.step = e["step"] if isinstance(e.get("step"), int) else self.step
        self.metrics = dict(e.get("metrics") or {})
        self.output, self.merged = e.get("output"), e.get("merged")
        self.ended = _number(e.get("time"))
        if self.eval_loss is None:
            self.eval_loss = _number(self.metrics.get("eval_loss"))


def summarize(events: Iterable[dict]) -> RunSummary:
    summary = RunSummary()
    for event in events:
        summary.update(event)
    return summary


def other_rank_failed(events: list[dict]) -> bool:
    """Whether a rank other than 0 wrote an error since this start of the run (the last run_finished ended the
    start before a resume)."""
    ends = [i for i, e in enumerate(events) if e.get("type") == "run_finished"]
    since = events[ends[-1] + 1:] if ends else events
    return any(e.get("type") == "error" and e.get("rank") for e in since)
