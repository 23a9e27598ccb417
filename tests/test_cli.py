"""`llmtune-tui --config FILE --dry-run` as a user runs it: a real child process, its output and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=300)


def write_config(tmp_path: Path, tiny_model: Path, body: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"base_model: {tiny_model}\nproject_name: {tmp_path / 'out'}\n{body}")
    return path


def test_dry_run_of_an_example_config_prints_the_preview() -> None:
    out = run_cli("--config", "configs/sft-chat.yaml", "--dry-run", "--samples", "2")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "config valid" in text and "task           llm-sft (trainer: sft)" in text
    assert "Data: train" in text and "Data: valid" in text  # the validation split is loaded too
    assert "rows: 20 read, 20 used, 0 dropped; shape: messages" in text
    assert "tokens (sequence): min" in text and "p95" in text and "longer than 256" in text
    # piped output: trained text between markers, masks bare
    assert "<|im_start|>assistant\n[[The capital of France is Paris.<|im_end|>\n]]" in text
    assert text.count("--- sample ") == 2
    assert "Traceback" not in out.stderr


def test_dry_run_of_preference_data_shows_prompt_chosen_rejected() -> None:
    out = run_cli("--config", "configs/dpo.yaml", "--dry-run", "-n", "1")
    assert out.returncode == 0, out.stderr
    assert "[prompt: " in out.stdout and "[chosen: " in out.stdout and "[rejected: " in out.stdout
    assert "tokens (prompt+chosen)" in out.stdout
    out = run_cli("--config", "configs/reward.yaml", "--dry-run", "-n", "1")
    assert out.returncode == 0 and "[chosen: " in out.stdout and "[prompt: " not in out.stdout


def test_set_overrides_the_file() -> None:
    out = run_cli("--config", "configs/sft-chat.yaml", "--dry-run", "-n", "0", "--set", "params.block_size=32",
                  "--set", "params.lr=1e-4")
    assert out.returncode == 0, out.stderr
    assert "block_size 32" in out.stdout and "lr 0.0001" in out.stdout
    assert "longer than 32 (truncated)" in out.stdout


def test_config_problems_exit_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("task: llm-sfd\nbase_model: ./nowhere\ndata:\n  path: nodata/\nparams:\n  batch_size: x\n")
    out = run_cli("--config", str(path), "--dry-run")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"{path}:1: task" in out.stderr and "did you mean llm-sft" in out.stderr
    assert "params.batch_size" in out.stderr and "base_model" in out.stderr and "data.path" in out.stderr


def test_bad_data_exits_2_naming_file_and_line(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "fine"}\n{"text": broken\n')
    path = write_config(tmp_path, tiny_model, f"task: llm-sft\ndata:\n  path: {data}\n")
    out = run_cli("--config", str(path), "--dry-run")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "train.jsonl:2" in out.stderr


def test_missing_column_lists_the_columns(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_text("question,answer\nhi,hello\n")
    path = write_config(tmp_path, tiny_model, f"task: llm-sft\ndata:\n  path: {data}\n")
    out = run_cli("--config", str(path), "--dry-run")
    assert out.returncode == 2
    assert "has no column 'text'" in out.stderr and "question, answer" in out.stderr


def test_model_not_available_offline_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_text("text\nhello\n")
    path = tmp_path / "run.yaml"
    path.write_text(f"task: llm-sft\nbase_model: someorg/not-cached-model\ndata:\n  path: {data}\n")
    out = run_cli("--config", str(path), "--dry-run", env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cannot load its tokenizer" in out.stderr and "HF_HUB_OFFLINE=1" in out.stderr


def test_missing_config_file_and_missing_option() -> None:
    out = run_cli("--config", "nope.yaml", "--dry-run")
    assert out.returncode == 2 and "no such config file" in out.stderr
    assert run_cli("--dry-run").returncode == 2


def test_internal_errors_exit_1_and_point_to_a_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    from tui.cli import _run

    monkeypatch.setenv("LLMTUNE_HOME", str(tmp_path))
    assert _run(lambda: 1 / 0) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError" in err and "Traceback" not in err
    logs = list((tmp_path / "logs").glob("error-*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()


def test_an_internal_error_with_no_writable_log_still_shows_no_traceback(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture) -> None:
    from tui.cli import _run

    blocked = tmp_path / "home"
    blocked.write_text("a file where the log directory would go")
    monkeypatch.setenv("LLMTUNE_HOME", str(blocked))
    assert _run(lambda: 1 / 0) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError" in err and "could not be written" in err
    assert "Traceback" not in err and "test_cli.py:" in err  # where it failed, in one line


def test_terminal_output_uses_colour_not_markers(tmp_path: Path) -> None:
    from rich.console import Console

    from engine.preview import Segment
    from tui.dry_run import render_part

    segments = [Segment("ask ", "masked"), Segment("answer", "trained"), Segment(" rest", "cut")]
    plain = render_part(segments, plain=True)
    assert plain.plain == "ask [[answer]]<<cut: rest>>"
    coloured = render_part(segments, plain=False)
    assert coloured.plain == "ask answer rest" and {s.style for s in coloured.spans} >= {"bold green"}
    console = Console(force_terminal=True, color_system="standard", width=80, record=True)
    console.print(coloured)
    assert "\x1b[" in console.export_text(styles=True)


def test_a_config_path_that_looks_like_markup_is_printed_as_is(tmp_path: Path, tiny_model: Path) -> None:
    odd = tmp_path / "a[" / "x]"  # "a[/x]/run.yaml": a closing tag to Rich's markup
    odd.mkdir(parents=True)
    (odd / "train.jsonl").write_text('{"text": "Hello there."}\n')
    config = write_config(odd, tiny_model, "task: llm-generic\ndata:\n  path: .\n")
    out = run_cli("--config", str(config), "--dry-run", cwd=odd)
    assert out.returncode == 0, out.stderr
    assert f"{config}  (config valid)" in out.stdout
