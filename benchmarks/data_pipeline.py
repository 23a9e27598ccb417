"""Preparing chat data for SFT: what a TRL user writes (a `datasets.map` that applies the chat template and
tokenizes) against llmtune's data pipeline (the `--yes` check, then the training process's own pass), in one
run, each in a fresh process so that its peak RSS is its own.

Run: .venv/bin/python benchmarks/data_pipeline.py [--rows 100000] [--procs 2]
(issue 14's targets: llmtune's first preparation no slower than 1.5x the hand-written map, masks included;
from cache <= 0.2x of that; peak RSS at 100k rows <= 1.3x the peak at 2k rows. There is no cache yet: that
line says so until the cached pipeline lands.)

The data: N generated two-turn chats of ~60 words; the model: llmtune's tiny Llama (its tokenizer is a real
BPE tokenizer with a chatml template), so the figures measure the data path, not a model download.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from any directory

WORDS = ("the fox jumps over a lazy dog and runs into the forest where rivers meet mountains under stars while "
         "people talk about numbers capitals weather books music and long stories").split()

HAND_WRITTEN = """
import sys, time
from datasets import load_dataset
from transformers import AutoTokenizer
data, model, procs = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(model)
def tokenize(batch):
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in batch["messages"]]
    return tokenizer(texts, add_special_tokens=False)
start = time.perf_counter()
ds = load_dataset("json", data_files=data, split="train")
ds = ds.map(tokenize, batched=True, num_proc=procs, remove_columns=ds.column_names, load_from_cache_file=False)
import resource
print(len(ds), time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

LLMTUNE = """
import sys, time
from engine.config import load_config
from engine.pipeline import prepare
from engine.preview import build_preview
from engine.trainers.rows import build_rows
config, stage = sys.argv[1], sys.argv[2]
cfg = load_config(config)
start = time.perf_counter()
if stage == "check":  # what --yes does in the CLI before it starts the run: every row, formatted and encoded
    preview = build_preview(cfg, n_samples=0)
    n = len(preview.splits[0].formatted.examples)
else:  # what the training process does before its first step
    prepared = prepare(cfg)
    n = len(build_rows(prepared, prepared.splits[0]).rows)
import resource
print(n, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def chats(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."

    return [{"messages": [{"role": "user", "content": words(rng.randint(10, 30))},
                          {"role": "assistant", "content": words(rng.randint(20, 50))}]} for _ in range(n)]


def write_data(directory: Path, n: int) -> Path:
    path = directory / "train.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for row in chats(n):
            f.write(json.dumps(row) + "\n")
    return path


def write_config(directory: Path, model: Path) -> Path:
    path = directory / "run.yaml"
    path.write_text(f"task: llm-sft\nbase_model: {model}\nproject_name: {directory / 'run'}\n"
                    f"data:\n  path: {directory}\n  chat_template: chatml\n"
                    "  column_mapping:\n    text_column: messages\nparams:\n  block_size: 256\n")
    return path


def measure(code: str, *args: str) -> tuple[int, float, float]:
    """(examples, seconds, its own peak RSS in GB) of `code` run in a fresh interpreter. With num_proc the
    hand-written map's worker processes are not counted in its peak: it is a lower bound for that line."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    examples, seconds, rss_kb = out.stdout.split()[-3:]
    return int(examples), float(seconds), int(rss_kb) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--procs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    from engine.tinymodel import tiny_model_path

    model = tiny_model_path()
    with tempfile.TemporaryDirectory(prefix="llmtune-bench-") as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        data = write_data(directory, args.rows)
        config = write_config(directory, model)
        print(f"{args.rows:,} chat rows ({data.stat().st_size / 2**20:.0f} MB) written in "
              f"{time.perf_counter() - started:.1f} s; tokenizer: {model.name}")
        rows = [("hand-written datasets.map", HAND_WRITTEN, (str(data), str(model), str(args.procs))),
                ("llmtune --yes check (CLI)", LLMTUNE, (str(config), "check")),
                ("llmtune training process", LLMTUNE, (str(config), "train"))]
        results = {}
        for name, code, argv in rows:
            results[name] = measure(code, *argv)
            n, seconds, rss = results[name]
            print(f"  {name:28s} {seconds:7.1f} s  {n / seconds:9,.0f} rows/s  peak RSS {rss:5.2f} GB")
        base = results[rows[0][0]][1]
        both = results[rows[1][0]][1] + results[rows[2][0]][1]
        print(f"  llmtune before its first step: {both:.1f} s = {both / base:.1f}x the hand-written map "
              "(target: 1.5x for the first preparation)")
        print("  llmtune from cache: n/a (no cache yet; issue 14)")


if __name__ == "__main__":
    main()
