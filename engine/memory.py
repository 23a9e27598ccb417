"""How much memory a run will need: an estimate, said before any model is loaded.

Everything here is an estimate from the model's shape (engine.model_info.ModelInfo) and the config; it is
meant to tell "fits easily" from "will not fit" and to show which part dominates, not to predict the
allocator to the megabyte. Real runs add the CUDA context (~0.5 GiB), allocator fragmentation, temporary
buffers of the loss and the optimizer step, and dequantized int4 weights during each matmul.

The model, per part:
- weights: parameters x bytes in the dtype the trainer loads them in (engine/trainers/model.py `load_dtype`:
  bf16 with mixed_precision bf16, fp16 only for LoRA with fp16, fp32 otherwise); int4 (NF4 with double
  quantization, ~4.13 bits) and int8 apply to the linear layers only, embeddings stay in the load dtype.
- gradients: one per trainable parameter, in the trainable parameters' dtype (LoRA adapters are fp32).
- optimizer: AdamW keeps two states per trainable parameter in its dtype; 8-bit optimizers 1 byte per state;
  SGD (no momentum) and Adafactor (factored) next to nothing.
- activations: what backward needs, per layer and token; the attention scores are not stored (the trainers use
  SDPA or flash-attention), so the s^2 term of the usual formula is left out. With gradient checkpointing, one
  hidden state per layer plus one layer recomputed at a time. Plus the logits, in fp32, with their gradient.
- preference tasks (DPO, ORPO, reward) run chosen and rejected together: twice the activations; DPO without
  LoRA holds a frozen reference model: the weights again.
- GRPO/RLOO: sequences of max_prompt_length + the completion length; a reference model only with a KL term
  (and without LoRA); the reward model(s)' weights in the policy's precision; and the cache of keys and values
  while a step's answers are sampled (batch_size x gradient_accumulation sequences at once, TRL's generation
  batch).

Standard library only: the wizard calls it on every keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import precision
from engine.block_size import auto_block_size
from engine.units import human_bytes

if TYPE_CHECKING:
    from engine.config import RunConfig

GiB = 2**30
INT4_BYTES = 0.5 + 0.016  # NF4: 4 bits + an 8-bit absmax per 64 weights + a second-level fp32 scale per 256 blocks
INT8_BYTES = 1.0
TIGHT = 0.9  # above this share of the GPU the CUDA context and fragmentation may tip a run over

# LoRA target names -> the projection they are. `_linears` gives each projection's (in, out) features.
_ALIASES = {
    "q": "q", "query": "q", "wq": "q", "q_proj": "q",
    "k": "k", "key": "k", "wk": "k", "k_proj": "k",
    "v": "v", "value": "v", "wv": "v", "v_proj": "v",
    "o": "o", "o_proj": "o", "out_proj": "o", "wo": "o", "dense": "o", "c_proj": "o",
    "gate": "gate", "gate_proj": "gate", "w1": "gate",
    "up": "up", "up_proj": "up", "w3": "up", "fc1": "up", "c_fc": "up", "dense_h_to_4h": "up",
    "down": "down", "down_proj": "down", "w2": "down", "fc2": "down", "dense_4h_to_h": "down",
    "qkv": "qkv", "qkv_proj": "qkv", "c_attn": "qkv", "query_key_value": "qkv", "wqkv": "qkv", "Wqkv": "qkv",
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part (an estimate, for one GPU), and whether it fits."""

    weights: int
    reference: int  # DPO without LoRA: the frozen reference model
    gradients: int
    optimizer: int
    activations: int  # logits included
    total: int
    parts: list[tuple[str, int]]  # (label, bytes) for display; they add up to total
    fits: bool | None  # None: no GPU (a CPU run in RAM)
    verdict: str
    trainable: int  # trainable parameters
    sequence: int  # the tokens per sequence assumed (block_size, or what -1 resolves to)
    notes: list[str] = field(default_factory=list)  # assumptions worth saying, e.g. a guessed model shape


@dataclass(frozen=True)
class Shape:
    """The sizes the estimate needs; missing ones guessed from the parameter count (then `guessed`)."""

    params: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    context: int | None
    gated: bool  # SwiGLU-style MLP (gate, up, down) rather than up, down
    tied: bool  # input and output embeddings shared
    guessed: bool = False

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // max(self.heads, 1))


def model_shape(info: Any) -> Shape:
    """The shape of a ModelInfo-like object (fields as engine.model_info.ModelInfo); ValueError if unknown."""
    if info is None:
        raise ValueError("no model chosen yet")
    params = getattr(info, "parameters", None)
    hidden = getattr(info, "hidden_size", None)
    layers = getattr(info, "num_layers", None)
    if not params and not (hidden and layers):
        raise ValueError("the model's size is unknown (no parameter count or shape in its config)")
    guessed = not (hidden and layers)
    if not hidden or not layers:
        # Typical decoder proportions: ~12 h^2 parameters per layer and h / 128 layers.
        hidden = max(64, round((params * 128 / 12) ** (1 / 3) / 64) * 64)
        layers = max(1, hidden // 128)
    heads = getattr(info, "num_heads", None) or max(1, hidden // 128)
    kv_heads = getattr(info, "num_kv_heads", None) or heads
    vocab = getattr(info, "vocab_size", None) or 32_000
    tied = bool(getattr(info, "tie_word_embeddings", True))
    intermediate = getattr(info, "intermediate_size", None)
    guessed = guessed or not intermediate
    intermediate = intermediate or round(hidden * 8 / 3)
    shape = dict(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, intermediate=intermediate,
                 vocab=vocab, tied=tied)
    gated = _gated(params, shape)
    params = params or _count(shape, gated)
    return Shape(params=params, gated=gated, context=getattr(info, "context_length", None), guessed=guessed,
                 **shape)


def _count(s: dict[str, Any], gated: bool) -> int:
    h, kv = s["hidden"], s["kv_heads"] * (s["hidden"] // s["heads"])
    per_layer = 2 * h * h + 2 * h * kv + (3 if gated else 2) * h * s["intermediate"]
    return s["layers"] * per_layer + s["vocab"] * h * (1 if s["tied"] else 2)


def _gated(params: int | None, s: dict[str, Any]) -> bool:
    """Whichever MLP form brings the shape closer to the known parameter count (gated when unknown)."""
    if not params:
        return True
    return abs(_count(s, True) - params) <= abs(_count(s, False) - params)


# ---------------------------------------------------------------- the parts


def load_bytes(cfg: RunConfig) -> int:
    """Bytes per weight in the dtype the trainer loads (engine.precision)."""
    return precision.load_bytes(cfg.params)


def weight_bytes(shape: Shape, cfg: RunConfig) -> int:
    load = load_bytes(cfg)
    quant = cfg.params.quantization if cfg.params.peft else None
    if quant not in ("int4", "int8"):
        return int(shape.params * load)
    embeddings = min(shape.params, shape.vocab * shape.hidden * (1 if shape.tied else 2))
    per = INT4_BYTES if quant == "int4" else INT8_BYTES
    return int((shape.params - embeddings) * per + embeddings * load)


def _linears(shape: Shape) -> dict[str, tuple[int, int]]:
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    out = {"q": (h, h), "k": (h, kv), "v": (h, kv), "o": (h, h), "up": (h, i), "down": (i, h)}
    if shape.gated:
        out["gate"] = (h, i)
    return out


def lora_parameters(shape: Shape, r: int, target_modules: str | None) -> tuple[int, list[str]]:
    """r x (in + out) for each targeted linear layer of every decoder layer; and the names not recognised
    (counted as hidden x hidden)."""
    linears = _linears(shape)
    targets = (target_modules or "all-linear").strip()
    if targets == "all-linear":
        names, unknown = list(linears), []
    else:
        names, unknown = [], []
        for raw in (t.strip() for t in targets.split(",") if t.strip()):
            name = _ALIASES.get(raw, _ALIASES.get(raw.lower()))
            if name == "qkv":
                names += ["q", "k", "v"]
            elif name in linears:
                names.append(name)
            else:
                unknown.append(raw)
    per_layer = sum(r * (linears[n][0] + linears[n][1]) for n in dict.fromkeys(names))
    per_layer += len(unknown) * r * 2 * shape.hidden
    return per_layer * shape.layers, unknown


def optimizer_state_bytes(optimizer: str, param_bytes: int) -> float:
    """Optimizer state per trainable parameter, in bytes."""
    name = optimizer.lower()
    if name == "sgd" or "lomo" in name or "adafactor" in name:
        return 0.0  # plain SGD keeps no state; LOMO fuses the update; Adafactor's factored moments are tiny
    states = 1 if any(k in name for k in ("lion", "rmsprop", "adagrad")) else 3 if "ademamix" in name else 2
    if "8bit" in name:
        return states * 1.0
    if "4bit" in name:
        return states * 0.5
    if "32bit" in name:
        return states * 4.0
    return float(states * param_bytes)  # torch optimizers keep their states in the parameters' dtype


def sequence_length(shape: Shape, cfg: RunConfig) -> int:
    """block_size, or what -1 resolves to: min(model_max_length, the model's context, 1024)."""
    if cfg.params.block_size != -1:
        return max(1, cfg.params.block_size)
    return auto_block_size(cfg.params.model_max_length, shape.context)


def activation_bytes(shape: Shape, cfg: RunConfig, seq: int) -> tuple[int, int]:
    """(the decoder layers' saved activations, the logits with their gradient) for one step."""
    pairs = 2 if cfg.spec.pairwise else 1  # chosen and rejected in one batch
    tokens = seq * max(1, cfg.params.batch_size) * pairs
    act = 2 if cfg.params.mixed_precision else 4  # 16-bit under autocast, else fp32
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    # Per token and layer at 16-bit: attention input, q, k, v and output (6h + 4kv), two norm inputs (4h),
    # the MLP input (2h) and its intermediate tensors (8i gated: gate, up, act(gate), product; 4i ungated).
    per_layer_16 = 12 * h + 4 * kv + (8 if shape.gated else 4) * i
    full_layer = tokens * per_layer_16 * act // 2
    if cfg.params.disable_gradient_checkpointing:
        layers = full_layer * shape.layers
    else:  # each layer keeps its input; one layer's activations exist again while it is recomputed
        layers = tokens * h * act * shape.layers + full_layer
    logits = 0 if cfg.spec.scores else tokens * shape.vocab * 4 * 2  # fp32 logits and their gradient
    return int(layers), int(logits)


# ---------------------------------------------------------------- the estimate


def estimate_memory(info: Any, cfg: RunConfig, *, gpu_total: int | None, device: str = "cpu",
                    topology: Any = None) -> MemoryEstimate:
    """Estimate the peak memory of training `info`'s model with `cfg` (see the module docstring).

    gpu_total: the GPU's memory in bytes, None without a CUDA GPU (`device` then names where it runs:
    "cpu" or "mps"). `topology` (engine.distributed): per GPU of a run of several processes, where FSDP and
    ZeRO divide what they shard; CPU processes share the machine's RAM. Raises ValueError when the model's size
    is unknown."""
    shape = model_shape(info)
    p = cfg.params
    weights = weight_bytes(shape, cfg)
    if p.peft:
        trainable, unknown = lora_parameters(shape, p.lora_r, p.target_modules)
        param_bytes = 4  # peft keeps adapters in fp32 whatever the base's dtype
    else:
        trainable, unknown = shape.params, []
        param_bytes = load_bytes(cfg)
    gradients = trainable * param_bytes
    optimizer = int(trainable * optimizer_state_bytes(p.optimizer, param_bytes))
    reference = weights if cfg.spec.reference_model and not p.peft else 0
    seq = sequence_length(shape, cfg)
    notes = []
    rewards = cache = 0
    if cfg.spec.online:
        from engine.online import completion_length, uses_reference

        reference = weights if uses_reference(p) and not p.peft else 0
        seq = p.max_prompt_length + completion_length(p)
        rewards = reward_model_bytes(cfg, notes)
        cache = p.batch_size * p.gradient_accumulation * seq * shape.layers * 2 * shape.kv_dim * load_bytes(cfg)
    layers, logits = activation_bytes(shape, cfg, seq)
    world = topology.world_size if topology is not None and topology.launched else 1
    if world > 1 and device == "cuda":
        from engine.distributed import shards_weights

        sharded = ["gradients", "optimizer states"] if topology.backend == "deepspeed" else []
        if shards_weights(p):
            sharded = ["weights", "gradients", "optimizer states"]
        if sharded:
            weights, reference = ((weights // world, reference // world) if "weights" in sharded
                                  else (weights, reference))
            gradients, optimizer = gradients // world, optimizer // world
            notes.append(f"per GPU: {topology.backend} divides the {', '.join(sharded)} by the {world} processes")
        else:
            notes.append(f"per GPU: each of the {world} processes holds a whole copy ({topology.backend})")
    copies = world if world > 1 and device != "cuda" else 1  # CPU processes: each its own copy, in one RAM
    if copies > 1:
        notes.append(f"{copies} CPU processes, each with its own copy, in this machine's RAM")
    weights, reference, gradients, optimizer = (x * copies for x in (weights, reference, gradients, optimizer))
    layers, logits, rewards, cache = layers * copies, logits * copies, rewards * copies, cache * copies
    activations = layers + logits
    total = weights + reference + rewards + gradients + optimizer + activations + cache
    parts = [("weights", weights)] + ([("reference model", reference)] if reference else []) + (
        [("reward model", rewards)] if rewards else []) + [
        ("gradients", gradients), ("optimizer", optimizer), ("activations", layers), ("logits", logits)] + (
        [("generation cache", cache)] if cache else [])
    if shape.guessed:
        notes.append("the model's shape is partly unknown: layer sizes guessed from the parameter count")
    if unknown:
        notes.append(f"target_modules {', '.join(unknown)} not recognised: counted as hidden x hidden layers")
    if p.block_size == -1:
        notes.append(f"block_size -1 taken as {seq}")
    fits, verdict = judge(total, gpu_total, cfg, device)
    return MemoryEstimate(weights=weights, reference=reference, gradients=gradients, optimizer=optimizer,
                          activations=activations, total=total, parts=parts, fits=fits, verdict=verdict,
                          trainable=trainable, sequence=seq, notes=notes)


def reward_model_bytes(cfg: RunConfig, notes: list[str]) -> int:
    """The weights of GRPO/RLOO's reward model(s), loaded in the policy's precision (an adapter's base counted)."""
    import json
    from pathlib import Path

    from engine.model_info import read_model_info
    from engine.online import reward_models

    total = 0
    for name in reward_models(cfg.params):
        info = read_model_info(name, cfg.base_dir)
        if info.path and not info.parameters:
            try:
                base = json.loads((Path(info.path) / "adapter_config.json").read_text(encoding="utf-8"))
                info = read_model_info(str(base.get("base_model_name_or_path") or ""), cfg.base_dir)
            except (OSError, ValueError):
                pass
        if not info.parameters:
            notes.append(f"the size of reward model {name} is unknown: not counted")
            continue
        total += info.parameters * (2 if cfg.params.mixed_precision else 4)
    return total


def judge(total: int, gpu_total: int | None, cfg: RunConfig, device: str = "cpu") -> tuple[bool | None, str]:
    """(fits, a sentence for people)."""
    needs = human_bytes(total)
    if gpu_total is None:
        if device == "mps":
            return None, f"Apple GPU: shares the machine's memory (needs ~{needs})"
        return None, f"no GPU: CPU run (needs ~{needs} of RAM)"
    has = human_bytes(gpu_total)
    if total <= TIGHT * gpu_total:
        return True, f"fits: {needs} of {has}"
    if total <= gpu_total:
        return True, f"tight: ~{needs} of {has}; to leave room, {advice(cfg)}"
    return False, f"does not fit: needs ~{needs}, the GPU has {has}: {advice(cfg)}"


def advice(cfg: RunConfig) -> str:
    """What would lower the estimate most, for this config: "use LoRA, int4, a smaller batch_size or block_size"."""
    p = cfg.params
    ways = []
    if not p.peft:
        ways.append("LoRA")
    if p.quantization != "int4":
        ways.append("int4")
    if p.disable_gradient_checkpointing:
        ways.append("gradient checkpointing")
    if p.batch_size > 1:
        ways.append("a smaller batch_size")
    ways.append("block_size" if p.batch_size > 1 else "a smaller block_size")
    return "use " + (", ".join(ways[:-1]) + " or " + ways[-1] if len(ways) > 1 else ways[0])
