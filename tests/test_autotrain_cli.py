"""`llmtune-tui llm`: AutoTrain's `autotrain llm` command line (issue 18). Every flag of AutoTrain's help (the
reference file) is accepted in each of its spellings and lands on its config key; AutoTrain's SFT and DPO
command lines train on the tiny model through the real CLI; `--export-config` writes a config that loads as the
flags' config; bad values and unknown flags exit 2 naming the flag."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.autotrain_flags import config_from_flags, flags
from engine.config import load_config
from engine.events import read_events
from support import ROOT
from tui.autotrain_cli import build_parser, config_of, given_flags

# AutoTrain's `autotrain llm --help`, as the team's reference holds it (../shared/reference), copied here for CI
REFERENCE = ROOT / "tests" / "fixtures" / "autotrain" / "autotrain-llm-cli-help-ko.txt"
HELP = REFERENCE.read_text(encoding="utf-8")
OPTIONS = HELP.split("options:", 1)[-1]
# AutoTrain's flags whose config key is not params.<the flag's name>
KEYS = {"--username": "hub.username", "--backend": "backend", "--token": "hub.token",
        "--push-to-hub": "hub.push_to_hub", "--model": "base_model", "--project-name": "project_name",
        "--data-path": "data.path", "--train-split": "data.train_split", "--valid-split": "data.valid_split",
        "--train-batch-size": "params.batch_size", "--batch-size": "params.batch_size", "--log": "log",
        "--text_column": "data.column_mapping.text_column", "--text-column": "data.column_mapping.text_column",
        "--rejected_text_column": "data.column_mapping.rejected_text_column",
        "--rejected-text-column": "data.column_mapping.rejected_text_column",
        "--prompt-text-column": "data.column_mapping.prompt_text_column", "--use-peft": "params.peft",
        "--disable-gc": "params.disable_gradient_checkpointing", "--use-fa2": "params.use_flash_attention_2",
        "--evaluation_strategy": "params.eval_strategy", "--evaluation-strategy": "params.eval_strategy",
        "--chat_template": "data.chat_template", "--chat-template": "data.chat_template"}
COMMANDS = ("--train", "--deploy", "--inference", "--help")


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def reference_flags() -> list[tuple[str, str | None, tuple[str, ...] | None]]:
    """(spelling, its metavar or None for a switch, AutoTrain's choices) of every flag in the reference help."""
    out = []
    for line in OPTIONS.splitlines():
        if not line.startswith("--"):
            continue
        head = re.split(r"\s{2,}| (?=[^\x00-\x7f])", line, maxsplit=1)[0]  # the flags, before the Korean text
        for part in head.split(", "):
            words = part.split(" ")
            value = words[1] if len(words) > 1 and re.fullmatch(r"[A-Z_]+|\{.*\}", words[1]) else None
            choices = tuple(value[1:-1].split(",")) if value and value.startswith("{") else None
            if words[0].startswith("--"):
                out.append((words[0], value, choices))
    return list(dict.fromkeys(out))


def sample_value(spelling: str, choices: tuple[str, ...] | None) -> str:
    if choices:
        return choices[0]
    name = spelling.lstrip("-").replace("-", "_")
    if any(w in name for w in ("lr", "ratio", "dropout", "decay", "norm", "beta")):
        return "0.25"
    if any(w in name for w in ("size", "steps", "epochs", "seed", "accumulation", "limit", "length", "lora_r",
                               "alpha")):
        return "8"
    return "some-value"


def test_every_flag_of_autotrain_llm_lands_on_its_config_key() -> None:
    found = reference_flags()
    assert len(found) > 70, found  # both spellings of AutoTrain's ~55 flags
    parser = build_parser()
    for spelling, metavar, choices in found:
        if spelling in COMMANDS:
            continue
        argv = [spelling] if metavar is None else [spelling, sample_value(spelling, choices)]
        ns = parser.parse_args(argv)
        raw, origins = config_from_flags(given_flags(ns))
        expected = KEYS.get(spelling, "params." + spelling.lstrip("-").replace("-", "_"))
        assert list(origins) == [expected], (spelling, origins)
        node = raw
        for part in expected.split("."):
            node = node[part]
        assert node == (True if metavar is None else argv[1]), spelling
        if choices:  # AutoTrain's choices are the config's (None read as empty)
            for choice in choices:
                config_from_flags({flag_dest(spelling): choice})  # accepted by argparse, checked by the config
    # and the command flags are there
    for command in ("--train", "--deploy", "--inference"):
        assert parser.parse_args([command]).__dict__[command[2:]] is True


def flag_dest(spelling: str) -> str:
    return next(f.dest for f in flags() if spelling in f.names)


def test_autotrain_choices_read_as_autotrain_reads_them() -> None:
    base = {"model": "llmtune/tiny-random", "project_name": "p"}
    for dest, value, key, expected in (("quantization", "None", "quantization", None),
                                       ("quantization", "none", "quantization", None),
                                       ("mixed_precision", "None", "mixed_precision", None),
                                       ("padding", "None", "padding", None), ("trainer", "sft", "trainer", "sft")):
        cfg = config_of({**base, dest: value}, check_env=False)
        assert getattr(cfg.params, key) == expected, (dest, value)
    cfg = config_of({**base, "chat_template": "None"}, check_env=False)
    assert cfg.data.chat_template == "none" and cfg.task == "llm"
    for backend in ("local-cli", "local"):
        assert config_of({**base, "backend": backend}, check_env=False).backend == backend


def test_autotrain_sft_and_dpo_command_lines_train(tmp_path: Path) -> None:
    data = ROOT / "configs" / "data"
    common = ["--model", "llmtune/tiny-random", "--peft", "--quantization", "None", "--mixed-precision", "None",
              "--lr", "1e-3", "--batch-size", "2", "--gradient-accumulation", "1", "--max-steps", "2",
              "--block-size", "128", "--disable-gc"]
    sft = cli("llm", "--train", "--project-name", "runs/sft", "--data-path", str(data / "chat"), "--text-column",
              "messages", "--trainer", "sft", "--chat-template", "tokenizer", *common, cwd=tmp_path)
    assert sft.returncode == 0, sft.stdout + sft.stderr
    assert "started the training process" in sft.stdout and "completed: 2/2 steps" in sft.stdout
    dpo = cli("llm", "--train", "--project-name", "runs/dpo", "--data-path", str(data / "preference.jsonl"),
              "--trainer", "dpo", "--prompt-text-column", "prompt", "--text-column", "chosen",
              "--rejected-text-column", "rejected", "--chat-template", "chatml", "--dpo-beta", "0.2",
              "--max-prompt-length", "64", *common, cwd=tmp_path)
    assert dpo.returncode == 0, dpo.stdout + dpo.stderr
    for name, trainer in (("sft", "sft"), ("dpo", "dpo")):
        run_dir = tmp_path / "runs" / name
        events = read_events(run_dir / "events.jsonl")
        started = next(e for e in events if e["type"] == "run_started")
        assert events[-1]["status"] == "completed" and started["trainer"] == trainer
        saved = load_config(run_dir / "config.yaml")  # the run directory's config reruns it
        assert saved.task == "llm" and saved.params.trainer == trainer and saved.params.max_steps == 2
    assert load_config(tmp_path / "runs/dpo/config.yaml").params.dpo_beta == 0.2


def test_export_config_writes_the_flags_config_without_the_token(tmp_path: Path) -> None:
    flags_ = ["--model", "llmtune/tiny-random", "--project-name", "runs/x", "--data-path",
              str(ROOT / "configs/data/preference.jsonl"), "--trainer", "reward", "--text_column", "chosen",
              "--rejected-text-column", "rejected", "--use-peft", "--lora-r", "8", "--evaluation-strategy", "no",
              "--token", "hf_NOT_WRITTEN", "--push-to-hub", "--username", "me", "--valid-fraction", "0.2"]
    out = cli("llm", "--export-config", "run.yaml", *flags_, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (tmp_path / "run.yaml").read_text()
    assert "hf_NOT_WRITTEN" not in text and "token: ${HF_TOKEN}" in text and "HF_TOKEN" in out.stdout
    loaded = load_config(tmp_path / "run.yaml", environ={**os.environ, "HF_TOKEN": "hf_NOT_WRITTEN"})
    assert loaded == config_of(given_flags(build_parser().parse_args(flags_)), check_env=False)
    assert loaded.params.lora_r == 8 and loaded.params.eval_strategy == "no" and loaded.hub.push_to_hub


def test_the_dry_run_works_on_the_flags(tmp_path: Path) -> None:
    out = cli("llm", "--dry-run", "--model", "llmtune/tiny-random", "--project-name", "runs/x", "--data-path",
              str(ROOT / "configs/data/chat"), "--text-column", "messages", "--trainer", "sft", "--chat-template",
              "tokenizer", "-n", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Samples" in out.stdout and "sft" in out.stdout and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--lr", "fast"], ["--lr", "params.lr = 'fast'", "must be a number"]),
    (["--trainer", "foo"], ["--trainer", "'foo'", "allowed: sft, default, reward, dpo, orpo"]),
    (["--quantization", "int3"], ["--quantization", "'int3'", "allowed: int4, int8, or empty"]),
    (["--lora-rr", "3"], ["--lora-rr", "did you mean --lora-r?"]),
    (["--lr"], ["--lr: needs a value"]),
    (["--backend", "spaces-a10gl"], ["--backend", "Spaces backends", "local-cli"]),
    (["--deploy"], ["--deploy", "llmtune trains only"]),
    (["--inference"], ["--inference", "transformers"]),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path: Path, args: list[str], says: list[str]) -> None:
    out = cli("llm", "--train", "--model", "llmtune/tiny-random", "--project-name", "runs/x", *args, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert all(s in text for s in says), text
    assert "Traceback" not in text and not (tmp_path / "runs").exists()


def test_what_to_do_and_the_required_flags_are_said(tmp_path: Path) -> None:
    nothing = cli("llm", "--model", "m", "--project-name", "p", cwd=tmp_path)
    assert nothing.returncode == 2 and "add --train to train" in nothing.stdout + nothing.stderr
    missing = cli("llm", "--train", "--model", "m", cwd=tmp_path)
    assert missing.returncode == 2 and "--project-name: is required" in missing.stdout + missing.stderr
    both = cli("llm", "--train", "--dry-run", "--model", "m", "--project-name", "p", cwd=tmp_path)
    assert both.returncode == 2 and "exclude each other" in both.stdout + both.stderr


def test_help_lists_the_flags_grouped_with_their_defaults(tmp_path: Path) -> None:
    out = cli("llm", "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for group in ("commands:", "hub and backend:", "model and data:", "columns and templates:",
                  "training parameters:", "llmtune's additions:"):
        assert group in text
    assert "--lora_r LORA_R, --lora-r LORA_R" in text and "(default: 16)" in text
    assert "--quantization {int4,int8,None}" in text and "--disable-gc" in text
    assert text.index("training parameters:") < text.index("--max_steps") < text.index("--reward_model")


async def test_the_wizard_opens_filled_from_the_flags(tmp_path: Path, tiny_model: Path) -> None:
    """--wizard: the config the flags make, in the wizard (as a config file would fill it)."""
    from textual.widgets import Input

    from tui.app import WizardApp
    from tui.autotrain_cli import run_llm

    given = given_flags(build_parser().parse_args(["--model", str(tiny_model), "--project-name", "runs/w",
                                                   "--trainer", "dpo", "--lr", "2e-4", "--peft"]))
    from engine.config import build_config

    raw, origins = config_from_flags(given)
    cfg, problems = build_config(raw, given_as=origins)  # as --wizard makes it: DPO's columns still to map
    assert {p.key for p in problems} == {"data.column_mapping.prompt_text_column",
                                         "data.column_mapping.rejected_text_column"}
    app = WizardApp(cfg, problems=problems)
    async with app.run_test(size=(80, 24)):
        assert app.query_one("#model-input", Input).value == str(tiny_model)
        assert app.cfg.params.trainer == "dpo" and app.cfg.params.lr == 2e-4 and app.cfg.params.peft
    assert run_llm(["--wizard", "--model", "m"]) == 2  # no terminal here: said, not opened
