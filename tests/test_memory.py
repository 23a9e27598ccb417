"""The memory estimate: hand-computed cases on a small shape, and sanity bounds on a 7B-sized model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.block_size import AUTO_BLOCK_CAP
from engine.config import RunConfig
from engine.memory import (
    GiB,
    estimate_memory,
    lora_parameters,
    model_shape,
)
from engine.model_info import ModelInfo
from engine.units import human_bytes

ROOT = Path(__file__).resolve().parents[1]

# A tiny gated decoder: 2 layers x (q 64x64, k/v 64x32, o 64x64, gate/up/down 64x128) + a tied 2000x64 embedding.
TINY = ModelInfo("tiny", available=True, parameters=201_728, hidden_size=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, intermediate_size=128, vocab_size=2000, context_length=2048)
# Llama-2-7B's shape.
LLAMA_7B = ModelInfo("llama-7b", available=True, parameters=6_738_415_616, hidden_size=4096, num_layers=32,
                     num_heads=32, num_kv_heads=32, intermediate_size=11008, vocab_size=32000,
                     context_length=4096)


def config(task: str = "llm-sft", **params: object) -> RunConfig:
    cfg = RunConfig(task=task, base_model="m")
    cfg.params.quantization = None
    for name, value in params.items():
        setattr(cfg.params, name, value)
    return cfg


def test_full_fine_tuning_in_fp32_by_hand() -> None:
    cfg = config(peft=False, batch_size=2, block_size=128, disable_gradient_checkpointing=True)
    est = estimate_memory(TINY, cfg, gpu_total=None)
    assert est.weights == 201_728 * 4
    assert est.gradients == 201_728 * 4
    assert est.optimizer == 201_728 * 8  # AdamW: two fp32 states
    # 256 tokens x 2 layers x (12h + 4kv + 8i = 1920) bytes at 16-bit, doubled for fp32; logits 256 x 2000 x 8
    assert est.activations == 256 * 2 * 1920 * 2 + 256 * 2000 * 8
    assert est.total == sum(size for _, size in est.parts) == 9_289_728
    assert est.fits is None and est.verdict == "no GPU: CPU run (needs ~9 MiB of RAM)"


def test_lora_counts_rank_times_in_plus_out_of_every_linear() -> None:
    shape = model_shape(TINY)
    assert shape.gated
    per_layer = 8 * ((64 + 64) + (64 + 32) * 2 + (64 + 64) + (64 + 128) * 3)
    assert lora_parameters(shape, 8, "all-linear") == (2 * per_layer, [])
    assert lora_parameters(shape, 8, "q_proj, v_proj") == (2 * 8 * (128 + 96), [])
    assert lora_parameters(shape, 8, "q_proj,mystery") == (2 * 8 * (128 + 128), ["mystery"])
    est = estimate_memory(TINY, config(peft=True, lora_r=8), gpu_total=None)
    assert est.trainable == 2 * per_layer
    assert est.gradients == est.trainable * 4 and est.optimizer == est.trainable * 8  # adapters are fp32


def test_gradient_checkpointing_keeps_one_hidden_state_per_layer() -> None:
    cfg = config(peft=False, batch_size=1, block_size=100, mixed_precision="bf16")
    est = estimate_memory(TINY, cfg, gpu_total=None)
    layer = 100 * 1920  # one layer's activations at 16-bit
    assert est.activations == 100 * 64 * 2 * 2 + layer + 100 * 2000 * 8
    assert est.weights == 201_728 * 2 and est.gradients == 201_728 * 2  # bf16 full fine-tuning


def test_block_size_minus_one_resolves_like_the_preview() -> None:
    from engine.block_size import AUTO_BLOCK_CAP as preview_cap

    assert AUTO_BLOCK_CAP == preview_cap
    assert estimate_memory(TINY, config(block_size=-1), gpu_total=None).sequence == 1024
    assert estimate_memory(TINY, config(block_size=-1, model_max_length=512), gpu_total=None).sequence == 512


def test_sanity_bounds_on_a_7b_model() -> None:
    def total(task: str = "llm-sft", **params: object) -> int:
        return estimate_memory(LLAMA_7B, config(task, block_size=1024, **params), gpu_total=80 * GiB).total

    full = estimate_memory(LLAMA_7B, config(peft=False, block_size=1024, mixed_precision="bf16"), gpu_total=None)
    assert 13 * GiB > full.weights > 12 * GiB  # 6.7B x 2 bytes
    assert total(peft=True, mixed_precision="bf16") < total(peft=False, mixed_precision="bf16")
    int4 = estimate_memory(LLAMA_7B, config(peft=True, quantization="int4", mixed_precision="bf16"), gpu_total=None)
    bf16 = estimate_memory(LLAMA_7B, config(peft=True, mixed_precision="bf16"), gpu_total=None)
    assert int4.weights < bf16.weights / 3
    assert total(disable_gradient_checkpointing=False) < total(disable_gradient_checkpointing=True)
    assert total("llm-dpo", peft=True) > total("llm-sft", peft=True)
    assert total("llm-dpo", peft=False) > total("llm-orpo", peft=False)  # the reference model
    assert total(optimizer="adamw_bnb_8bit", peft=False) < total(optimizer="adamw_torch", peft=False)


def test_verdicts_say_what_to_change() -> None:
    full = config(peft=False, block_size=1024, batch_size=4)
    est = estimate_memory(LLAMA_7B, full, gpu_total=24 * GiB)
    assert est.fits is False
    assert est.verdict.startswith("does not fit: needs ~")
    assert est.verdict.endswith("the GPU has 24.0 GiB: use LoRA, int4, a smaller batch_size or block_size")
    qlora = config(peft=True, quantization="int4", block_size=512, batch_size=1, mixed_precision="bf16")
    est = estimate_memory(LLAMA_7B, qlora, gpu_total=24 * GiB)
    assert est.fits is True and est.verdict.startswith("fits: ") and est.verdict.endswith(" of 24.0 GiB")
    tight = estimate_memory(LLAMA_7B, qlora, gpu_total=int(est.total / 0.95))
    assert tight.fits is True and tight.verdict.startswith("tight: ")
    assert estimate_memory(TINY, qlora, gpu_total=None, device="mps").verdict.startswith("Apple GPU")


def test_unknown_sizes() -> None:
    with pytest.raises(ValueError, match="no model"):
        estimate_memory(None, config(), gpu_total=None)
    with pytest.raises(ValueError, match="size is unknown"):
        estimate_memory(ModelInfo("x"), config(), gpu_total=None)
    guessed = estimate_memory(ModelInfo("x", parameters=7_000_000_000), config(), gpu_total=None)
    assert guessed.notes and "guessed" in guessed.notes[0]
    assert guessed.weights == 7_000_000_000 * 4  # fp32 full fine-tuning
    assert 3000 < model_shape(ModelInfo("x", parameters=7_000_000_000)).hidden < 5000


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (300 * 2**20, 9.14 * GiB, 141 * GiB)] == ["300 MiB", "9.1 GiB", "141 GiB"]


def test_importing_the_estimate_imports_nothing_heavy() -> None:
    code = "import sys, engine.memory\nprint(sorted(m for m in ('yaml', 'torch', 'textual') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
