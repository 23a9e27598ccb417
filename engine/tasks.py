"""The trainer registry: one frozen spec per trainer, holding everything the rest of llmtune asks about a trainer.

Config rules, formatting, encoding, the preview, the memory and duration estimates, the model card and the
wizard's Task, Columns and Parameters steps read these specs; nothing else lists trainer names. Adding a
trainer is one spec here plus one module under engine/trainers/ with `build(job, callbacks)`.
Light: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

# The column roles of `data.column_mapping`, in the order they are shown.
PROMPT, TEXT, REJECTED = "prompt_text_column", "text_column", "rejected_text_column"
ROLES = (PROMPT, TEXT, REJECTED)
ROLE_MEANINGS = {PROMPT: "the prompt", TEXT: "the chosen (or only) text", REJECTED: "the rejected text"}
TEMPLATES = ("prompt_template", "completion_template")
# How rows become what the trainer's TRL class takes (engine.trainers.rows):
#   blocks   texts joined and cut into blocks, every token trained (continued pre-training)
#   masked   one sequence per example with the exact label mask the preview shows
#   pairs    prompt_ids / chosen_ids / rejected_ids
#   labelled-pairs  the columns TRL's ORPO trainer makes from text (prompt/chosen/rejected input_ids, masks, labels)
#   scored   whole chosen / rejected texts, each scored by a one-label head
#   prompts  prompts only: the trainer samples the completions and a reward model scores them (GRPO, RLOO)
ROW_SHAPES = ("blocks", "masked", "pairs", "labelled-pairs", "scored", "prompts")
# The columns of each shape's rows (lists of token ids, labels or masks), as the data pipeline stores them.
ROW_COLUMNS = {
    "blocks": ("input_ids", "labels"),
    "masked": ("input_ids", "labels"),
    "pairs": ("prompt_ids", "chosen_ids", "rejected_ids"),
    "labelled-pairs": ("prompt_input_ids", "prompt_attention_mask", "chosen_input_ids", "chosen_attention_mask",
                       "chosen_labels", "rejected_input_ids", "rejected_attention_mask", "rejected_labels"),
    "scored": ("chosen_ids", "rejected_ids"),
    "prompts": ("prompt_ids", "prompt"),
}
# Row columns that hold text, not token ids: the prompt as TRL's online trainers take it, as JSON (a string, or a
# message list that TRL renders with the policy's template for the policy and the reward model's for the reward).
TEXT_ROW_COLUMNS = frozenset({"prompt"})


@dataclass(frozen=True)
class TrainerSpec:
    trainer: str  # the `params.trainer` value
    task: str  # AutoTrain's task name, which sets the trainer
    label: str  # short name, as the wizard and the model card say it
    purpose: str  # one line: what it teaches
    columns_hint: str  # the columns it needs, in words
    card_name: str  # "Fine-tuned ... with llmtune: <card_name>"
    roles: tuple[str, ...]  # the column roles it reads (in ROLES order)
    required: tuple[str, ...]  # the roles a config must map (the prompt may come from a template instead)
    templates: tuple[str, ...]  # data.prompt_template / completion_template it reads
    params: tuple[str, ...]  # the params only some trainers read, which this one reads
    rows: str  # one of ROW_SHAPES
    module: str = ""  # engine.trainers.<module>.build builds it; default: the trainer's name
    head: str = "causal-lm"  # "causal-lm", or "score": a one-label sequence-classification head (reward)
    responses_only: bool = False  # the loss is on the answers only, unless params.train_on_all_tokens
    reference_model: bool = False  # a frozen reference model (without LoRA: a second copy of the weights)
    fused_lm_head: bool = True  # its TRL trainer takes the loss from TRL's fused LM head (engine.trainers.logprob_head)
    defaults: tuple[tuple[str, object], ...] = ()  # what an empty param of its own means for it (TRL's defaults)

    def default(self, param: str) -> object:
        """Its own default of a param left empty (KeyError for one it has none of)."""
        return dict(self.defaults)[param]

    @property
    def pairwise(self) -> bool:
        """Its rows are chosen/rejected pairs (with an optional prompt)."""
        return self.rows in ("pairs", "labelled-pairs", "scored")

    @property
    def scores(self) -> bool:
        """A one-label sequence-classification head (AutoModelForSequenceClassification), not a language model."""
        return self.head == "score"

    @property
    def whole_texts(self) -> bool:
        """Pairs scored as whole texts: no prompt/answer split, every kept token counts."""
        return self.scores

    @property
    def packs(self) -> bool:
        """Texts are joined and cut into blocks: nothing is truncated, long texts go on in the next block."""
        return self.rows == "blocks"

    @property
    def prompt_limits(self) -> bool:
        """Prompts and completions are cut to max_prompt_length / max_completion_length (DPO, ORPO)."""
        return self.pairwise and "max_prompt_length" in self.params

    @property
    def online(self) -> bool:
        """It samples its own completions from prompts and learns from a reward model's scores of them."""
        return self.rows == "prompts"

    @property
    def build_module(self) -> str:
        return f"engine.trainers.{self.module or self.trainer}"

    def reads(self, param: str) -> bool:
        """Whether this trainer reads `param` (params that every trainer reads are not listed anywhere)."""
        return param not in TRAINER_PARAMS or param in self.params


_PAIR_LIMITS = ("max_prompt_length", "max_completion_length", "dpo_beta")
# What GRPO and RLOO read: the reward model(s), the sampling, and the policy update (TRL's meanings).
_ONLINE = ("max_prompt_length", "max_completion_length", "reward_model", "reward_weights", "reward_pairs",
           "allow_weak_reward_model", "num_generations", "kl_beta", "temperature", "top_p", "num_iterations",
           "use_vllm")

SPECS: tuple[TrainerSpec, ...] = (  # in the order the wizard lists them: the usual choice first
    TrainerSpec(
        "sft", "llm-sft", "SFT", "learn to answer (chat/instructions); loss on answers",
        "messages (a chat), or prompt + completion, or one text column", "supervised fine-tuning (SFT)",
        roles=(PROMPT, TEXT), required=(), templates=TEMPLATES, params=("train_on_all_tokens",), rows="masked",
        responses_only=True),
    TrainerSpec(
        "default", "llm-generic", "Generic causal LM", "continue pre-training on plain text", "one text column",
        "causal language modelling (generic)", roles=(TEXT,), required=(), templates=(), params=("add_eos_token",),
        rows="blocks", module="sft"),
    TrainerSpec(
        "reward", "llm-reward", "Reward model", "learn to score answers: chosen above rejected",
        "chosen, rejected (prompt optional)", "reward modelling", roles=ROLES, required=(TEXT, REJECTED),
        templates=(), params=(), rows="scored", head="score", fused_lm_head=False),
    TrainerSpec(
        "dpo", "llm-dpo", "DPO", "prefer chosen over rejected answers, against a frozen reference",
        "prompt, chosen, rejected", "DPO", roles=ROLES, required=ROLES, templates=("prompt_template",),
        params=_PAIR_LIMITS + ("model_ref",), rows="pairs", reference_model=True),
    TrainerSpec(
        "orpo", "llm-orpo", "ORPO", "SFT and preference in one pass, no reference model", "prompt, chosen, rejected",
        "ORPO", roles=ROLES, required=ROLES, templates=("prompt_template",), params=_PAIR_LIMITS,
        rows="labelled-pairs", fused_lm_head=False),
    TrainerSpec(
        "grpo", "llm-grpo", "GRPO", "sample answers and raise those a reward model scores above their group",
        "prompts (text or messages) and a reward model", "GRPO (online RL from a reward model)", roles=(PROMPT,),
        required=(PROMPT,), templates=("prompt_template",), params=_ONLINE + ("loss_type",), rows="prompts",
        defaults=(("num_generations", 8), ("kl_beta", 0.0))),
    TrainerSpec(
        "rloo", "llm-rloo", "RLOO", "sample answers and raise those scored above the others' mean (REINFORCE)",
        "prompts (text or messages) and a reward model", "RLOO (online RL from a reward model)", roles=(PROMPT,),
        required=(PROMPT,), templates=("prompt_template",), params=_ONLINE, rows="prompts",
        defaults=(("num_generations", 2), ("kl_beta", 0.05))),
)

BY_TRAINER: dict[str, TrainerSpec] = {s.trainer: s for s in SPECS}
TRAINERS: tuple[str, ...] = tuple(BY_TRAINER)
GENERIC_TASK = "llm"  # AutoTrain's task whose trainer is params.trainer
# Task names as AutoTrain writes them -> the trainer that runs them (None: params.trainer says).
TASKS: dict[str, str | None] = {GENERIC_TASK: None} | {s.task: s.trainer for s in SPECS}
TRAINER_PARAMS: frozenset[str] = frozenset(p for s in SPECS for p in s.params)
DEFAULT_TRAINER = "default"  # params.trainer when neither the task nor the config names one


def spec(trainer: str) -> TrainerSpec:
    """The spec of a trainer name (params.trainer or RunConfig.trainer). KeyError for an unknown one: the config
    rules refuse those before anything asks."""
    return BY_TRAINER[trainer]


def spec_for_task(task: str) -> TrainerSpec | None:
    """The spec an AutoTrain task name stands for; None for `llm` (params.trainer decides) or an unknown task."""
    trainer = TASKS.get(task)
    return BY_TRAINER[trainer] if trainer else None


def _check() -> None:
    for s in SPECS:
        assert s.rows in ROW_SHAPES, s
        assert set(s.roles) <= set(ROLES) and set(s.required) <= set(s.roles), s
        assert set(s.templates) <= set(TEMPLATES), s


_check()
