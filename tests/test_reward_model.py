"""The reward model an RLHF run is scored by (engine.reward_model): an llm-reward run directory is read and loaded
as it was saved (adapter merged, or a full model; its tokenizer and template), and what is not a one-label
classifier, the SFT model above all, is refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.reward_gate import check_reward_run, judge_scores, load_reward_model, template_mismatch
from engine.reward_model import NotARewardModel, inspect_reward_model
from support import make_config, run


def scores(model: object, tokenizer: object, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, return_tensors="pt", padding=True)  # type: ignore[operator]
    with torch.no_grad():
        return model(**batch).logits  # type: ignore[operator]


@pytest.mark.parametrize("peft", [True, False], ids=["adapter", "full"])
def test_an_llm_reward_run_is_read_and_loaded_as_it_was_saved(in_tmp: Path, tiny_model: Path, peft: bool) -> None:
    code, run_dir, _ = run(make_config(in_tmp, tiny_model, "reward", params={"peft": peft, "quantization": None}))
    assert code == 0
    reward = inspect_reward_model(str(run_dir))
    assert reward.kind == "llmtune run" and reward.adapter == peft and reward.path == run_dir
    assert (reward.base_model is not None) == peft
    model, tokenizer = load_reward_model(reward, dtype=torch.float32)
    out = scores(model, tokenizer, ["a good answer", "a much longer and worse answer"])
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    # the same scores as the run's own model would give: the adapter merged, not a fresh head
    again, _ = load_reward_model(reward, dtype=torch.float32)
    assert torch.allclose(out, scores(again, tokenizer, ["a good answer", "a much longer and worse answer"]))


def test_a_causal_lm_is_refused_as_a_reward_model(tiny_model: Path) -> None:
    with pytest.raises(NotARewardModel) as info:
        inspect_reward_model(str(tiny_model))
    assert "a causal language model, not a reward model" in str(info.value) and "noise" in str(info.value)
    assert "llm-reward" in info.value.fix


def test_an_sft_run_is_refused_naming_its_task(in_tmp: Path, tiny_model: Path) -> None:
    code, run_dir, _ = run(make_config(in_tmp, tiny_model, "sft", params={"peft": True, "quantization": None}))
    assert code == 0
    with pytest.raises(NotARewardModel, match="an llmtune run of task llm-sft, not a reward model"):
        inspect_reward_model(str(run_dir))


def test_a_classifier_with_several_labels_and_a_missing_path_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                      "id2label": {"0": "a", "1": "b", "2": "c"}}))
    with pytest.raises(NotARewardModel, match="a classifier with 3 labels"):
        inspect_reward_model(str(tmp_path))
    with pytest.raises(NotARewardModel, match="cannot be read here"):
        inspect_reward_model(str(tmp_path / "nothing-here"))


def test_the_verdict_on_scores() -> None:
    good = judge_scores([2.0, 1.5, 0.9, 1.1], [0.1, 0.4, 1.0, -0.3], "4 pairs")
    assert good.accuracy == 0.75 and good.weak is None and "75% of 4 pairs" in good.describe()
    chance = judge_scores([1.0, 0.0], [0.0, 1.0], "2 pairs")
    assert chance.weak is not None and "no better than chance" in chance.weak
    flat = judge_scores([0.5, 0.5, 0.5], [0.5, 0.5, 0.4999], "3 pairs")
    assert flat.weak is not None and "near-constant" in flat.weak


def test_a_reward_run_is_checked_on_its_validation_pairs(in_tmp: Path, tiny_model: Path) -> None:
    from support import PAIRS

    cfg = make_config(in_tmp, tiny_model, "reward", params={"peft": True, "quantization": None},
                      files={"train.jsonl": PAIRS, "valid.jsonl": PAIRS[:4]}, valid_split="valid")
    code, run_dir, _ = run(cfg)
    assert code == 0
    check = check_reward_run(inspect_reward_model(str(run_dir)))
    assert check is not None and check.pairs == 4 and 0.0 <= check.accuracy <= 1.0 and check.spread > 0
    assert "valid" in check.source and f"of 4 pairs ({check.source})" in check.describe()


def test_a_run_without_a_validation_split_is_not_checked(in_tmp: Path, tiny_model: Path) -> None:
    code, run_dir, _ = run(make_config(in_tmp, tiny_model, "reward", params={"peft": True, "quantization": None}))
    assert code == 0 and check_reward_run(inspect_reward_model(str(run_dir))) is None


def test_a_reward_model_with_another_template_is_told_with_one_sample_as_each_sees_it(in_tmp: Path,
                                                                                       tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    code, run_dir, _ = run(make_config(in_tmp, tiny_model, "reward", params={"peft": True, "quantization": None},
                                       chat_template="chatml"))
    assert code == 0
    reward = inspect_reward_model(str(run_dir))
    assert reward.template is not None and "<|im_start|>" in reward.template
    sample = [{"role": "user", "content": "What is 1 plus 2?"}, {"role": "assistant", "content": "It is 3."}]
    same = template_mismatch(reward, AutoTokenizer.from_pretrained(run_dir), sample)
    assert same is None  # the policy trained with the reward run's own tokenizer
    other = template_mismatch(reward, AutoTokenizer.from_pretrained(tiny_model), sample)  # the base's template
    assert other is not None and "<|im_start|>user" in other.reward_text and "<|im_start|>" not in other.policy_text
    assert "It is 3." in other.policy_text and "One sample as each sees it" in other.describe()
