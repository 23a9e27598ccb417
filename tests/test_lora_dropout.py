"""LoRA's dropout fused into its A matmul (engine.trainers.lora_dropout): the same dropout as torch's (rate,
scaling, gradients of the masked product), repeatable from the seed, the same mask when gradient checkpointing
recomputes a layer, nothing in eval mode, adapters saved as peft saves them; and the choice (engine.kernels)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.kernels import choose_lora_dropout
from engine.trainers.lora_dropout import DropoutLinear, drop_mask, fuse_lora_dropout


def test_the_mask_drops_at_the_rate_asked_and_scales_what_it_keeps() -> None:
    torch.manual_seed(0)
    keep, scale = drop_mask(torch.Size((1000, 999)), 0.05, torch.device("cpu"))  # an odd size: lanes cut short
    assert keep.shape == (1000, 999) and keep.dtype == torch.uint8
    dropped = 1 - keep.double().mean().item()
    assert abs(dropped - 0.05) < 0.002
    assert scale == pytest.approx(1 / (1 - round(0.05 * 65536) / 65536))
    assert scale == pytest.approx(1 / 0.95, rel=1e-4)


def _linear(p: float) -> DropoutLinear:
    torch.manual_seed(1)
    layer = torch.nn.Linear(24, 8, bias=False)
    layer.__class__ = DropoutLinear
    layer.p = p
    return layer


def test_output_and_gradients_are_those_of_the_dropped_input_through_the_linear() -> None:
    layer = _linear(0.3)
    x = torch.randn(3, 5, 24, requires_grad=True)
    torch.manual_seed(7)
    out = layer(x)
    out.pow(2).sum().backward()
    torch.manual_seed(7)  # the same draw, by hand
    keep, scale = drop_mask(x.shape, 0.3, x.device)
    x_ref = x.detach().clone().requires_grad_()
    w_ref = layer.weight.detach().clone().requires_grad_()
    ref = torch.nn.functional.linear(x_ref * keep * scale, w_ref)
    ref.pow(2).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.weight.grad, w_ref.grad)
    assert (keep == 0).any() and (keep == 1).any()


def test_eval_mode_and_no_dropout_are_a_plain_linear() -> None:
    layer = _linear(0.5).eval()
    x = torch.randn(4, 24)
    torch.testing.assert_close(layer(x), x @ layer.weight.t())
    layer.train()
    layer.p = 0.0
    torch.testing.assert_close(layer(x), x @ layer.weight.t())


def test_it_runs_under_the_cpus_bf16_autocast() -> None:
    layer = _linear(0.1)
    x = torch.randn(2, 6, 24, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32


def _peft_model(tiny_model: Path, dropout: float) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))


def _grads(model: torch.nn.Module, ids: torch.Tensor, seed: int) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(seed)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_every_lora_layer_is_fused_and_the_adapter_is_saved_as_before(tiny_model: Path, tmp_path: Path) -> None:
    from peft.tuners.lora.layer import LoraLayer

    model = _peft_model(tiny_model, 0.1)
    keys = set(model.state_dict())
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert fuse_lora_dropout(model) == len(layers) > 0
    assert all(isinstance(m.lora_dropout["default"], torch.nn.Identity) for m in layers)
    assert set(model.state_dict()) == keys
    model.save_pretrained(tmp_path / "adapter")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), tmp_path / "adapter")
    assert loaded.peft_config["default"].lora_dropout == pytest.approx(0.1)  # the adapter's config as written


def test_training_repeats_from_the_seed_and_checkpointing_recomputes_the_same_mask(tiny_model: Path) -> None:
    model = _peft_model(tiny_model, 0.2)
    fuse_lora_dropout(model)
    model.train()
    for p in model.parameters():  # B starts at zero: give the A gradients (and so the mask) something to show
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    ids = torch.randint(5, 200, (2, 24))
    loss, grads = _grads(model, ids, seed=3)
    again, grads_again = _grads(model, ids, seed=3)
    other, _ = _grads(model, ids, seed=4)
    assert loss == again and other != loss  # the seed decides the masks, and they are drawn
    for n in grads:
        torch.testing.assert_close(grads_again[n], grads[n])
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    checkpointed, grads_checkpointed = _grads(model, ids, seed=3)
    assert checkpointed == pytest.approx(loss, rel=1e-6)
    for n in grads:
        torch.testing.assert_close(grads_checkpointed[n], grads[n], rtol=1e-4, atol=1e-6)


def test_auto_fuses_lora_dropout_on_the_cpu_only_and_explicit_values_win() -> None:
    assert choose_lora_dropout("auto", on_cuda=False, peft=True, dropout=0.05)[0]
    fused, why = choose_lora_dropout("auto", on_cuda=True, peft=True, dropout=0.05)
    assert not fused and why.startswith("auto: ") and "GPU" in why
    assert choose_lora_dropout("off", on_cuda=False, peft=True, dropout=0.05) == (
        False, "params.lora_dropout_kernel: off")
    assert choose_lora_dropout("on", on_cuda=False, peft=True, dropout=0.05) == (
        True, "params.lora_dropout_kernel: on")
    # no dropout: still fused, for the input read without peft's fp32 copy
    assert choose_lora_dropout("auto", on_cuda=False, peft=True, dropout=0.0) == (
        True, "auto: no dropout to draw; the LoRA A matmul reads its input without peft's fp32 copy")
    assert not choose_lora_dropout("auto", on_cuda=False, peft=False, dropout=0.05)[0]
    with pytest.raises(ValueError, match="params.lora_dropout_kernel: on cannot run here"):
        choose_lora_dropout("on", on_cuda=True, peft=True, dropout=0.05)


def test_on_is_refused_by_the_config_check_on_a_gpu(in_tmp: Path, tiny_model: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from engine import capabilities
    from engine.config import machine_problems
    from support import make_config

    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": True, "lora_dropout_kernel": "on"})
    assert machine_problems(cfg) == []  # the CPU: it runs
    real = capabilities.probe()
    monkeypatch.setattr(capabilities, "probe", lambda: dataclasses.replace(real, device="cuda"))
    [problem] = machine_problems(cfg)
    assert problem.key == "params.lora_dropout_kernel" and "on a GPU" in problem.message


def test_a_bf16_model_without_dropout_is_fused_and_trains_as_peft_does(tiny_model: Path) -> None:
    """DPO turns dropout off, and a bf16 LoRA run's layers read bf16 inputs: fused anyway, the A matmul takes
    the input uncast (peft would copy it to fp32 and autocast straight back); the same loss and gradients under
    autocast, and a forward without autocast (generation) still runs."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.layer import LoraLayer
    from transformers import AutoModelForCausalLM

    def model() -> torch.nn.Module:
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.bfloat16)
        m = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
        torch.manual_seed(0)
        for p in m.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.05)
        return m.train()

    ids = torch.randint(5, 200, (2, 24))
    results = []
    for fuse in (False, True):
        m = model()
        if fuse:
            layers = [x for x in m.modules() if isinstance(x, LoraLayer)]
            assert fuse_lora_dropout(m) == len(layers) > 0
            assert all(x.cast_input_dtype_enabled is False for x in layers)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(_grads(m, ids, seed=1))
    (loss, grads), (fused_loss, fused_grads) = results
    assert fused_loss == pytest.approx(loss, rel=1e-6)
    for n in grads:
        torch.testing.assert_close(fused_grads[n], grads[n])
    with torch.no_grad():
        assert m.eval()(input_ids=ids).logits.dtype == torch.bfloat16  # no autocast: the input cast as peft does
