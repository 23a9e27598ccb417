"""`llmtune-tui attach [RUN_DIR]`: watch a run again, from any terminal, however it was started.

In a terminal it opens the dashboard (the run's plots rebuilt from its events so far) with the wizard beneath,
filled from the run's own config; without one (a pipe, a CI log) it follows the run as `--yes` does. With
no RUN_DIR, or a directory of runs, it picks the newest running run there, else the newest run.

Also what the app leaves on the terminal when it quits: each run it watched, finished (its summary and exit
code) or still going (how to come back to it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from engine import launch
from engine.errors import Problem, UserError
from engine.events import read_events, summarize
from engine.exit_codes import ExitCode
from engine.run_files import EVENTS_FILE, RunDir

DEFAULT_RUNS = Path("runs")


def pick_run(path: Path | None) -> Path:
    """The run to attach to: `path` itself when it is a run, else the best one under it (or under ./runs)."""
    from tui.runs_list import find_runs

    directory = (path or DEFAULT_RUNS).expanduser()
    files = RunDir(directory)
    if files.events.exists() or files.pid.exists():
        return directory.absolute()
    if not directory.is_dir():
        hint = "name a run directory (its project_name), e.g. llmtune-tui attach runs/my-model; " \
               "llmtune-tui runs DIR lists the runs under DIR"
        raise UserError([Problem(str(directory), "no such directory" if not directory.exists()
                                 else "not a directory", hint)], title="nothing to attach to")
    runs = find_runs(directory)
    if not runs:
        raise UserError([Problem(str(directory), f"no run here: a run is a directory holding {EVENTS_FILE}",
                                 "start one with llmtune-tui --config FILE --yes, or name its directory")],
                        title="nothing to attach to")
    running = [run for run in runs if launch.attach(run) is not None]
    return (running or runs)[0].absolute()  # find_runs lists the newest first


def attach(path: Path | None) -> int:
    run_dir = pick_run(path)
    handle = launch.attach(run_dir)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        from tui.headless import follow

        return follow(handle or launch.RunHandle.ended(run_dir))
    from engine.config import load_config_lenient
    from tui.app import WizardApp

    cfg, problems = None, []
    config = RunDir(run_dir).config
    if config.exists():
        cfg, problems = load_config_lenient(config)
    result = WizardApp(cfg, problems=problems, attach=(run_dir, handle)).run()
    return after_app(result)


def after_app(result: object, console: Console | None = None) -> int:
    """Say what became of the app's runs; the exit code is the last run's when it has ended, else 0."""
    from tui.format import summary_lines
    from tui.headless import exit_code

    console = console or Console(highlight=False)
    if result is None:
        return ExitCode.OK
    config_path, runs = getattr(result, "config_path", None), list(getattr(result, "runs", []))
    if config_path is not None and not runs:
        console.print(f"saved {config_path}\ntrain it with: llmtune-tui --config {config_path} --yes", soft_wrap=True)
        return ExitCode.OK
    code: int = ExitCode.OK
    for run_dir in runs:
        files = RunDir(run_dir)
        summary = summarize(read_events(files.events)) if files.events.exists() else None
        handle = launch.attach(run_dir)
        if summary is not None and summary.finished:
            console.print(Text(f"{run_dir}:", style="bold"), soft_wrap=True)
            lines = summary_lines(summary, files.log)
            if summary.status == "failed" and summary.error:  # the dashboard showed it; the terminal keeps it
                lines.insert(1, (f"error ({summary.error_kind}): {summary.error}", "red"))
            for text, style in lines:
                console.print(Text(f"  {text}", style=style), soft_wrap=True)
            code = exit_code(summary)
        elif handle is not None:
            step = f"step {summary.step}/{summary.total_steps}" if summary and summary.total_steps else "starting"
            console.print(f"{run_dir}: still training ({step}, pid {handle.pid}); it goes on without this terminal.\n"
                          f"  watch it:  llmtune-tui attach {run_dir}\n"
                          f"  list runs: llmtune-tui runs {run_dir.parent}", soft_wrap=True)
            code = ExitCode.OK
        else:
            console.print(f"{run_dir}: ended without a final event; its log: {files.log}", soft_wrap=True)
            code = ExitCode.FAILED
    return code
