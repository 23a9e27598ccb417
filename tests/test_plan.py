"""engine.plan: the optimizer steps a run takes (the trainer's own count) and the duration estimate, which
says what it rests on and is left out where there is no sound basis; engine.rundir.free_name and the
wizard's wording of a run directory that is not free."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.plan import (
    ASSUMED_UTILIZATION,
    Examples,
    device_peak,
    duration_line,
    estimate_duration,
    make_plan,
    optimizer_steps,
    plan_for_preview,
    steps_line,
)
from support import PAIRS, TEXTS, tiny_config


def test_steps_agree_with_the_trainers_total_steps() -> None:
    from engine.trainers.common import Job, total_steps
    from engine.trainers.rows import SplitStats, TrainerRows

    cfg = tiny_config(Path("."), Path("model"), {}, task="llm-sft")
    for n, batch, accumulation, epochs, max_steps, world in itertools.product(
            (0, 1, 7, 8, 9, 100, 1001), (1, 2, 3, 8), (1, 2, 4, 5), (1, 3), (-1, 5), (1, 2)):
        p = cfg.params
        p.batch_size, p.gradient_accumulation, p.epochs, p.max_steps = batch, accumulation, epochs, max_steps
        rows = TrainerRows("train", [{}] * n, SplitStats(n, 0, n, 0, 0, 0))
        job = Job(cfg, Path("run"), None, None, 64, rows, None, world_size=world)
        assert optimizer_steps(n, batch_size=batch, gradient_accumulation=accumulation, epochs=epochs,
                               max_steps=max_steps, world_size=world) == total_steps(job), (n, batch, accumulation)


@pytest.mark.parametrize("trainer", ["sft", "default", "dpo", "reward"])
def test_the_examples_counted_from_a_preview_are_the_rows_the_trainer_gets(in_tmp: Path, tiny_model: Path,
                                                                           trainer: str) -> None:
    """The dry run's plan counts what engine.trainers.rows hands the trainer: SFT and DPO leave out the
    examples with nothing to train (block_size 12 cuts some answers off), the generic trainer packs blocks."""
    from engine.pipeline import prepare
    from engine.preview import build_preview
    from engine.trainers.rows import build_rows

    long_chats = [{"messages": [{"role": "user", "content": "Tell me a long story about a fox " * (i % 3)},
                                {"role": "assistant", "content": f"Answer {i}."}]} for i in range(9)]
    long_pairs = [{"prompt": "A question that goes on " * (i % 3 * 3 + 1), "chosen": "Yes.", "rejected": "No."}
                  for i in range(7)]
    setups = {"sft": ("llm-sft", {"train.jsonl": long_chats}, dict(chat_template="chatml",
                                                                    column_mapping={"text_column": "messages"})),
              "default": ("llm-generic", {"train.csv": TEXTS}, dict(column_mapping={"text_column": "text"})),
              "dpo": ("llm-dpo", {"train.jsonl": long_pairs}, dict(column_mapping={
                  "prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"})),
              "reward": ("llm-reward", {"train.jsonl": PAIRS}, dict(column_mapping={
                  "prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"}))}
    task, files, data = setups[trainer]
    cfg = tiny_config(in_tmp, tiny_model, files, task=task, params={"block_size": 12, "max_prompt_length": 12,
                                                                    "batch_size": 2, "gradient_accumulation": 1},
                      **data)
    preview = build_preview(cfg, n_samples=0)
    prepared = prepare(cfg)
    [fs] = prepared.splits
    assert prepared.block_size == preview.block_size
    rows = build_rows(prepared, fs)
    plan = plan_for_preview(preview)
    assert plan is not None and plan.examples.how == "exact"
    assert plan.examples.count == len(rows.rows)
    assert plan.steps == optimizer_steps(len(rows.rows), batch_size=2, gradient_accumulation=1, epochs=1)
    if trainer in ("sft", "dpo"):
        assert rows.stats.skipped > 0  # the case that matters: some examples are left out
    assert "optimizer step" in steps_line(plan, cfg)


def test_the_first_rows_read_are_scaled_to_the_split_and_say_so(in_tmp: Path, tiny_model: Path) -> None:
    from engine.preview import build_preview

    cfg = tiny_config(in_tmp, tiny_model, {"train.csv": TEXTS}, task="llm-sft", params={"batch_size": 1,
                      "gradient_accumulation": 1}, column_mapping={"text_column": "text"})
    preview = build_preview(cfg, n_samples=0, limit=4)  # 4 of the 12 rows
    plan = plan_for_preview(preview, read_limit=4, total_rows=12)
    assert (plan.examples.count, plan.examples.how, plan.steps) == (12, "about", 12)
    assert steps_line(plan, cfg).startswith("about 12 optimizer steps (about 12 examples")
    unknown = plan_for_preview(preview, read_limit=4)
    assert (unknown.examples.count, unknown.examples.how) == (4, "at least")
    cfg.params.valid_fraction = 0.25  # a preview that holds all 4 rows read for training: 3 of them are
    held_out = plan_for_preview(preview, read_limit=4, total_rows=12)
    assert (held_out.examples.count, held_out.examples.how) == (9, "about")


def test_rows_held_out_by_the_engine_are_counted_once(in_tmp: Path, tiny_model: Path) -> None:
    from engine.preview import build_preview

    cfg = tiny_config(in_tmp, tiny_model, {"train.csv": TEXTS}, task="llm-sft", params={"batch_size": 1,
                      "gradient_accumulation": 1, "valid_fraction": 0.25}, column_mapping={"text_column": "text"})
    preview = build_preview(cfg, n_samples=0, limit=4)
    if not any(r.formatted.split == "valid" for r in preview.splits):
        pytest.skip("engine.preview does not hold rows out for params.valid_fraction yet")
    train = next(r for r in preview.splits if r.formatted.split == "train")
    assert train.formatted.rows < 4  # the rows read, less those held out
    plan = plan_for_preview(preview, read_limit=4, total_rows=12)
    assert plan.examples.how == "about" and plan.examples.count == round(len(train.formatted.examples) * 3)
    whole = plan_for_preview(build_preview(cfg, n_samples=0))  # every row read: exact
    assert whole.examples.how == "exact" and whole.examples.count == 9


def params(**changes: object) -> SimpleNamespace:
    base = dict(peft=True, disable_gradient_checkpointing=True, mixed_precision="bf16", batch_size=4,
                gradient_accumulation=2, epochs=1, max_steps=-1)
    return SimpleNamespace(**{**base, **changes})


def test_the_estimate_says_what_it_rests_on() -> None:
    estimate, why = estimate_duration(3_000_000, 500_000_000, params(), "sft", device="cuda",
                                      device_name="NVIDIA H100 80GB HBM3")
    assert why == "" and estimate is not None
    # LoRA: forward 2 + backward 2 FLOPs per parameter and token
    assert estimate.seconds == pytest.approx(3e6 * 4 * 5e8 / (989e12 * ASSUMED_UTILIZATION))
    assert "3M tokens x 4 x 500M parameters / 30% (assumed) of the H100 SXM's 989 TFLOP/s bf16 peak" in estimate.basis
    dpo_full, _ = estimate_duration(3_000_000, 500_000_000, params(peft=False, disable_gradient_checkpointing=False),
                                    "dpo", device="cuda", device_name="NVIDIA H100 80GB HBM3")
    assert dpo_full is not None and " x 10 x " in dpo_full.basis  # 2 + 4 + 2 recompute + 2 reference
    assert device_peak("NVIDIA H100 PCIe") == (756.0, "H100 PCIe") and device_peak("NVIDIA H200")[0] == 989.0


@pytest.mark.parametrize("device, name, changes, why", [
    ("cpu", "CPU", {}, "no sound throughput figure for CPU training"),
    ("cuda", "NVIDIA GeForce GTX 1080", {}, "no published peak for NVIDIA GeForce GTX 1080"),
    ("cuda", "NVIDIA A100-SXM4-80GB", {"mixed_precision": None}, "fp32 training: only bf16/fp16 peaks are known"),
    ("cpu", "CPU", {"mixed_precision": None}, "fp32 training: only bf16/fp16"),  # the same words on any machine
    (None, None, {}, "no sound throughput figure for this device"),
])
def test_without_a_sound_basis_only_the_steps_are_shown(device: str | None, name: str | None, changes: dict,
                                                        why: str) -> None:
    estimate, reason = estimate_duration(10_000, 500_000_000, params(**changes), "sft", device=device,
                                         device_name=name)
    assert estimate is None and reason.startswith(why)
    cfg = SimpleNamespace(params=params(**changes), trainer="sft")
    plan = make_plan(cfg, Examples(100, 10_000, "exact"), parameters=5e8, device=device, device_name=name)
    assert plan.estimate is None and duration_line(plan).startswith("not estimated (" + why)
    assert plan.steps == 13  # 100 examples / batch 4 = 25 batches / accumulation 2, rounded up
    assert steps_line(plan, cfg) == ("13 optimizer steps (100 examples, batch 4 x accumulation 2, 1 epoch)")


def test_with_max_steps_the_tokens_follow_the_steps() -> None:
    cfg = SimpleNamespace(params=params(max_steps=50), trainer="sft")
    plan = make_plan(cfg, Examples(100, 10_000, "exact"), parameters=5e8, device="cuda", device_name="NVIDIA L4")
    assert plan.steps == 50 and plan.tokens == 50 * 8 * 100  # 8 examples per step, 100 tokens each
    assert duration_line(plan).startswith("about ") and "(an estimate: " in duration_line(plan)
    assert steps_line(plan, cfg).startswith("50 optimizer steps (max_steps; an epoch of 100 examples")


# ---------------------------------------------------------------- a run directory that is not free


def test_free_name_is_the_first_free_sibling_and_the_cli_wording_is_kept(in_tmp: Path, tiny_model: Path) -> None:
    from engine.rundir import check_free, free_name

    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": PAIRS})
    cfg.project_name = "runs/my-model"
    assert free_name(cfg) == "runs/my-model"  # free: itself
    for name in ("my-model", "my-model-2"):
        (in_tmp / "runs" / name).mkdir(parents=True)
        (in_tmp / "runs" / name / "notes.txt").write_text("mine")
    (in_tmp / "runs" / "my-model-3").mkdir()  # empty: free
    assert free_name(cfg) == "runs/my-model-3"
    cfg.project_name = "runs/my-model-2"
    assert free_name(cfg) == "runs/my-model-3"  # not runs/my-model-2-2

    cfg.project_name = "runs/my-model"
    [cli] = check_free(cfg)
    assert cli.fix == ("choose another project_name (e.g. --set project_name=runs/my-model-2), or move those files "
                       "out of it")  # what --yes prints, unchanged
    [wizard] = check_free(cfg, wizard=True)
    assert wizard.message == cli.message and "--set" not in wizard.fix and "--" not in wizard.render()
    assert wizard.fix == ("use runs/my-model-3 (a free name) or choose another project_name, or move those files "
                          "out of it")
