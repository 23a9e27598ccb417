"""The run directory's README.md: what was trained, on what, how, with which result, and how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import RunConfig, to_yaml
from engine.online import describe, reward_models
from engine.run_files import RunDir
from engine.tinymodel import resolve_model


def write_model_card(cfg: RunConfig, run_dir: Path, *, status: str, metrics: dict[str, Any],
                     data: dict[str, dict[str, int]], resized_to: int | None, merged: Path | None,
                     batching: str | None = None, kernels: str | None = None) -> None:
    lines = [f"# {run_dir.name}", "",
             f"Fine-tuned from `{cfg.base_model}` with llmtune: {cfg.spec.card_name}"
             f"{' with a LoRA adapter' if cfg.params.peft else ''}.", ""]
    if status == "running":  # rewritten at each checkpoint: a run killed in the middle keeps this
        lines += ["**This run has not finished**: it was training when this was written, or it was killed. Its "
                  "last complete `checkpoint-*` holds the state it reached (`llmtune-tui resume` continues it).", ""]
    elif status != "completed":
        lines += [f"**This run did not complete ({status}).** The files hold the state it reached.", ""]
    lines += ["## Data", "", f"- path: `{cfg.data.path}` (train split `{cfg.data.train_split}`"
              + (f", validation split `{cfg.data.valid_split}`)" if cfg.data.valid_split else ")"),
              f"- chat template: {cfg.data.chat_template}"]
    for split, s in data.items():
        if cfg.spec.online:  # prompts: the answers trained on are sampled in the run
            lines.append(f"- {split}: {s['rows']} rows, {s['examples']} prompts ({s['tokens']} tokens), "
                         f"{s['skipped']} left out as longer than max_prompt_length, {s['dropped']} rows dropped")
            continue
        lines.append(f"- {split}: {s['rows']} rows, {s['examples']} examples, {s['tokens']} tokens "
                     f"({s['trained_tokens']} trained), {s['truncated']} truncated, {s['dropped']} rows dropped")
    if cfg.spec.online:
        lines.append(f"- reward model: {', '.join(reward_models(cfg.params))}; {describe(cfg.params)}")
    if batching:
        lines.append(f"- batching: {batching}")
    if kernels:
        lines.append(f"- Kernels: {kernels}")
    lines += ["", "## Result", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in metrics.items()] or ["- no metrics recorded"]
    lines += ["", "## How to load it", "", "```python", *_loading_code(cfg, run_dir, resized_to), "```", ""]
    if merged is not None:
        lines += [f"The adapter merged into the base model is in `{merged.name}/`: load it with "
                  f"`from_pretrained(\"{merged}\")` alone.", ""]
    lines += ["## Config", "", "Re-run with `llmtune-tui --config config.yaml --yes` (with another project_name).",
              "", "```yaml", to_yaml(cfg).rstrip(), "```", ""]
    RunDir(run_dir).model_card.write_text("\n".join(lines), encoding="utf-8")


def _loading_code(cfg: RunConfig, run_dir: Path, resized_to: int | None) -> list[str]:
    auto = "AutoModelForSequenceClassification" if cfg.spec.scores else "AutoModelForCausalLM"
    extra = ", num_labels=1" if cfg.spec.scores else ""
    code = [f"from transformers import AutoTokenizer, {auto}",
            f'tokenizer = AutoTokenizer.from_pretrained("{run_dir}")']
    if not cfg.params.peft:
        return code + [f'model = {auto}.from_pretrained("{run_dir}")']
    code += ["from peft import PeftModel", f'base = {auto}.from_pretrained("{resolve_model(cfg.base_model)}"{extra})']
    if resized_to:
        code.append("base.resize_token_embeddings(len(tokenizer))"
                    f"  # the chat template added tokens ({resized_to} rows)")
    return code + [f'model = PeftModel.from_pretrained(base, "{run_dir}")']


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
