"""The CPU kernels of issue 15's second round (engine.kernels): the LM head's log-probabilities scored only at
labelled positions (engine.trainers.logprob_head), attention without the padding mask for right-padded batches
(engine.trainers.causal_attention), and the fused LoRA A reading its input uncast (engine.trainers.lora_dropout).
Each gives the trainers the same numbers as the path it replaces (TRL's function; the masked attention; peft's
cast), checked on the real trainers with the tiny model; and each is chosen, switchable and reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_batching import OFFLINE, _more_padding, _trainer

from engine.kernels import (
    CAUSAL_KEY,
    LOGPROB_KEY,
    SWITCHES,
    Kernels,
    choose_causal_attention,
    choose_logprob_head,
    machine_kernels,
)
from engine.tasks import SPECS
from engine.trainers.causal_attention import drop_padding_masks, mask_refusal, right_padded
from engine.trainers.logprob_head import CpuLogProbs, cpu_logprob_head, trl_head_refusal
from support import make_config, run

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _head(function: type, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          targets: torch.Tensor, autocast: bool, **kw: object) -> tuple[list, list]:
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    b = None if bias is None else bias.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = function.apply(h, w, b, targets, kw.get("temperature", 1.0), 128, kw.get("softcap"),
                             kw.get("scale", 1.0), OUTPUTS)
    (out[0].sum() * 0.3 + out[1].sum() * 0.2).backward()  # a gradient through the entropy too (GRPO's bonus)
    return list(out), [h.grad, w.grad, None if b is None else b.grad]


@pytest.mark.parametrize("case", [dict(), dict(softcap=30.0, scale=0.5, temperature=0.7, bias=True),
                                  dict(autocast=True)])
def test_the_cpu_head_gives_trls_outputs_and_gradients(case: dict) -> None:
    from trl.kernels import ChunkedLogProbFunction

    torch.manual_seed(0)
    n, width, vocab = 300, 64, 500
    hidden, weight = torch.randn(n, width), torch.randn(vocab, width) * 0.3
    bias = torch.randn(vocab) if case.pop("bias", False) else None
    targets = torch.randint(0, vocab, (n,))
    autocast = case.pop("autocast", False)
    ours, our_grads = _head(CpuLogProbs, hidden, weight, bias, targets, autocast, **case)
    trls, trl_grads = _head(ChunkedLogProbFunction, hidden, weight, bias, targets, autocast, **case)
    for name, a, b in zip(OUTPUTS, ours, trls, strict=True):
        if name == "is_top1":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5, msg=name)
    # bf16 matmuls: TRL sums its gradient GEMMs in fp32 from bf16 tiles, we take torch's bf16 GEMM (as autograd
    # does for the model's own head under autocast): the same to bf16's precision
    tolerance = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-4, atol=1e-5)
    for a, b in zip(our_grads, trl_grads, strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, **tolerance)


def test_the_head_is_only_swapped_inside_and_only_for_cpu_tensors() -> None:
    import trl.trainer.utils as trl_utils

    before = (trl_utils._ChunkedLogProbFunction, trl_utils._use_triton)
    assert trl_head_refusal() is None  # the installed TRL is the one it fits
    with cpu_logprob_head():
        assert trl_utils._use_triton(torch.device("cpu"))  # `compact`: only labelled positions reach the head
        assert trl_utils._ChunkedLogProbFunction is not before[0]
    assert (trl_utils._ChunkedLogProbFunction, trl_utils._use_triton) == before


def _loss_and_grads(built, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    model = built.model
    model.zero_grad()
    loss = built.compute_loss(model, batch)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a: tuple[float, dict], b: tuple[float, dict]) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-5, abs=1e-6)
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("trainer", [s.trainer for s in SPECS if s.fused_lm_head and not s.online])
def test_the_cpu_head_trains_the_same_scoring_only_labelled_positions(in_tmp: Path, tiny_model: Path,
                                                                      trainer: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SFT, generic and DPO: the same loss and gradients with the CPU head as with TRL's, and the head sees only
    the positions with a label (DPO: its policy and its reference passes)."""
    built, job = _trainer(in_tmp, tiny_model, trainer, "grouped", peft=False, lora_dropout=0.0)
    built.model.train()
    dataset = job.dataset(job.train)
    batch = built.data_collator([dataset[i] for i in range(4)])
    trls = _loss_and_grads(built, batch)
    scored: list[int] = []
    apply = CpuLogProbs.apply
    monkeypatch.setattr(CpuLogProbs, "apply", lambda hidden, *a: scored.append(len(hidden)) or apply(hidden, *a))
    with cpu_logprob_head():
        ours = _loss_and_grads(built, batch)
    _assert_same(ours, trls)
    if "labels" in batch:
        labelled = int((batch["labels"][:, 1:] != -100).sum())
    else:  # DPO: the completion tokens, each scored by the policy and by the reference
        labelled = int(batch["completion_mask"][:, 1:].sum())
    assert scored and all(n == labelled for n in scored), (scored, labelled)


@pytest.mark.parametrize("trainer", OFFLINE)
def test_right_padded_batches_give_the_same_loss_without_their_mask(in_tmp: Path, tiny_model: Path,
                                                                    trainer: str) -> None:
    """Every offline trainer pads on the right: without the mask the loss and gradients are the same, and the
    backbone really ran without it (7 more pads on every row, so that the generic trainer's full blocks have
    some too)."""
    built, job = _trainer(in_tmp, tiny_model, trainer, "grouped", peft=False, lora_dropout=0.0)
    built.model.train()
    dataset = job.dataset(job.train)
    batch = _more_padding(built, built.data_collator([dataset[i] for i in range(4)]), 7)
    masked = _loss_and_grads(built, batch)
    assert drop_padding_masks(built.model, getattr(built, "ref_model", None))[-1].startswith(
        "attention: right-padded batches run without their padding mask")
    seen: list[object] = []
    backbone = built.model.base_model  # hooks run in order: this one sees what the model ran with
    backbone.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True)
    unmasked = _loss_and_grads(built, batch)
    _assert_same(unmasked, masked)
    assert seen and all(m is None for m in seen)
    padded = [v for k, v in batch.items() if k.endswith("attention_mask") and v.dim() == 2]
    assert any(not bool(m.all()) for m in padded)  # the batch did carry padding


def test_a_left_padded_batch_or_a_generation_step_keeps_its_mask(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    drop_padding_masks(model)
    seen: list[object] = []
    model.base_model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("attention_mask")),
                                               with_kwargs=True)
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 7, 8]])
    left = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    model(input_ids=ids, attention_mask=left)
    assert seen[-1] is left and not right_padded(left)
    model.generate(input_ids=ids, attention_mask=left, max_new_tokens=2, do_sample=False)
    assert all(m is not None for m in seen)


def test_mixture_of_experts_and_encoder_decoder_models_keep_the_mask() -> None:
    from transformers import LlamaConfig, MixtralConfig, T5Config

    assert mask_refusal(LlamaConfig()) is None
    assert "mixture-of-experts" in mask_refusal(MixtralConfig())
    assert "encoder-decoder" in mask_refusal(T5Config())


def test_auto_chooses_the_cpu_kernels_on_a_cpu_only_and_explicit_values_win() -> None:
    assert choose_logprob_head("auto", on_cuda=False, fused_head=True)[0]
    on_gpu, why = choose_logprob_head("auto", on_cuda=True, fused_head=True)
    assert not on_gpu and "Triton kernel" in why
    assert choose_logprob_head("auto", on_cuda=False, fused_head=False) == (
        False, "this trainer's loss does not go through TRL's fused LM head")
    assert choose_logprob_head("off", on_cuda=False, fused_head=True) == (False, f"{LOGPROB_KEY}: off")
    with pytest.raises(ValueError, match="on cannot run here"):
        choose_logprob_head("on", on_cuda=True, fused_head=True)
    assert choose_causal_attention("auto", on_cuda=False)[0]
    assert not choose_causal_attention("auto", on_cuda=True)[0]
    assert choose_causal_attention("on", on_cuda=True) == (True, f"{CAUSAL_KEY}: on")
    assert choose_causal_attention("off", on_cuda=False) == (False, f"{CAUSAL_KEY}: off")


def test_the_allocator_setting_is_chosen_for_cpu_runs_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import allocator
    from engine.kernels import MALLOC_KEY, choose_malloc_reuse

    assert allocator.allocator_refusal() is None and allocator.keep_freed_blocks()  # this Linux: glibc takes it
    assert choose_malloc_reuse("auto", on_cuda=False)[0]
    assert not choose_malloc_reuse("auto", on_cuda=True)[0]
    assert choose_malloc_reuse("off", on_cuda=False) == (False, f"{MALLOC_KEY}: off")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert not choose_malloc_reuse("auto", on_cuda=False)[0]
    with pytest.raises(ValueError, match="without glibc"):
        choose_malloc_reuse("on", on_cuda=False)


@pytest.mark.parametrize("trainer", ["reward", "orpo"])
def test_trainers_without_trls_fused_head_say_so(in_tmp: Path, tiny_model: Path, trainer: str) -> None:
    cfg = make_config(in_tmp, tiny_model, trainer)
    chosen = machine_kernels(cfg, on_cuda=False)
    assert not chosen.logprob_head and "fused LM head" in chosen.logprob_head_why
    assert chosen.causal_attention


def test_every_kernel_key_is_a_param_and_said_in_the_summary() -> None:
    from engine.params import Params

    names = {f for f in Params.__dataclass_fields__}
    assert all(s.param in names for s in SWITCHES)
    described = Kernels(False, "x").describe()
    assert all(s.label in described for s in SWITCHES)


def test_a_bf16_run_uses_the_cpu_kernels_and_says_so(in_tmp: Path, tiny_model: Path) -> None:
    """A real LoRA SFT run in bf16 on this CPU: all three chosen, reported, and the run trains."""
    cfg = make_config(in_tmp, tiny_model, "sft", params={"max_steps": 2, "peft": True, "quantization": None,
                                                         "mixed_precision": "bf16"})
    code, run_dir, events = run(cfg)
    assert code == 0
    [started] = [e for e in events if e["type"] == "run_started"]
    assert started["kernels"]["logprob_head"] and started["kernels"]["causal_attention"]
    assert started["kernels"]["lora_dropout"] and started["kernels"]["malloc_reuse"]
    messages = [e["message"] for e in events if e["type"] == "log"]
    assert any(m.startswith("attention: right-padded batches run without their padding mask") for m in messages)
    card = (run_dir / "README.md").read_text()
    assert "log-probs llmtune's CPU head (auto: " in card and "attention causal, no padding mask (auto: " in card
