"""What this machine can run: consistent answers on any box (CPU-only or GPU), and a light import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.capabilities import KINDS, Capabilities, Support, probe, summary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def caps() -> Capabilities:
    return probe()


def test_probe_types(caps: Capabilities) -> None:
    assert caps.device in ("cuda", "mps", "cpu")
    assert isinstance(caps.device_name, str) and caps.device_name
    assert isinstance(caps.gpu_count, int) and caps.gpu_count >= 0
    assert caps.torch_version
    assert caps.bitsandbytes_version is None or isinstance(caps.bitsandbytes_version, str)
    for kind in KINDS:
        s = caps.support(kind)
        assert isinstance(s, Support) and isinstance(s.ok, bool)
        assert s.reason.endswith(".") and "\n" not in s.reason


def test_probe_is_cached(caps: Capabilities) -> None:
    assert probe() is caps


def test_device_and_gpu_count_agree(caps: Capabilities) -> None:
    assert (caps.gpu_count == 0) == (caps.device == "cpu")


def test_cpu_answers(caps: Capabilities) -> None:
    if caps.device != "cpu":
        pytest.skip("not a CPU-only machine")
    assert not caps.fp16.ok  # accelerate never autocasts fp16 on a CPU
    assert "cpu" in caps.fp16.reason and "bf16 or none" in caps.fp16.reason
    assert "cpu" in caps.bf16.reason


def test_accelerate_still_ignores_fp16_on_cpu() -> None:
    """The fp16-on-CPU answer is a measured fact about accelerate; this notices when a release changes it."""
    code = (
        "from accelerate import Accelerator; "
        "a = Accelerator(cpu=True, mixed_precision='fp16'); print(a.device.type, a.native_amp)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["cpu", "False"]


def test_cuda_answers(caps: Capabilities) -> None:
    if caps.device != "cuda":
        pytest.skip("no CUDA device")
    assert caps.fp16.ok
    assert caps.device_name in caps.bf16.reason


def test_quantization_answers_follow_bitsandbytes(caps: Capabilities) -> None:
    for kind in ("int4", "int8"):
        s = caps.support(kind)
        if caps.bitsandbytes_version is None:
            assert not s.ok and "bitsandbytes" in s.reason
        elif s.ok:
            assert caps.bitsandbytes_version in s.reason and caps.device in s.reason
        else:
            assert "quantization: none" in s.reason


def test_unknown_kind_is_refused(caps: Capabilities) -> None:
    with pytest.raises(ValueError, match="fp8"):
        caps.support("fp8")


def test_summary_mentions_every_kind(caps: Capabilities) -> None:
    line = summary(caps)
    assert line.startswith(caps.device)
    for kind in KINDS:
        assert f"{kind} {'yes' if caps.support(kind).ok else 'no'}" in line
    assert "\n" not in line


def test_summary_format() -> None:
    yes, no = Support(True, "ok."), Support(False, "no.")
    c = Capabilities("cpu", "AMD EPYC", 0, "2.13.0", None, fp16=no, bf16=yes, int4=yes, int8=no)
    assert summary(c) == "cpu (AMD EPYC), bf16 yes, fp16 no, int4 yes, int8 no"
    gpus = Capabilities("cuda", "NVIDIA H100", 2, "2.13.0", "0.50", fp16=yes, bf16=yes, int4=yes, int8=yes)
    assert summary(gpus).startswith("cuda (2x NVIDIA H100), ")


def test_import_is_light() -> None:
    code = (
        "import sys, engine.capabilities; "
        "print(sorted({'torch', 'transformers', 'bitsandbytes', 'accelerate'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
