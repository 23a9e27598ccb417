"""Training throughput: a hand-written TRL script against llmtune with the same settings and with its defaults,
for SFT and DPO, interleaved in one run, each run in a fresh process with its own peak RSS.

Run: .venv/bin/python benchmarks/throughput.py [--rows 200] [--rounds 2] [--trainers sft,dpo] [--script-precision fp32]

Throughput is real (non-padding) tokens trained per second, counted the same way on both sides
(engine.trainers.progress.TokenCounter over every micro-batch), the first step left out (warm-up). Every run
trains one whole epoch of the same rows, so both sides train the same examples and only the batching differs (a
few random steps would measure which examples were drawn: tokens per second grow with length). The model: a
~6M-parameter random Llama built here with llmtune's tiny tokenizer; the data: chats of 20 to 650 tokens (DPO:
pairs with answers of different lengths). The script is what a TRL user writes from the docs: a conversational
dataset, LoRA r16, batch 4, TRL's defaults for the rest. "llmtune, same settings" sets params.batching: padded
and the script's gradient checkpointing and precision; "llmtune defaults" sets only the model, data, mapping,
chat template, peft, batch and accumulation, and the length of training (issue 15's definition).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("the fox jumps over a lazy dog and runs into the forest where rivers meet mountains under stars while "
         "people talk about numbers capitals weather books music and long stories").split()
BATCH = 4

SCRIPT = r"""
import json, resource, sys, time
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from engine.trainers.progress import TokenCounter
trainer_name, model_path, data, out, precision = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
tokenizer = AutoTokenizer.from_pretrained(model_path)
model = AutoModelForCausalLM.from_pretrained(model_path)
dataset = load_dataset("json", data_files=data, split="train")
lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
common = dict(output_dir=out, per_device_train_batch_size=4, gradient_accumulation_steps=1, num_train_epochs=1,
              learning_rate=2e-4, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
              **({"bf16": False} if precision == "fp32" else {}))
if trainer_name == "sft":
    from trl import SFTConfig, SFTTrainer
    args = SFTConfig(**common, max_length=1024)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
else:
    from trl import DPOConfig, DPOTrainer
    args = DPOConfig(**common, max_length=1024)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
counter = TokenCounter()
counter.attach(trainer)
marks = []
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        marks.append((time.perf_counter(), counter.tokens))
trainer.add_callback(Clock())
trainer.train()
(t0, n0), (t1, n1) = marks[0], marks[-1]
print(json.dumps({"tokens_per_s": (n1 - n0) / (t1 - t0), "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "gradient_checkpointing": bool(args.gradient_checkpointing), "bf16": bool(args.bf16)}))
"""

LLMTUNE = r"""
import json, resource, sys
from engine.config import load_config
from engine.rundir import prepare
from engine.train import train
cfg = load_config(sys.argv[1], check_env=True)
run_dir = prepare(cfg)
code = train(run_dir)
assert code == 0, (run_dir / "train.log").read_text()[-3000:]
events = [json.loads(line) for line in (run_dir / "events.jsonl").open()]
steps = [e for e in events if e["type"] == "step"]
first, last = steps[0], steps[-1]
started = next(e for e in events if e["type"] == "run_started")
print(json.dumps({"tokens_per_s": (last["tokens"] - first["tokens"]) / (last["elapsed"] - first["elapsed"]),
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "batching": started.get("batching", {}).get("mode")}))
"""


def words(rng: random.Random, k: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."


def write_data(directory: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """Chats of 20-650 tokens, and preference pairs whose answers differ in length."""
    rng = random.Random(seed)
    sft, dpo = directory / "sft" / "train.jsonl", directory / "dpo" / "train.jsonl"
    for path in (sft, dpo):
        path.parent.mkdir(parents=True)
    with sft.open("w") as f:
        for _ in range(n):
            f.write(json.dumps({"messages": [{"role": "user", "content": words(rng, rng.randint(5, 60))},
                                             {"role": "assistant", "content": words(rng, rng.randint(8, 420))}]})
                    + "\n")
    with dpo.open("w") as f:
        for _ in range(n):
            prompt = [{"role": "user", "content": words(rng, rng.randint(5, 60))}]
            f.write(json.dumps({"prompt": prompt,
                                "chosen": [{"role": "assistant", "content": words(rng, rng.randint(5, 200))}],
                                "rejected": [{"role": "assistant", "content": words(rng, rng.randint(5, 200))}]})
                    + "\n")
    return {"sft": sft, "dpo": dpo}


def build_model(directory: Path) -> Path:
    """A ~6M-parameter random Llama with the tiny model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from engine.tinymodel import tiny_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_path()))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=6, num_attention_heads=8,
                         num_key_value_heads=4, intermediate_size=768, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    out = directory / "model"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def llmtune_config(directory: Path, name: str, trainer: str, model: Path, data: Path,
                   same_as: dict | None) -> Path:
    """The defaults config (issue 15's definition), or, with `same_as`, the script's settings."""
    task = {"sft": "llm-sft", "dpo": "llm-dpo"}[trainer]
    mapping = ("    text_column: messages\n" if trainer == "sft" else
               "    prompt_text_column: prompt\n    text_column: chosen\n    rejected_text_column: rejected\n")
    params = f"  peft: true\n  batch_size: {BATCH}\n  gradient_accumulation: 1\n  epochs: 1\n"
    if same_as is not None:
        params += ("  batching: padded\n  quantization: null\n  lr: 0.0002\n  block_size: 1024\n"
                   f"  disable_gradient_checkpointing: {str(not same_as['gradient_checkpointing']).lower()}\n"
                   + ("  mixed_precision: bf16\n" if same_as["bf16"] else ""))
    path = directory / f"{name}.yaml"
    path.write_text(f"task: {task}\nbase_model: {model}\nproject_name: {directory / 'runs' / name}\n"
                    f"data:\n  path: {data.parent}\n  chat_template: tokenizer\n  column_mapping:\n{mapping}"
                    f"params:\n{params}")
    return path


def run(code: str, *args: str, home: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLMTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200, help="rows per data set: one epoch is rows / 4 steps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trainers", default="sft,dpo")
    parser.add_argument("--script-precision", choices=("trl", "fp32"), default="trl",
                        help="trl: the script keeps TRL's default (bf16, emulated and much slower on a CPU without "
                             "AVX512-BF16 or AMX); fp32: the script turns bf16 off, as someone who knows the CPU "
                             "would")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmtune-throughput-") as tmp:
        directory = Path(tmp)
        model, data = build_model(directory), write_data(directory, args.rows)
        home = directory / "home"
        for trainer in args.trainers.split(","):
            results: dict[str, list[dict]] = {"script": [], "same": [], "defaults": []}
            for r in range(args.rounds):  # interleaved: the machine is noisy, so each round runs all three
                script = run(SCRIPT, trainer, str(model), str(data[trainer]),
                             str(directory / f"script-{trainer}-{r}"), args.script_precision, home=home)
                results["script"].append(script)
                for kind, same in (("same", script), ("defaults", None)):
                    config = llmtune_config(directory, f"{trainer}-{kind}-{r}", trainer, model, data[trainer], same)
                    results[kind].append(run(LLMTUNE, str(config), home=home))
            base = statistics.median(x["tokens_per_s"] for x in results["script"])
            base_rss = statistics.median(x["rss_kb"] for x in results["script"])
            s = results["script"][0]
            print(f"\n{trainer.upper()}, one epoch of {args.rows} rows, batch {BATCH}, LoRA r16, {args.rounds} "
                  f"interleaved round(s), medians (the script: gradient checkpointing "
                  f"{'on' if s['gradient_checkpointing'] else 'off'}, {'bf16' if s['bf16'] else 'fp32'})")
            print(f"  {'run':44s} {'tok/s':>8s} {'vs script':>10s} {'peak RSS':>9s} {'vs script':>10s}")
            for kind, label in (("script", "hand-written TRL script"), ("same", "llmtune, same settings"),
                                ("defaults", "llmtune defaults")):
                tps = statistics.median(x["tokens_per_s"] for x in results[kind])
                rss = statistics.median(x["rss_kb"] for x in results[kind])
                mode = results[kind][0].get("batching")
                name = f"{label}" + (f" (batching: {mode})" if mode else "")
                print(f"  {name:44s} {tps:8.0f} {tps / base:9.2f}x {rss / 2**20:8.2f}G {rss / base_rss:9.2f}x")


if __name__ == "__main__":
    main()
