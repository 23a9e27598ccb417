"""`llmtune-tui`: the wizard by default; `--config FILE` with `--dry-run` or `--yes` headless; `llm` (AutoTrain's
`autotrain llm` flags: tui.autotrain_cli); `demo`, `resume`,
`attach` (the dashboard of a run), `runs` (a list of them), `cache` (the prepared datasets: `cache list`,
`cache clear [KEY...] [--older-than DAYS]`).

Only light modules are imported at start-up; the dry run and `--yes` import transformers when they load the
tokenizer to check the data; training itself runs in its own process (engine.run).
Exit codes (engine.exit_codes.ExitCode): OK fine, USER a problem with the config or the data (no traceback),
FAILED an internal error or a failed run (the message names the log holding the traceback), STOPPED stopped or
interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.errors import UserError
from engine.exit_codes import ExitCode
from tui.errors import report_internal_error, report_user_error

app = typer.Typer(add_completion=False, no_args_is_help=False, invoke_without_command=True,
                  help="Fine-tune large language models from AutoTrain-style configs, in the terminal.",
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def main_command(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="An AutoTrain-style YAML config.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate, load the tokenizer and data, and print "
                                          "exactly what would be trained; train nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Train now, headless: validate, start the run in its "
                                      "own process and follow its progress.")] = False,
    samples: Annotated[int, typer.Option("--samples", "-n", min=0, help="Samples to show in the dry run.")] = 3,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                          help="Override a config key, e.g. --set "
                                                          "params.lr=1e-4 (repeatable).")] = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if config is None and (dry_run or yes):
        _fail(f"{'--dry-run' if dry_run else '--yes'} needs --config FILE")
    if dry_run and yes:
        _fail("--dry-run and --yes exclude each other: check first with --dry-run, then train with --yes")
    if dry_run:
        raise typer.Exit(_run(lambda: _dry_run(config, overrides or [], samples)))
    if yes:
        raise typer.Exit(_run(lambda: _train(config, overrides or [])))
    raise typer.Exit(_run(lambda: _wizard(config, overrides or [])))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                "help_option_names": []}, add_help_option=False)
def llm(ctx: typer.Context) -> None:
    """AutoTrain's command line: `autotrain llm --train ...` with `llmtune-tui` for `autotrain`
    (llmtune-tui llm --help lists the flags)."""
    from tui.autotrain_cli import run_llm

    raise typer.Exit(_run(lambda: run_llm(list(ctx.args))))


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (its project_name) to continue.")],
) -> None:
    """Continue a stopped or failed run from its last checkpoint, with the config it started with."""
    raise typer.Exit(_run(lambda: _resume(run_dir)))


@app.command()
def attach(
    run_dir: Annotated[Optional[Path], typer.Argument(help="The run directory, or a directory of runs (default: "
                                                      "./runs): the newest running run there.")] = None,
) -> None:
    """Watch a run again: its dashboard, rebuilt from its events so far (plain lines without a terminal).
    Leaving it never stops the run."""
    from tui.attach import attach as attach_run

    raise typer.Exit(_run(lambda: attach_run(run_dir)))


@app.command()
def runs(
    directory: Annotated[Path, typer.Argument(help="Where the runs are (default: ./runs).")] = Path("runs"),
) -> None:
    """List the runs under a directory: status, trainer, progress, last loss and eval loss, last reward (GRPO, RLOO)."""
    from tui.runs_list import print_runs

    raise typer.Exit(_run(lambda: print_runs(directory)))


cache_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                        help="The prepared datasets runs reuse (under $LLMTUNE_HOME/cache): list them (the "
                        "default) or clear them.")
app.add_typer(cache_app, name="cache")


@cache_app.callback()
def cache_command(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        cache_list()


@cache_app.command("list")
def cache_list() -> None:
    """List the prepared datasets: key, size, when last used, trainer, base model, data and examples."""
    from tui.cache_command import list_cache

    raise typer.Exit(_run(list_cache))


@cache_app.command("clear")
def cache_clear(
    keys: Annotated[Optional[list[str]], typer.Argument(metavar="KEY", help="Remove only the entries whose key "
                                                        "starts with each of these (as `cache list` shows "
                                                        "them).")] = None,
    older_than: Annotated[Optional[float], typer.Option("--older-than", metavar="DAYS", min=0,
                                                        help="Remove only the entries last used more than "
                                                        "DAYS days ago.")] = None,
) -> None:
    """Remove prepared datasets: all of them without arguments (a run that needs one prepares it again).

    Without KEY or --older-than the partial directories left by preparations that did not finish go too."""
    from tui.cache_command import clear_cache

    raise typer.Exit(_run(lambda: clear_cache(keys or [], all_=not keys and older_than is None,
                                              older_than_days=older_than)))


@app.command()
def demo(
    overrides: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                          help="Override a key of the demo config.")] = None,
) -> None:
    """Fine-tune a tiny local model on generated chat data, end to end on the CPU (about a minute), then ask it
    a few questions. Nothing is downloaded."""
    raise typer.Exit(_run(lambda: _demo(overrides or [])))


def _dry_run(config: Path, overrides: list[str], samples: int) -> int:
    from engine.config import load_config
    from tui.dry_run import dry_run_config

    return dry_run_config(load_config(config, overrides, check_env=True), samples)


def _train(config: Path, overrides: list[str]) -> int:
    from engine.config import load_config
    from tui.train_start import start_and_follow

    return start_and_follow(load_config(config, overrides, check_env=True))


def _wizard(config: Path | None, overrides: list[str]) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("llmtune-tui: the wizard needs a terminal.\n"
              "Try it end to end:      llmtune-tui demo\n"
              "Check a config:         llmtune-tui --config configs/sft-chat.yaml --dry-run\n"
              "Train a config:         llmtune-tui --config configs/sft-chat.yaml --yes\n"
              "Continue a stopped run: llmtune-tui resume runs/sft-chat\n"
              "Follow a running run:   llmtune-tui attach runs/sft-chat\n"
              "See llmtune-tui --help for the options.", file=sys.stderr)
        return ExitCode.USER
    from tui.app import WizardApp

    if overrides:
        print("error: --set works with --dry-run and --yes; in the wizard, change the value on its step",
              file=sys.stderr)
        return ExitCode.USER
    cfg, problems = None, []
    if config is not None:
        from engine.config import load_config_lenient

        cfg, problems = load_config_lenient(config)
    from tui.attach import after_app

    return after_app(WizardApp(cfg, problems=problems).run())


def _resume(run_dir: Path) -> int:
    from tui.train_start import resume_and_follow

    return resume_and_follow(run_dir.expanduser().absolute())


def _demo(overrides: list[str]) -> int:
    from engine.config import load_config
    from engine.demo import write_demo
    from tui.train_start import show_demo_answers, start_and_follow

    path = write_demo()
    print(f"llmtune demo: a tiny random model learns short chat answers (config: {path})")
    cfg = load_config(path, overrides, check_env=True)
    code = start_and_follow(cfg)
    if code == ExitCode.OK:
        show_demo_answers(cfg)
    return code


def _run(action) -> int:
    try:
        return action()
    except UserError as e:
        return report_user_error(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.STOPPED
    except Exception as e:  # an internal error: a log, not a traceback on screen
        return report_internal_error(e)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(ExitCode.USER)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
