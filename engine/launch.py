"""Starting a run as a detached child process, finding it again, and ending it at once.

The run lives in its own session (`start_new_session=True`): closing the terminal, an SSH drop or a
Ctrl-C in the terminal never reaches it, and the UI that started it is only a reader of its events.
Asking it to stop cleanly is a request file (engine.control), not a signal.

Standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.manifest import Manifest
from engine.run_files import LOG_FILE, PID_FILE, RunDir, write_atomically

RUN_MODULE = "engine.run"
BELONG_WAIT_S = 0.5  # how long a just-started child may take to exec and show its environment
RUN_DIR_ENV = "LLMTUNE_RUN_DIR"  # set in the child, so that a pid can be told apart from a reused one


@dataclass
class RunHandle:
    run_dir: Path
    pid: int
    process: subprocess.Popen | None = None  # None when attached to a run started elsewhere

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _pid_alive(self.pid)

    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal); None while running or when attached."""
        return self.process.poll() if self.process is not None else None

    @classmethod
    def ended(cls, run_dir: Path) -> RunHandle:
        """A handle on a run no process runs any more (pid 0: never alive, never signalled)."""
        return cls(Path(run_dir), 0)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negatives name process groups to kill(): never a run
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited but was not reaped yet still answers kill(pid, 0)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS), or it just went away
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]  # the name in (...) may hold spaces


def start(run_dir: Path, *, command: list[str] | None = None, env: dict[str, str] | None = None,
          resume: bool = False) -> RunHandle:
    """Start the run detached and return its handle.

    The child gets stdin from /dev/null and appends stdout and stderr to RUN_DIR/train.log; it runs in
    the current directory, in a new session (so its process group id is its pid). `env` adds to (and
    overrides) the current environment. `command` defaults to `python -m engine.run RUN_DIR` (with
    `--resume`: continue from the run directory's last checkpoint).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    absolute = str(run_dir.resolve())
    command = command or [sys.executable, "-m", RUN_MODULE, absolute, *(["--resume"] if resume else [])]
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", RUN_DIR_ENV: absolute, **(env or {})}
    files = RunDir(run_dir)
    Manifest(run_dir).add(LOG_FILE, PID_FILE)  # before the child starts: it is the only writer from then on
    with open(files.log, "ab") as log:
        # The log is appended to across resumes: mark where each start begins.
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=os.getcwd(), env=child_env, start_new_session=True)
    write_atomically(files.pid, f"{process.pid}\n")
    return RunHandle(run_dir, process.pid, process)


def attach(run_dir: Path) -> RunHandle | None:
    """A handle on a run started elsewhere that is still running, or None.

    On Linux the pid must belong to this run (its environment names the run directory): after a reboot
    run.pid may name an unrelated process, which must never be signalled.
    """
    pid = read_pid(run_dir)
    if pid is None or not _pid_alive(pid):
        return None
    deadline = time.monotonic() + (BELONG_WAIT_S if _age(pid) < 2 * BELONG_WAIT_S else 0.0)
    while not _belongs_to(pid, Path(run_dir)):
        # Right after start() the child may not have exec'd yet: its /proc environ is still its parent's.
        if time.monotonic() >= deadline or not _pid_alive(pid):
            return None
        time.sleep(0.02)
    return RunHandle(Path(run_dir), pid)


def _age(pid: int) -> float:
    """Seconds since the process started (Linux); infinity where that cannot be read."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("inf")


def _belongs_to(pid: int, run_dir: Path) -> bool:
    if not Path("/proc/self").exists():  # no /proc (macOS): nothing to check against
        return True
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read (then not ours to signal either)
        return False
    return f"{RUN_DIR_ENV}={run_dir.resolve()}".encode() in environ.split(b"\0")


def read_pid(run_dir: Path) -> int | None:
    try:
        return int(RunDir(run_dir).pid.read_text().strip())
    except (OSError, ValueError):
        return None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    if pid <= 0:  # killpg(0) would signal our own group
        return
    try:
        os.killpg(pid, sig)  # the whole group: accelerate's workers and dataloader processes too
    except ProcessLookupError:
        pass


def kill(handle: RunHandle, *, grace: float = 5.0) -> None:
    """End the run now: SIGTERM to its process group, SIGKILL if it is still alive after `grace` seconds.

    No checkpoint is saved; `engine.control.request(run_dir, "stop")` is the clean way.
    """
    _signal_group(handle.pid, signal.SIGTERM)
    if not _wait_until_dead(handle, grace):
        _signal_group(handle.pid, signal.SIGKILL)
        _wait_until_dead(handle, 5.0)  # SIGKILL cannot be ignored; this only reaps it


def _wait_until_dead(handle: RunHandle, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while handle.alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
