"""`llmtune-tui demo`: a small chat data set and a config that fine-tune the local tiny model end to end on a
CPU in about a minute, with nothing downloaded. The data is simple enough (arithmetic and capitals, in a
fixed answer style) that a random model visibly learns it: the loss falls from ~7.6 (chance) within the run.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import yaml

from engine.tinymodel import TINY_MODEL_ID, llmtune_home

CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
            "Egypt": "Cairo", "Canada": "Ottawa", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo"}
SYSTEM = "You are a concise assistant."


def _conversation(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        question, answer = f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    else:
        country = rng.choice(sorted(CAPITALS))
        question, answer = f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


def write_demo(directory: Path | None = None, *, run_dir: Path | None = None, train_rows: int = 480,
               valid_rows: int = 32) -> Path:
    """Write the demo's data and config; return the config path. The run goes to ./runs/demo-<time>."""
    directory = directory or llmtune_home() / "demo"
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for name, n in (("train", train_rows), ("valid", valid_rows)):
        with open(data / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(json.dumps(_conversation(rng)) + "\n")
    run_dir = run_dir or Path("runs") / f"demo-{dt.datetime.now():%Y%m%d-%H%M%S}"
    config = {
        "task": "llm-sft",
        "base_model": TINY_MODEL_ID,
        "project_name": str(run_dir),
        "log": "none",
        "backend": "local",
        "data": {"path": str(data), "train_split": "train", "valid_split": "valid", "chat_template": "tokenizer",
                 "column_mapping": {"text_column": "messages"}},
        # Full fine-tuning: LoRA barely moves a model this small and random (measured: loss 7.6 -> 6.9 with
        # LoRA r 32 in 3 epochs, -> 0.3 with full fine-tuning in 5 epochs, ~10 s).
        # Real models: see configs/sft-chat.yaml. Padded random batches: with this tiny model and its high
        # learning rate, batches grouped by length converged worse (eval loss 0.56 against 0.26 in 6 epochs).
        "params": {"block_size": 128, "epochs": 6, "batch_size": 8, "gradient_accumulation": 1, "lr": 5e-3,
                   "warmup_ratio": 0.05, "scheduler": "cosine", "peft": False, "disable_gradient_checkpointing": True,
                   "logging_steps": 5, "eval_strategy": "epoch", "save_total_limit": 1, "batching": "padded"},
    }
    path = directory / "demo.yaml"
    path.write_text("# llmtune demo: SFT of the local tiny model on generated chat data (see engine/demo.py).\n"
                    + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def demo_questions(n: int = 3) -> list[list[dict]]:
    """Prompts to ask the trained demo model (fresh numbers, so the answers are not recalled verbatim)."""
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            for q in ("What is the capital of Japan?", "What is 7 plus 5?", "What is the capital of Peru?")[:n]]


def ask(model_dir: Path, conversations: list[list[dict]], max_new_tokens: int = 24) -> list[str]:
    """Greedy answers from a trained model directory, through the chat template saved with it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    answers = []
    for conversation in conversations:
        ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers
