"""The training parameters (`params:` in a config): AutoTrain's LLMTrainingParams with its defaults, plus ours.

Each field carries its help text, its group (basic/advanced, for the wizard) and its allowed values in the
field metadata, so the validator, the wizard and the README all read one table.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from engine.batching import BATCHING
from engine.distributed import BACKENDS, DEEPSPEED_STAGES
from engine.kernels import SWITCH
from engine.tasks import DEFAULT_TRAINER, TRAINERS

# The values the installed transformers accepts (TrainingArguments.optim / lr_scheduler_type), copied so the
# validator needs no heavy import. tests/test_config.py checks them against the installed transformers.
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
    "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
    "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
    "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit",
    "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit",
    "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise",
    "lomo", "adalomo", "grokadamw", "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd",
    "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw",
)
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)
# Whole numbers: every one must fit in 64 bits (torch's and numpy's integers; Python's would grow without
# bound and break later, e.g. float(10**400)). Counts and lengths must fit in 32 bits, the C int that
# tokenizers, CUDA and many kernels take: beyond that a value is a typo, not a setting.
INT_LIMIT = 2**63 - 1
INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1  # numpy's and transformers' set_seed accept 0 .. 2**32 - 1
ONLINE_COMPLETION_LENGTH = 512  # GRPO/RLOO without max_completion_length: TRL's default
# GRPOConfig.loss_type's values in the installed TRL (tests/test_trl_signatures.py checks them against it).
GRPO_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")


def _p(default: Any, help: str, *, group: str = "advanced", choices: tuple | None = None,
       minimum: float | None = None, maximum: float | None = None, exclusive_min: bool = False,
       exclusive_max: bool = False, special: tuple = (), extra: bool = False, listed: bool = False) -> Any:
    """A params field. `special` lists values allowed outside the range (e.g. -1 = automatic).
    `extra` marks llmtune's additions to AutoTrain's parameters. `listed`: a YAML list is accepted too, and kept
    as comma-separated text (listed_values reads it back)."""
    meta = {"help": help, "group": group, "choices": choices, "minimum": minimum, "maximum": maximum,
            "exclusive_min": exclusive_min, "exclusive_max": exclusive_max, "special": special, "extra": extra,
            "listed": listed}
    return field(default=default, metadata=meta)


@dataclass
class Params:
    # Lengths
    block_size: int = _p(-1, "Tokens per training sequence; longer samples are truncated. -1 picks "
                         "min(model_max_length, the tokenizer's limit, 1024).", group="basic", minimum=1,
                         maximum=INT32_MAX, special=(-1,))
    model_max_length: int = _p(2048, "The longest input the model is given; caps block_size.", minimum=1,
                               maximum=INT32_MAX)
    max_prompt_length: int = _p(128, "DPO/ORPO: prompts are cut to this many tokens (their end is kept). "
                                "GRPO/RLOO: longer prompts are left out (a cut conversation loses its question).",
                                minimum=1, maximum=INT32_MAX)
    max_completion_length: int | None = _p(None, "DPO/ORPO: chosen/rejected completions are cut to this many "
                                           "tokens; empty = whatever fits in block_size. GRPO/RLOO: the most "
                                           f"tokens sampled per completion; empty = {ONLINE_COMPLETION_LENGTH}.",
                                           minimum=1, maximum=INT32_MAX)
    add_eos_token: bool = _p(True, "Generic trainer: end every text with the EOS token before joining them.")
    padding: str | None = _p("right", "Side on which batches are padded.", choices=("left", "right"))
    # Training
    trainer: str = _p(DEFAULT_TRAINER, "Trainer for task `llm` (the other tasks set it themselves).", choices=TRAINERS)
    epochs: int = _p(1, "Passes over the training data.", group="basic", minimum=1, maximum=INT32_MAX)
    batch_size: int = _p(2, "Samples per device per step.", group="basic", minimum=1, maximum=INT32_MAX)
    gradient_accumulation: int = _p(4, "Steps whose gradients are summed before each optimizer update.",
                                    group="basic", minimum=1, maximum=INT32_MAX)
    lr: float = _p(3e-5, "Peak learning rate.", group="basic", minimum=0, exclusive_min=True)
    warmup_ratio: float = _p(0.1, "Fraction of the steps spent warming the learning rate up.", minimum=0, maximum=1)
    optimizer: str = _p("adamw_torch", "Optimizer (any transformers `optim` name).", choices=OPTIMIZERS)
    scheduler: str = _p("linear", "Learning rate schedule.", choices=SCHEDULERS)
    weight_decay: float = _p(0.0, "Weight decay.", minimum=0)
    max_grad_norm: float = _p(1.0, "Gradients are clipped to this norm.", minimum=0)
    seed: int = _p(42, "Random seed.", minimum=0, maximum=SEED_MAX)
    mixed_precision: str | None = _p(None, "fp16 or bf16 mixed precision; empty = full precision.",
                                     group="basic", choices=("fp16", "bf16"))
    disable_gradient_checkpointing: bool = _p(False, "Turn off gradient checkpointing (faster, more memory).")
    use_flash_attention_2: bool = _p(False, "Use flash-attention 2 when the package is installed.")
    auto_find_batch_size: bool = _p(False, "Halve the batch size on out-of-memory errors until it fits.")
    # LoRA and quantization
    peft: bool = _p(False, "Train a LoRA adapter instead of all the weights.", group="basic")
    quantization: str | None = _p("int4", "Load the base model in int4 or int8 (QLoRA; needs peft). When the "
                                  "key is absent it is int4 with peft and none without, as in AutoTrain.",
                                  group="basic", choices=("int4", "int8"))
    lora_r: int = _p(16, "LoRA rank.", minimum=1, maximum=INT32_MAX)
    lora_alpha: int = _p(32, "LoRA alpha (scaling = alpha / r).", minimum=1, maximum=INT32_MAX)
    lora_dropout: float = _p(0.05, "Dropout on the LoRA layers.", minimum=0, maximum=1)
    target_modules: str | None = _p("all-linear", "Modules that get LoRA layers: all-linear, or a comma list "
                                    "such as q_proj,v_proj.")
    merge_adapter: bool = _p(False, "After training, also save the adapter merged into the base model.")
    # Preference trainers
    model_ref: str | None = _p(None, "DPO without LoRA: the reference model (default: a copy of the base).")
    dpo_beta: float = _p(0.1, "DPO/ORPO beta: how far the model may move from the reference.",
                         minimum=0, exclusive_min=True)
    # Logging, evaluation, checkpoints
    logging_steps: int = _p(-1, "Log every N steps; -1 picks a value from the data size.", minimum=1,
                            maximum=INT32_MAX, special=(-1,))
    eval_strategy: str = _p("epoch", "When to evaluate on valid_split.", choices=("no", "steps", "epoch"))
    save_total_limit: int = _p(1, "Checkpoints to keep.", minimum=1, maximum=INT32_MAX)
    unsloth: bool = _p(False, "Use unsloth (not supported by llmtune).")
    distributed_backend: str | None = _p(None, "Several processes, launched by accelerate: ddp (a whole copy per "
                                         "GPU; CPU processes over gloo), fsdp (FSDP2: weights, gradients and "
                                         "optimizer sharded) or deepspeed (ZeRO); empty = ddp when several "
                                         "processes run.", group="basic", choices=BACKENDS)
    # llmtune's additions
    train_on_all_tokens: bool = _p(False, "SFT: compute the loss on every token, not just the assistant "
                                   "turns / the completion.", group="basic", extra=True)
    max_steps: int = _p(-1, "Stop after this many optimizer steps (-1 = run all epochs).", minimum=1,
                        maximum=INT32_MAX, special=(-1,), extra=True)
    save_steps: int | None = _p(None, "Save a checkpoint every N steps (empty = at the end of each epoch).",
                                minimum=1, maximum=INT32_MAX, extra=True)
    eval_steps: int | None = _p(None, "With eval_strategy: steps, evaluate every N steps (empty = logging_steps).",
                                minimum=1, maximum=INT32_MAX, extra=True)
    batching: str = _p("auto", "How examples are batched: grouped (examples of similar length together: less "
                       "padding, the same loss), padded (random order, padded to the longest), packed (no padding; "
                       "SFT with flash-attention on a GPU); auto picks the fastest exact one.", choices=BATCHING,
                       extra=True)
    liger_kernel: str = _p("auto", "Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, cross-entropy) on a CUDA "
                           "GPU: auto = on where liger_kernel is installed and knows the model type.", choices=SWITCH,
                           extra=True)
    lora_dropout_kernel: str = _p("auto", "LoRA's dropout drawn and applied inside the LoRA matmul (the same "
                                  "dropout, faster and lighter on a CPU): auto = on for CPU runs.", choices=SWITCH,
                                  extra=True)
    logprob_kernel: str = _p("auto", "The LM head's log-probabilities on a CPU scored only where there is a label, "
                             "a block of tokens at a time (the same loss; TRL scores every position there): auto = on "
                             "for CPU runs of SFT, generic, DPO, GRPO and RLOO.", choices=SWITCH, extra=True)
    causal_attention_kernel: str = _p("auto", "Right-padded batches attend without their padding mask, so PyTorch "
                                      "runs its causal kernel (exact: a causal model's real tokens never see the "
                                      "pads after them): auto = on for CPU runs.", choices=SWITCH, extra=True)
    attention_grad_kernel: str = _p("auto", "With bf16 on a CPU, attention's gradient computed by PyTorch's flash "
                                    "kernel in fp32 (1.3-3x faster than its bf16 backward there, and closer to "
                                    "exact; the forward stays bf16): auto = on for CPU runs.", choices=SWITCH,
                                    extra=True)
    malloc_reuse: str = _p("auto", "glibc's malloc keeps the large blocks a training step frees for the next step "
                           "(instead of handing them back and page-faulting them in again): auto = on for CPU runs "
                           "on Linux.", choices=SWITCH, extra=True)
    num_processes: int | None = _p(None, "Training processes on each machine (one per GPU); empty = every visible "
                                   "GPU (CUDA_VISIBLE_DEVICES counts), one process without a GPU.", group="basic",
                                   minimum=1, maximum=1024, extra=True)
    deepspeed_stage: int = _p(2, "DeepSpeed ZeRO stage: 2 shards gradients and optimizer states, 3 the weights "
                              "too.", choices=DEEPSPEED_STAGES, extra=True)
    deepspeed_config: str | None = _p(None, "Your own DeepSpeed JSON file (then deepspeed_stage is not used).",
                                      extra=True)
    accelerate_config: str | None = _p(None, "Your own accelerate config file (`accelerate config` writes one): "
                                       "it decides the backend and the process count.", extra=True)
    num_machines: int | None = _p(None, "Machines in a multi-node run; empty = NNODES / SLURM_NNODES, or 1.",
                                  minimum=1, maximum=INT32_MAX, extra=True)
    machine_rank: int | None = _p(None, "This machine's number, 0 .. num_machines - 1 (0 writes the events and the "
                                  "model); empty = NODE_RANK / SLURM_NODEID, or 0.", minimum=0, maximum=INT32_MAX,
                                  extra=True)
    main_process_ip: str | None = _p(None, "Multi-node: the address of machine 0; empty = MASTER_ADDR.", extra=True)
    main_process_port: int | None = _p(None, "The port machine 0 listens on; empty = MASTER_PORT, 29500 for several "
                                       "machines, a free one on one machine.", minimum=1, maximum=65535, extra=True)
    # Online RL from a reward model (GRPO, RLOO); TRL's meanings
    reward_model: str | None = _p(None, "GRPO/RLOO: the reward model that scores the sampled answers: the run "
                                  "directory of an llm-reward run, or a sequence-classification model with one label "
                                  "(a directory or a hub id); several as a list.", group="basic", extra=True,
                                  listed=True)
    reward_weights: str | None = _p(None, "GRPO/RLOO with several reward models: one weight each (a list of "
                                    "numbers); empty = 1 each.", extra=True, listed=True)
    reward_pairs: str | None = _p(None, "GRPO/RLOO: a file of pairs (columns prompt, chosen, rejected) to check the "
                                  "reward model on before training; empty = its llm-reward run's validation split.",
                                  extra=True)
    allow_weak_reward_model: bool = _p(False, "GRPO/RLOO: run --yes even when the reward model scores its own "
                                       "validation pairs no better than chance, or says the same of every text.",
                                       extra=True)
    num_generations: int | None = _p(None, "GRPO/RLOO: answers sampled per prompt (a group); batch_size x "
                                     "gradient_accumulation x processes must be a multiple of it. Empty = TRL's "
                                     "default (GRPO 8, RLOO 2).", group="basic", minimum=2, maximum=INT32_MAX,
                                     extra=True)
    kl_beta: float | None = _p(None, "GRPO/RLOO: the KL coefficient (TRL's beta), how far the policy may move from "
                               "the reference model; 0 = no reference model is loaded. Empty = TRL's default (GRPO "
                               "0, RLOO 0.05).", minimum=0, extra=True)
    loss_type: str | None = _p(None, "GRPO: how the token losses are aggregated (TRL's loss_type); empty = dapo.",
                               choices=GRPO_LOSSES, extra=True)
    temperature: float = _p(1.0, "GRPO/RLOO: the sampling temperature of the answers.", minimum=0,
                            exclusive_min=True, extra=True)
    top_p: float = _p(1.0, "GRPO/RLOO: nucleus sampling, the share of probability mass sampled from.", minimum=0,
                      maximum=1, exclusive_min=True, extra=True)
    num_iterations: int = _p(1, "GRPO/RLOO: policy updates per batch of sampled answers (TRL's mu).", minimum=1,
                             maximum=INT32_MAX, extra=True)
    use_vllm: bool = _p(False, "GRPO/RLOO: sample the answers with vLLM in the training process (TRL's colocate "
                        "mode; a CUDA GPU with vllm installed) instead of transformers' generate.", extra=True)
    valid_fraction: float = _p(0.0, "Hold out this fraction of the train rows as the validation split when "
                               "there is no data.valid_split, e.g. 0.05 = 5% (chosen by seed, the same rows "
                               "every run); 0 = none.", minimum=0, maximum=1, exclusive_max=True, extra=True)


PARAM_FIELDS = {f.name: f for f in fields(Params)}


def listed_values(value: str | None) -> list[str]:
    """The items of a `listed` param: comma-separated text, as a YAML list is kept (engine.config)."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def param_default(name: str) -> Any:
    f = PARAM_FIELDS[name]
    return f.default if f.default is not MISSING else None
