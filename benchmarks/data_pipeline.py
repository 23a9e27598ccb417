"""Preparing chat data for SFT: what a TRL user writes (a `datasets.map` that applies the chat template and
tokenizes) against llmtune's data pipeline (the `--yes` check, then the training process's own pass), in one
run, each in a fresh process so that its peak RSS is its own.

Run: .venv/bin/python benchmarks/data_pipeline.py [--rows 100000] [--procs 2] [--repeat 2]
(issue 14's targets: llmtune's first preparation no slower than 1.5x the hand-written map, masks included;
from cache <= 0.2x of that; peak RSS at N rows <= 1.3x the peak at 2k rows, which it measures too.)
The cache lives in a temporary LLMTUNE_HOME, so every run starts cold.

The data: N generated two-turn chats of ~60 words; the model: llmtune's tiny Llama (its tokenizer is a real
BPE tokenizer with a chatml template), so the figures measure the data path, not a model download.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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
import datasets, transformers.models.auto.tokenization_auto  # imported before the clock, as the map's are
from engine.config import load_config
from engine.preview import build_preview
from engine.dataset_prep import prepare_dataset
config, stage = sys.argv[1], sys.argv[2]
cfg = load_config(config)
start = time.perf_counter()
if stage == "check":  # what --yes does in the CLI before it starts the run: every row prepared (into the cache)
    n = build_preview(cfg, n_samples=0).splits[0].formatted.used
else:  # what the training process does before its first step: the rows the check stored, memory-mapped
    data = prepare_dataset(cfg)
    assert data.from_cache, "the training process found no prepared data"
    n = len(data.trainer_rows(data.splits[0]).rows)
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


PROCS = [2]  # llmtune's processes: the same as the hand-written map's num_proc


def measure(code: str, *args: str, home: Path) -> tuple[int, float, float]:
    """(examples, seconds, its own peak RSS in GB) of `code` run in a fresh interpreter. With num_proc the
    worker processes are not counted in a peak (the hand-written map's and llmtune's alike)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "LLMTUNE_HOME": str(home), "PYTHONPATH": str(ROOT), "LLMTUNE_DATA_PROCS": str(PROCS[0])}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    examples, seconds, rss_kb = out.stdout.split()[-3:]
    return int(examples), float(seconds), int(rss_kb) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--procs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the fastest of each is shown")
    parser.add_argument("--small", type=int, default=2_000, help="the rows whose peak RSS the large run's is "
                        "compared with")
    args = parser.parse_args()
    PROCS[0] = args.procs
    from engine.tinymodel import tiny_model_path

    model = tiny_model_path()
    with tempfile.TemporaryDirectory(prefix="llmtune-bench-") as tmp:
        peaks = {}
        for n in (args.small, args.rows):
            directory = Path(tmp) / str(n)
            directory.mkdir()
            started = time.perf_counter()
            data = write_data(directory, n)
            config = write_config(directory, model)
            print(f"{n:,} chat rows ({data.stat().st_size / 2**20:.0f} MB) written in "
                  f"{time.perf_counter() - started:.1f} s; tokenizer: {model.name}; {args.procs} processes")
            home = directory / "home"
            rows = [("hand-written datasets.map", HAND_WRITTEN, (str(data), str(model), str(args.procs))),
                    ("llmtune first preparation", LLMTUNE, (str(config), "check")),
                    ("llmtune from cache", LLMTUNE, (str(config), "train"))]
            results: dict[str, tuple[int, float, float]] = {}
            for attempt in range(args.repeat):  # interleaved, the fastest of each kept: the machine is noisy
                shutil.rmtree(home, ignore_errors=True)  # each first preparation starts cold
                for name, code, argv in rows:
                    got = measure(code, *argv, home=home)
                    if name not in results or got[1] < results[name][1]:
                        results[name] = got
            for name, _, _ in rows:
                examples, seconds, rss = results[name]
                print(f"  {name:28s} {seconds:7.2f} s  {examples / seconds:9,.0f} rows/s  peak RSS {rss:5.2f} GB")
            base, first, cached = (results[name][1] for name, _, _ in rows)
            print(f"  first preparation: {first / base:.2f}x the hand-written map (target <= 1.5x); from cache: "
                  f"{cached / first:.3f}x the first preparation (target <= 0.2x)")
            peaks[n] = (results[rows[1][0]][2], results[rows[2][0]][2])
        (check_small, train_small), (check_large, train_large) = peaks[args.small], peaks[args.rows]
        print(f"peak RSS at {args.rows:,} rows / at {args.small:,}: the CLI's preparation "
              f"{check_large / check_small:.2f}x, the training process's reading {train_large / train_small:.2f}x "
              "(target <= 1.3x)")


if __name__ == "__main__":
    main()
