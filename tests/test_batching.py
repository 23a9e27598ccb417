"""Batching without padding waste (engine.batching, params.batching): what is chosen for each trainer and
machine, that grouped batches really carry less padding over the same examples, and that a batch's loss does
not depend on how much padding it carries, for every trainer (what makes grouping exact)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from engine.batching import Batching, choose_batching, padding_share, row_lengths
from engine.tasks import SPECS, spec
from support import PAIR_COLUMNS, make_config, run

VARIED_CHATS = [{"messages": [{"role": "user", "content": "Tell me about the fox. " * (1 + (i * 7) % 20)},
                              {"role": "assistant", "content": "It jumps. " * (1 + (i * 5) % 7)}]} for i in range(160)]
VARIED_PAIRS = [{"prompt": "Which is right? " * (1 + i % 5), "chosen": " This one." * (1 + i % 3),
                 "rejected": " That one, surely." * (1 + (i * 2) % 4)} for i in range(24)]


@pytest.mark.parametrize("trainer", [s.trainer for s in SPECS])
def test_what_auto_picks_for_each_trainer_and_machine(trainer: str) -> None:
    s = spec(trainer)
    cpu = choose_batching("auto", s, on_cuda=False, flash_attention=False)
    gpu = choose_batching("auto", s, on_cuda=True, flash_attention=True)
    if s.packs:  # blocks of one length
        assert cpu.mode == gpu.mode == "padded"
    elif s.rows == "masked":  # SFT
        assert (cpu.mode, gpu.mode) == ("grouped", "packed")
    elif s.online:  # GRPO/RLOO sample their own batches: each prompt's answers together
        assert cpu.mode == gpu.mode == "padded" and "a group per prompt" in cpu.why
    else:
        assert cpu.mode == gpu.mode == "grouped"
    assert choose_batching("auto", s, on_cuda=True, flash_attention=False).mode != "packed"  # sdpa would mix them
    for mode in ("padded", "grouped"):
        assert choose_batching(mode, s, on_cuda=False, flash_attention=False) == (
            cpu if s.online else Batching(mode, f"params.batching: {mode}"))
    with pytest.raises(ValueError, match="packed cannot run here"):
        choose_batching("packed", s, on_cuda=False, flash_attention=False)


def test_packed_on_this_machine_is_refused_before_anything_runs(in_tmp: Path, tiny_model: Path) -> None:
    from engine.config import check_environment

    cfg = make_config(in_tmp, tiny_model, "sft", params={"batching": "packed"})
    [problem] = [p for p in check_environment(cfg) if p.key == "params.batching"]
    assert "flash-attention" in problem.message and "grouped" in (problem.fix or "")


def test_row_lengths_read_the_arrow_columns_as_the_rows_do() -> None:
    from datasets import Dataset

    rows = [{"prompt_ids": [1] * p, "chosen_ids": [2] * c, "rejected_ids": [3] * r}
            for p, c, r in [(3, 5, 2), (1, 1, 9), (4, 0, 0)]]
    assert row_lengths(rows, "pairs") == [8, 10, 4] == row_lengths(Dataset.from_list(rows), "pairs")
    assert padding_share([4, 4, 1, 3], 2) == pytest.approx(1 - 12 / 14)


def _trainer(directory: Path, tiny_model: Path, trainer: str, batching: str, valid: bool = False,
             **params: object):
    """A trainer as a run builds it; with `valid`, the training rows are its eval set too."""
    from engine.pipeline import prepare
    from engine.trainers import builder
    from engine.trainers.common import Job, apply_batching
    from engine.trainers.rows import build_rows

    files = {"train.jsonl": VARIED_CHATS if trainer in ("sft", "default") else VARIED_PAIRS}
    data = {"chat_template": "none", "column_mapping": {"text_column": "messages"}} if trainer == "default" else {}
    if trainer == "default":
        files = {"train.jsonl": [{"messages": " ".join(m["content"] for m in r["messages"])} for r in VARIED_CHATS]}
    if trainer not in ("sft", "default"):
        data = {"column_mapping": PAIR_COLUMNS}
    directory.mkdir(exist_ok=True)
    cfg = make_config(directory, tiny_model, trainer, files=files, params={
        "batch_size": 4, "block_size": 96, "max_prompt_length": 48, "batching": batching, **params}, **data)
    cfg.data.path = str(directory)
    prepared = prepare(cfg)
    [train] = [build_rows(prepared, fs) for fs in prepared.splits]
    chosen = choose_batching(batching, cfg.spec, on_cuda=False, flash_attention=False)
    job = Job(cfg, directory / "run", prepared.tokenizer, prepared.setup, prepared.block_size, train,
              train if valid else None, batching=chosen)
    built, _ = builder(cfg.trainer)(job, [])
    apply_batching(built, job)
    return built, job


def test_grouped_batches_carry_far_less_padding_over_the_same_examples(in_tmp: Path, tiny_model: Path) -> None:
    shares, seen = {}, {}
    for mode in ("padded", "grouped"):
        trainer, job = _trainer(in_tmp / mode, tiny_model, "sft", mode, block_size=512)
        loader = trainer.get_train_dataloader()
        real = padded = 0
        rows = []
        for batch in loader:
            mask = batch["input_ids"] != -1 if "attention_mask" not in batch else batch["attention_mask"].bool()
            real += int(mask.sum())
            padded += mask.numel()
            rows += [tuple(ids[m].tolist()) for ids, m in zip(batch["input_ids"], mask)]
        shares[mode], seen[mode] = 1 - real / padded, sorted(rows)
    assert seen["grouped"] == seen["padded"]  # every example once, in both
    assert shares["padded"] > 0.25 and shares["grouped"] < shares["padded"] / 3, shares


def _more_padding(trainer, batch: dict, extra: int) -> dict:
    """The batch with `extra` more padding columns on the right of every right-padded sequence."""
    pad = trainer.processing_class.pad_token_id
    out = dict(batch)
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or key.startswith("prompt"):
            continue  # prompts are padded on the left (DPO, ORPO); scalars and 1-d values stay
        fill = -100 if key.endswith("labels") else 0 if "mask" in key else pad
        out[key] = torch.cat([value, torch.full((value.shape[0], extra), fill, dtype=value.dtype)], dim=1)
    return out


# GRPO and RLOO batch the answers they sample themselves (never grouped), and their loss is on those answers
OFFLINE = [s.trainer for s in SPECS if not s.online]


@pytest.mark.parametrize("trainer", OFFLINE)
def test_a_batch_loss_does_not_depend_on_its_padding(in_tmp: Path, tiny_model: Path, trainer: str) -> None:
    """Grouping changes how much padding a batch carries, nothing else: the same examples with 13 more padding
    tokens each give the same loss (per-token mean for SFT and generic, per-sequence log-probabilities for
    DPO and ORPO, the last real token's score for reward), and so does their order."""
    built, job = _trainer(in_tmp, tiny_model, trainer, "grouped", peft=False, lora_dropout=0.0)
    model = built.model.eval()
    dataset = job.dataset(job.train)
    features = [dataset[i] for i in range(4)]
    collate = built.data_collator

    def loss(batch: dict) -> float:
        with torch.no_grad():
            return float(built.compute_loss(model, batch))

    base = collate(features)
    assert loss(_more_padding(built, base, 13)) == pytest.approx(loss(base), rel=1e-5, abs=1e-6)
    assert loss(collate(features[::-1])) == pytest.approx(loss(base), rel=1e-5, abs=1e-6)
    if hasattr(collate, "pad_to_multiple_of"):  # the collator's own padding, where it has the switch
        wide = copy.copy(collate)
        wide.pad_to_multiple_of = 64
        assert loss(wide(features)) == pytest.approx(loss(base), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("trainer", [t for t in OFFLINE if t != "orpo"])
def test_the_eval_loss_does_not_depend_on_the_eval_batches(in_tmp: Path, tiny_model: Path, trainer: str) -> None:
    """The eval loss is the mean over every trained token (SFT, generic) or pair (reward, DPO) of the eval set:
    the same with padded batches in data order, grouped ones longest first, and one example per batch
    (transformers alone gives each batch's mean the same weight, so all three would differ). Not ORPO: its
    loss (TRL's) adds the batch's token-mean NLL of the chosen answers to a per-pair term, so no weighting of
    batch means makes it independent of which pairs share a batch."""
    losses = {}
    for mode, batch in (("padded", 7), ("grouped", 7), ("padded", 1)):
        built, _ = _trainer(in_tmp / f"{mode}-{batch}", tiny_model, trainer, mode, valid=True, peft=False,
                            batch_size=batch)
        losses[mode, batch] = built.evaluate()["eval_loss"]
    assert losses["grouped", 7] == pytest.approx(losses["padded", 7], rel=1e-5)
    assert losses["padded", 1] == pytest.approx(losses["padded", 7], rel=1e-5)


def test_grouped_eval_batches_run_longest_first(in_tmp: Path, tiny_model: Path) -> None:
    built, job = _trainer(in_tmp, tiny_model, "sft", "grouped", valid=True, block_size=512)
    lengths = [int(b["attention_mask"].sum(dim=1).max()) for b in built.get_eval_dataloader()]
    assert lengths == sorted(lengths, reverse=True) and len(lengths) == 40


@pytest.mark.parametrize("trainer", ["sft", "dpo"])
def test_gradient_accumulation_trains_as_one_batch_of_the_same_examples(in_tmp: Path, tiny_model: Path,
                                                                         trainer: str) -> None:
    """Batch 4 and batch 2 with two accumulated micro-batches take the same step over the same 4 examples:
    the loss is a mean over all of the step's tokens (pairs), not a mean of the micro-batches' means. Plain
    SGD at a constant rate, so the update is the gradient itself (Adam's first step is about its sign)."""
    updates = {}
    for batch, accumulation in ((4, 1), (2, 2)):
        built, _ = _trainer(in_tmp / f"{batch}x{accumulation}", tiny_model, trainer, "padded", peft=False,
                            batch_size=batch, gradient_accumulation=accumulation, max_steps=1, optimizer="sgd",
                            lr=0.5, warmup_ratio=0.0, scheduler="constant", max_grad_norm=0.0)
        before = {n: p.detach().clone() for n, p in built.model.named_parameters()}
        built.train()
        updates[batch] = {n: p.detach() - before[n] for n, p in built.model.named_parameters()}
    assert max(float(u.abs().max()) for u in updates[4].values()) > 1e-3  # the step did train
    # the same update up to float summation order (a mean of the micro-batches' means is off by percents)
    for name, update in updates[4].items():
        error = float((updates[2][name] - update).abs().max())
        assert error <= 2e-3 * float(update.abs().max()) + 1e-6, (name, error, float(update.abs().max()))


def test_the_run_says_how_it_batches(in_tmp: Path, tiny_model: Path) -> None:
    code, run_dir, events = run(make_config(in_tmp, tiny_model, "sft"))
    assert code == 0
    [started] = [e for e in events if e["type"] == "run_started"]
    assert started["batching"]["mode"] == "grouped" and "similar length" in started["batching"]["why"]
    assert "- batching: grouped" in (run_dir / "README.md").read_text()
    assert any(e["type"] == "log" and e["message"].startswith("batching: grouped") for e in events)
    json.dumps(started)  # the event stays plain JSON


def _llama_405b(directory: Path) -> str:
    """A model directory holding only the config.json of a 405B Llama: enough for the memory estimate."""
    (directory / "huge").mkdir()
    (directory / "huge" / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16384,
        "intermediate_size": 53248, "num_hidden_layers": 126, "num_attention_heads": 128,
        "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192}))
    return str(directory / "huge")


def test_gradient_checkpointing_left_open_is_chosen_from_the_memory_estimate(in_tmp: Path, tiny_model: Path) -> None:
    from engine.checkpointing import KEY, choose_checkpointing
    from engine.config import load_config
    from engine.rundir import prepare

    cfg = make_config(in_tmp, tiny_model, "sft")
    cfg.defaulted.add(KEY)  # the key absent from the file
    choice = choose_checkpointing(cfg)
    assert not choice.on and "fits RAM" in choice.why  # a tiny model in this machine's RAM: off, faster
    written = load_config(prepare(cfg) / "config.yaml")
    assert written.params.disable_gradient_checkpointing is True  # the run and `resume` do the same
    assert KEY not in written.defaulted

    huge = copy.deepcopy(cfg)
    huge.base_model = _llama_405b(in_tmp)
    huge.params.batch_size, huge.params.block_size = 8, 4096
    assert choose_checkpointing(huge).on  # a 405B model does not fit without it

    unknown = copy.deepcopy(cfg)
    unknown.base_model = "no-such-org/no-such-model"
    assert choose_checkpointing(unknown).on  # no size known: memory is saved

    explicit = copy.deepcopy(cfg)
    explicit.defaulted.discard(KEY)
    explicit.params.disable_gradient_checkpointing = False
    assert choose_checkpointing(explicit).on and "disable_gradient_checkpointing: false" in choose_checkpointing(
        explicit).why


def test_quantization_left_open_is_int4_only_where_the_model_does_not_fit_without_it(
        in_tmp: Path, tiny_model: Path) -> None:
    from engine.config import load_config
    from engine.quantization import KEY, choose_quantization
    from engine.rundir import prepare

    cfg = make_config(in_tmp, tiny_model, "sft", params={"peft": True})
    cfg.defaulted.add(KEY)  # the key absent from the file: AutoTrain would load the base in int4
    cfg.params.quantization = "int4"
    choice = choose_quantization(cfg)
    assert choice.value is None and "fits RAM" in choice.why  # a tiny model: plain LoRA, faster and exact
    written = load_config(prepare(cfg) / "config.yaml")
    assert written.params.quantization is None and KEY not in written.defaulted  # the run and `resume` agree

    unknown = copy.deepcopy(cfg)
    unknown.base_model = "no-such-org/no-such-model"
    guessed = choose_quantization(unknown)  # no size known: AutoTrain's choice, where int4 runs
    assert guessed.value == "int4" or "int4 cannot run here" in guessed.why

    explicit = copy.deepcopy(cfg)
    explicit.defaulted.discard(KEY)
    assert choose_quantization(explicit).value == "int4"  # written in the config: always wins
    full = copy.deepcopy(cfg)
    full.params.peft = False
    assert choose_quantization(full).value is None  # without LoRA nothing is quantized

    huge = copy.deepcopy(cfg)
    huge.base_model = _llama_405b(in_tmp)
    chosen = choose_quantization(huge)
    assert chosen.value == "int4" and "does not fit" in chosen.why  # a 405B model needs it


@pytest.mark.parametrize("device,reason,chosen", [
    ("cpu", "bf16 autocast on cpu, native on this CPU (AVX512-BF16).", "bf16"),
    ("cpu", "bf16 autocast on cpu, native on this CPU (AMX).", "bf16"),
    ("cuda", "bf16 autocast on NVIDIA H200.", "bf16"),
    ("cuda", "bf16 is emulated on Tesla T4 (no native bf16): it runs, but fp16 is faster there.", None),
    ("cpu", "bf16 autocast on cpu, emulated on this CPU (no AVX512-BF16 or AMX): may be slower than fp32.", None),
])
def test_precision_left_open_is_bf16_only_where_it_is_native(in_tmp: Path, tiny_model: Path,
                                                             monkeypatch: pytest.MonkeyPatch, device: str,
                                                             reason: str, chosen: str | None) -> None:
    import dataclasses

    from engine import capabilities
    from engine.capabilities import Support
    from engine.precision import PRECISION_KEY, choose_precision

    real = capabilities.probe()
    monkeypatch.setattr(capabilities, "probe",
                        lambda: dataclasses.replace(real, device=device, bf16=Support(True, reason)))
    cfg = make_config(in_tmp, tiny_model, "sft")
    cfg.defaulted.add(PRECISION_KEY)
    assert choose_precision(cfg)[0] == chosen
    cfg.defaulted.discard(PRECISION_KEY)  # an explicit value (null: full precision) always wins
    assert choose_precision(cfg) == (None, "params.mixed_precision: null (full precision)")


def test_the_run_config_records_the_precision_chosen_for_this_machine(in_tmp: Path, tiny_model: Path) -> None:
    from engine.config import load_config
    from engine.precision import PRECISION_KEY, choose_precision
    from engine.rundir import prepare

    cfg = make_config(in_tmp, tiny_model, "sft")
    cfg.defaulted.add(PRECISION_KEY)
    written = load_config(prepare(cfg) / "config.yaml")
    assert written.params.mixed_precision == choose_precision(cfg)[0] and PRECISION_KEY not in written.defaulted
