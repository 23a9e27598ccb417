"""What this machine can run (mixed precision, 4-bit and 8-bit quantization), found out, not assumed.

The config validator asks before any model is loaded, so a config that wants fp16 on a CPU or 4-bit
without a working bitsandbytes is refused with a plain sentence instead of failing minutes later.
Each answer comes from the installed torch and bitsandbytes: a tiny real operation in a try/except.

Importing this module stays light: torch and bitsandbytes are imported inside `probe()`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import platform
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

KINDS = ("fp16", "bf16", "int4", "int8")
_FIX_PRECISION = "use mixed_precision: bf16 or none"


@dataclass(frozen=True)
class Support:
    ok: bool
    reason: str  # one plain sentence: why not, or what it will use when ok


@dataclass(frozen=True)
class Capabilities:
    device: str  # "cuda", "mps" or "cpu": where training will run
    device_name: str
    gpu_count: int
    torch_version: str
    bitsandbytes_version: str | None
    fp16: Support
    bf16: Support
    int4: Support
    int8: Support

    def support(self, what: str) -> Support:
        if what not in KINDS:
            raise ValueError(f"unknown capability {what!r}; expected one of {', '.join(KINDS)}")
        return getattr(self, what)


@functools.cache
def probe() -> Capabilities:
    """Find out what this machine runs; about 2-3 s on a CPU, mostly importing torch and bitsandbytes."""
    import torch

    device, name, count = _device(torch)
    bnb_version, int4, int8 = _quantization(torch, device)
    return Capabilities(
        device=device,
        device_name=name,
        gpu_count=count,
        torch_version=torch.__version__,
        bitsandbytes_version=bnb_version,
        fp16=_fp16(torch, device, name),
        bf16=_bf16(torch, device, name),
        int4=int4,
        int8=int8,
    )


def summary(c: Capabilities) -> str:
    """One line for a dry run: `cpu (AMD EPYC), bf16 yes, fp16 no, int4 yes, int8 yes`."""
    where = c.device_name if c.gpu_count <= 1 else f"{c.gpu_count}x {c.device_name}"
    flags = ", ".join(f"{k} {'yes' if c.support(k).ok else 'no'}" for k in ("bf16", "fp16", "int4", "int8"))
    return f"{c.device} ({where}), {flags}"


# --- device -------------------------------------------------------------------------------------


def _device(torch: Any) -> tuple[str, str, int]:
    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0), torch.cuda.device_count()
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps", f"Apple {platform.machine()} GPU", 1
    return "cpu", cpu_name(), 0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_flag(torch: Any, name: str) -> bool:
    """A private torch.cpu check (`_is_avx512_bf16_supported`...); False where this torch lacks it."""
    check = getattr(torch.cpu, name, None)
    try:
        return bool(check()) if check else False
    except Exception:
        return False


# --- mixed precision ----------------------------------------------------------------------------


def _fp16(torch: Any, device: str, name: str) -> Support:
    if device == "cuda":
        return Support(True, f"fp16 autocast with loss scaling on {name}.")
    if device == "mps":
        if _torch_at_least(torch, 2, 5):
            return Support(True, "fp16 autocast on the Apple GPU.")
        return Support(False, f"fp16 on the Apple GPU needs torch >= 2.5 (this is {torch.__version__}).")
    # Measured with accelerate 1.15: Trainer accepts fp16=True with use_cpu but never autocasts on a
    # CPU (Accelerator keeps native_amp False), so the run would silently train in fp32.
    return Support(False, f"fp16 is not supported on cpu: accelerate would silently train in fp32; {_FIX_PRECISION}.")


def _bf16(torch: Any, device: str, name: str) -> Support:
    if device == "cuda":
        return _bf16_cuda(torch, name)
    if device == "mps":
        ok = torch.backends.mps.is_macos_or_newer(14, 0) and _torch_at_least(torch, 2, 6)
        why = "bf16 autocast on the Apple GPU." if ok else "bf16 on the Apple GPU needs macOS 14 and torch >= 2.6."
        return Support(ok, why)
    return _bf16_cpu(torch)


def _bf16_cuda(torch: Any, name: str) -> Support:
    if not torch.cuda.is_bf16_supported():
        return Support(False, f"{name} does not support bf16; use mixed_precision: fp16 or none.")
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no including_emulation and counts only native support
        native = True
    if native:
        return Support(True, f"bf16 autocast on {name}.")
    return Support(True, f"bf16 is emulated on {name} (no native bf16): it runs, but fp16 is faster there.")


def _bf16_cpu(torch: Any) -> Support:
    # accelerate autocasts bf16 on any CPU; what varies is whether torch can run it and how fast.
    try:
        a = torch.ones(4, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = a @ a
        if out.dtype != torch.bfloat16:
            return Support(False, f"bf16 autocast on cpu did nothing in torch {torch.__version__}; "
                                  "use mixed_precision: none.")
    except Exception as exc:  # an exotic build or architecture
        return Support(False, f"bf16 does not run on this cpu ({_one_line(exc)}); use mixed_precision: none.")
    if _cpu_flag(torch, "_is_amx_tile_supported"):
        return Support(True, "bf16 autocast on cpu, native on this CPU (AMX).")
    if _cpu_flag(torch, "_is_avx512_bf16_supported"):
        return Support(True, "bf16 autocast on cpu, native on this CPU (AVX512-BF16).")
    return Support(True, "bf16 autocast on cpu, emulated on this CPU (no AVX512-BF16 or AMX): may be slower than fp32.")


def _torch_at_least(torch: Any, major: int, minor: int) -> bool:
    parts = torch.__version__.split("+")[0].split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (IndexError, ValueError):
        return True


# --- quantization -------------------------------------------------------------------------------


def _quantization(torch: Any, device: str) -> tuple[str | None, Support, Support]:
    with _quiet_bitsandbytes():
        try:
            import bitsandbytes as bnb
        except ImportError:
            missing = Support(False, "bitsandbytes is not installed; pip install bitsandbytes, "
                                     "or set quantization: none.")
            return None, missing, missing
        except Exception as exc:  # installed but broken (a missing native library, say)
            broken = Support(False, f"bitsandbytes cannot be imported ({_one_line(exc)}); set quantization: none.")
            return None, broken, broken
        version = getattr(bnb, "__version__", "?")
        return version, _try_int4(torch, bnb, device, version), _try_int8(torch, bnb, device, version)


def _try_int4(torch: Any, bnb: Any, device: str, version: str) -> Support:
    try:
        import bitsandbytes.functional as F

        x = torch.randn(64, 64, device=device)
        packed, state = F.quantize_4bit(x, quant_type="nf4")
        if (F.dequantize_4bit(packed, state) - x).abs().max().item() > 1.0:
            raise RuntimeError("4-bit round trip is wrong")
        layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=torch.float32, quant_type="nf4").to(device)
        layer(torch.randn(2, 64, device=device))
    except Exception as exc:
        return Support(False, f"bitsandbytes {version} cannot run 4-bit on {device}: {_one_line(exc)}; "
                              "set quantization: none.")
    return Support(True, f"bitsandbytes {version} runs 4-bit on {device}.")


def _try_int8(torch: Any, bnb: Any, device: str, version: str) -> Support:
    try:
        layer = bnb.nn.Linear8bitLt(64, 32, bias=False, has_fp16_weights=False).to(device)
        layer(torch.randn(2, 64, device=device))
    except Exception as exc:
        return Support(False, f"bitsandbytes {version} cannot run 8-bit on {device}: {_one_line(exc)}; "
                              "set quantization: none.")
    return Support(True, f"bitsandbytes {version} runs 8-bit on {device}.")


@contextlib.contextmanager
def _quiet_bitsandbytes() -> Iterator[None]:
    """Hide bitsandbytes' harmless chatter: a logged line about the optional `kernels` package at import,
    and a logged line per 8-bit matmul about casting fp32 inputs to fp16."""
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__
