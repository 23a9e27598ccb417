"""Step 4, Columns: which column of the data holds what the task needs, with the first row rendered the way
the trainer will see it.

The mapping (and the chat template) is checked again whenever the data or the task changed since the step was
last shown: what the user set for this task stays, the rest follows the suggestion for the new task (a chat
template for conversations, none for plain text). Next formats the data's first rows as the trainer will:
rows the engine refuses block it, with the engine's message."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Input, Label, Select, Static

from engine.chat_templates import BUILTIN, TemplateSetup
from engine.config import RunConfig
from engine.data import Table
from engine.errors import Problem, UserError
from engine.formatting import (
    PairExample,
    PromptExample,
    TextExample,
    format_split,
    holds_messages,
    mapping_problems,
    needed_columns,
)
from engine.tasks import PROMPT, ROLES, TEXT, TrainerSpec, spec
from tui.steps.base import Step, step_problems
from tui.steps.rows import FieldRow, compact_input

NONE = "\x00none"  # the Select value of "(none)": never a column name
SAMPLE_ROWS = 3
SAMPLE_CHARS = 600  # per part: the sample is a look, the Preview step shows everything
PLAIN_EOS = "<eos>"  # stands for the model's EOS token when no tokenizer is loaded
# What the step suggests and the user may set: mapping roles, templates, the chat template (-> its config key).
MAPPING_KEYS = {"text_column": "data.column_mapping.text_column",
                "prompt_text_column": "data.column_mapping.prompt_text_column",
                "rejected_text_column": "data.column_mapping.rejected_text_column",
                "prompt_template": "data.prompt_template", "completion_template": "data.completion_template",
                "chat_template": "data.chat_template"}

# Column names that say what a column holds, most telling first (matched case-insensitively).
MESSAGES_NAMES = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue")
CHOSEN_NAMES = ("chosen", "chosen_response", "response_chosen", "accepted", "preferred", "better")
REJECTED_NAMES = ("rejected", "rejected_response", "response_rejected", "dispreferred", "worse")
PROMPT_NAMES = ("prompt", "question", "query", "instruction", "input")
ANSWER_NAMES = ("completion", "response", "answer", "output", "target")
TEXT_NAMES = ("text", "content", "document", "body", "sentence", "story")
INSTRUCTION_NAMES = ("instruction", "instructions")
INSTRUCTION_INPUT_NAMES = ("input", "context")
INSTRUCTION_OUTPUT_NAMES = ("output", "response", "answer", "completion")


@dataclass
class Suggestion:
    """A column mapping guessed from the column names (and the first row), with why."""

    text_column: str | None = None
    prompt_text_column: str | None = None
    rejected_text_column: str | None = None
    prompt_template: str | None = None
    completion_template: str | None = None
    conversations: bool = False  # the texts are message lists: a chat template is needed
    reason: str = ""


def suggest_mapping(columns: list[str], trainer: str, row: dict[str, Any] | None = None) -> Suggestion:
    """The mapping the column names point to for `trainer` (a params.trainer name)."""
    row = row or {}
    what = spec(trainer)

    def find(names: tuple[str, ...], exclude: tuple[str | None, ...] = ()) -> str | None:
        lowered = {c.lower(): c for c in columns if c not in exclude}
        return next((lowered[n] for n in names if n in lowered), None)

    messages = find(MESSAGES_NAMES) or next((c for c in columns if holds_messages(row.get(c))), None)
    if what.online:  # prompts only: the answers are sampled during training
        prompt = find(PROMPT_NAMES) or messages or next((c for c in columns if isinstance(row.get(c), str)), None)
        prompt = prompt or (columns[0] if columns else None)
        lists = prompt is not None and holds_messages(row.get(prompt))
        return Suggestion(prompt_text_column=prompt, conversations=lists,
                          reason=f"prompts{' as conversations' if lists else ''} in {prompt!r}" if prompt else "")
    if what.pairwise:
        chosen, rejected = find(CHOSEN_NAMES), find(REJECTED_NAMES)
        prompt = find(PROMPT_NAMES, exclude=(chosen, rejected))
        lists = chosen is not None and holds_messages(row.get(chosen))
        return Suggestion(text_column=chosen, rejected_text_column=rejected, prompt_text_column=prompt,
                          conversations=lists, reason="chosen/rejected pairs" + (" of conversations" if lists else ""))
    if answers_prompts(what):
        if messages:
            return Suggestion(text_column=messages, conversations=True, reason=f"conversations in {messages!r}")
        instruction, output = find(INSTRUCTION_NAMES), find(INSTRUCTION_OUTPUT_NAMES)
        if instruction and output:
            extra = find(INSTRUCTION_INPUT_NAMES, exclude=(instruction, output))
            prompt = f"### Instruction:\n{{{instruction}}}\n\n"
            prompt += f"### Input:\n{{{extra}}}\n\n" if extra else ""
            return Suggestion(text_column=output, prompt_template=prompt + "### Response:\n",
                              completion_template=f"{{{output}}}", reason="instruction-style columns")
        answer = find(ANSWER_NAMES)
        prompt_col = find(PROMPT_NAMES, exclude=(answer,))
        if answer and prompt_col:
            return Suggestion(text_column=answer, prompt_text_column=prompt_col, reason="prompt/answer columns")
    text = find(TEXT_NAMES) or messages or next((c for c in columns if isinstance(row.get(c), str)), None)
    text = text or (columns[0] if columns else None)
    return Suggestion(text_column=text, conversations=text is not None and holds_messages(row.get(text)),
                      reason="a text column" if text else "")


def answers_prompts(spec: TrainerSpec) -> bool:
    """A text trainer that reads an optional prompt column (SFT): conversations, instruction columns or
    prompt/answer pairs are what it is given."""
    return not spec.pairwise and not spec.online and PROMPT in spec.roles


def reads_prompt_column(spec: TrainerSpec) -> bool:
    """Whether the prompt column alone may hold a conversation (SFT's prompt, GRPO's and RLOO's prompts)."""
    return answers_prompts(spec) or spec.online


def required_roles(spec: TrainerSpec) -> tuple[str, ...]:
    """The roles the user must map here: the prompt may come from a template or a conversation, and a text
    trainer always reads its text column. An online trainer (GRPO, RLOO) reads nothing but its prompts."""
    if spec.online:
        return (PROMPT,)
    return tuple(r for r in spec.required or (TEXT,) if r != PROMPT)


def mapping_fits(cfg: RunConfig, columns: list[str]) -> bool:
    """Whether cfg's mapping already names existing columns for every role the task needs."""
    try:
        needed = needed_columns(cfg)
    except ValueError:  # a template that does not parse
        return False
    # The prompt may come from a template or the conversations, except for an online trainer without a template.
    required = [r for r in cfg.spec.required if r != PROMPT or (cfg.spec.online and not cfg.data.prompt_template)]
    return all(c in columns for c in needed) and all(getattr(cfg.data.column_mapping, r) for r in required)


def apply_suggestion(cfg: RunConfig, s: Suggestion) -> None:
    cm = cfg.data.column_mapping
    cm.text_column = s.text_column or cm.text_column
    cm.prompt_text_column = s.prompt_text_column
    cm.rejected_text_column = s.rejected_text_column
    cfg.data.prompt_template, cfg.data.completion_template = s.prompt_template, s.completion_template


def mapping_values(cfg: RunConfig) -> dict[str, Any]:
    """The values of MAPPING_KEYS in cfg."""
    cm, d = cfg.data.column_mapping, cfg.data
    return {"text_column": cm.text_column, "prompt_text_column": cm.prompt_text_column,
            "rejected_text_column": cm.rejected_text_column, "prompt_template": d.prompt_template,
            "completion_template": d.completion_template, "chat_template": d.chat_template}


def set_mapping_value(cfg: RunConfig, name: str, value: Any) -> None:
    setattr(cfg.data.column_mapping if name.endswith("_column") else cfg.data, name, value)


def plain_single_text(cfg: RunConfig, row: dict[str, Any]) -> bool:
    """Whether the trainer reads one column of plain text: a chat template would refuse every row."""
    cm, d = cfg.data.column_mapping, cfg.data
    if d.prompt_template or cfg.spec.pairwise or cfg.spec.online:  # online: a plain prompt becomes a user turn
        return False
    if answers_prompts(cfg.spec) and cm.prompt_text_column:
        return False
    return isinstance(row.get(cm.text_column), str) and not holds_messages(row.get(cm.text_column))


# ---------------------------------------------------------------- the sample


@dataclass
class RenderKit:
    """What format_split needs to render a row without the real tokenizer, where it can."""

    setup: TemplateSetup
    render: Any  # (messages, add_generation_prompt) -> str, or None for plain text
    eos: str


@functools.cache
def builtin_kit(name: str) -> RenderKit:
    """chatml / zephyr rendered with jinja2 the way transformers does (trim_blocks, lstrip_blocks)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    spec = BUILTIN[name]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    template = env.from_string(spec.template)

    def render(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               eos_token=spec.eos_token, bos_token="")

    return RenderKit(TemplateSetup(name, spec.template), render, spec.eos_token)


def stand_in_kit(name: str) -> RenderKit:
    """Without the model's tokenizer: plain text ended by PLAIN_EOS, or (for `tokenizer`) chatml standing in
    for the model's template, so that checking the rows finds what depends on having a template at all."""
    if name == "none":
        return RenderKit(TemplateSetup("none", None), None, PLAIN_EOS)
    kit = builtin_kit(name if name in BUILTIN else "chatml")
    return RenderKit(TemplateSetup(name, kit.setup.template), kit.render, kit.eos)


def tokenizer_kit(tokenizer: Any, setup: TemplateSetup) -> RenderKit:
    from engine.chat_templates import renderer

    return RenderKit(setup, renderer(tokenizer) if setup.is_chat else None, tokenizer.eos_token or PLAIN_EOS)


def render_sample(cfg: RunConfig, table: Table, kit: RenderKit) -> Text:
    """The first row as the trainer will see it: trained text bold green, masked text dim."""
    first = Table(rows=table.rows[:SAMPLE_ROWS], columns=table.columns, source=table.source,
                  locations=table.locations[:SAMPLE_ROWS])
    try:
        formatted = format_split(first, cfg, kit.setup, kit.render, kit.eos)
    except UserError as e:
        return problems_text(e.problems)
    except (ValueError, KeyError, IndexError) as e:  # a template naming a bad field
        return Text(f"cannot fill the template: {e}", style="red")
    example = formatted.examples[0]
    out = Text(f"{example.location} ({formatted.shape}):\n", style="bold")
    if isinstance(example, PromptExample):  # GRPO, RLOO: the prompt only; the answers are sampled in training
        out.append_text(_visible(example.text, "dim"))
        out.append("\n(the answers are sampled during training and scored by the reward model)", style="italic")
    elif isinstance(example, TextExample):
        out.append_text(_spans_text(example.text, example.spans))
    elif isinstance(example, PairExample):
        for title, value, style in (("prompt", example.prompt, "dim"), ("chosen", example.chosen, "bold green"),
                                    ("rejected", example.rejected, "bold red")):
            if value or title != "prompt":
                out.append(f"{title}: ", style="italic")
                out.append_text(_visible(value, style))
                out.append("\n")
    return out


def problems_text(problems: list[Problem]) -> Text:
    text = Text()
    for p in problems:
        text.append(p.render().replace("\n    fix:", "\n  fix:") + "\n", style="red")
    return text


def _spans_text(text: str, spans: list[tuple[int, int]]) -> Text:
    out, at = Text(), 0
    for start, end in sorted(spans):
        out.append_text(_visible(text[at:start], "dim"))
        out.append_text(_visible(text[start:end], "bold green"))
        at = end
    out.append_text(_visible(text[at:], "dim"))
    return out


def _visible(text: str, style: str) -> Text:
    """Newlines shown as ↵ (templates depend on them); long texts cut."""
    if len(text) > SAMPLE_CHARS:
        text = text[:SAMPLE_CHARS] + "…"
    return Text(text.replace("\n", "↵\n"), style=style)


def escape_template(template: str | None) -> str:
    """Templates hold newlines; a one-line Input shows them as \\n."""
    return (template or "").replace("\n", "\\n")


def unescape_template(text: str) -> str | None:
    return text.replace("\\n", "\n") or None


# ---------------------------------------------------------------- the step


class TokenizerLoaded(Message):
    """The model's tokenizer, set up for a chat template (`key`: model, template), finished loading, or
    failed (`error`)."""

    def __init__(self, key: tuple[str, str], tokenizer: Any = None, setup: TemplateSetup | None = None,
                 error: str | None = None) -> None:
        super().__init__()
        self.key, self.tokenizer, self.setup, self.error = key, tokenizer, setup, error


class ColumnsStep(Step):
    """Map the data's columns to what the task reads. SFT reads a conversation (a message list), or a prompt
    and an answer, or one text column; DPO and ORPO read a prompt, a chosen and a rejected answer; a reward
    model reads chosen and rejected; GRPO and RLOO read prompts only (text, or conversations ending with the
    user's turn): the answers are sampled during training. For instruction-style data, a prompt template such as
    `### Instruction:\\n{instruction}\\n\\n### Response:\\n` builds the prompt from several columns (write \\n
    for a new line). The sample shows the first row as the model will see it: bold green is trained on,
    dim is context only. Suggestions come from the column names; change any of them."""

    title = "Columns"
    keys = ("data.column_mapping.", "data.prompt_template", "data.completion_template")

    DEFAULT_CSS = """
    ColumnsStep #columns-found { height: auto; }
    ColumnsStep #sample-title { height: 1; margin-top: 1; color: $text-muted; }
    ColumnsStep #sample { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._seen: tuple | None = None  # (columns, trainer) the mapping was last checked against
        self._after: dict[str, Any] | None = None  # mapping_values right after that check
        self._user: dict[str, dict[str, Any]] = {}  # trainer -> the MAPPING_KEYS values the user set for it
        # (model, chat template) -> the tokenizer set up for that template, or why it cannot be loaded
        self._tokenizers: dict[tuple[str, str], tuple[Any, TemplateSetup]] = {}
        self._tokenizer_errors: dict[tuple[str, str], str] = {}
        self._loading: tuple[str, str] | None = None  # what a worker is loading
        self._note = ""

    def compose(self) -> ComposeResult:
        yield Static(classes="problems")
        yield Static(id="columns-found", classes="hint")
        for role in ROLES:
            select: Select[str] = Select([], prompt="(choose a column)", compact=True, id=f"col-{_kebab(role)}")
            yield FieldRow(role, select, key=f"data.column_mapping.{role}", id=f"row-{_kebab(role)}")
        for name in ("prompt_template", "completion_template"):
            field = compact_input(placeholder="(not used)", id=f"col-{_kebab(name)}")
            yield FieldRow(name, field, key=f"data.{name}", id=f"row-{_kebab(name)}",
                           tooltip="{column} puts a cell's text here; write \\n for a new line")
        yield Static("Templates build the prompt (and answer) from several columns: {column} is a cell, \\n a "
                     "new line; a prompt template replaces the prompt column.", id="templates-hint", classes="hint",
                     markup=False)
        yield Static("Sample (first row): [b green]trained[/]  [dim]context[/]", id="sample-title")
        yield Static(id="sample")

    # -- the app's state

    @property
    def table(self) -> Table | None:
        return self.wizard.table

    @property
    def columns(self) -> list[str]:
        return list(self.table.columns) if self.table is not None else []

    # -- load / store

    def load(self, cfg: RunConfig) -> None:
        table, columns = self.table, self.columns
        seen = (tuple(columns), cfg.trainer)
        if table is not None and seen != self._seen:
            self._recheck(cfg, table, self._seen)
            self._seen, self._after = seen, mapping_values(cfg)
        self._fill(cfg)
        self.refresh_sample()

    def _recheck(self, cfg: RunConfig, table: Table, previous: tuple | None) -> None:
        """The data or the task changed (or the step is shown for the first time): what no longer fits follows
        the suggestion; what the user set for this task stays."""
        if previous is None:
            if cfg.source is not None:  # the config file's own values are the user's, for its task
                self._user[cfg.trainer] = {name: value for name, value in mapping_values(cfg).items()
                                           if MAPPING_KEYS[name] not in cfg.defaulted}
        elif self._after is not None:  # what was changed since the last check was set for the task of then
            changed = {k: v for k, v in mapping_values(cfg).items() if v != self._after.get(k)}
            if changed:
                self._user.setdefault(previous[1], {}).update(changed)
        user = self._user.get(cfg.trainer, {})
        self._note = ""
        columns = list(table.columns)
        suggestion = suggest_mapping(columns, cfg.trainer, table.rows[0] if table.rows else None)
        if previous is not None and previous[1] != cfg.trainer:
            self._suggest(cfg, suggestion)  # set for another task: this task's suggestion, then the user's own
            for name, value in user.items():
                if not name.endswith("_column") or value is None or value in columns:
                    set_mapping_value(cfg, name, value)
        elif not mapping_fits(cfg, columns):
            self._suggest(cfg, suggestion)
        else:
            self._fill_unset(cfg, suggestion, user)
        self._follow_chat_template(cfg, table, user)

    def _suggest(self, cfg: RunConfig, suggestion: Suggestion) -> None:
        apply_suggestion(cfg, suggestion)
        self._note = f"Suggested from the column names ({suggestion.reason})." if suggestion.reason else ""
        missing = [role for role in required_roles(cfg.spec) if not getattr(cfg.data.column_mapping, role)]
        if missing:
            self._note += f" No column name points to {' or '.join(missing)}: choose it below."

    def _fill_unset(self, cfg: RunConfig, suggestion: Suggestion, user: dict[str, Any]) -> None:
        """The mapping fits, but a role it leaves empty has a column the names point to (a pair file whose
        prompt the config did not map): set it, and say so, unless the user set that role for this task."""
        if not cfg.spec.pairwise or cfg.data.prompt_template:
            return
        cm, taken = cfg.data.column_mapping, set(mapping_values(cfg).values())
        filled = []
        for role in cfg.spec.roles:
            value = getattr(suggestion, role)
            if value and getattr(cm, role) is None and role not in user and value not in taken:
                setattr(cm, role, value)
                filled.append(f"{role}: {value}")
        if filled:
            self._note = f"Suggested from the column names: {', '.join(filled)} (change it below)."

    def _follow_chat_template(self, cfg: RunConfig, table: Table, user: dict[str, Any]) -> None:
        """Conversations need a chat template; one plain text column must have none. The user's own choice
        for this task stays (a failing one then blocks Next, with the engine's message)."""
        if "chat_template" in user:
            cfg.data.chat_template = user["chat_template"]
            return
        row = table.rows[0] if table.rows else {}
        cm = cfg.data.column_mapping
        conversations = (TEXT in cfg.spec.roles and holds_messages(row.get(cm.text_column))) or (
            reads_prompt_column(cfg.spec) and holds_messages(row.get(cm.prompt_text_column)))
        if conversations and cfg.data.chat_template == "none":
            # Message lists need a chat template to become text; Parameters is where it can be changed.
            info = self.wizard.model_info
            cfg.data.chat_template = "tokenizer" if getattr(info, "has_chat_template", None) else "chatml"
            self._note += (f" The data holds conversations, so the chat template is now "
                           f"{cfg.data.chat_template} (change it under Parameters).")
        elif cfg.data.chat_template != "none" and plain_single_text(cfg, row):
            self._note += (f" {cm.text_column!r} holds plain text, so the chat template is now none (it was "
                           f"{cfg.data.chat_template}; change it under Parameters).")
            cfg.data.chat_template = "none"
        self._note = self._note.strip()

    def _fill(self, cfg: RunConfig) -> None:
        columns, roles = self.columns, cfg.spec.roles
        found = ", ".join(columns) if columns else "none yet: choose the data first (step 3)"
        self.query_one("#columns-found", Static).update(f"Columns in the data: {found}\n{self._note}".rstrip())
        with self.prevent(Select.Changed, Input.Changed):  # the widgets take cfg's values: nothing to store
            for role in ROLES:
                self._fill_role(cfg, role, role in roles)
            self._fill_templates(cfg)

    def _fill_role(self, cfg: RunConfig, role: str, used: bool) -> None:
        columns = self.columns
        row = self.query_one(f"#row-{_kebab(role)}", FieldRow)
        row.display = used
        row.query_one(".field-label", Label).update(role_label(role, cfg.spec))
        select = self.query_one(f"#col-{_kebab(role)}", Select)
        optional = role == PROMPT and not cfg.spec.online  # online trainers read nothing but the prompts
        select.set_options(([("(none)", NONE)] if optional else []) + [(c, c) for c in columns])
        value = getattr(cfg.data.column_mapping, role)
        if value in columns:
            select.value = value
        elif optional and value is None and columns:
            select.value = NONE

    def _fill_templates(self, cfg: RunConfig) -> None:
        for name in ("prompt_template", "completion_template"):
            self.query_one(f"#col-{_kebab(name)}", Input).value = escape_template(getattr(cfg.data, name))
        self._show_templates(cfg)

    def _show_templates(self, cfg: RunConfig) -> None:
        """For several columns that are not one conversation (or when a template is set already)."""
        first = self.table.rows[0] if self.table is not None and self.table.rows else {}
        cm = cfg.data.column_mapping
        conversations = holds_messages(first.get(cm.prompt_text_column if cfg.spec.online else cm.text_column))
        multi = (len(self.columns) > 1 and not conversations) or bool(cfg.data.prompt_template)
        for name in ("prompt_template", "completion_template"):
            self.query_one(f"#row-{_kebab(name)}", FieldRow).display = multi and name in cfg.spec.templates
        self.query_one("#templates-hint", Static).display = multi and "prompt_template" in cfg.spec.templates

    def store(self, cfg: RunConfig) -> None:
        cm = cfg.data.column_mapping
        roles = cfg.spec.roles
        for role in ROLES:
            if role not in roles:
                if role != "text_column":
                    setattr(cm, role, None)  # not read by this task: left out of the saved config
                continue
            value = self.query_one(f"#col-{_kebab(role)}", Select).value
            if value == NONE:
                setattr(cm, role, None)
            elif isinstance(value, str):
                setattr(cm, role, value)
        for name in ("prompt_template", "completion_template"):
            text = self.query_one(f"#col-{_kebab(name)}", Input).value
            setattr(cfg.data, name, unescape_template(text) if name in cfg.spec.templates else None)

    # -- checks

    def problems(self, cfg: RunConfig) -> list[Problem]:
        found = step_problems(cfg, self.keys, extra=self.column_problems(cfg))
        return found or self.format_problems(cfg)

    def format_problems(self, cfg: RunConfig) -> list[Problem]:
        """The engine's problems formatting the first rows as the trainer will (every row failing, or rows it
        refuses); while the model's tokenizer loads, a stand-in with the same kind of template checks them."""
        table = self.table
        if table is None or not table.rows:
            return []
        kit = self._kit(cfg)
        if isinstance(kit, Text):
            kit = stand_in_kit(cfg.data.chat_template)
        try:
            format_split(table, cfg, kit.setup, kit.render, kit.eos)
        except UserError as e:
            return list(e.problems)
        except (ValueError, KeyError, IndexError):  # a template naming a bad field: the engine's rules say so
            return []
        return []

    def column_problems(self, cfg: RunConfig) -> list[Problem]:
        """Mapped columns (and template fields) that the data does not have."""
        return [] if self.table is None else mapping_problems(cfg, self.columns)

    def show_problems(self, problems: list[Problem]) -> None:
        """Each problem next to its field; the rest at the top."""
        rows = {row.key: row for row in self.query(FieldRow) if row.display}
        for row in self.query(FieldRow):
            row.show([p for p in problems if p.key == row.key and row.key in rows])
        super().show_problems([p for p in problems if p.key not in rows])

    # -- the sample

    def refresh_sample(self) -> None:
        sample = self.query_one("#sample", Static)
        table, cfg = self.table, self.wizard.cfg
        if table is None or not table.rows:
            sample.update("No rows to show yet.")
            return
        kit = self._kit(cfg)
        if isinstance(kit, Text):
            sample.update(kit)
            return
        sample.update(render_sample(cfg, table, kit))

    def _kit(self, cfg: RunConfig) -> RenderKit | Text:
        """How to render the sample: chatml and zephyr without the tokenizer (their EOS is theirs); the model's
        own template, and plain text (ended by the model's EOS), with the model's tokenizer, loaded in a
        worker. Plain text is shown at once with a stand-in EOS while the tokenizer loads."""
        name = cfg.data.chat_template
        if name in BUILTIN:
            return builtin_kit(name)
        if name != "tokenizer":
            name = "none"
        model = cfg.base_model
        key = (model, name)
        if key in self._tokenizers:
            return tokenizer_kit(*self._tokenizers[key])
        plain = stand_in_kit("none")
        if key in self._tokenizer_errors:
            if name == "none":
                return plain
            return Text(f"Cannot show the sample with the model's chat template: {self._tokenizer_errors[key]}",
                        style="red")
        if not model:
            return plain if name == "none" else Text("Choose a model (step 1) to render its chat template.",
                                                     style="yellow")
        if self._loading != key:
            self._loading = key
            self._load_tokenizer(copy.deepcopy(cfg), key)
        return plain if name == "none" else Text("Loading the model's tokenizer for its chat template…",
                                                 style="italic")

    @work(thread=True, group="columns-tokenizer")  # not exclusive: each result is kept, by its key
    def _load_tokenizer(self, cfg: RunConfig, key: tuple[str, str]) -> None:
        from engine.pipeline import prepare_tokenizer

        cfg.data.chat_template = key[1]
        try:
            tokenizer, setup = prepare_tokenizer(cfg)  # set up as the trainer sets it up: its EOS is the trainer's
        except UserError as e:
            self.post_message(TokenizerLoaded(key, error=e.problems[0].message if e.problems else str(e)))
        except Exception as e:  # a broken tokenizer file: say so, the wizard goes on
            self.post_message(TokenizerLoaded(key, error=f"{type(e).__name__}: {e}"))
        else:
            self.post_message(TokenizerLoaded(key, tokenizer, setup))

    def on_tokenizer_loaded(self, event: TokenizerLoaded) -> None:
        if self._loading == event.key:
            self._loading = None
        if event.error is not None:
            self._tokenizer_errors[event.key] = event.error
        else:
            assert event.setup is not None
            self._tokenizers[event.key] = (event.tokenizer, event.setup)
        self.refresh_sample()

    @on(Select.Changed)
    @on(Input.Changed)
    def _changed(self, event: Message) -> None:
        if not self.changed_by_user(event):
            return
        self.store(self.wizard.cfg)
        self._show_templates(self.wizard.cfg)
        self.refresh_sample()


def role_label(role: str, spec: TrainerSpec) -> str:
    if role == TEXT:
        what = "chosen" if spec.pairwise else "messages/text" if answers_prompts(spec) else "text"
    else:
        what = {"prompt_text_column": "prompt", "rejected_text_column": "rejected"}[role]
    return f"{what} ({role})"


def _kebab(name: str) -> str:
    return name.replace("_", "-")

