"""Starting a run from the CLI (`--yes`, `demo`): check everything that can be checked before training (config,
machine, tokenizer, every data row), print a short summary, prepare the run directory, start the training
process detached and follow it. A config or data problem ends here with exit code 2, before anything starts.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text

from engine import control, launch
from engine.config import RunConfig
from engine.rundir import child_env, prepare
from tui.dry_run import console, preview_plan, print_validated, summary_rows
from tui.headless import follow


def start_and_follow(cfg: RunConfig) -> int:
    from engine.preview import build_preview, check_reward_model, check_trainable

    out = console()
    print_validated(cfg, "llmtune")
    from tui.progress_bar import PrepProgress

    with PrepProgress(out) as progress:  # prepares every row (bad data fails here, not later) into the cache,
        preview = build_preview(cfg, n_samples=0, progress=progress)  # where the training process finds them
    check_trainable(preview)  # what the training process sees: no example left with a trained token
    check_reward_model(preview)  # GRPO/RLOO: a reward model at chance would spend the run on noise
    for key, value in summary_rows(cfg, preview, preview_plan(preview, machine=True), machine=True):
        out.print(Text(f"  {key:<14} {value}"))
    for report in preview.splits:
        fs = report.formatted
        dropped = sum(fs.dropped.values())
        line = f"  {'data ' + fs.split:<14} {fs.rows} rows read, {fs.used} used, {dropped} dropped"
        reasons = "; ".join(f"{n} {reason}" for reason, n in fs.dropped.most_common(3))
        out.print(Text(line + (f" ({reasons})" if reasons else ""), style="yellow" if dropped else ""))
    handle = start_run(cfg)
    out.print(f"started the training process (pid {handle.pid}) in {handle.run_dir}: it keeps running if this "
              f"terminal closes; watch it from anywhere with: llmtune-tui attach {handle.run_dir}", soft_wrap=True)
    return follow(handle, console=out)


def start_run(cfg: RunConfig) -> launch.RunHandle:
    """Prepare the run directory (refusing one that holds a model, checkpoints or a live run) and start the
    training process in it, detached."""
    from engine.config import load_config
    from engine.run_files import RunDir

    run_dir = prepare(cfg)  # its config.yaml holds what was chosen for this machine (the process count among it)
    return _start(run_dir, load_config(RunDir(run_dir).config), child_env(cfg))


def _start(run_dir: Path, run_cfg: RunConfig, env: dict[str, str], *, resume: bool = False) -> launch.RunHandle:
    """One process, or this machine's processes through `accelerate launch` (engine.distributed), as the run
    directory's config (`run_cfg`) says."""
    from engine.distributed import start_command

    command, launch_env = start_command(run_cfg.params, run_dir, resume=resume)
    return launch.start(run_dir, command=command, env={**env, **launch_env}, resume=resume)


def check_and_start(config_path: Path) -> launch.RunHandle:
    """What `--yes` does before following, without printing: load the saved config with the environment
    checks, format and tokenize every row (bad data raises a UserError here), then start the run."""
    from engine.config import load_config
    from engine.preview import build_preview, check_reward_model, check_trainable

    cfg = load_config(config_path, check_env=True)
    preview = build_preview(cfg, n_samples=0)
    check_trainable(preview)
    check_reward_model(preview)
    return start_run(cfg)


RESUME_WAIT_S = 60.0  # a run that wrote its final event may take this long to end its process


def resume_and_follow(run_dir: Path) -> int:
    import os

    from engine.config import load_config
    from engine.errors import ConfigError
    from engine.run_files import RunDir
    from engine.rundir import check_resumable, resume_token

    problems = check_resumable(run_dir, wait=RESUME_WAIT_S)
    if problems:
        raise ConfigError(problems, title="cannot resume")
    token_env, token_note = resume_token(run_dir, dict(os.environ))
    cfg = load_config(RunDir(run_dir).config, environ={**os.environ, **token_env}, check_env=True)
    control.clear(run_dir, "stop")  # the request that stopped it last time
    handle = _start(run_dir, cfg, {**child_env(cfg), **token_env}, resume=True)
    out = console()
    out.print(f"resuming {run_dir} from its last complete checkpoint (pid {handle.pid})", soft_wrap=True)
    if token_note:
        out.print(token_note, soft_wrap=True)
    return follow(handle, console=out, skip_existing=True)


def show_demo_answers(cfg: RunConfig) -> None:
    """The demo's last word: the trained model answers a few questions it was not shown verbatim."""
    from engine.demo import ask, demo_questions
    from engine.rundir import run_dir_of

    out = console()
    questions = demo_questions()
    answers = ask(run_dir_of(cfg), questions)
    out.print("\n[bold]The trained model answers[/bold] (greedy decoding; with 0.3M parameters it learns the "
              "answer style and the capitals, sums mostly not):")
    for conversation, answer in zip(questions, answers):
        out.print(Text(f"  Q: {conversation[-1]['content']}\n  A: {answer}"))
    out.print(f"\nEverything about the run is in {run_dir_of(cfg)} (model, tokenizer, config.yaml, events.jsonl, "
              "train.log, README.md). Fine-tune a real model: copy configs/sft-chat.yaml, set base_model, then\n"
              "  llmtune-tui --config my.yaml --yes", soft_wrap=True)
