"""What a base model is, read from its files without loading it: architecture, size, context, dtype, chat template.

The wizard shows this while a model is being picked, and the memory estimate uses it. Only small files are read
(config.json, tokenizer_config.json, the JSON header of the safetensors files), so it takes milliseconds for a
local directory or a model in the Hugging Face cache. The cache layout is read directly
(`models--org--name/snapshots/<rev>/`): importing huggingface_hub is only needed to download a config when online.

Importing this module imports no ML library. `read_model_info("llmtune/tiny-random")` builds the tiny model the
first time (tokenizers + transformers), so callers with a UI run it in a worker.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from engine.model_names import model_id_problem, resolve_local
from engine.offline import hub_offline, is_connection_error
from engine.tinymodel import TINY_MODEL_ID

_MAX_HEADER = 100 * 2**20  # a safetensors header larger than this is not one
# Model types whose MLP is up + down (two matrices), not gated (three): only matters for the estimate.
_UNGATED = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "gpt_bigcode", "starcoder2", "mpt",
            "codegen", "gpt_neo", "biogpt", "xglm"}


@dataclass
class ModelInfo:
    name: str  # as entered
    path: str | None = None  # the local directory (a local model, or its snapshot in the HF cache)
    available: bool = False  # config.json could be read
    reason: str | None = None  # why not, for people
    fix: str | None = None  # what to do about it
    source: str | None = None  # "local", "cache", "hub" (just downloaded) or "built-in"
    architecture: str | None = None
    model_type: str | None = None
    parameters: int | None = None
    parameters_exact: bool = False  # counted from the weights' headers, not estimated from the config
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    dtype: str | None = None
    has_chat_template: bool | None = None  # None: the tokenizer files are not there to tell


def read_model_info(name: str, base_dir: Path | None = None) -> ModelInfo:
    """Everything the wizard shows about `name` (a local directory, a hub id, or llmtune/tiny-random)."""
    name = name.strip()
    if not name:
        return ModelInfo(name, reason="no model chosen", fix="type a model id (org/name) or a local directory")
    if name == TINY_MODEL_ID:
        from engine.tinymodel import tiny_model_path

        return read_model_dir(name, tiny_model_path(), source="built-in")
    local = resolve_local(name, base_dir)
    if local is not None:
        return read_model_dir(name, local, source="local")
    wrong = model_id_problem(name)  # the same rule and words as the validator's
    if wrong is not None:
        return ModelInfo(name, reason=wrong[0], fix=wrong[1])
    snapshot = cached_snapshot(name)
    if snapshot is not None:
        return read_model_dir(name, snapshot, source="cache")
    if hub_offline():
        return ModelInfo(name, reason="not in the local Hugging Face cache and HF_HUB_OFFLINE=1",
                         fix=f"download it first with `huggingface-cli download {name}` on a machine with internet "
                         "(and copy the cache here), or pick a local model directory")
    return _from_hub(name)


def read_model_dir(name: str, directory: Path, *, source: str) -> ModelInfo:
    """ModelInfo from a directory holding config.json (a model saved with save_pretrained)."""
    info = ModelInfo(name, path=str(directory), source=source)
    if not directory.is_dir():
        info.reason, info.fix = "is a file; a model is a directory holding config.json", "pick the model's directory"
        return info
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        info.reason, info.fix = _no_config(directory)
        return info
    except (OSError, ValueError) as e:
        info.reason, info.fix = f"cannot read its config.json ({e})", "re-save or re-download the model"
        return info
    if not isinstance(config, dict):
        info.reason, info.fix = "its config.json is not a JSON object", "re-save or re-download the model"
        return info
    info.available = True
    _fill_from_config(info, config)
    info.has_chat_template = has_chat_template(directory)
    counted = None if "quantization_config" in config else count_safetensors_parameters(directory)
    info.parameters_exact = counted is not None
    info.parameters = counted if counted is not None else estimate_parameters(config)
    return info


def _no_config(directory: Path) -> tuple[str, str]:
    if (directory / "adapter_config.json").exists():
        return ("the directory has no config.json: it holds a LoRA adapter, not a whole model",
                "pick the adapter's base model (adapter_config.json names it), or merge the adapter first")
    return "the directory has no config.json", "pick a directory saved with save_pretrained"


# ---------------------------------------------------------------- the config


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config (multimodal configs nest it under text_config)."""
    nested = config.get("text_config")
    if isinstance(nested, dict) and "hidden_size" not in config:
        return {**config, **nested}
    return config


def _first_int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _fill_from_config(info: ModelInfo, config: dict[str, Any]) -> None:
    text = _text_config(config)
    architectures = config.get("architectures")
    info.architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    info.model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    info.hidden_size = _first_int(text, "hidden_size", "n_embd", "d_model")
    info.num_layers = _first_int(text, "num_hidden_layers", "n_layer", "num_layers")
    info.num_heads = _first_int(text, "num_attention_heads", "n_head", "num_heads")
    info.num_kv_heads = _first_int(text, "num_key_value_heads", "num_kv_heads") or (
        1 if text.get("multi_query") else info.num_heads)
    info.intermediate_size = _first_int(text, "intermediate_size", "n_inner", "ffn_dim")
    info.vocab_size = _first_int(text, "vocab_size")
    info.context_length = _first_int(text, "max_position_embeddings", "n_positions", "max_sequence_length",
                                     "seq_length")
    dtype = config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype") or text.get("dtype")
    info.dtype = dtype if isinstance(dtype, str) else None


def estimate_parameters(config: dict[str, Any]) -> int | None:
    """Embeddings + layers x (attention + MLP + norms) + final norm (+ an untied output head); None if unknown."""
    text = _text_config(config)
    hidden = _first_int(text, "hidden_size", "n_embd", "d_model")
    layers = _first_int(text, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first_int(text, "num_attention_heads", "n_head", "num_heads")
    vocab = _first_int(text, "vocab_size")
    if not (hidden and layers and heads and vocab):
        return None
    kv_heads = _first_int(text, "num_key_value_heads", "num_kv_heads") or (1 if text.get("multi_query") else heads)
    head_dim = _first_int(text, "head_dim") or hidden // heads
    inter = _first_int(text, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    attention = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
    matrices = 2 if text.get("model_type", config.get("model_type")) in _UNGATED else 3
    experts = _first_int(text, "num_local_experts", "num_experts", "n_routed_experts") or 1
    mlp = matrices * hidden * inter * experts + (hidden * experts if experts > 1 else 0)  # + the router
    per_layer = attention + mlp + 2 * hidden
    tied = config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    embeddings = vocab * hidden * (1 if tied else 2)
    return embeddings + layers * per_layer + hidden


# ---------------------------------------------------------------- the weights and the tokenizer


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (8-byte little-endian length, then JSON); reads no weights."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ValueError(f"{path.name} has an implausible header length {length}")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} has no JSON object header")
    return header


def count_safetensors_parameters(directory: Path) -> int | None:
    """The number of parameters stored in model.safetensors (or the shards its index names); None if absent."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    try:
        if single.is_file():
            files = [single]
        elif index.is_file():
            data = json.loads(index.read_text(encoding="utf-8"))
            total = (data.get("metadata") or {}).get("total_parameters")
            if isinstance(total, int) and total > 0:
                return total
            files = [directory / f for f in sorted(set(data.get("weight_map", {}).values()))]
        else:
            return None
        return sum(_tensor_sizes(safetensors_header(f)) for f in files) or None
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # a missing shard or an odd file: the estimate from the config will do


def _tensor_sizes(header: dict[str, Any]) -> int:
    return sum(prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def has_chat_template(directory: Path) -> bool | None:
    """Whether the tokenizer carries a chat template; None when no tokenizer file says either way."""
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return bool(isinstance(config, dict) and config.get("chat_template"))


# ---------------------------------------------------------------- the Hugging Face cache


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps models, by its own rules (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(env[name]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface" / "hub"


def cached_snapshot(name: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot of model `name` that holds config.json: the one refs/main names, else the newest."""
    repo = (cache or hub_cache_dir()) / ("models--" + name.replace("/", "--"))
    try:
        main = (repo / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    if main and (repo / "snapshots" / main / "config.json").is_file():
        return repo / "snapshots" / main
    try:
        snapshots = [s for s in (repo / "snapshots").iterdir() if (s / "config.json").is_file()]
    except OSError:
        return None
    return max(snapshots, key=lambda s: s.stat().st_mtime) if snapshots else None


def cached_models(cache: Path | None = None) -> list[str]:
    """Model ids (org/name) in the local Hugging Face cache that have a snapshot with config.json, sorted."""
    cache = cache or hub_cache_dir()
    try:
        repos = [p for p in cache.iterdir() if p.name.startswith("models--") and p.is_dir()]
    except OSError:
        return []
    names = [p.name.removeprefix("models--").replace("--", "/") for p in repos]
    return sorted((n for n in names if cached_snapshot(n, cache) is not None), key=str.lower)


# ---------------------------------------------------------------- online


def _from_hub(name: str) -> ModelInfo:
    """Download the model's config (a few KB, into the normal cache) to describe a model not yet cached."""
    try:
        snapshot = fetch_config(name)
    except Exception as e:  # noqa: BLE001 - every failure of the hub client becomes a message for people
        return ModelInfo(name, reason=_hub_reason(name, e),
                         fix="check the name (org/name); for a gated or private model accept its licence on the "
                         "Hub and set HF_TOKEN; or pick a local model directory")
    info = read_model_dir(name, snapshot, source="hub")
    if info.available and not info.parameters_exact:
        info.parameters, info.parameters_exact = _hub_parameter_count(name) or (info.parameters, False)
    return info


def fetch_config(name: str) -> Path:
    """config.json (and tokenizer_config.json when there is one) into the cache; returns the snapshot dir."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")  # fail in seconds when the Hub is slow
    from huggingface_hub import hf_hub_download

    config = Path(hf_hub_download(name, "config.json"))
    try:
        hf_hub_download(name, "tokenizer_config.json")
    except Exception:  # noqa: BLE001 - optional: only says whether there is a chat template
        pass
    return config.parent


def _hub_parameter_count(name: str) -> tuple[int, bool] | None:
    try:
        from huggingface_hub import get_safetensors_metadata

        counts = get_safetensors_metadata(name).parameter_count
        return (sum(counts.values()), True) if counts else None
    except Exception:  # noqa: BLE001 - the estimate from the config will do
        return None


def _hub_reason(name: str, error: BaseException) -> str:
    kind = " ".join(cls.__name__ for cls in type(error).__mro__)
    if "RepositoryNotFound" in kind:
        return f"no model {name!r} on the Hugging Face Hub (or it is private)"
    if "GatedRepo" in kind:
        return f"{name!r} is gated: its licence must be accepted on the Hub, and HF_TOKEN set"
    if "EntryNotFound" in kind:
        return f"{name!r} has no config.json on the Hub: it is not a transformers model"
    if is_connection_error(error):
        return "not in the local Hugging Face cache, and the Hub cannot be reached to look it up"
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"cannot look it up on the Hub ({type(error).__name__}: {first})"
