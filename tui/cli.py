"""`llmtune-tui`: the wizard by default; `--config FILE` with `--dry-run` (and, later, `--yes`) headless.

Only light modules are imported at start-up; the dry run imports transformers when it loads the tokenizer.
Exit codes: 0 fine, 2 a problem with the config or the data (no traceback), 1 an internal error (the
message names the log holding the traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.errors import UserError
from tui.errors import EXIT_OK, EXIT_USER, report_internal_error, report_user_error

app = typer.Typer(add_completion=False, no_args_is_help=False, invoke_without_command=True,
                  help="Fine-tune large language models from AutoTrain-style configs, in the terminal.",
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def main_command(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="An AutoTrain-style YAML config.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate, load the tokenizer and data, and print "
                                          "exactly what would be trained; train nothing.")] = False,
    samples: Annotated[int, typer.Option("--samples", "-n", min=0, help="Samples to show in the dry run.")] = 3,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                          help="Override a config key, e.g. --set "
                                                          "params.lr=1e-4 (repeatable).")] = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        if dry_run:
            _fail("--dry-run needs --config FILE")
        print("llmtune-tui: the interactive wizard is not part of this version yet.\n"
              "Run a config headless:  llmtune-tui --config configs/sft-chat.yaml --dry-run\n"
              "See llmtune-tui --help for the options.")
        raise typer.Exit(EXIT_OK)
    if not dry_run:
        _fail("training from the CLI is not part of this version yet; use --dry-run to check a config")
    raise typer.Exit(_run(lambda: _dry_run(config, overrides or [], samples)))


def _dry_run(config: Path, overrides: list[str], samples: int) -> int:
    from engine.config import load_config
    from tui.dry_run import print_preview, print_validated

    cfg = load_config(config, overrides, check_env=True)
    print_validated(cfg)
    from engine.preview import build_preview

    preview = build_preview(cfg, n_samples=samples)
    print_preview(preview)
    return EXIT_OK


def _run(action) -> int:
    try:
        return action()
    except UserError as e:
        return report_user_error(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal error: a log, not a traceback on screen
        return report_internal_error(e)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_USER)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
