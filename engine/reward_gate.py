"""The reward model gate of an online run (GRPO, RLOO), before any compute is spent on it: how the reward model
scores pairs it was not trained on (its llm-reward run's validation split, from the data cache), whether it
renders conversations as the policy does, and each sample prompt as it scores it. The dry run prints it, the
wizard shows it, and `--yes` stops on a weak reward model unless params.allow_weak_reward_model.

Loads torch and the reward model (engine.reward_model says what it is, without loading it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.reward_model import RewardModel, inspect_reward_model
from engine.run_files import CONFIG_FILE


def load_reward_model(reward: RewardModel, *, dtype: Any = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode: an adapter merged into its base (its embedding rows included), a full model
    as it is; the tokenizer (and chat template) the reward model was trained with."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(reward.path))
    source = reward.base_model if reward.adapter else str(reward.path)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=dtype)
    if reward.adapter:
        from engine.trainers.merge import merged_model

        model = merged_model(model, tokenizer, reward.path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    return model.eval(), tokenizer


WEAK_ACCURACY = 0.55  # chosen scored above rejected on no more pairs than this: as good as a coin
CONSTANT_SPREAD = 1e-3  # scores spread less than this: the model says the same of every text


@dataclass(frozen=True)
class RewardCheck:
    """How a reward model scores pairs it was not trained on, before anything is spent on it."""
    pairs: int
    accuracy: float  # the share of pairs it scores chosen above rejected
    spread: float  # the standard deviation of all its scores
    source: str  # the pairs it was checked on

    @property
    def weak(self) -> str | None:
        """Why it is no use as a reward, or None."""
        if self.spread < CONSTANT_SPREAD:
            return f"its scores are near-constant (spread {self.spread:.2g}): it tells no answer from another"
        if self.accuracy <= WEAK_ACCURACY:
            return (f"it prefers the chosen answer on {self.accuracy:.0%} of {self.pairs} pairs, no better than "
                    "chance")
        return None

    def describe(self) -> str:
        return (f"chosen above rejected on {self.accuracy:.0%} of {self.pairs} pairs ({self.source}), scores spread "
                f"{self.spread:.3g}" + (f": weak, {self.weak}" if self.weak else ""))


def judge_scores(chosen: list[float], rejected: list[float], source: str) -> RewardCheck:
    import statistics

    scores = chosen + rejected
    wins = sum(c > r for c, r in zip(chosen, rejected))
    return RewardCheck(len(chosen), wins / len(chosen) if chosen else 0.0,
                       statistics.pstdev(scores) if len(scores) > 1 else 0.0, source)


def check_reward_run(reward: RewardModel, *, limit: int = 256, batch: int = 8) -> RewardCheck | None:
    """Score the validation pairs of the llm-reward run that trained `reward` (at most `limit`), as that run's
    pipeline made them (the cache has them). None when it is not an llmtune run or has no validation split."""
    if reward.kind != "llmtune run":
        return None
    from engine.config import load_config
    from engine.dataset_prep import prepare_dataset

    prepared = prepare_dataset(load_config(reward.path / CONFIG_FILE))
    if len(prepared.splits) < 2:  # train first, then the validation split (or the held-out fraction)
        return None
    split = prepared.splits[1].formatted
    return score_pairs(reward, prepared.dataset(split.split), split.source or split.split, limit=limit, batch=batch)


def check_reward_pairs(reward: RewardModel, path: str, base_dir: Any, *, limit: int = 256,
                       batch: int = 8) -> RewardCheck:
    """Score a file of prompt / chosen / rejected pairs (params.reward_pairs), rendered with the reward model's own
    tokenizer and template as an llm-reward run of it would: any reward model can be checked so."""
    import yaml

    from engine.config import parse_config_text
    from engine.dataset_prep import prepare_dataset

    raw = {"task": "llm-reward", "base_model": str(reward.path), "project_name": "reward-pairs",
           "data": {"path": path, "chat_template": "tokenizer" if reward.template else "none",
                    "column_mapping": {"prompt_text_column": "prompt", "text_column": "chosen",
                                       "rejected_text_column": "rejected"}}}
    cfg = parse_config_text(yaml.safe_dump(raw), source=base_dir / "params.reward_pairs" if base_dir else None)
    prepared = prepare_dataset(cfg)
    split = prepared.splits[0].formatted
    return score_pairs(reward, prepared.dataset(split.split), split.source, limit=limit, batch=batch)


def score_pairs(reward: RewardModel, rows: Any, source: str, *, limit: int, batch: int) -> RewardCheck:
    """How `reward` scores (at most `limit` of) rows of chosen_ids / rejected_ids, `batch` texts at a time."""
    import torch

    rows = rows.select(range(min(limit, len(rows))))
    model, tokenizer = load_reward_model(reward, dtype=torch.float32)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def score(ids: list[list[int]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(ids), batch):
            chunk = ids[start:start + batch]
            width = max(len(x) for x in chunk)
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in chunk])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in chunk])
            with torch.no_grad():
                out += model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
        return out

    return judge_scores(score(rows["chosen_ids"]), score(rows["rejected_ids"]), f"{len(rows)} pairs of {source}")


@dataclass(frozen=True)
class TemplateMismatch:
    """The policy and the reward model render conversations differently: TRL renders the prompt and the
    completion for the reward model with the reward model's own tokenizer and template."""
    policy_text: str  # one sample as the policy sees it
    reward_text: str  # the same sample as the reward model sees it

    def describe(self) -> str:
        return ("the reward model renders conversations with another chat template than the policy (TRL gives it "
                "the text in its own template). One sample as each sees it:\n  policy: "
                f"{self.policy_text!r}\n  reward model: {self.reward_text!r}")


def template_mismatch(reward: RewardModel, policy_tokenizer: Any,
                      sample: list[dict[str, str]]) -> TemplateMismatch | None:
    """None when both render `sample` (a conversation ending with the answer) the same way."""
    from transformers import AutoTokenizer

    reward_tokenizer = AutoTokenizer.from_pretrained(str(reward.path))

    def render(tokenizer: Any) -> str:
        if not getattr(tokenizer, "chat_template", None):  # no template: the turns' text joined, as TRL does
            return "".join(m["content"] for m in sample)
        return str(tokenizer.apply_chat_template(sample, tokenize=False))

    policy_text, reward_text = render(policy_tokenizer), render(reward_tokenizer)
    return None if policy_text == reward_text else TemplateMismatch(policy_text, reward_text)


ANSWER = "<the sampled answer>"  # stands for the answer in the reward model's view of a prompt


@dataclass
class RewardGate:
    """What is known of an online run's reward model(s) before any compute is spent on them (the dry run and
    the wizard show it; `--yes` stops on a weak one unless params.allow_weak_reward_model)."""
    models: list[RewardModel]
    checks: list[RewardCheck | None]  # per model: its scores of its own run's validation pairs, or None
    mismatches: list[TemplateMismatch | None]  # per model: it renders conversations differently from the policy
    views: list[list[str]]  # per model, per sample prompt: the text it scores (prompt + an answer)
    allow_weak: bool = False

    @property
    def weak(self) -> list[str]:
        return [f"{m.name}: {c.weak}" for m, c in zip(self.models, self.checks) if c is not None and c.weak]

    def lines(self) -> list[str]:
        out = []
        for model, check, mismatch in zip(self.models, self.checks, self.mismatches):
            out.append(model.describe())
            out.append(f"  {check.describe()}" if check else "  not checked: it is no llmtune llm-reward run with a "
                       "validation split (give params.reward_pairs, a file of prompt/chosen/rejected pairs, to have "
                       "it checked)")
            if mismatch is not None:
                out.append("  " + mismatch.describe().replace("\n", "\n  "))
        return out


def reward_view(tokenizer: Any, prompt: Any) -> str:
    """The text a reward model scores for `prompt` and an answer, as TRL makes it: a conversation rendered whole
    with the reward model's template, or plain text joined."""
    if isinstance(prompt, list):
        messages = prompt + [{"role": "assistant", "content": ANSWER}]
        if getattr(tokenizer, "chat_template", None):
            return str(tokenizer.apply_chat_template(messages, tokenize=False))
        return "".join(m["content"] for m in messages)
    return f"{prompt}{ANSWER}"


def reward_gate(cfg: Any, policy_tokenizer: Any, prompts: list[Any]) -> RewardGate:
    """Inspect, check and compare every reward model of `cfg` (the config check has refused what is not one);
    `prompts`: a few prompts as TRL takes them, for the views."""
    from transformers import AutoTokenizer

    from engine.online import reward_models

    gate = RewardGate([], [], [], [], allow_weak=cfg.params.allow_weak_reward_model)
    conversation = next((p for p in prompts if isinstance(p, list)), None)
    for name in reward_models(cfg.params):
        reward = inspect_reward_model(name, cfg.base_dir)
        gate.models.append(reward)
        pairs = cfg.params.reward_pairs
        gate.checks.append(check_reward_pairs(reward, pairs, cfg.base_dir) if pairs else check_reward_run(reward))
        sample = conversation + [{"role": "assistant", "content": ANSWER}] if conversation else None
        gate.mismatches.append(template_mismatch(reward, policy_tokenizer, sample) if sample else None)
        tokenizer = AutoTokenizer.from_pretrained(str(reward.path))
        gate.views.append([reward_view(tokenizer, p) for p in prompts])
    return gate
