"""`llmtune-tui llm ...`: AutoTrain's `autotrain llm` command line (engine.autotrain_flags has the flags).

`--train` checks and trains exactly as `--config FILE --yes` does; `--dry-run` prints what `--config FILE
--dry-run` prints; `--export-config FILE` writes the flags as a YAML config (the token never: `${HF_TOKEN}`);
`--wizard` opens the wizard filled from them. A bad value is a config problem blamed on its flag (exit 2), an
unknown flag is named with the nearest one.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from engine.autotrain_flags import BACKENDS_HERE, GROUPS, Flag, config_from_flags, flags
from engine.errors import ConfigError, Problem
from engine.exit_codes import ExitCode

USAGE = ("llmtune-tui llm (--train | --dry-run | --export-config FILE | --wizard) --model MODEL "
         "--project-name PROJECT_NAME [flags]")
# What `llmtune-tui llm` adds to AutoTrain's flags: what to do with the config they make.
MODES = (("--dry-run", "validate, load the tokenizer and data, and print exactly what would be trained"),
         ("--wizard", "open the wizard, filled from the flags"))
EXPORT = "--export-config"
REFUSED = {"deploy": "--deploy is AutoTrain's deployment to Hugging Face; llmtune trains only: serve the run "
                     "directory with your own server (e.g. vllm serve RUN_DIR, or transformers)",
           "inference": "--inference is AutoTrain's; llmtune trains only: load the run directory with "
                        "transformers (its README.md shows how)"}


class FlagError(Exception):
    """A command line argparse cannot read (a flag without its value, an unknown flag)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit; we say it our way
        raise FlagError(message)


def build_parser() -> _Parser:
    parser = _Parser(prog="llmtune-tui llm", add_help=False, allow_abbrev=False, usage=USAGE,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="AutoTrain's `autotrain llm` flags, both spellings, AutoTrain's choices. A flag "
                     "not given keeps the config's default (AutoTrain's LLMTrainingParams). Values are read as "
                     "in a YAML config: None, none and null alike.",
                     epilog="Examples:\n  llmtune-tui llm --train --model llmtune/tiny-random --project-name "
                     "runs/sft --data-path configs/data/chat --text-column messages --trainer sft "
                     "--chat-template tokenizer --peft --max-steps 20\n  llmtune-tui llm ... --export-config "
                     "run.yaml     (then: llmtune-tui --config run.yaml --yes)")
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    commands = groups["commands"]
    commands.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    for name, help in MODES:
        commands.add_argument(name, action="store_true", help=f"✚ {help}")
    commands.add_argument(EXPORT, metavar="FILE", help="✚ write the flags as a YAML config and exit")
    commands.add_argument("--samples", "-n", type=int, default=3, help="✚ with --dry-run: samples to show")
    for flag in flags():
        group = groups[flag.group]
        mark = "" if flag.group != GROUPS[-1] and not _addition(flag) else "✚ "
        text = (f"{mark}{flag.help}" + ("" if flag.switch else f" (default: {_default(flag)})")).replace("%", "%%")
        if flag.switch:
            group.add_argument(*flag.names, dest=flag.dest, action="store_true", default=None, help=text)
        else:
            group.add_argument(*flag.names, dest=flag.dest, default=None, metavar=_metavar(flag), help=text)
    return parser


def _metavar(flag: Flag) -> str:
    """AutoTrain's {a,b,None} for a short list of choices (None where the key may be empty), else the name."""
    if not flag.choices:
        return flag.dest.upper()
    from engine.config import key_is_optional

    choices = [str(c) for c in flag.choices] + (["None"] if key_is_optional(flag.key) else [])
    text = "{" + ",".join(choices) + "}"
    return text if len(text) <= 60 else f"{flag.dest.upper()} (one of {len(choices)})"


def _addition(flag: Flag) -> bool:
    from engine.autotrain_flags import AUTOTRAIN_KEYS

    return bool(flag.key) and flag.key not in AUTOTRAIN_KEYS


def _default(flag: Flag) -> str:
    return "None" if flag.default is None else str(flag.default)


def run_llm(argv: list[str]) -> int:
    """The `llm` command: exit code as `--config FILE --yes` / `--dry-run` give it."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except FlagError as e:
        raise ConfigError([_flag_problem(str(e), argv)], source="the command line") from None
    given = given_flags(ns)
    if ns.help:
        parser.print_help()
        return ExitCode.OK
    for command, why in REFUSED.items():
        if given.get(command):
            raise ConfigError([Problem(f"--{command}", why)], source="the command line")
    backend = given.get("backend")
    if backend is not None and backend not in BACKENDS_HERE:
        raise ConfigError([Problem("--backend", f"{backend} is one of AutoTrain's Hugging Face Spaces backends; "
                                   "llmtune trains on the machine it runs on", "use --backend local-cli, or "
                                   "leave it out", backend)], source="the command line")
    modes = [m for m, on in (("--train", given.get("train")), ("--dry-run", ns.dry_run), ("--wizard", ns.wizard),
                             (EXPORT, ns.export_config)) if on]
    if len(modes) > 1:
        raise ConfigError([Problem(" and ".join(modes), "exclude each other", "give one of --train, --dry-run, "
                                   f"{EXPORT} FILE or --wizard")], source="the command line")
    if not modes:
        raise ConfigError([Problem("llmtune-tui llm", "says what to do with --train (train, as autotrain llm "
                                   "--train does), --dry-run, --export-config FILE or --wizard",
                                   "add --train to train; llmtune-tui llm --help lists every flag")],
                          source="the command line")
    missing = [name for name, dest in (("--model", "model"), ("--project-name", "project_name"))
               if dest not in given and modes[0] != "--wizard"]
    if missing:
        raise ConfigError([Problem(name, "is required, as in autotrain llm", "e.g. --model Qwen/Qwen2.5-0.5B-"
                                   "Instruct --project-name runs/my-model") for name in missing],
                          source="the command line")
    if modes[0] == "--wizard":  # the wizard shows what is missing or wrong, step by step
        from engine.config import build_config

        raw, origins = config_from_flags(given)
        return wizard(*build_config(raw, given_as=origins))
    cfg = config_of(given, check_env=modes[0] in ("--train", "--dry-run"))
    if modes[0] == EXPORT:
        return export(cfg, Path(ns.export_config))
    if modes[0] == "--dry-run":
        from tui.dry_run import dry_run_config

        return dry_run_config(cfg, ns.samples)
    from tui.train_start import start_and_follow

    return start_and_follow(cfg)


_OWN = frozenset({"help", "dry_run", "wizard", "export_config", "samples"})


def given_flags(ns: argparse.Namespace) -> dict[str, Any]:
    """The config flags on the command line ({dest: value}; a switch True), without llmtune-tui llm's own."""
    return {k: v for k, v in vars(ns).items() if v is not None and k not in _OWN}


def config_of(given: dict[str, Any], *, check_env: bool) -> Any:
    """The RunConfig the flags make, checked as a config file is (problems blamed on their flags)."""
    import yaml

    from engine.config import parse_config_text

    raw, origins = config_from_flags(given)
    return parse_config_text(yaml.safe_dump(raw, sort_keys=False), given_as=origins, check_env=check_env,
                             name="the command line")


def export(cfg: Any, path: Path) -> int:
    from engine.config import to_yaml

    if cfg.hub.token:  # written as the variable it is to come from, never as itself
        cfg.env_refs.setdefault("hub.token", "${HF_TOKEN}")

    text = ("# written by llmtune-tui llm --export-config from an autotrain llm command line\n"
            "# train it: llmtune-tui --config " + str(path) + " --yes\n" + to_yaml(cfg))
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ConfigError([Problem(EXPORT, f"cannot write {path}: {e.strerror or e}", "give a writable path",
                                   str(path))], source="the command line") from None
    print(f"wrote {path}: llmtune-tui --config {path} --yes trains it")
    if cfg.hub.token:
        print("the token (--token) is written as ${HF_TOKEN}: set HF_TOKEN in the environment that runs it")
    return ExitCode.OK


def wizard(cfg: Any, problems: list[Problem]) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("llmtune-tui llm --wizard: the wizard needs a terminal (use --export-config FILE, then open it "
              "there: llmtune-tui --config FILE)", file=sys.stderr)
        return ExitCode.USER
    from tui.app import WizardApp
    from tui.attach import after_app

    return after_app(WizardApp(cfg, problems=problems).run())


def _flag_problem(message: str, argv: list[str]) -> Problem:
    """argparse's complaint, with the nearest flag for an unknown one."""
    if message.startswith("unrecognized arguments:"):
        words = message.split(":", 1)[1].split()
        unknown = next((w for w in words if w.startswith("-")), words[0] if words else "")
        known = [n for f in flags() for n in f.names] + [m for m, _ in MODES] + [EXPORT]
        close = difflib.get_close_matches(unknown.split("=")[0], known, n=1, cutoff=0.6)
        if unknown.startswith("-"):
            return Problem(unknown, "is not a flag of autotrain llm or llmtune",
                           (f"did you mean {close[0]}? " if close else "") + "llmtune-tui llm --help lists them")
        return Problem(unknown, "is a value without its flag", "put the flag it belongs to before it")
    if message.startswith("argument ") and ": " in message:  # "argument --lr: expected one argument"
        names, _, what = message[len("argument "):].partition(": ")
        flag = names.split("/")[0]
        if "expected one argument" in what:
            return Problem(flag, "needs a value", f"e.g. {flag} VALUE; llmtune-tui llm --help lists its values")
        return Problem(flag, what, "llmtune-tui llm --help lists the flags and their values")
    return Problem("the command line", message, "llmtune-tui llm --help lists the flags and their values")
