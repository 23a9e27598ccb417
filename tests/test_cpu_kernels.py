"""The CPU kernels of issue 15's second round (engine.kernels): the LM head's log-probabilities scored only at
labelled positions (engine.trainers.logprob_head), attention without the padding mask for right-padded batches
(engine.trainers.causal_attention), attention's gradient in fp32 (engine.trainers.attention_grad), and the fused
LoRA A reading its input uncast (engine.trainers.lora_dropout).
Each gives the trainers the same numbers as the path it replaces (TRL's function; the masked attention; peft's
cast), checked on the real trainers with the tiny model; and each is chosen, switchable and reported."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_batching import OFFLINE, _more_padding, _trainer

from engine.kernels import (
    ATTENTION_GRAD_KEY,
    CAUSAL_KEY,
    LOGPROB_KEY,
    SWITCHES,
    Kernels,
    choose_attention_grad,
    choose_causal_attention,
    choose_logprob_head,
    machine_kernels,
)
from engine.tasks import SPECS
from engine.trainers.attention_grad import MAX_LENGTH, CausalAttention, cpu_attention_grad
from engine.trainers.causal_attention import _drop_mask, drop_padding_masks, mask_refusal, right_padded
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
    # fp32: sums over 300 positions in another order (and threads) differ by float rounding of the largest terms
    for a, b in zip(our_grads, trl_grads, strict=True):
        if b is not None:
            scale = max(1.0, float(b.abs().max()))
            torch.testing.assert_close(a, b, **(dict(rtol=2e-2, atol=2e-2) if autocast else
                                                dict(rtol=1e-4, atol=1e-5 * scale)))


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
    right = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    for key in ("cache", "past_key_values"):  # transformers 5 names the cache `cache`; older ones past_key_values
        assert _drop_mask(model.base_model, (), {"attention_mask": right, key: object()})[1]["attention_mask"] is right
    assert _drop_mask(model.base_model, (), {"attention_mask": right})[1]["attention_mask"] is None


@contextlib.contextmanager
def _counted_fp32_attention() -> Iterator[list[int]]:
    """A list that gets an entry each time CausalAttention runs, while inside."""
    used: list[int] = []
    apply = CausalAttention.apply
    CausalAttention.apply = lambda *a: used.append(1) or apply(*a)  # type: ignore[method-assign]
    try:
        yield used
    finally:
        CausalAttention.apply = apply  # type: ignore[method-assign]


def _attention_grads(function, q, k, v, grad, **kw: object) -> tuple[torch.Tensor, list[torch.Tensor]]:
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = function(q, k, v, **kw)
    out.backward(grad)
    return out.detach(), [q.grad, k.grad, v.grad]


@pytest.mark.parametrize("heads", [(8, 8), (8, 4)])  # grouped-query attention too
def test_the_fp32_attention_gradient_is_pytorchs_forward_and_closer_to_exact(heads: tuple[int, int]) -> None:
    """The forward is PyTorch's own bf16 result, bit for bit; the gradients are at least as close to fp64's as
    PyTorch's bf16 backward (and within bf16 rounding of them)."""
    torch.manual_seed(0)
    q = torch.randn(3, heads[0], 70, 16, dtype=torch.float64)
    k, v = (torch.randn(3, heads[1], 70, 16, dtype=torch.float64) for _ in range(2))
    grad = torch.randn(3, heads[0], 70, 16, dtype=torch.float64)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    kw = dict(is_causal=True, scale=0.3, enable_gqa=heads[0] != heads[1])
    _, exact = _attention_grads(sdpa, q, k, v, grad, **kw)
    bf16 = [t.bfloat16() for t in (q, k, v, grad)]
    stock_out, stock = _attention_grads(sdpa, *bf16, **kw)
    with cpu_attention_grad(), _counted_fp32_attention() as used:
        ours_out, ours = _attention_grads(torch.nn.functional.scaled_dot_product_attention, *bf16, **kw)
    assert used and torch.nn.functional.scaled_dot_product_attention is sdpa  # used, then restored
    assert torch.equal(ours_out, stock_out)
    for mine, theirs, truth in zip(ours, stock, exact, strict=True):
        assert mine.dtype == torch.bfloat16
        error, stock_error = ((g.double() - truth).norm() / truth.norm() for g in (mine, theirs))
        assert error <= stock_error * 1.05 and error < 0.01, (error, stock_error)


def test_the_fp32_attention_gradient_leaves_every_other_call_to_pytorch() -> None:
    """A mask, fp32, no gradient, dropout, a cached step (queries shorter than keys) or a long sequence: PyTorch's
    function, unchanged."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 12, 8, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.ones(12, 12, dtype=torch.bool).tril()
    long = [torch.randn(1, 1, MAX_LENGTH + 1, 8, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
    calls = [((q, k, v), dict(attn_mask=mask)), ((q.float(), k.float(), v.float()), dict(is_causal=True)),
             ((q.detach(), k.detach(), v.detach()), dict(is_causal=True)), ((q, k, v), dict(is_causal=False)),
             ((q[:, :, -1:], k, v), dict(is_causal=True)), (tuple(long), dict(is_causal=True))]
    with cpu_attention_grad(), _counted_fp32_attention() as used:
        for args, kw in calls:
            torch.nn.functional.scaled_dot_product_attention(*args, **kw)
        assert not used
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert used


@pytest.mark.parametrize("trainer", ["sft", "dpo"])
def test_a_bf16_trainer_step_with_the_fp32_attention_gradient(in_tmp: Path, tiny_model: Path, trainer: str) -> None:
    """The trainers under bf16 autocast: the same loss (the forward is PyTorch's) and gradients within bf16
    rounding of PyTorch's bf16 backward, through the real model's attention."""
    built, job = _trainer(in_tmp, tiny_model, trainer, "grouped", peft=False, lora_dropout=0.0)
    built.model.train()
    drop_padding_masks(built.model, getattr(built, "ref_model", None))
    dataset = job.dataset(job.train)
    batch = built.data_collator([dataset[i] for i in range(4)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stock = _loss_and_grads(built, batch)
        with cpu_attention_grad(), _counted_fp32_attention() as used:
            ours = _loss_and_grads(built, batch)
    assert used  # the trained model's attention (DPO's reference pass has no gradient: PyTorch's call)
    assert ours[0] == stock[0]
    assert ours[1].keys() == stock[1].keys()
    for name in ours[1]:
        torch.testing.assert_close(ours[1][name], stock[1][name], rtol=0.05, atol=0.02 * float(
            stock[1][name].abs().max()), msg=name)


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
    assert choose_attention_grad("auto", on_cuda=False)[0]
    assert not choose_attention_grad("auto", on_cuda=True)[0]
    assert choose_attention_grad("off", on_cuda=False) == (False, f"{ATTENTION_GRAD_KEY}: off")
    with pytest.raises(ValueError, match="CPU flash-attention kernel"):
        choose_attention_grad("on", on_cuda=True)


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
    """A real LoRA SFT run in bf16 on this CPU: every CPU kernel chosen, reported, and the run trains (through the
    fp32 attention gradient)."""
    cfg = make_config(in_tmp, tiny_model, "sft", params={"max_steps": 2, "peft": True, "quantization": None,
                                                         "mixed_precision": "bf16"})
    with _counted_fp32_attention() as used:
        code, run_dir, events = run(cfg)
    assert code == 0 and used
    [started] = [e for e in events if e["type"] == "run_started"]
    assert started["kernels"]["logprob_head"] and started["kernels"]["causal_attention"]
    assert started["kernels"]["lora_dropout"] and started["kernels"]["malloc_reuse"]
    assert started["kernels"]["attention_grad"]
    messages = [e["message"] for e in events if e["type"] == "log"]
    assert any(m.startswith("attention: right-padded batches run without their padding mask") for m in messages)
    card = (run_dir / "README.md").read_text()
    assert "log-probs llmtune's CPU head (auto: " in card and "attention causal, no padding mask (auto: " in card
