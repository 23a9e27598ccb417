"""The run directory (`project_name`): what is written before a run starts, and what a finished one holds.

Before: `config.yaml`, the resolved config, loadable as is to reproduce the run (local paths made absolute,
secrets kept as `${VAR}` or left out). After: the model or adapter with its tokenizer and chat template,
`training_params.json` (AutoTrain's flat layout), `events.jsonl`, `train.log`, checkpoints, `README.md`.
What llmtune wrote is listed in `.llmtune.json` (engine.manifest): only those files are ever replaced or
deleted; anything else in the directory makes it "not free". Light: no torch.
"""

from __future__ import annotations

import copy
import os
import re
import time
from pathlib import Path

from engine import checkpoints
from engine.config import ENV_REF, RunConfig, resolve_local, to_yaml
from engine.errors import ConfigError, Problem
from engine.events import read_events, summarize
from engine.launch import attach
from engine.manifest import Manifest, token_fingerprint
from engine.run_files import CONFIG_FILE, RunDir, run_dir_of

_SHOWN = 5  # foreign files named in a message before "and N more"


def resolved(cfg: RunConfig, *, for_run: bool = False) -> RunConfig:
    """A copy whose local data and model paths are absolute, so the config works from any directory. A token
    written literally becomes `${HF_TOKEN}`: the training process gets it in its environment (child_env).
    `for_run`: what is chosen for this machine when the config leaves it open is written in too
    (engine.precision, engine.quantization, engine.checkpointing, engine.distributed), so the training process and
    `resume` do the same."""
    out = copy.deepcopy(cfg)
    if for_run:
        from engine.checkpointing import resolve_checkpointing
        from engine.distributed import resolve_distributed
        from engine.precision import resolve_precision
        from engine.quantization import resolve_quantization

        resolve_precision(out)  # first: the memory estimates that decide the next two depend on it
        resolve_quantization(out)
        resolve_checkpointing(out)
        resolve_distributed(out)
    if out.hub.token and "hub.token" not in out.env_refs:
        out.env_refs["hub.token"] = "${HF_TOKEN}"
    for obj, attr in ((out.data, "path"), (out, "base_model"), (out.params, "model_ref"),
                      (out.params, "deepspeed_config"), (out.params, "accelerate_config"),
                      (out.params, "reward_pairs")):
        value = getattr(obj, attr)
        local = resolve_local(value, cfg.base_dir) if value else None
        if local is not None:
            setattr(obj, attr, str(local.absolute()))
    if out.params.reward_model:  # a list: each local one made absolute
        from engine.params import listed_values

        names = [(resolve_local(v, cfg.base_dir), v) for v in listed_values(out.params.reward_model)]
        out.params.reward_model = ", ".join(str(local.absolute()) if local else v for local, v in names)
    return out


def check_free(cfg: RunConfig, *, wizard: bool = False) -> list[Problem]:
    """A run directory that holds a trained model, checkpoints, a live run, the config file being run, or
    anything llmtune did not write is never written into.

    The fix is worded for the command line (`--set project_name=...`), or with `wizard=True` for the wizard:
    no command-line flags, and the free name it offers is the first free sibling (free_name)."""
    run_dir = run_dir_of(cfg)
    if not run_dir.exists():
        return []
    if not run_dir.is_dir():
        fix = f"use {free_name(cfg)} or choose another project_name" if wizard else "choose another project_name"
        return [cfg.problem("project_name", f"{run_dir} exists and is not a directory", fix, cfg.project_name)]
    manifest, files = Manifest(run_dir), RunDir(run_dir)
    summary = summarize(read_events(files.events)) if files.events.is_file() else None
    trained = files.holds_result()
    fix = (f"use {free_name(cfg)} (a free name) or choose another project_name" if wizard else
           f"choose another project_name (e.g. --set project_name={cfg.project_name}-2)")
    if summary is not None and summary.status is None and attach(run_dir) is not None:
        why = f"a run is still going on in it (its progress: {files.events})"
    elif trained or (summary is not None and summary.status == "completed"):
        why = "it already holds a trained model or checkpoints from an earlier run"
        fix += ", or delete the directory"
    elif _is_config_of(cfg, files.config):
        why = (f"the config file you are {'editing' if wizard else 'running'}, {cfg.source}, is its {CONFIG_FILE}, "
               "which a run replaces with its resolved config")
        fix += ("; or save the config to another file" if wizard else
                f"; or copy {cfg.source} elsewhere and run the copy")
    elif not manifest.readable:
        why = f"its {manifest.path.name} cannot be read, so llmtune cannot tell which files it wrote there"
        fix += ", or delete the directory"
    elif foreign := manifest.foreign():
        shown = ", ".join(foreign[:_SHOWN]) + (f" and {len(foreign) - _SHOWN} more" if len(foreign) > _SHOWN else "")
        why = f"it holds files llmtune did not write, which it would not touch: {shown}"
        fix += ", or move those files out of it"
    else:
        return []
    if not check_resumable(run_dir):
        fix = (f"{fix}; or, to continue that run instead, leave the wizard and resume it (llmtune-tui resume "
               f"{run_dir})" if wizard else f"continue that run with: llmtune-tui resume {run_dir}; or {fix}")
    return [cfg.problem("project_name", f"the run directory {run_dir} is not free: {why}", fix, cfg.project_name)]


FREE_NAME_TRIES = 10_000


def free_name(cfg: RunConfig) -> str:
    """The first free sibling of the run directory, written as project_name is: runs/my-model -> runs/my-model-2,
    -3, ... (runs/my-model-2 -> runs/my-model-3). The name itself when it is free."""
    name = cfg.project_name.rstrip("/") or cfg.project_name
    if not check_free(cfg):
        return name
    numbered = re.fullmatch(r"(.*\D)-(\d{1,3})", name)
    stem, start = (numbered.group(1), int(numbered.group(2)) + 1) if numbered else (name, 2)
    sibling = copy.copy(cfg)
    for n in range(start, start + FREE_NAME_TRIES):
        sibling.project_name = f"{stem}-{n}"
        if not check_free(sibling):
            return sibling.project_name
    raise RuntimeError(f"no free name among {stem}-{start} ... {stem}-{start + FREE_NAME_TRIES - 1}")


def _is_config_of(cfg: RunConfig, path: Path) -> bool:
    try:
        return cfg.source is not None and path.exists() and os.path.samefile(cfg.source, path)
    except OSError:
        return False


def prepare(cfg: RunConfig) -> Path:
    """Create the run directory with the resolved config; refuse one holding an earlier run's results or
    files llmtune did not write. What an earlier run that never trained left there is replaced."""
    problems = check_free(cfg)
    if problems:
        raise ConfigError(problems, source=str(cfg.source) if cfg.source else None)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(run_dir)
    manifest.remove_owned()  # leftovers of a run that failed before training: all ours (check_free said so)
    manifest.hub_token = _token_record(cfg)
    manifest.add(CONFIG_FILE)  # listed before it is written: a half-written one is ours too
    RunDir(run_dir).config.write_text(
        "# The resolved config of this run: llmtune-tui --config THIS_FILE --yes reproduces it\n"
        "# (set another project_name to keep this run's results).\n" + to_yaml(resolved(cfg, for_run=True)),
        encoding="utf-8")
    return run_dir


def _token_record(cfg: RunConfig) -> dict[str, str] | None:
    """Where the hub token came from, and its fingerprint: `resume` checks it pushes with the same one."""
    if not cfg.hub.push_to_hub or not cfg.hub.token:
        return None
    ref = cfg.env_refs.get("hub.token")
    where = f"env {ref}" if ref else f"file {Path(cfg.source).absolute()}" if cfg.source else "config"
    return {"from": where, "fingerprint": token_fingerprint(cfg.hub.token)}


def child_env(cfg: RunConfig) -> dict[str, str]:
    """What the training process needs in its environment beyond ours: a literal token as HF_TOKEN."""
    if cfg.hub.token and "hub.token" not in cfg.env_refs:
        return {"HF_TOKEN": cfg.hub.token}
    return {}


def check_resumable(run_dir: Path, *, wait: float = 0.0) -> list[Problem]:
    """A run can be resumed when it has a complete checkpoint, is not running and did not complete. A run
    that has written its final event may still be ending (saving, freeing memory): wait up to `wait` s."""
    def problem(message: str, fix: str) -> list[Problem]:
        return [Problem("RUN_DIR", message, fix, str(run_dir))]

    files = RunDir(run_dir)
    if not files.config.exists():
        return problem(f"is not an llmtune run directory (no {CONFIG_FILE})", "give the project_name of a run")
    if checkpoints.last_complete(run_dir) is None:
        partial = checkpoints.incomplete_checkpoints(run_dir)
        why = (f" ({', '.join(p.name for p in partial)} was not saved completely)" if partial else "")
        return problem(f"holds no complete checkpoint to resume from{why}", "start it anew: llmtune-tui --config "
                       f"{files.config} --yes --set project_name=NEW")
    summary = summarize(read_events(files.events)) if files.events.is_file() else None
    deadline = time.monotonic() + (wait if summary is not None and summary.finished else 0.0)
    while attach(run_dir) is not None:
        if time.monotonic() >= deadline:
            return problem("is still running", f"its progress is in {files.events}; stop it first "
                           f"(touch {files.request('stop')}) or watch it: llmtune-tui attach {run_dir}")
        time.sleep(0.1)
    if summary is not None and summary.status == "completed":
        return problem("completed already", "to train further, start a new run from its config with more epochs")
    return []


def resume_token(run_dir: Path, environ: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """Before a resume that pushes to the hub: the token it would push with must be the one the run started
    with. Returns what to add to the environment (the token of the config file the run was started from, when
    it was written there literally) and a sentence saying which token is used; raises ConfigError otherwise."""
    record = Manifest(run_dir).hub_token
    if record is None:
        return {}, None
    origin = record.get("from", "")
    ref = ENV_REF.search(origin) if origin.startswith("env ") else None
    var = ref.group(1) if ref else "HF_TOKEN"  # resolved() writes a literal token as ${HF_TOKEN}
    token, add, where = environ.get(var) or None, {}, f"the token in ${var}"
    if token is None and origin.startswith("file "):
        token, where = _token_in(Path(origin[5:])), f"the token written in {origin[5:]}"
        add = {var: token} if token else {}
    started = _origin_text(origin)
    if token is None:
        problem = Problem("hub.token", f"this run pushes to the hub and started with {started}; no token is "
                          "available now", f"export {var}=... (the token the run started with) and resume again")
    elif token_fingerprint(token) != record.get("fingerprint"):
        fix = f"export the token the run started with as {var}"
        if origin.startswith("file "):
            fix += f", or unset {var} to use the one in {origin[5:]}"
        problem = Problem("hub.token", f"{where} is not the token this run started with ({started}): the result "
                          "would be pushed with another token", fix)
    else:
        return add, f"hub token: {where}, the one the run started with"
    raise ConfigError([problem], title="cannot resume")


def _origin_text(origin: str) -> str:
    if origin.startswith("file "):
        return f"the token written in {origin[5:]}"
    if origin.startswith("env "):
        return f"the token in {origin[4:]}"
    return "a token"


def _token_in(config_file: Path) -> str | None:
    """The literal hub.token of a config file, read leniently (other problems in it do not matter here)."""
    from engine.config import load_config_lenient

    try:
        cfg, _ = load_config_lenient(config_file)
    except (ConfigError, OSError):
        return None
    return cfg.hub.token or None

