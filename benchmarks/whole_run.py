"""Whole-run wall time of one small AutoTrain SFT config: `llmtune-tui --config X --yes` against
`autotrain --config X` (AutoTrain's own command), interleaved in one run. Start-up counts: imports, data
preparation, model load, training, saving, from the command to its exit.

Run: .venv/bin/python benchmarks/whole_run.py [--rounds 3] [--autotrain PATH/TO/autotrain]

AutoTrain is not a dependency of llmtune (it pins transformers 4.48, trl 0.13, peft 0.14): give the `autotrain`
command of a separate environment. On a machine without CUDA, keep torch at the CPU build (a constraint: else
torchvision and xgboost pull torch 2.14 and CUDA packages) and drop torchvision and timm after (the registry's
torchvision does not load with the CPU torch, and accelerate's CLI imports timm, which imports it; AutoTrain's
LLM trainers need neither):
  python -m venv /tmp/at && /tmp/at/bin/pip install torch==2.13.0 && echo torch==2.13.0 > /tmp/at-c.txt
  /tmp/at/bin/pip install -c /tmp/at-c.txt autotrain-advanced==0.8.36 && /tmp/at/bin/pip uninstall -y torchvision timm
(xgboost still brings nvidia-nccl-cu12; measured here with AutoTrain's requirements installed without xgboost,
then `pip install --no-deps xgboost==2.1.3 autotrain-advanced==0.8.36`.)
Without --autotrain only llmtune is timed. The config is AutoTrain's format, left to AutoTrain's defaults except
what a small local run needs (the ~6M Llama and chats of benchmarks/throughput.py, 200 rows, one epoch, batch 4,
LoRA without int4, which needs CUDA in AutoTrain's bitsandbytes; no validation split, no hub); llmtune reads it
unchanged and makes its own choices for the rest. Each run must leave its adapter: AutoTrain exits 0 when its
training process fails.
"""

from __future__ import annotations

import argparse
import json
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


def readable_by_older_transformers(model: Path) -> None:
    """The tokenizer's files as transformers 4.x writes them (AutoTrain pins 4.48), which transformers 5 reads
    too: the fast tokenizer's class by its 4.x name, the extra special tokens as `additional_special_tokens`, the
    chat template inside tokenizer_config.json."""
    path = model / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    settings["additional_special_tokens"] = settings.pop("extra_special_tokens", [])
    template = model / "chat_template.jinja"
    settings["chat_template"] = template.read_text()
    template.unlink()
    path.write_text(json.dumps(settings, indent=2))


def config(directory: Path, model: Path, data: Path, name: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"task: llm-sft\nbase_model: {model}\nproject_name: {name}\nlog: none\n"
                    f"backend: local\ndata:\n  path: {data.parent}\n  train_split: train\n  valid_split: null\n"
                    "  chat_template: tokenizer\n  column_mapping:\n    text_column: messages\n"
                    "params:\n  block_size: 1024\n  epochs: 1\n  batch_size: 4\n  gradient_accumulation: 1\n"
                    "  lr: 2e-4\n  peft: true\n  quantization: null\n  target_modules: all-linear\n  padding: right\n")
    return path


def timed(command: list[str], env: dict[str, str], log: Path, saved: Path) -> float:
    """Seconds from the command to its exit; it must exit 0 and leave its trained adapter in `saved` (AutoTrain
    exits 0 when its training process fails, so the exit code alone proves nothing)."""
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent).returncode
    took = time.perf_counter() - start
    if code or not (saved / "adapter_model.safetensors").is_file():
        raise SystemExit(f"{' '.join(command)} exited {code}" + ("" if code else f" without saving {saved}")
                         + f"; its output: {log}\n{log.read_text()[-3000:]}")
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
    readable_by_older_transformers(model)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LLMTUNE_HOME": str(directory / "home"),
           "TOKENIZERS_PARALLELISM": "false"}
    llmtune = [str(Path(sys.executable).parent / "llmtune-tui")]
    # AutoTrain starts its training with `accelerate launch`, found on PATH: its own environment's
    autotrain_env = {**env, "PATH": f"{Path(args.autotrain or '.').resolve().parent}{os.pathsep}{env['PATH']}"}
    times: dict[str, list[float]] = {"llmtune": [], "autotrain": []}
    for r in range(args.rounds):  # interleaved: the machine is noisy
        # each round prepares its data afresh, as a first run does (a new LLMTUNE_HOME: no cache)
        shutil.rmtree(directory / "home", ignore_errors=True)
        name = f"llmtune-{r}"
        times["llmtune"].append(timed([*llmtune, "--config", str(config(directory, model, data["sft"], name)),
                                       "--yes"], env, directory / f"{name}.log", directory / name))
        if args.autotrain:
            name = f"autotrain-{r}"
            times["autotrain"].append(timed([args.autotrain, "--config", str(config(directory, model, data["sft"],
                                                                                    name))],
                                            autotrain_env, directory / f"{name}.log", directory / name))
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
