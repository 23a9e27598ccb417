"""Fused kernels (engine.kernels: params.liger_kernel, params.lora_dropout_kernel): the choice for every kind of
machine, tested here without a GPU; the refusal of `on` where they cannot run; the choice said by the dry run and
the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import kernels
from engine.kernels import Kernels, choose_kernels
from support import ROOT, make_config, run

GPU_WITH_LIGER = dict(on_cuda=True, installed=True, model_type="llama", supported={"llama", "qwen2"})


def test_auto_turns_liger_on_only_with_a_gpu_the_package_and_a_model_type_it_knows() -> None:
    assert choose_kernels("auto", **GPU_WITH_LIGER).liger
    for change, reason in ((dict(on_cuda=False), "need a CUDA GPU"), (dict(installed=False), "not installed"),
                           (dict(model_type="gpt2"), "no kernels for model type gpt2")):
        chosen = choose_kernels("auto", **{**GPU_WITH_LIGER, **change})
        assert not chosen.liger and reason in chosen.why and chosen.why.startswith("auto: ")
    # liger's table unreadable: transformers decides (it warns when the type is unknown)
    assert choose_kernels("auto", **{**GPU_WITH_LIGER, "supported": None}).liger


def test_explicit_values_win_and_on_where_it_cannot_run_is_an_error() -> None:
    assert choose_kernels("off", **GPU_WITH_LIGER) == Kernels(False, "params.liger_kernel: off")
    assert choose_kernels("on", **GPU_WITH_LIGER) == Kernels(True, "params.liger_kernel: on")
    with pytest.raises(ValueError, match="on cannot run here: its Triton kernels need a CUDA GPU"):
        choose_kernels("on", **{**GPU_WITH_LIGER, "on_cuda": False})


@pytest.mark.parametrize("written,read", [("on", "on"), ("true", "on"), ("off", "off"), ("false", "off"),
                                          ("no", "off"), ("Auto", "auto")])
def test_yaml_booleans_read_as_on_and_off(written: str, read: str) -> None:
    from engine.config import parse_config_text

    cfg = parse_config_text(f"task: llm-sft\nbase_model: m\nparams:\n  liger_kernel: {written}\n")
    assert cfg.params.liger_kernel == read  # YAML 1.1 reads a bare `on` as true


def test_the_model_type_decides_on_a_gpu_with_liger(in_tmp: Path, tiny_model: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.model_info import read_model_info

    cfg = make_config(in_tmp, tiny_model, "sft")
    model_type = read_model_info(str(tiny_model)).model_type  # as the run reads it: the tiny model is a Llama
    monkeypatch.setattr(kernels, "liger_installed", lambda: True)
    monkeypatch.setattr(kernels, "liger_model_types", lambda: {"llama"})
    assert kernels.machine_kernels(cfg, on_cuda=True, model_type=model_type).liger
    monkeypatch.setattr(kernels, "liger_model_types", lambda: {"qwen2"})
    assert "model type llama" in kernels.machine_kernels(cfg, on_cuda=True, model_type=model_type).why
    assert not kernels.machine_kernels(cfg, on_cuda=False, model_type=model_type).liger


def test_on_is_refused_before_the_run_on_a_machine_without_a_gpu(in_tmp: Path, tiny_model: Path) -> None:
    path = in_tmp / "run.yaml"
    path.write_text(f"task: llm-sft\nbase_model: {tiny_model}\nproject_name: {in_tmp / 'out'}\n"
                    "data:\n  path: configs/data/chat\n  column_mapping:\n    text_column: messages\n"
                    "params:\n  liger_kernel: on\n")
    out = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(path), "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "params.liger_kernel" in out.stdout + out.stderr and "CUDA GPU" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_the_dry_run_and_the_run_say_which_kernels_run(in_tmp: Path, tiny_model: Path) -> None:
    from tui.dry_run import summary_rows

    cfg = make_config(in_tmp, tiny_model, "sft", params={"max_steps": 1, "peft": True, "quantization": None})
    assert dict(summary_rows(cfg, machine=True))["kernels"].startswith(
        "Liger off (auto: its Triton kernels need a CUDA GPU); LoRA dropout fused (auto: ")
    assert dict(summary_rows(cfg))["kernels"] == ("Liger, LoRA dropout, log-probs, attention, attention gradient, "
                                                  "allocator: auto (chosen for this machine at the start)")
    code, run_dir, events = run(cfg)
    assert code == 0
    [started] = [e for e in events if e["type"] == "run_started"]
    kernels_started = started["kernels"]
    assert {k: kernels_started[k] for k in ("liger", "why", "lora_dropout")} == {
        "liger": False, "why": "auto: its Triton kernels need a CUDA GPU", "lora_dropout": True}
    assert "- Kernels: Liger off (auto: its Triton kernels need a CUDA GPU); LoRA dropout fused (auto: " in (
        run_dir / "README.md").read_text()
    assert "LoRA dropout fused into 14 LoRA layers" in [e["message"] for e in events if e["type"] == "log"]
