"""Step 5, Parameters: every training parameter, built from engine.params' table (defaults, help, choices),
checked as it is typed with the engine's own rules, with a memory estimate that follows the values. GRPO and
RLOO's reward model has a row of its own (tui.steps.reward): the runs to pick from, and the gate's findings."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Collapsible, Input, Select, Static

from engine.config import (
    CHAT_TEMPLATES,
    LOGGERS,
    DataConfig,
    RunConfig,
    coerce,
    distributed_problems,
    machine_problems,
    static_problems,
)
from engine.errors import Problem
from engine.memory import estimate_memory
from engine.params import PARAM_FIELDS, param_default
from engine.trackers import TRACKERS, installed_trackers
from engine.trackers import environment_problems as tracker_problems
from tui.format import human_bytes
from tui.messages import CapabilitiesRead
from tui.steps.base import Step, step_problems
from tui.steps.reward import KEY as REWARD_KEY
from tui.steps.reward import RewardGateChanged, RewardModelRow
from tui.steps.rows import FieldRow, compact_input

# Params only some trainers read (engine.tasks) are shown only where the task reads them. The Task step owns
# `trainer`.
LORA_ONLY = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "merge_adapter")
NEVER = ("trainer", "valid_fraction")  # set on other steps: the task (trainer), the data (its hold-out share)
# The fields outside `params:` that belong here; their help, as the params table has none for them.
OTHER_HELP = {
    "data.chat_template": "Turns message lists into text: chatml, zephyr, tokenizer (the model's own) or none.",
    "project_name": "The output directory of the run (checkpoints, the adapter or model, events, logs).",
}


def log_help(installed: list[str]) -> str:
    """`log`'s help: the trackers, which are installed here (the field offers those), how to add the others."""
    missing = [TRACKERS[n] for n in TRACKERS if n not in installed]
    add = "; ".join(f"{t.name}: {t.install.split(' (')[0]}" for t in missing)
    return ("Where the training metrics are logged besides the run's own events: tensorboard (RUN_DIR/runs), "
            f"wandb (W&B), mlflow, trackio. Installed here: {', '.join(installed) or 'none'}."
            + (f" To add one, {add}, then start the wizard again." if missing else ""))


@dataclass(frozen=True)
class ParamField:
    """One editable config value: its dotted key and what the engine's tables say about it."""

    key: str  # "params.lr", "data.chat_template", "project_name"
    annotation: str  # the dataclass annotation coerce() reads: "float", "str | None", ...
    default: Any
    help: str
    choices: tuple | None
    group: str  # "basic" or "advanced"

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    @property
    def widget_id(self) -> str:
        return "param-" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        return "None" in self.annotation


def param_fields() -> list[ParamField]:
    """The chat template, project name and tracker, then every params field: basic ones first, in the table's
    order, except the reward model (GRPO, RLOO), which comes first: it is what those trainers learn from."""
    chat = next(f for f in fields(DataConfig) if f.name == "chat_template")
    project = next(f for f in fields(RunConfig) if f.name == "project_name")
    log = next(f for f in fields(RunConfig) if f.name == "log")
    out = [ParamField("data.chat_template", str(chat.type), chat.default, OTHER_HELP["data.chat_template"],
                      CHAT_TEMPLATES, "basic"),
           ParamField("project_name", str(project.type), project.default, OTHER_HELP["project_name"], None, "basic"),
           ParamField("log", str(log.type), log.default, log_help(installed_trackers()), LOGGERS, "basic")]
    params = [ParamField(f"params.{name}", str(f.type), param_default(name), f.metadata["help"],
                         f.metadata["choices"], f.metadata["group"]) for name, f in PARAM_FIELDS.items()]
    params.sort(key=lambda f: f.key != REWARD_KEY)  # stable: the rest keep the table's order
    return out + [f for f in params if f.group == "basic"] + [f for f in params if f.group != "basic"]


def field_visible(field: ParamField, cfg: RunConfig) -> bool:
    """Whether the task (and LoRA) use the field at all."""
    name, spec = field.name, cfg.spec
    if not field.key.startswith("params."):
        return True
    if name in NEVER:
        return False
    if name == "unsloth":
        return bool(cfg.params.unsloth)  # unsupported: shown only to be switched off
    if not spec.reads(name):
        return False
    if name == "model_ref":
        return not cfg.params.peft  # with LoRA the base itself is the reference
    if name in LORA_ONLY:
        return bool(cfg.params.peft)
    if name in ("deepspeed_stage", "deepspeed_config"):
        return cfg.params.distributed_backend == "deepspeed"
    return True


def get_value(cfg: RunConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def set_value(cfg: RunConfig, key: str, value: Any) -> None:
    *path, last = key.split(".")
    obj: Any = cfg
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def value_text(value: Any) -> str:
    """How a value reads in a field: None is empty, booleans are on/off."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def build_widget(field: ParamField) -> Widget:
    if field.annotation.replace(" | None", "") == "bool":
        return Checkbox("off", compact=True, id=field.widget_id)
    if field.choices:
        return Select(select_options(field), allow_blank=False, compact=True, id=field.widget_id)
    return compact_input(placeholder=f"default: {default_text(field)}", id=field.widget_id)


def select_options(field: ParamField) -> list[tuple[str, str]]:
    if field.key == "log":  # the trackers installed here; one the config names that is not stays, refused
        return [(c, c) for c in ("none", *installed_trackers())]
    none = [("none", "none")] if field.optional and "none" not in (field.choices or ()) else []
    return none + [(str(c), str(c)) for c in field.choices or ()]


def default_text(field: ParamField) -> str:
    return value_text(field.default) or ("none" if field.choices else "empty")


def field_label(field: ParamField) -> Text:
    return Text.assemble(field.name, (f" {default_text(field)}", "dim"))


# ---------------------------------------------------------------- the GPU probe


class GpuProbed(Message):
    """engine.capabilities.probe() finished (in a worker): what the machine runs, the GPU's memory, or an error."""

    def __init__(self, capabilities: Any, gpu_total: int | None, error: str | None = None) -> None:
        super().__init__()
        self.capabilities, self.gpu_total, self.error = capabilities, gpu_total, error


def cuda_total_memory() -> int | None:
    """The first GPU's memory in bytes (torch is already imported by the probe)."""
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None


def probe_known() -> bool:
    """Whether the real probe has run in this process, so machine_problems() answers at once."""
    from engine.capabilities import probe

    cache_info = getattr(probe, "cache_info", None)  # functools.cache; a stand-in in tests answers at once
    return cache_info is None or cache_info().currsize > 0


# ---------------------------------------------------------------- the step


class ParamsStep(Step):
    """Training parameters. The basic ones come first: chat template, output directory, the experiment tracker
    (log: the trackers installed here; its help says how to add the others), block_size (tokens per sample),
    epochs, batch size, learning rate, mixed precision, LoRA (peft) and quantization (int4 = QLoRA). Advanced
    ones are folded away below. Each field shows its default; the line at the bottom explains the focused one.
    Values are checked as you type with the same rules as `--yes`. The memory panel estimates what training
    needs (weights, gradients, optimizer, activations) against this machine's GPU: an estimate, to tell "fits
    easily" from "will not fit". GRPO and RLOO learn from a reward model: pick an llm-reward run found under
    ./runs, or type a run directory, model directory or hub id; the line under it says what it is and how it
    scores its own run's held-out pairs (a weak one is flagged)."""

    title = "Parameters"
    keys = ("params.", "data.chat_template", "project_name", "log")

    DEFAULT_CSS = """
    ParamsStep Collapsible { padding-left: 0; padding-bottom: 0; border-top: none; }
    ParamsStep Collapsible Contents { padding: 0; }
    ParamsStep #params-fields { height: auto; }
    ParamsStep #params-footer { dock: bottom; height: auto; }
    ParamsStep #param-help { height: auto; max-height: 2; color: $text-muted; }
    ParamsStep #memory { height: auto; background: $boost; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.fields = param_fields()
        self.by_widget = {f.widget_id: f for f in self.fields}
        self.by_key = {f.key: f for f in self.fields}
        self.bad: dict[str, Problem] = {}  # key -> why the text typed is not a value (it is not assigned)
        self._probing = False
        self._probe_error: str | None = None
        self._building = False
        self._advanced_building = False
        self.ready = False  # the basic fields are built and filled from the config
        self.advanced_ready = False  # the advanced fields are built and filled (tests wait on it)
        self.built: set[str] = set()  # the keys whose fields exist
        self._shown_problems: list[Problem] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="params-footer"):  # docked: stays in view while the fields scroll
            yield Static(id="param-help")
            yield Static(id="memory")
        yield Static(classes="problems")
        # Built when the step is first shown, the advanced fields when first unfolded: composing all ~250
        # widgets up front doubled the wizard's start-up time.
        yield Vertical(id="params-fields")

    async def _build(self) -> None:
        basic = [self._row(f) for f in self.fields if f.group == "basic"]
        count = sum(f.group != "basic" for f in self.fields)
        advanced = Collapsible(title=f"Advanced ({count} more)", collapsed=True, id="advanced")
        await self.query_one("#params-fields", Vertical).mount_all([*basic, advanced])
        self.built.update(f.key for f in self.fields if f.group == "basic")
        self.ready = True
        self._fill(self.wizard.cfg, self.fields)
        if self.is_current:
            self.focus_first()  # the app focused before the fields existed

    @on(Collapsible.Expanded, "#advanced")
    async def _build_advanced(self) -> None:
        if self._advanced_building:
            return
        self._advanced_building = True
        fields = [f for f in self.fields if f.group != "basic"]
        await self.query_one("#advanced", Collapsible).query_one(Collapsible.Contents).mount_all(
            [self._row(f) for f in fields])
        self.built.update(f.key for f in fields)
        self._fill(self.wizard.cfg, fields)
        if self._shown_problems:
            self.show_problems(self._shown_problems)  # those about advanced fields go next to them now
        self.advanced_ready = True

    def _row(self, field: ParamField) -> FieldRow:
        tooltip = f"{field.key}: {field.help} (default: {default_text(field)})"
        kind = RewardModelRow if field.key == REWARD_KEY else FieldRow
        row = kind(field_label(field), build_widget(field), key=field.key, tooltip=tooltip,
                   id=f"row-{field.widget_id}")
        row.display = field_visible(field, self.wizard.cfg)  # right from the start, not one refresh later
        return row

    # -- load / store

    def load(self, cfg: RunConfig) -> None:
        self._start_probe()
        self.update_memory()
        if not self._building:
            self._building = True
            self.call_later(self._build)
        elif self.ready:
            row = self._reward_row(cfg)
            if row is not None:
                row.scan()  # a reward run may have finished since the step was shown
            self._fill(cfg, self.fields)

    def _fill(self, cfg: RunConfig, fields: list[ParamField]) -> None:
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):  # the values are cfg's already
            for field in fields:
                if field.key in self.built and field.key not in self.bad:  # typed text that is no value stays
                    self._set_widget(field, get_value(cfg, field.key))
        self._refresh()

    def _set_widget(self, field: ParamField, value: Any) -> None:
        widget = self.query_one(f"#{field.widget_id}")
        if isinstance(widget, Checkbox):
            widget.value = bool(value)
            widget.label = value_text(bool(value))
        elif isinstance(widget, Select):
            text = "none" if value is None else str(value)
            options = select_options(field)
            if all(text != v for _, v in options):  # a value the table does not list: kept, the engine says why
                widget.set_options([*options, (text, text)])
            widget.value = text
        elif isinstance(widget, Input):
            widget.value = value_text(value)

    def store(self, cfg: RunConfig) -> None:
        if not self.ready:
            return  # left before the fields were built: nothing was entered
        for field in self.fields:
            if field.key in self.built and field_visible(field, cfg):
                self._assign(cfg, field, self._widget_value(field))

    def _widget_value(self, field: ParamField) -> Any:
        widget = self.query_one(f"#{field.widget_id}")
        if isinstance(widget, (Checkbox, Input)):
            return widget.value
        value = widget.value if isinstance(widget, Select) else None
        return value if isinstance(value, str) else None

    def _assign(self, cfg: RunConfig, field: ParamField, raw: Any) -> None:
        """The engine's conversion, then the value; a text that is no value is kept aside as a problem."""
        value, problem = coerce(raw, field.annotation, field.key, field.choices)
        if problem:
            self.bad[field.key] = cfg.problem(field.key, problem[0], problem[1], raw)
            return
        self.bad.pop(field.key, None)
        set_value(cfg, field.key, value)

    # -- checks

    def problems(self, cfg: RunConfig) -> list[Problem]:
        # A text that is no value stays unassigned: its own problem stands for the key (fields in use only).
        bad = [p for key, p in self.bad.items() if field_visible(self._field(key), cfg)]
        found = step_problems(cfg, self.keys, extra=bad)
        found += [p for p in tracker_problems(cfg) if p not in found]
        if self._machine_known():
            found += [p for p in machine_problems(cfg) + distributed_problems(cfg) if p not in found]
        row = self._reward_row(cfg)
        if row is not None and REWARD_KEY not in self.bad:
            found += [p for p in row.problems(cfg) if p not in found]
        return found

    def _reward_row(self, cfg: RunConfig) -> RewardModelRow | None:
        """The reward model's row, where the task reads one (GRPO, RLOO) and the row is built."""
        if REWARD_KEY not in self.built or not field_visible(self._field(REWARD_KEY), cfg):
            return None
        return self.query_one(RewardModelRow)

    def _machine_known(self) -> bool:
        return self.wizard.capabilities is not None and probe_known()

    def show_problems(self, problems: list[Problem]) -> None:
        """Each problem next to its field; the rest (hidden fields, other keys) at the top."""
        self._shown_problems = problems
        if not self.ready:
            super().show_problems(problems)
            return
        cfg = self.wizard.cfg
        rows = {row.key: row for row in self.query(FieldRow)}
        here = {key for key in rows if field_visible(self._field(key), cfg)}
        for key, row in rows.items():
            row.show([p for p in problems if p.key == key] if key in here else [])
        rest = [p for p in problems if p.key not in here]
        super().show_problems(rest)
        folded = [p for p in problems if p.key in self.by_key and self._field(p.key).group != "basic"
                  and field_visible(self._field(p.key), cfg)]
        if folded:
            self.query_one("#advanced", Collapsible).collapsed = False  # builds the rows, then shows these there
        first = next((rows[p.key] for p in problems if p.key in here), None)
        if first is not None:
            self.call_after_refresh(self.scroll_to_widget, first)
        elif rest:
            self.scroll_home(animate=False)

    def _field(self, key: str) -> ParamField:
        return self.by_key[key]

    # -- changes

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _changed(self, event: Input.Changed | Select.Changed | Checkbox.Changed) -> None:
        field = self.by_widget.get(event.control.id or "")
        if field is None or not self.changed_by_user(event):
            return
        if isinstance(event.control, Checkbox):
            event.control.label = value_text(event.control.value)
        self._assign(self.wizard.cfg, field, self._widget_value(field))
        self._refresh()

    def _refresh(self) -> None:
        """After any change: which fields apply, the engine's words next to each, the memory estimate."""
        cfg = self.wizard.cfg
        for row in self.query(FieldRow):
            if row.display != (visible := field_visible(self._field(row.key), cfg)):
                row.display = visible
        self._validate(cfg)
        self.update_memory()

    def _validate(self, cfg: RunConfig) -> None:
        problems = static_problems(cfg) + tracker_problems(cfg)  # static_problems also refreshes cfg.warnings
        warnings = list(cfg.warnings)
        if self._machine_known():
            problems += machine_problems(cfg) + distributed_problems(cfg)
        reward = self._reward_row(cfg)
        if reward is not None:
            reward.follow(cfg)  # inspects the model(s) named a moment after typing stops, then says so
            problems += reward.refusals(cfg)
        for row in self.query(FieldRow):
            if row.key in self.bad:
                row.show([self.bad[row.key]])
            else:
                row.show([p for p in problems if p.key == row.key], [w for w in warnings if w.key == row.key])

    @on(RewardGateChanged)
    def _gate_changed(self, message: RewardGateChanged) -> None:
        message.stop()
        if self.ready:
            self._validate(self.wizard.cfg)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self._show_help()

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        self._show_help()

    def _show_help(self) -> None:
        """The help of the field that has the focus now. Not the one the event names: focus events reach
        the step by different paths (a field sits deeper in the fold than its title), so under load they
        arrive out of order, and the line explained a field the focus had already left."""
        focused = self.screen.focused
        help_line = self.query_one("#param-help", Static)
        if focused is None or self not in focused.ancestors:
            help_line.update("")  # the focus is on Back / Next, or a dialog: no field to explain
            return
        row = next((a for a in focused.ancestors_with_self if isinstance(a, FieldRow)), None)
        if row is None:
            fold = any(isinstance(a, Collapsible) for a in focused.ancestors_with_self)
            help_line.update(Text("Enter shows or hides the advanced parameters.", style="italic") if fold else "")
            return
        field = self._field(row.key)
        help_line.update(Text.assemble((field.key, "bold"), f": {field.help} Default: {default_text(field)}."))

    # -- memory

    def update_memory(self) -> None:
        panel = self.query_one("#memory", Static)
        info, caps, gpu_total = self.wizard.model_info, self.wizard.capabilities, self.wizard.gpu_total
        try:
            topo = self._topology()
            est = estimate_memory(info, self.wizard.cfg, gpu_total=gpu_total, device=getattr(caps, "device", "cpu"),
                                  topology=topo)
        except ValueError as e:
            panel.update(Text(f"Memory: no estimate ({e}).", style="italic"))
            return
        parts = " · ".join(f"{label} {human_bytes(size)}" for label, size in est.parts)
        text = Text("Memory (estimate): ", style="bold")
        if caps is None:
            text.append(self._probe_error or f"~{human_bytes(est.total)}; checking the GPU…", style="italic")
        else:
            style = {True: "green", False: "bold red", None: ""}[est.fits]
            text.append(est.verdict, style="yellow" if est.verdict.startswith("tight") else style)
        text.append(f"\n{parts}")
        if caps is not None:
            gpus = f"{caps.gpu_count} GPU{'s' if caps.gpu_count != 1 else ''} ({caps.device_name}): " if (
                caps.device == "cuda") else ""
            text.append(f"\n{gpus}{topo.describe() if topo else 'processes unknown'}")
        panel.update(text)
        panel.tooltip = "\n".join(["An estimate from the model's shape and these values.", *est.notes])

    def _topology(self) -> Any:
        """The processes the run would start here (engine.distributed), once the GPUs are known."""
        caps = self.wizard.capabilities
        if caps is None:
            return None
        from engine.distributed import cuda_gpus, topology

        try:
            return topology(self.wizard.cfg.params, gpus=cuda_gpus(caps))
        except ValueError:
            return None

    def _start_probe(self) -> None:
        if self.wizard.capabilities is not None or self._probing or self._probe_error:
            return
        self._probing = True
        self._probe()

    @work(thread=True, exclusive=True, group="gpu-probe")
    def _probe(self) -> None:
        try:
            from engine.capabilities import probe

            caps = probe()
            total = cuda_total_memory() if caps.device == "cuda" else None
        except Exception as e:  # a broken torch install: the estimate still shows, without a verdict
            self.post_message(GpuProbed(None, None, f"could not check the GPU: {type(e).__name__}: {e}"))
        else:
            self.post_message(GpuProbed(caps, total))

    def on_gpu_probed(self, message: GpuProbed) -> None:
        if message.error:
            self._probe_error = message.error
            self._probed()
        else:  # the app keeps what the machine runs; shown here once the app has it
            self.tell_app(CapabilitiesRead(message.capabilities, message.gpu_total), then=self._probed)

    def _probed(self) -> None:
        self._probing = False
        self.update_memory()
        if self.is_current:
            self._validate(self.wizard.cfg)
