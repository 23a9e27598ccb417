"""Whole-run wall time of one small AutoTrain SFT config: `llmtune-tui --config X --yes` against
`autotrain --config X` (AutoTrain's own command), interleaved in one run. Start-up counts: imports, data
preparation, model load, training, saving, from the command to its exit.

Run: .venv/bin/python benchmarks/whole_run.py [--rounds 3] [--autotrain PATH/TO/autotrain]

AutoTrain is not a dependency of llmtune (it pins transformers 4.48, trl 0.13, peft 0.14): give the `autotrain`
command of a separate environment, e.g.
  python -m venv /tmp/at && /tmp/at/bin/pip install torch==2.13.0 && /tmp/at/bin/pip install autotrain-advanced==0.8.36
Without --autotrain only llmtune is timed. The config is AutoTrain's format, left to AutoTrain's defaults except
what a small local run needs (the ~6M Llama and chats of benchmarks/throughput.py, 200 rows, one epoch, batch 4,
LoRA, no validation split, no hub); llmtune reads it unchanged and makes its own choices for the rest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from throughput import build_model, write_data  # noqa: E402


def config(directory: Path, model: Path, data: Path, name: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"task: llm-sft\nbase_model: {model}\nproject_name: {directory / 'runs' / name}\nlog: none\n"
                    f"backend: local\ndata:\n  path: {data.parent}\n  train_split: train\n  valid_split: null\n"
                    "  chat_template: tokenizer\n  column_mapping:\n    text_column: messages\n"
                    "params:\n  block_size: 1024\n  epochs: 1\n  batch_size: 4\n  gradient_accumulation: 1\n"
                    "  lr: 2e-4\n  peft: true\n  target_modules: all-linear\n  padding: right\n")
    return path


def timed(command: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent).returncode
    took = time.perf_counter() - start
    if code:
        raise SystemExit(f"{' '.join(command)} exited {code}; its output: {log}\n{log.read_text()[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--autotrain", help="the autotrain command of an environment with autotrain-advanced")
    parser.add_argument("--keep", help="keep the runs and logs in this directory")
    args = parser.parse_args()
    directory = Path(args.keep or tempfile.mkdtemp(prefix="llmtune-whole-run-"))
    directory.mkdir(parents=True, exist_ok=True)
    model, data = build_model(directory), write_data(directory, 200)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LLMTUNE_HOME": str(directory / "home"),
           "TOKENIZERS_PARALLELISM": "false"}
    llmtune = [str(Path(sys.executable).parent / "llmtune-tui")]
    times: dict[str, list[float]] = {"llmtune": [], "autotrain": []}
    for r in range(args.rounds):  # interleaved: the machine is noisy
        # each round prepares its data afresh, as a first run does (a new LLMTUNE_HOME: no cache)
        shutil.rmtree(directory / "home", ignore_errors=True)
        name = f"llmtune-{r}"
        times["llmtune"].append(timed([*llmtune, "--config", str(config(directory, model, data["sft"], name)),
                                       "--yes"], env, directory / f"{name}.log"))
        if args.autotrain:
            name = f"autotrain-{r}"
            times["autotrain"].append(timed([args.autotrain, "--config", str(config(directory, model, data["sft"],
                                                                                    name))],
                                            env, directory / f"{name}.log"))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v), flush=True)
    mine = statistics.median(times["llmtune"])
    print(f"\nwhole run, SFT, 200 rows, one epoch, medians of {args.rounds} interleaved round(s):")
    print(f"  llmtune-tui --config X --yes   {mine:6.1f} s")
    if times["autotrain"]:
        theirs = statistics.median(times["autotrain"])
        print(f"  autotrain --config X           {theirs:6.1f} s")
        print(f"  llmtune / AutoTrain            {mine / theirs:6.2f}x")
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
