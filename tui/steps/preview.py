"""Step 6, Preview: what the model will be trained on, before anything is trained.

Loads the tokenizer and tokenizes the first rows of the data in a worker (the engine's build_preview, the
dry run's own), then shows per split the rows used and dropped, trained against total tokens, the length
distribution against the limit, and a few samples with trained, masked and cut text marked; and the run's
optimizer steps with a duration estimate where there is a basis for one (engine.plan), the rows beyond the
first ones read counted where that is cheap. For GRPO and RLOO: each prompt as the policy reads it, then as
each reward model scores it (with a stand-in for the sampled answer), and what the reward model gate found.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Resize
from textual.message import Message
from textual.widgets import Button, LoadingIndicator, Static
from textual.worker import get_current_worker

from engine.config import RunConfig, to_yaml
from engine.errors import Problem, UserError
from engine.plan import Plan, duration_line, steps_line
from engine.preview import LengthStats, Preview, Sample, SplitReport
from engine.reward_model import NotARewardModel
from engine.tasks import TrainerSpec
from tui.errors import report_fix
from tui.format import length_stats
from tui.steps.base import Step
from tui.widgets.masked_text import MaskedText, legend

N_SAMPLES = 5
PREVIEW_LIMIT = 500  # rows read per split: enough for the statistics, quick on any data set
WIDE = 100  # from this width chosen and rejected sit side by side
BAR_WIDTH = 30
LOADING = "loading the tokenizer and tokenizing…"
STILL_LOADING = Problem("preview", "still tokenizing…", "wait for the preview to appear on this step")


def config_copy(cfg: RunConfig) -> RunConfig:
    """A private copy for a worker thread, since the wizard may edit `cfg` meanwhile. The warnings list is
    copied shallowly: Problems are frozen, and deep-copying one would lose its "no value" sentinel."""
    return copy.deepcopy(cfg, {id(cfg.warnings): list(cfg.warnings)})


def config_key(cfg: RunConfig) -> str:
    """What the preview depends on: the config as it would be written, and where relative paths start."""
    return f"{cfg.source}\n{to_yaml(cfg, keep_secrets=True)}"


@dataclass
class PreviewBuilt(Message):
    key: str
    preview: Preview
    plan: Plan | None = None


@dataclass
class PreviewFailed(Message):
    key: str
    problems: list[Problem]


# ---------------------------------------------------------------- text of the statistics


def length_bar(stats: LengthStats, width: int = BAR_WIDTH) -> Text:
    """A one-line picture of the lengths: ━ min to p95, ─ on to the max, ● the median, ┃ the limit;
    whatever lies beyond the limit is red (it is cut)."""
    top = max(stats.max, stats.limit or 0, 1)

    def col(value: float) -> int:
        return min(width - 1, round(value * (width - 1) / top))

    cells = [" "] * width
    for i in range(col(stats.min), col(stats.max) + 1):
        cells[i] = "━" if i <= col(stats.p95) else "─"
    cells[col(stats.median)] = "●"
    limit = col(stats.limit) if stats.limit and stats.limit <= top else None
    if limit is not None:
        cells[limit] = "┃"
    bar = Text("  0 ")
    for i, cell in enumerate(cells):
        bar.append(cell, style="red" if limit is not None and i > limit and cell != " " else
                   "yellow" if i == limit else "")
    bar.append(f" {top}")
    return bar


def rows_line(report: SplitReport, limit: int | None) -> str:
    fs = report.formatted
    read = f"{fs.rows} rows read" + (f" (the first {limit} only)" if limit and fs.rows >= limit else "")
    return f"{read}, {fs.used} used, {sum(fs.dropped.values())} dropped; shape: {fs.shape}"


def length_line(stats: LengthStats) -> str:
    return f"  {stats.name}: {length_stats(stats)}"


def over_text(stats: LengthStats, online: bool = False) -> str:
    """`online`: a prompt over max_prompt_length is left out whole (GRPO, RLOO), not cut."""
    if not stats.limit:
        return ""
    return f"{stats.over} of {stats.count} over {stats.limit}" + (
        (" (left out)" if online else " (truncated)") if stats.over else "")


def split_text(report: SplitReport, limit: int | None, online: bool = False) -> Text:
    fs = report.formatted
    out = Text.assemble((f"{fs.split}", "bold"), f" ({fs.source}): {rows_line(report, limit)}\n")
    for reason, n in fs.dropped.most_common():
        out.append(f"  dropped {n}: {reason}\n", style="yellow")
    if online:
        out.append("  trained tokens: the answers sampled during training (the prompts are only read)\n")
    elif report.total_tokens:
        share = 100 * report.trained_tokens / report.total_tokens
        out.append(f"  tokens: {report.trained_tokens} trained of {report.total_tokens} ({share:.0f}%)\n")
    for stats in report.lengths:
        out.append(length_line(stats) + "\n")
        if stats.count:
            out.append_text(length_bar(stats))
        out.append(f"  {over_text(stats, online)}\n" if stats.limit else "\n", style="yellow" if stats.over else "")
    for note in report.notes:
        out.append(f"  {note}\n")
    if report.no_trained and not online:
        out.append(f"  {report.no_trained} sample(s) have nothing trained left after truncation\n",
                   style="bold red")
    return out


def preview_text(preview: Preview, limit: int | None, plan: Plan | None = None) -> Text:
    out = Text(f"block size: {preview.block_size_note}\n")
    if plan is not None:
        out.append(f"steps: {steps_line(plan, preview.cfg)}\n", style="bold")
        out.append(f"duration: {duration_line(plan)}\n")
    if preview.template.notes:
        out.append("chat template: " + "; ".join(preview.template.notes) + "\n")
    for warning in preview.warnings:
        out.append(f"note: {warning.render()}\n", style="yellow")
    for report in preview.splits:
        out.append_text(split_text(report, limit, online=preview.cfg.spec.online))
    if preview.reward is not None:
        out.append_text(gate_text(preview.reward))
    out.rstrip()
    return out


def gate_text(gate: Any) -> Text:
    """GRPO/RLOO: the reward model gate (engine.reward_gate.RewardGate), as the dry run words it."""
    out = Text("reward model\n", style="bold")
    for line in gate.lines():
        out.append(f"  {line}\n", style="yellow" if "weak" in line or "another chat template" in line else "")
    if gate.weak:
        verdict = ("params.allow_weak_reward_model is on: the run goes ahead with it" if gate.allow_weak else
                   "Save and launch (and --yes) stop here: train it further, or turn on "
                   "params.allow_weak_reward_model")
        out.append(f"  !! weak reward model: {verdict}\n", style="bold yellow" if gate.allow_weak else "bold red")
    return out


def reward_view_text(gate: Any, index: int) -> Text:
    """Sample `index` as each reward model scores it: the prompt and a stand-in for the sampled answer."""
    from engine.reward_gate import ANSWER

    out = Text()
    for model, views in zip(gate.models, gate.views):
        if index < len(views):
            out.append(f"as reward model {model.name} scores it, with the answer\n", style="bold")
            before, _, after = views[index].partition(ANSWER)
            out.append(before, style="dim")
            if ANSWER in views[index]:
                out.append(ANSWER, style="italic green")
                out.append(after, style="dim")
            out.append("\n")
    out.rstrip()
    return out


def train_rows(cfg: RunConfig) -> int | None:
    """The rows of the train split, counted without parsing them where that is cheap (None otherwise)."""
    from engine.data import load_split
    from tui.steps.data import count_file_rows

    try:
        table = load_split(cfg.data.path, cfg.data.train_split, base_dir=cfg.base_dir, limit=1,
                           split_key="data.train_split")
    except UserError:
        return None
    return count_file_rows(table)


def build_plan(preview: Preview, limit: int, parameters: int | None, capabilities: Any) -> Plan | None:
    """The plan of the run previewed from its first `limit` rows (scaled to the split's rows if counted)."""
    from engine.plan import split_rows_read
    from tui.dry_run import preview_plan

    total = train_rows(preview.cfg) if split_rows_read(preview) >= limit else None
    return preview_plan(preview, read_limit=limit, total_rows=total, parameters=parameters,
                        capabilities=capabilities)


def sample_flag(sample: Sample, spec: TrainerSpec) -> str:
    """Why a sample teaches nothing, and what to change; empty when it does teach something."""
    if spec.online:  # a prompt trains nothing itself (the sampled answers do); one too long is left out
        if any(part.cut for part in sample.parts):
            return ("this prompt is longer than params.max_prompt_length: training leaves it out; raise "
                    "params.max_prompt_length")
        return ""
    if not sample.no_trained_tokens:
        return ""
    if not any(part.cut for part in sample.parts):
        return "nothing is trained in this sample: it has no answer (no assistant turn or completion)"
    if spec.prompt_limits:
        return ("nothing is trained in this sample: the answers were cut off; raise params.block_size or lower "
                "params.max_prompt_length")
    return "nothing is trained in this sample: the answer was cut off; raise params.block_size"


# ---------------------------------------------------------------- the step


class PreviewStep(Step):
    """What the model will learn from, exactly: the first rows of the data, tokenized as for training.
    Green bold text is trained (the loss is computed on it), grey text is context only, red struck-out text
    is cut by a length limit and never seen. Check that the answers are green, and that few samples are cut.
    Keys: n / right arrow for the next sample, p / left arrow for the previous one."""

    title = "Preview"
    keys = ()

    BINDINGS = [
        Binding("p,left", "sample(-1)", "◀ sample", key_display="p"),
        Binding("n,right", "sample(1)", "sample ▶", key_display="n"),
    ]

    DEFAULT_CSS = """
    PreviewStep LoadingIndicator { height: 1; }
    PreviewStep #preview-nav { height: 1; margin-top: 1; }
    PreviewStep #preview-nav Button { min-width: 5; margin: 0 1 0 0; }
    PreviewStep #preview-sample-title { width: 1fr; }
    PreviewStep #preview-flag { color: $error; text-style: bold; height: auto; }
    PreviewStep #preview-reward-view { height: auto; margin-bottom: 1; }
    PreviewStep #preview-pair { height: auto; layout: vertical; }
    PreviewStep.-wide #preview-pair { layout: horizontal; }
    PreviewStep.-wide #preview-pair MaskedText { width: 1fr; margin-right: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.preview: Preview | None = None
        self.plan: Plan | None = None  # the steps (and duration) of the previewed run
        self.errors: list[Problem] = []
        self.building = True  # until the first preview is built: it starts when the step is first shown
        self.sample_index = 0
        self.limit = PREVIEW_LIMIT
        self._key: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(LOADING, id="preview-status", classes="hint", markup=False)
        yield LoadingIndicator()
        yield Static(classes="problems")
        yield Static(id="preview-stats")
        with Horizontal(id="preview-nav"):
            yield Button("◀", id="preview-prev", compact=True)
            yield Button("▶", id="preview-next", compact=True)
            yield Static(id="preview-sample-title", markup=False)
        yield Static(legend(), id="preview-legend")
        yield Static(id="preview-flag", markup=False)
        yield MaskedText(id="preview-text")
        yield Static(id="preview-reward-view", markup=False)
        with Horizontal(id="preview-pair"):
            yield MaskedText(id="preview-chosen")
            yield MaskedText(id="preview-rejected")

    # ------------------------------------------------------------ the Step protocol

    def load(self, cfg: RunConfig) -> None:
        key = config_key(cfg)
        if key == self._key and not self.errors:
            return  # the same config: keep the preview (or the one being built)
        self._key, self.building, self.preview, self.errors, self.sample_index = key, True, None, [], 0
        self.plan = None
        self._refresh()
        info = self.wizard.model_info
        parameters = info.parameters if info is not None and info.name == cfg.base_model else None
        self._build(config_copy(cfg), key, parameters, self.wizard.capabilities)

    def problems(self, cfg: RunConfig) -> list[Problem]:
        return [STILL_LOADING] if self.building else list(self.errors)

    def show_problems(self, problems: list[Problem]) -> None:
        # the app clears problems when a step is shown; a failed preview stays failed until it is rebuilt
        super().show_problems(problems or self.errors)

    def focus_first(self) -> None:
        self.focus()  # the step itself, so n/p and the arrows page through the samples

    # ------------------------------------------------------------ building (a thread: transformers is slow)

    @work(thread=True, exclusive=True, group="preview")
    def _build(self, cfg: RunConfig, key: str, parameters: int | None = None, capabilities: Any = None) -> None:
        from engine.preview import build_preview

        try:
            preview = build_preview(cfg, n_samples=N_SAMPLES, limit=self.limit)
            try:
                plan = build_plan(preview, self.limit, parameters, capabilities)
            except Exception:  # the plan is extra: a preview without it rather than none
                plan = None
            message: Message = PreviewBuilt(key, preview, plan)
        except UserError as e:
            message = PreviewFailed(key, list(e.problems))
        except NotARewardModel as e:  # the Parameters step refuses one; its files may have changed since
            message = PreviewFailed(key, [cfg.problem("params.reward_model", str(e), e.fix, cfg.params.reward_model)])
        except Exception as e:  # a bug, not the user's fault: say so on the step rather than crash the wizard
            message = PreviewFailed(key, [Problem("preview", f"internal error: {type(e).__name__}: {e}",
                                                  report_fix(e) + "; the dry run (--dry-run) may say more")])
        if not get_current_worker().is_cancelled:
            self.post_message(message)

    @on(PreviewBuilt)
    def _built(self, message: PreviewBuilt) -> None:
        message.stop()
        if message.key != self._key:
            return  # a preview of a config changed since
        self.building, self.preview, self.plan = False, message.preview, message.plan
        self._refresh()
        self.show_problems([])

    @on(PreviewFailed)
    def _failed(self, message: PreviewFailed) -> None:
        message.stop()
        if message.key != self._key:
            return
        self.building, self.errors = False, message.problems
        self._refresh()
        self.show_problems(self.errors)

    # ------------------------------------------------------------ showing

    @property
    def samples(self) -> list[Sample]:
        return self.preview.samples if self.preview else []

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return bool(self.samples) if action == "sample" else True  # no samples: no keys in the footer

    def action_sample(self, step: int) -> None:
        if self.samples:
            self.sample_index = (self.sample_index + step) % len(self.samples)
            self._show_sample()

    @on(Button.Pressed, "#preview-prev")
    def _previous(self) -> None:
        self.action_sample(-1)

    @on(Button.Pressed, "#preview-next")
    def _next(self) -> None:
        self.action_sample(1)

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")

    def _refresh(self) -> None:
        self.refresh_bindings()
        status = self.query_one("#preview-status", Static)
        online = self.preview is not None and self.preview.cfg.spec.online
        status.update(LOADING if self.building else "could not build the preview:" if self.errors else
                      "the prompts, exactly as the policy and the reward model see them (the answers are sampled "
                      "during training)" if online else "the training data, exactly as the model sees it")
        self.query_one(LoadingIndicator).display = self.building
        stats = self.query_one("#preview-stats", Static)
        stats.display = self.preview is not None
        if self.preview is not None:
            stats.update(preview_text(self.preview, self.limit, self.plan))
        self._show_sample()

    def _show_sample(self) -> None:
        samples = self.samples
        for selector in ("#preview-nav", "#preview-legend"):
            self.query_one(selector).display = bool(samples)
        sample = samples[self.sample_index] if samples else None
        parts = {part.title: part for part in sample.parts} if sample else {}
        first = parts.get("text") or parts.get("prompt")
        self.query_one("#preview-text", MaskedText).show(first)
        self.query_one("#preview-chosen", MaskedText).show(parts.get("chosen"))
        self.query_one("#preview-rejected", MaskedText).show(parts.get("rejected"))
        self.query_one("#preview-pair").display = "chosen" in parts
        gate = self.preview.reward if self.preview is not None else None
        view = reward_view_text(gate, self.sample_index) if sample is not None and gate is not None else Text()
        self.query_one("#preview-reward-view", Static).update(view)
        self.query_one("#preview-reward-view").display = bool(view.plain)
        flag = sample_flag(sample, self.preview.cfg.spec) if sample and self.preview else ""
        self.query_one("#preview-flag", Static).update(flag)
        self.query_one("#preview-flag").display = bool(flag)
        if sample:
            self.query_one("#preview-sample-title", Static).update(
                f"sample {self.sample_index + 1} of {len(samples)} ({sample.location})")
