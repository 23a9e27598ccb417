"""Step 4, Columns: which column of the data holds what the task needs, with the first row rendered the way
the trainer will see it."""

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
from engine.config import REQUIRED_COLUMNS, RunConfig, template_fields
from engine.data import Table
from engine.errors import Problem, UserError
from engine.formatting import PairExample, TextExample, format_split, needed_columns
from tui.steps.base import Step, step_problems
from tui.steps.rows import FieldRow, compact_input

NONE = "\x00none"  # the Select value of "(none)": never a column name
PREFERENCE = ("dpo", "orpo", "reward")
ALL_ROLES = ("prompt_text_column", "text_column", "rejected_text_column")  # the order they are shown in
ROLES: dict[str, tuple[str, ...]] = {  # trainer -> the roles it reads
    "sft": ("text_column", "prompt_text_column"),
    "default": ("text_column",),
    "reward": ("text_column", "rejected_text_column", "prompt_text_column"),
    "dpo": ALL_ROLES,
    "orpo": ALL_ROLES,
}
# template -> the trainers that read it (reward scores whole texts: the engine refuses a prompt template there)
TEMPLATES = {"prompt_template": ("sft", "dpo", "orpo"), "completion_template": ("sft",)}
SAMPLE_ROWS = 3
SAMPLE_CHARS = 600  # per part: the sample is a look, the Preview step shows everything
PLAIN_EOS = "<eos>"  # stands for the model's EOS token when no tokenizer is loaded

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
    """The mapping the column names point to for `trainer` (sft, default, reward, dpo, orpo)."""
    row = row or {}

    def find(names: tuple[str, ...], exclude: tuple[str | None, ...] = ()) -> str | None:
        lowered = {c.lower(): c for c in columns if c not in exclude}
        return next((lowered[n] for n in names if n in lowered), None)

    messages = find(MESSAGES_NAMES) or next((c for c in columns if holds_messages(row.get(c))), None)
    if trainer in PREFERENCE:
        chosen, rejected = find(CHOSEN_NAMES), find(REJECTED_NAMES)
        prompt = find(PROMPT_NAMES, exclude=(chosen, rejected))
        lists = chosen is not None and holds_messages(row.get(chosen))
        return Suggestion(text_column=chosen, rejected_text_column=rejected, prompt_text_column=prompt,
                          conversations=lists, reason="chosen/rejected pairs" + (" of conversations" if lists else ""))
    if trainer == "sft":
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


def holds_messages(value: Any) -> bool:
    """A message list, or a string holding one (CSV cells)."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(m, dict) for m in value)
    if isinstance(value, str):
        s = value.strip()
        return s.startswith("[") and s.endswith("]") and ("role" in s[:200] or "from" in s[:200])
    return False


def mapping_fits(cfg: RunConfig, columns: list[str]) -> bool:
    """Whether cfg's mapping already names existing columns for every role the task needs."""
    try:
        needed = needed_columns(cfg)
    except ValueError:  # a template that does not parse
        return False
    required = [r for r in REQUIRED_COLUMNS.get(cfg.trainer, ()) if r != "prompt_text_column"]
    return all(c in columns for c in needed) and all(getattr(cfg.data.column_mapping, r) for r in required)


def apply_suggestion(cfg: RunConfig, s: Suggestion) -> None:
    cm = cfg.data.column_mapping
    cm.text_column = s.text_column or cm.text_column
    cm.prompt_text_column = s.prompt_text_column
    cm.rejected_text_column = s.rejected_text_column
    cfg.data.prompt_template, cfg.data.completion_template = s.prompt_template, s.completion_template


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
    if isinstance(example, TextExample):
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
    """The model's tokenizer (for its chat template) finished loading, or failed (`error`)."""

    def __init__(self, model: str, tokenizer: Any = None, setup: TemplateSetup | None = None,
                 error: str | None = None) -> None:
        super().__init__()
        self.model, self.tokenizer, self.setup, self.error = model, tokenizer, setup, error


class ColumnsStep(Step):
    """Map the data's columns to what the task reads. SFT reads a conversation (a message list), or a prompt
    and an answer, or one text column; DPO and ORPO read a prompt, a chosen and a rejected answer; a reward
    model reads chosen and rejected. For instruction-style data, a prompt template such as
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
        self._tokenizer: tuple[str, Any, TemplateSetup] | None = None  # (model, tokenizer, setup)
        self._tokenizer_error: tuple[str, str] | None = None  # (model, message)
        self._loading: str | None = None  # the model whose tokenizer a worker is loading
        self._note = ""

    def compose(self) -> ComposeResult:
        yield Static(classes="problems")
        yield Static(id="columns-found", classes="hint")
        for role in ALL_ROLES:
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
        return getattr(self.app, "table", None)

    @property
    def columns(self) -> list[str]:
        return list(self.table.columns) if self.table is not None else []

    # -- load / store

    def load(self, cfg: RunConfig) -> None:
        table, columns = self.table, self.columns
        seen = (tuple(columns), cfg.trainer)
        if table is not None and seen != self._seen:
            self._seen = seen
            self._note = ""
            if not mapping_fits(cfg, columns):
                self._suggest(cfg, table)
        self._fill(cfg)
        self.refresh_sample()

    def _suggest(self, cfg: RunConfig, table: Table) -> None:
        suggestion = suggest_mapping(table.columns, cfg.trainer, table.rows[0] if table.rows else None)
        apply_suggestion(cfg, suggestion)
        self._note = f"Suggested from the column names ({suggestion.reason})." if suggestion.reason else ""
        if suggestion.conversations and cfg.data.chat_template == "none":
            # Message lists need a chat template to become text; Parameters is where it can be changed.
            info = getattr(self.app, "model_info", None)
            cfg.data.chat_template = "tokenizer" if getattr(info, "has_chat_template", None) else "chatml"
            self._note += (f" The data holds conversations, so the chat template is now "
                           f"{cfg.data.chat_template} (change it under Parameters).")

    def _fill(self, cfg: RunConfig) -> None:
        columns, trainer = self.columns, cfg.trainer
        roles = ROLES.get(trainer, ("text_column",))
        found = ", ".join(columns) if columns else "none yet: choose the data first (step 3)"
        self.query_one("#columns-found", Static).update(f"Columns in the data: {found}\n{self._note}".rstrip())
        with self.prevent(Select.Changed, Input.Changed):  # the widgets take cfg's values: nothing to store
            for role in ALL_ROLES:
                self._fill_role(cfg, role, role in roles)
            self._fill_templates(cfg)

    def _fill_role(self, cfg: RunConfig, role: str, used: bool) -> None:
        columns = self.columns
        row = self.query_one(f"#row-{_kebab(role)}", FieldRow)
        row.display = used
        row.query_one(".field-label", Label).update(role_label(role, cfg.trainer))
        select = self.query_one(f"#col-{_kebab(role)}", Select)
        optional = role == "prompt_text_column"
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
        conversations = holds_messages(first.get(cfg.data.column_mapping.text_column))
        multi = (len(self.columns) > 1 and not conversations) or bool(cfg.data.prompt_template)
        for name in ("prompt_template", "completion_template"):
            self.query_one(f"#row-{_kebab(name)}", FieldRow).display = multi and cfg.trainer in TEMPLATES[name]
        self.query_one("#templates-hint", Static).display = multi and cfg.trainer in TEMPLATES["prompt_template"]

    def store(self, cfg: RunConfig) -> None:
        cm = cfg.data.column_mapping
        roles = ROLES.get(cfg.trainer, ("text_column",))
        for role in ALL_ROLES:
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
            setattr(cfg.data, name, unescape_template(text) if cfg.trainer in TEMPLATES[name] else None)

    # -- checks

    def problems(self, cfg: RunConfig) -> list[Problem]:
        return step_problems(cfg, self.keys, extra=self.column_problems(cfg))

    def column_problems(self, cfg: RunConfig) -> list[Problem]:
        """Mapped columns (and template fields) that the data does not have."""
        if self.table is None:
            return []
        try:
            needed = needed_columns(cfg)
        except ValueError:
            return []  # a template that does not parse: the engine's own problem says so
        columns = ", ".join(self.columns)
        out = []
        for key, value, name in _keys_of(cfg, [c for c in needed if c not in self.columns]):
            if key.startswith("data.column_mapping"):
                out.append(cfg.problem(key, f"names no column of the data; its columns are: {columns}",
                                       "pick one of the data's columns", value))
            else:
                out.append(cfg.problem(key, f"uses {{{name}}}, which is no column of the data; its columns are: "
                                       f"{columns}", "write the data's column names in braces", value))
        return out

    def show_problems(self, problems: list[Problem]) -> None:
        """Each problem next to its field; the rest at the top."""
        rows = {row.key: row for row in self.query(FieldRow) if row.display}
        for row in self.query(FieldRow):
            row.show([p for p in problems if p.key == row.key and row.key in rows])
        super().show_problems([p for p in problems if p.key not in rows])

    # -- the sample

    def refresh_sample(self) -> None:
        sample = self.query_one("#sample", Static)
        table, cfg = self.table, self.app.cfg
        if table is None or not table.rows:
            sample.update("No rows to show yet.")
            return
        kit = self._kit(cfg)
        if isinstance(kit, Text):
            sample.update(kit)
            return
        sample.update(render_sample(cfg, table, kit))

    def _kit(self, cfg: RunConfig) -> RenderKit | Text:
        name = cfg.data.chat_template
        if name in BUILTIN:
            return builtin_kit(name)
        if name != "tokenizer":
            return RenderKit(TemplateSetup("none", None), None, PLAIN_EOS)
        model = cfg.base_model
        if self._tokenizer and self._tokenizer[0] == model:
            return tokenizer_kit(self._tokenizer[1], self._tokenizer[2])
        if self._tokenizer_error and self._tokenizer_error[0] == model:
            return Text(f"Cannot show the sample with the model's chat template: {self._tokenizer_error[1]}",
                        style="red")
        if not model:
            return Text("Choose a model (step 1) to render its chat template.", style="yellow")
        if self._loading != model:
            self._loading = model
            self._load_tokenizer(copy.deepcopy(cfg))
        return Text("Loading the model's tokenizer for its chat template…", style="italic")

    @work(thread=True, exclusive=True, group="columns-tokenizer")
    def _load_tokenizer(self, cfg: RunConfig) -> None:
        from engine.preview import prepare_tokenizer

        try:
            tokenizer, setup = prepare_tokenizer(cfg)
        except UserError as e:
            self.post_message(TokenizerLoaded(cfg.base_model, error=e.problems[0].message if e.problems else str(e)))
        except Exception as e:  # a broken tokenizer file: say so, the wizard goes on
            self.post_message(TokenizerLoaded(cfg.base_model, error=f"{type(e).__name__}: {e}"))
        else:
            self.post_message(TokenizerLoaded(cfg.base_model, tokenizer, setup))

    def on_tokenizer_loaded(self, event: TokenizerLoaded) -> None:
        self._loading = None
        if event.error is not None:
            self._tokenizer_error = (event.model, event.error)
        else:
            assert event.setup is not None
            self._tokenizer = (event.model, event.tokenizer, event.setup)
        self.refresh_sample()

    @on(Select.Changed)
    @on(Input.Changed)
    def _changed(self, event: Message) -> None:
        if self.app.step is not self:
            return
        self.store(self.app.cfg)
        self._show_templates(self.app.cfg)
        self.refresh_sample()


def role_label(role: str, trainer: str) -> str:
    if role == "text_column":
        what = "chosen" if trainer in PREFERENCE else "messages/text" if trainer == "sft" else "text"
    else:
        what = {"prompt_text_column": "prompt", "rejected_text_column": "rejected"}[role]
    return f"{what} ({role})"


def _keys_of(cfg: RunConfig, missing: list[str]) -> list[tuple[str, str, str]]:
    """(the config key naming each missing column, its value, the column) for the messages."""
    out = []
    cm, d = cfg.data.column_mapping, cfg.data
    for name in missing:
        for template in ("prompt_template", "completion_template"):
            value = getattr(d, template)
            if value and name in _fields(value):
                out.append((f"data.{template}", value, name))
                break
        else:
            role = next((r for r in ALL_ROLES if getattr(cm, r) == name), "text_column")
            out.append((f"data.column_mapping.{role}", name, name))
    return out


def _fields(template: str) -> list[str]:
    try:
        return template_fields(template)
    except ValueError:
        return []


def _kebab(name: str) -> str:
    return name.replace("_", "-")

