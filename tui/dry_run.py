"""Prints a Preview: the resolved config, per-split counts and lengths, and samples with trained text marked.

On a terminal, trained text is green, masked text dim and cut text red; piped, the same shows as plain
markers ([[trained]], <<cut:...>>) so the output stays readable in logs and tests.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from engine.config import RunConfig
from engine.plan import Plan, duration_line, plan_for_preview, steps_line
from engine.preview import Preview, Sample, Segment, SplitReport
from engine.trackers import TRACKERS
from engine.trackers import describe as describe_tracker
from tui.format import length_stats

STYLES = {"trained": "bold green", "masked": "grey50", "cut": "red strike"}
MAX_PART_CHARS = 2000  # longer parts are shortened in the middle


def console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def print_validated(cfg: RunConfig, what: str = "llmtune dry run") -> None:
    out = console()
    out.print(Text.assemble((what, "bold"), f": {cfg.source}  (config valid)"))  # a path is not markup
    for w in cfg.warnings:
        out.print(Text(f"  note: {w.render(str(cfg.source) if cfg.source else None)}", style="yellow"))


def summary_rows(cfg: RunConfig, preview: Preview | None = None, plan: Plan | None = None, *,
                 machine: bool = False) -> list[tuple[str, str]]:
    """The resolved config in a few lines (also used by the wizard's review and the headless start); with a
    plan, the optimizer steps and the duration estimate too. `machine`: say what is chosen for this machine
    where the config leaves it open (the dry run and --yes, which probe it); else that it is chosen at the
    start (the wizard, whose screens must not wait for torch)."""
    p, d, spec = cfg.params, cfg.data, cfg.spec
    trainer = cfg.trainer
    rows = [("task", f"{cfg.task} (trainer: {trainer})"),
            ("base model", cfg.base_model),
            ("output", cfg.project_name),
            ("data", f"{d.path}  train: {d.train_split}  valid: {_valid_text(cfg)}")]
    template = d.chat_template
    if preview and preview.template.notes:
        template += " (" + "; ".join(preview.template.notes) + ")"
    rows.append(("chat template", template))
    if spec.responses_only:
        rows.append(("loss on", "all tokens" if p.train_on_all_tokens else
                     "assistant turns / completion only (train_on_all_tokens: false)"))
    if preview:
        rows.append(("block size", preview.block_size_note))
    else:
        rows.append(("block size", str(p.block_size)))
    if spec.prompt_limits:
        rows.append(("lengths", f"max_prompt_length {p.max_prompt_length}, max_completion_length "
                     f"{p.max_completion_length or 'fits the block'}, beta {p.dpo_beta}"))
    if spec.online:
        from engine.online import completion_length, describe, generation, reward_models

        rows.append(("reward model", ", ".join(reward_models(p)) or "none (params.reward_model)"))
        rows.append(("sampling", describe(p)))
        rows.append(("lengths", f"prompts up to max_prompt_length {p.max_prompt_length} (longer ones are left "
                     f"out), answers up to {completion_length(p)} tokens"))
        if machine:
            rows.append(("generation", generation(p, on_cuda=_cuda_available()).why))
    steps = f"max_steps {p.max_steps}" if p.max_steps > 0 else f"epochs {p.epochs}"
    rows.append(("training", f"{steps}, batch {p.batch_size} x accumulation {p.gradient_accumulation}, lr {p.lr:g}, "
                 f"{p.scheduler}, {p.optimizer}, warmup {p.warmup_ratio:g}"))
    if plan is not None:
        rows.append(("steps", steps_line(plan, cfg)))
        rows.append(("duration", duration_line(plan)))
    if p.peft:
        rows.append(("LoRA", f"r {p.lora_r}, alpha {p.lora_alpha}, dropout {p.lora_dropout:g}, "
                     f"modules {p.target_modules}; quantization {quantization_text(cfg, machine)}"))
    else:
        rows.append(("weights", "full fine-tune (params.peft: false)"))
    rows.append(("precision", precision_line(cfg, machine)))
    rows.append(("batching", batching_line(cfg, machine)))
    rows.append(("kernels", kernels_line(cfg, machine)))
    rows.append(("checkpointing", checkpointing_line(cfg, machine)))
    rows.append(("processes", processes_line(cfg, machine)))
    if cfg.log in TRACKERS:
        rows.append(("tracker", describe_tracker(cfg, machine=machine)))
    return rows


def processes_line(cfg: RunConfig, machine: bool) -> str:
    """How many processes the run starts, and with which backend (engine.distributed)."""
    from engine.distributed import known_topology

    p = cfg.params
    if not machine:
        if p.num_processes is None and p.distributed_backend is None and not p.accelerate_config:
            return "every visible GPU (ddp when several), one process without a GPU: chosen at the start"
        count = p.num_processes or "every visible GPU"
        return f"{count}, {p.distributed_backend or 'ddp'}" + (f" on {p.num_machines} machines" if
                                                              (p.num_machines or 1) > 1 else "")
    topo = known_topology(p)
    return topo.describe() if topo else "unknown (see the problem below)"


def launch_lines(cfg: RunConfig) -> list[str]:
    """The command each machine runs, for a run of several processes (the dry run); [] for one process."""
    from engine.distributed import known_topology, node_commands, run_params
    from engine.rundir import run_dir_of

    topo = known_topology(cfg.params)
    if topo is None or not topo.launched:
        return []
    commands = node_commands(run_params(cfg), topo, run_dir_of(cfg))
    if len(commands) == 1:
        lines = ["`--yes` starts the processes with:", f"  {commands[0][1]}"]
    else:
        lines = [f"{topo.machines} machines: `--yes` on machine 0 starts its processes and writes "
                 f"{run_dir_of(cfg)} (events, model, checkpoints); every other machine runs its own command in the "
                 "same directory path, with the same config.yaml and data there (a shared disk, or a copy):"]
        lines += [f"  machine {rank}: {command}" for rank, command in commands]
    from accelerate.commands.config.config_args import default_config_file

    if not cfg.params.accelerate_config and Path(default_config_file).is_file():
        lines.append(f"accelerate's own default config ({default_config_file}, from `accelerate config`) applies too, "
                     "for what the command does not say")
    return lines


def batching_line(cfg: RunConfig, machine: bool) -> str:
    """What params.batching will do on this machine (engine.batching), as the training process will choose."""
    from engine.batching import machine_batching

    p = cfg.params
    if not machine:
        why = "chosen for this machine at the start" if p.batching == "auto" else f"params.batching: {p.batching}"
        return f"{p.batching} ({why})"
    try:
        return machine_batching(cfg, on_cuda=_cuda_available()).describe()
    except ValueError as e:  # packed where it cannot run: the config check refuses it before training
        return f"packed (refused: {e})"


def kernels_line(cfg: RunConfig, machine: bool) -> str:
    """Which fused kernels will run (engine.kernels), as the training process will choose."""
    from engine.kernels import SWITCHES, machine_kernels

    p = cfg.params
    if not machine:
        auto = [s.label for s in SWITCHES if getattr(p, s.param) == "auto"]
        fixed = [f"{s.label} {getattr(p, s.param)} ({s.key})" for s in SWITCHES if getattr(p, s.param) != "auto"]
        return "; ".join(fixed + ([f"{', '.join(auto)}: auto (chosen for this machine at the start)"] if auto else []))
    try:
        from engine.model_info import read_model_info

        on_cuda = _cuda_available()
        model_type = read_model_info(cfg.base_model, cfg.base_dir).model_type if on_cuda else None
        return machine_kernels(cfg, on_cuda=on_cuda, model_type=model_type).describe()
    except ValueError as e:  # on where it cannot run: the config check refuses it before training
        return f"refused: {e}"


def precision_line(cfg: RunConfig, machine: bool) -> str:
    """Precision as the run will have it (engine.precision.choose_precision)."""
    from engine.precision import PRECISION_KEY, choose_precision

    if PRECISION_KEY not in cfg.defaulted:
        return cfg.params.mixed_precision or "full (fp32)"
    if not machine:
        return "auto (bf16 where this machine runs it natively, else fp32; chosen when the run starts)"
    value, why = choose_precision(cfg)
    return f"{value or 'full (fp32)'} ({why})"


def quantization_text(cfg: RunConfig, machine: bool) -> str:
    """Quantization as the run will have it (engine.quantization)."""
    from engine.quantization import KEY, choose_quantization

    if KEY in cfg.defaulted and cfg.params.peft and not machine:
        return "auto (int4 only where the model does not fit without it; chosen when the run starts)"
    return choose_quantization(cfg).describe()


def checkpointing_line(cfg: RunConfig, machine: bool) -> str:
    """Gradient checkpointing as the run will have it (engine.checkpointing)."""
    from engine.checkpointing import KEY, choose_checkpointing

    if KEY in cfg.defaulted and not machine:
        return "gradient checkpointing: auto (chosen for this machine's memory when the run starts)"
    return "gradient checkpointing " + choose_checkpointing(cfg).describe()


def _cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (the dry run and --yes have imported torch with the tokenizer already)."""
    import torch

    return bool(torch.cuda.is_available())


def _valid_text(cfg: RunConfig) -> str:
    if cfg.data.valid_split:
        return cfg.data.valid_split
    if cfg.params.valid_fraction:
        return f"{cfg.params.valid_fraction * 100:g}% of train, held out (seed {cfg.params.seed})"
    return "(none: no evaluation)"


def known_device(capabilities: Any = None) -> tuple[str | None, str | None]:
    """(device, its name) for the duration estimate, without a slow probe: the capabilities probe's answer
    when it has run, else NVML's first GPU, else what torch says when it is imported already."""
    if capabilities is None:
        from engine.capabilities import probe

        info = getattr(probe, "cache_info", None)
        if info is not None and info().currsize:
            capabilities = probe()
    if capabilities is not None:
        return capabilities.device, capabilities.device_name
    from engine.gpu_memory import nvml_readings

    readings = nvml_readings()
    if readings:
        return "cuda", readings[0].get("name")
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return "cuda", torch.cuda.get_device_name(0)
            mps = getattr(torch.backends, "mps", None)
            return ("mps", "Apple GPU") if mps is not None and mps.is_available() else ("cpu", "CPU")
        except Exception:  # a broken CUDA install: no estimate rather than no dry run
            return None, None
    return None, None


def preview_plan(preview: Preview, *, read_limit: int | None = None, total_rows: int | None = None,
                 parameters: int | None = None, capabilities: Any = None, machine: bool = False) -> Plan | None:
    """The plan of the previewed run; the model's parameters are read from its config when not given.
    `machine`: with the precision chosen for this machine where the config leaves it open (summary_rows)."""
    if parameters is None:
        from engine.model_info import read_model_info

        try:
            parameters = read_model_info(preview.cfg.base_model, preview.cfg.base_dir).parameters
        except Exception:  # the parameter count only feeds the estimate: without it, steps only
            parameters = None
    device, name = known_device(capabilities)
    from engine.precision import PRECISION_KEY, resolve_precision

    if PRECISION_KEY in preview.cfg.defaulted and machine:  # estimate the precision it will have
        import copy
        import dataclasses

        cfg = copy.deepcopy(preview.cfg)
        resolve_precision(cfg)
        preview = dataclasses.replace(preview, cfg=cfg)
    return plan_for_preview(preview, read_limit=read_limit, total_rows=total_rows, parameters=parameters,
                            device=device, device_name=name, world_size=_world_size(preview.cfg) if machine else 1)


def _world_size(cfg: RunConfig) -> int:
    from engine.distributed import known_topology

    topo = known_topology(cfg.params)
    return topo.world_size if topo else 1


def print_preview(preview: Preview, plan: Plan | None = None) -> None:
    """The dry run's report; `plan` defaults to the plan of the previewed rows (the dry run reads them all)."""
    out = console()
    plan = plan or preview_plan(preview, machine=True)
    out.print("\n[bold]Config[/bold]")
    for key, value in summary_rows(preview.cfg, preview, plan, machine=True):
        out.print(Text(f"  {key:<14} {value}"))
    for line in launch_lines(preview.cfg):
        out.print(Text(f"  {line}"), soft_wrap=True)
    for report in preview.splits:
        print_split(out, report, online=preview.cfg.spec.online)
    if preview.reward is not None:
        print_reward_gate(out, preview.reward)
    if preview.samples:
        print_samples(out, preview.samples, plain=not out.is_terminal, gate=preview.reward)


def print_reward_gate(out: Console, gate: Any) -> None:
    """GRPO/RLOO: what the reward model is, how it scores pairs it was not trained on, and whether it renders
    conversations as the policy does (engine.reward_model.RewardGate)."""
    out.print("\n[bold]Reward model[/bold]")
    for line in gate.lines():
        out.print(Text(f"  {line}", style="yellow" if "weak" in line or "another chat template" in line else ""),
                  soft_wrap=True)
    if gate.weak:
        verdict = ("params.allow_weak_reward_model: true, so --yes runs anyway" if gate.allow_weak else
                   "--yes stops here: train it further, or set params.allow_weak_reward_model: true")
        out.print(Text(f"  !! weak reward model: {verdict}", style="bold red"), soft_wrap=True)


def print_split(out: Console, report: SplitReport, *, online: bool = False) -> None:
    fs = report.formatted
    out.print(Text.assemble("\n", (f"Data: {fs.split}", "bold"), f" ({fs.source})"))  # a path is not markup
    dropped = sum(fs.dropped.values())
    out.print(Text(f"  rows: {fs.rows} read, {fs.used} used, {dropped} dropped; shape: {fs.shape}"))
    for reason, n in fs.dropped.most_common():
        out.print(Text(f"    dropped {n}: {reason}", style="yellow"))
    if fs.roles_mapped:
        mapped = ", ".join(f"{k} ({n})" for k, n in fs.roles_mapped.most_common())
        out.print(Text(f"  mapped: {mapped}"))
    used, dropped_columns = ", ".join(map(_printable, fs.columns_used)), ", ".join(map(_printable, fs.columns_dropped))
    out.print(Text(f"  columns used: {used or '-'}"
                   + (f"; dropped before training: {dropped_columns}" if dropped_columns else "")))
    for s in report.lengths:
        line = f"  tokens ({s.name}): {length_stats(s)}"
        if s.limit:
            line += f"; {s.over} of {s.count} longer than {s.limit}" + (
                (" (left out)" if online else " (truncated)") if s.over else "")
        out.print(Text(line, style="yellow" if s.over else ""))
    for note in report.notes:
        out.print(Text(f"  {note}"))
    if online:
        out.print(Text("  trained tokens: the answers sampled during training (the prompts are only read)"))
    elif report.total_tokens:
        share = 100 * report.trained_tokens / report.total_tokens
        out.print(Text(f"  trained tokens: {report.trained_tokens} of {report.total_tokens} ({share:.0f}%)"))
    if report.no_trained:
        left_out = "; training leaves them out" if report.skipped else ""
        out.print(Text(f"  {report.no_trained} sample(s) have no trained token left after truncation{left_out}",
                       style="bold red"))


def _printable(name: str) -> str:
    """A column name as it can be written: JSON keys may hold lone surrogates ("\\ud800"), which stdout refuses
    to encode; they are shown escaped. (Cells holding them are refused by the formatter.)"""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def print_samples(out: Console, samples: list[Sample], *, plain: bool, gate: Any = None) -> None:
    """The samples as the model sees them; with a reward gate (GRPO/RLOO), also as each reward model scores them."""
    if plain:
        legend = "trained text is [[between double brackets]], masked text is bare, cut text is <<cut:...>>"
    else:
        legend = Text.assemble("legend: ", ("trained", STYLES["trained"]), "  ", ("masked", STYLES["masked"]),
                               "  ", ("cut (beyond a length limit)", STYLES["cut"]))
    out.print("\n[bold]Samples[/bold] exactly as the model sees them")
    out.print(legend if isinstance(legend, Text) else Text(legend))
    for i, sample in enumerate(samples, 1):
        out.print(Text(f"\n--- sample {i} ({sample.location}) ---", style="bold"))
        for part in sample.parts:
            head = f"[{part.title}: {part.tokens} tokens, {part.trained} trained" + (
                f", {part.cut} cut" if part.cut else "") + "]"
            out.print(Text(head, style="cyan"))
            out.print(render_part(part.segments, plain=plain))
        if gate is not None:
            for model, views in zip(gate.models, gate.views):
                if i <= len(views):
                    out.print(Text(f"[as reward model {model.name} scores it, with the answer]", style="cyan"))
                    out.print(Text(views[i - 1]))
            continue
        if sample.no_trained_tokens:
            out.print(Text("!! this sample has no trained tokens: it teaches the model nothing", style="bold red"))


def render_part(segments: list[Segment], *, plain: bool) -> Text:
    text = Text()
    for piece, kind in shorten(segments, MAX_PART_CHARS):
        if kind is None:
            text.append(piece, style="italic")
        elif plain:
            text.append({"trained": f"[[{piece}]]", "cut": f"<<cut:{piece}>>"}.get(kind, piece))
        else:
            text.append(piece, style=STYLES[kind])
    return text


def shorten(segments: list[Segment], budget: int) -> list[tuple[str, str | None]]:
    """(text, kind) pieces keeping the first and last budget/2 characters; kind None marks the gap.

    The middle goes rather than the end: a chat's answer and whatever the block size cuts are at the end.
    Characters the preview already left out (Segment.omitted, in the middle of very long parts) count as not
    shown, so the gap says exactly how much is missing."""
    total = sum(len(s.text) + s.omitted for s in segments)
    if total <= budget and not any(s.omitted for s in segments):
        return [(s.text, s.kind) for s in segments]
    hide_from, hide_to = (budget // 2, total - (budget - budget // 2)) if total > budget else (0, 0)
    out: list[tuple[str, str | None]] = []
    pos = gap = 0  # pos counts the characters of the whole part; gap those not shown since the last piece

    def show(piece: str, kind: str) -> None:
        nonlocal gap
        if gap:
            out.append((f" … ({gap} characters not shown) … ", None))
            gap = 0
        out.append((piece, kind))

    for seg in segments:
        end = pos + len(seg.text)
        if pos < hide_from:
            show(seg.text[:hide_from - pos], seg.kind)
        gap += max(0, min(end, hide_to) - max(pos, hide_from))
        if end > hide_to:
            show(seg.text[max(0, hide_to - pos):], seg.kind)
        gap += seg.omitted
        pos = end + seg.omitted
    if gap:
        out.append((f" … ({gap} characters not shown) … ", None))
    return out


def dry_run_config(cfg: Any, samples: int) -> int:
    """The dry run of a checked config (from a file, or from AutoTrain's flags: tui.autotrain_cli)."""
    print_validated(cfg)
    from engine.exit_codes import ExitCode
    from engine.preview import build_preview, check_trainable
    from tui.progress_bar import PrepProgress

    with PrepProgress(console()) as progress:  # a bar on a terminal while every row is prepared
        preview = build_preview(cfg, n_samples=samples, progress=progress)
    print_preview(preview)
    check_trainable(preview)  # after the preview, which shows where each sample is cut
    return ExitCode.OK
