"""Scaling over processes: the same configs trained on one process and on several (ddp, and fsdp on CUDA GPUs),
through the real CLI (`llmtune-tui --config X --yes`), each run read back from its events.jsonl.

Run: .venv/bin/python benchmarks/multi_gpu.py [--configs configs/sft-chat.yaml,configs/dpo.yaml] [--steps 30]
     [--processes N] [--backends ddp,fsdp] [--set KEY=VALUE ...]

On a GPU machine N defaults to every visible GPU; on a CPU machine to 2 (two processes over gloo: this checks the
path, it is no faster on a few cores). Throughput is real tokens trained per second over all processes (the step
events' tokens_per_s: every rank's tokens), the median over the steps after the first two; "per process" divides
it by the process count; memory is the peak torch reserved on each GPU of machine 0 (or the training process's
peak RSS on a CPU). Extra `--set` values go to every run (e.g. `--set base_model=Qwen/Qwen2.5-0.5B-Instruct`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.events import read_events  # noqa: E402


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run(config: Path, processes: int, backend: str | None, steps: int, extra: list[str], out: Path) -> dict[str, Any]:
    run_dir = out / f"{config.stem}-{processes}-{backend or 'single'}"
    sets = [f"params.max_steps={steps}", "params.logging_steps=1", "params.eval_strategy=no",
            f"params.save_steps={steps}", f"params.num_processes={processes}", f"project_name={run_dir}", *extra]
    if backend:
        sets.append(f"params.distributed_backend={backend}")
    cmd = [sys.executable, "-m", "tui.cli", "--config", str(config), "--yes"]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    events = read_events(run_dir / "events.jsonl") if (run_dir / "events.jsonl").exists() else []
    steps_seen = [e for e in events if e["type"] == "step" and e.get("tokens_per_s")]
    rates = [e["tokens_per_s"] for e in steps_seen if e["step"] > 2] or [e["tokens_per_s"] for e in steps_seen]
    peaks: list[int] = []
    for e in steps_seen:
        for i, gpu in enumerate((e.get("memory") or {}).get("gpus") or []):
            while len(peaks) <= i:
                peaks.append(0)
            peaks[i] = max(peaks[i], gpu.get("peak") or 0)
    rss = max(((e.get("memory") or {}).get("rss_peak") or 0 for e in steps_seen), default=0)
    started = next((e for e in events if e["type"] == "run_started"), {})
    return {"config": config.stem, "processes": processes, "backend": backend or "-",
            "world": (started.get("launch") or {}).get("world_size", 1), "ok": done.returncode == 0,
            "tok_s": statistics.median(rates) if rates else None, "gpu_peaks": peaks, "rss": rss,
            "tail": (done.stdout + done.stderr)[-600:]}


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}G"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="configs/sft-chat.yaml,configs/dpo.yaml")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--backends", default=None, help="default: ddp,fsdp on CUDA GPUs, ddp on a CPU")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()
    gpus = gpu_count()
    many = args.processes or (gpus if gpus > 1 else 2)
    backends = (args.backends or ("ddp,fsdp" if gpus else "ddp")).split(",")
    print(f"{gpus} GPU(s) visible; comparing 1 process with {many} ({', '.join(backends)}), {args.steps} steps each")
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmtune-multi-") as tmp:
        for name in args.configs.split(","):
            config = (ROOT / name) if not Path(name).is_absolute() else Path(name)
            rows.append(run(config, 1, None, args.steps, args.sets, Path(tmp)))
            for backend in backends:
                rows.append(run(config, many, backend, args.steps, args.sets, Path(tmp)))
    print(f"  {'config':<14} {'procs':>5} {'backend':<8} {'tok/s':>9} {'per proc':>9} {'vs 1':>6}  memory")
    single: dict[str, float] = {}
    for r in rows:
        if not r["ok"] or r["tok_s"] is None:
            print(f"  {r['config']:<14} {r['processes']:>5} {r['backend']:<8} failed: {r['tail'].strip()[-300:]}")
            continue
        if r["processes"] == 1:
            single[r["config"]] = r["tok_s"]
        base = single.get(r["config"])
        memory = " ".join(gib(p) for p in r["gpu_peaks"]) if r["gpu_peaks"] else f"RSS {gib(r['rss'])} (rank 0)"
        print(f"  {r['config']:<14} {r['world']:>5} {r['backend']:<8} {r['tok_s']:>9.0f} "
              f"{r['tok_s'] / r['world']:>9.0f} {r['tok_s'] / base if base else 0:>5.2f}x  {memory}")


if __name__ == "__main__":
    main()
