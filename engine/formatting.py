"""Rows -> what the model reads: rendered text with the character spans it learns from.

One function per data shape, all ending in two example types:
- `TextExample` (generic, SFT): the full text and the spans whose tokens carry a loss (assistant turns of a
  conversation, the completion of a prompt/completion pair, or everything).
- `PairExample` (reward, DPO, ORPO): a prompt and two completions; for reward, prompt + completion is the
  whole text that gets a score.
The preview tokenizes these and the trainers train on exactly the same tokens, so what the dry run shows is
what is trained. Message lists may be JSON lists, or strings holding them (CSV cells); roles are checked
and the common aliases mapped.
"""

from __future__ import annotations

import ast
import difflib
import functools
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.chat_templates import TemplateSetup
from engine.config import RunConfig
from engine.data import Table
from engine.errors import DataError, Problem
from engine.tasks import PROMPT, ROLES, TEMPLATES, TEXT
from engine.work_progress import Report, Tally

ROLE_ALIASES = {
    "system": "system", "user": "user", "assistant": "assistant",
    "human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatbot": "assistant",
}
MAX_ROW_PROBLEMS = 8  # report this many bad rows, then count the rest
# Conversations with at least this many assistant turns locate their turns in one render (verified) instead of
# rendering every prefix, which grows with the square of the turns; shorter ones render every prefix.
LOCATE_TURNS_FROM = 8

Span = tuple[int, int]
Messages = list[dict[str, str]]
Render = Callable[[Messages, bool], str]


@dataclass
class TextExample:
    location: str
    text: str
    spans: list[Span]  # character ranges of `text` whose tokens are trained on


@dataclass
class PairExample:
    location: str
    prompt: str  # masked context (DPO/ORPO); "" for reward, whose chosen/rejected are whole texts
    chosen: str
    rejected: str


@dataclass
class PromptExample:
    """A prompt the policy answers (GRPO, RLOO): `text` as the policy reads it (rendered with the generation
    prompt, or the plain text), `prompt` as TRL takes it (a message list, which it renders with each model's own
    template, or that plain text)."""
    location: str
    text: str
    prompt: Any


@dataclass
class FormattedSplit:
    split: str
    source: str
    shape: str  # what the data looked like, e.g. "messages", "prompt/completion", "text", "preference (messages)"
    rows: int
    examples: list[Any]
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    roles_mapped: Counter = field(default_factory=Counter)  # "human -> user" -> messages
    columns_used: list[str] = field(default_factory=list)
    columns_dropped: list[str] = field(default_factory=list)
    # Examples made from the rows. `examples` holds them all when the split is formatted in memory; the data
    # pipeline (engine.dataset_prep) keeps only the first SAMPLES_KEPT, for samples, and streams the rest.
    used: int = 0


class RowProblems:
    """Collects per-row problems so one bad file reports several rows at once, not just the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.more = 0

    def __bool__(self) -> bool:
        return bool(self.problems)

    def merge(self, later: RowProblems) -> None:
        """Add the problems of rows that come after these (a later chunk of the same split)."""
        for p in later.problems:
            self.add(p.key, p.message, p.fix)
        self.more += later.more

    def add(self, location: str, message: str, fix: str | None = None) -> None:
        if len(self.problems) < MAX_ROW_PROBLEMS:
            self.problems.append(Problem(location, message, fix))
        else:
            self.more += 1

    def raise_if_any(self) -> None:
        if self.problems:
            problems = list(self.problems)
            if self.more:
                problems.append(Problem("...", f"and {self.more} more row(s) with problems"))
            raise DataError(problems, title="the data does not fit the config")


class RowError(Exception):
    """A problem with one row; collected, not raised to the user directly."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message, self.fix = message, fix


class Dropped(Exception):
    """A row that is left out, with the reason (counted and shown by the preview)."""


# ---------------------------------------------------------------- entry point


def format_split(table: Table, cfg: RunConfig, setup: TemplateSetup, render: Render | None, eos_token: str,
                 split: str = "train", progress: Report | None = None) -> FormattedSplit:
    """Turn a table into examples for cfg's trainer; raise DataError naming the rows that cannot be used.
    `progress` gets a line at most once a second while it works (engine.work_progress)."""
    needed = needed_columns(cfg)
    check_columns(table.columns, needed, table.source.describe())
    fmt = Formatter(cfg, setup, render, eos_token)
    chunk = format_rows(table, fmt, needed, Tally(progress, f"formatting {split}", len(table.rows)))
    chunk.problems.raise_if_any()
    out = FormattedSplit(split=split, source=table.source.describe(), shape="", rows=len(table.rows),
                         examples=chunk.examples, columns_used=[c for c in table.columns if c in needed],
                         columns_dropped=[c for c in table.columns if c not in needed])
    out.dropped, out.roles_mapped = chunk.dropped, fmt.roles_mapped
    return finish_split(out, chunk.shapes, len(chunk.examples))


@dataclass
class FormattedRows:
    """What formatting some rows gave: the examples, and the rows left out or refused (not raised yet)."""

    examples: list[Any]
    dropped: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    problems: RowProblems = field(default_factory=lambda: RowProblems())


def format_rows(table: Table, fmt: Formatter, needed: list[str], tally: Tally | None = None) -> FormattedRows:
    """Format each row of `table`; the rows that cannot be used are collected in .problems, not raised."""
    pairwise = fmt.spec.pairwise
    out = FormattedRows([])
    problems = out.problems
    for row, location in zip(table.rows, table.locations):
        if tally is not None:
            tally.add()
        try:
            if fmt.spec.online:
                example, shape = fmt.prompt(row, location)
            elif pairwise:
                example, shape = fmt.pair(row, location)
                for part, text in (("prompt", example.prompt), ("chosen", example.chosen),
                                   ("rejected", example.rejected)):
                    _valid_text(text, f"the formatted {part}")
            else:
                example, shape = fmt.text(row, location)
                _valid_text(example.text, "the formatted text")  # what the cells checked cannot show
        except Dropped as why:
            out.dropped[str(why)] += 1
            continue
        except RowError as e:
            problems.add(location, e.message, e.fix)
            continue
        except RecursionError:  # str() of a value nested thousands deep
            problems.add(location, *_too_deep(row, needed))
            continue
        out.shapes[shape] += 1
        out.examples.append(example)
    if tally is not None:
        tally.finish()
    return out


def finish_split(out: FormattedSplit, shapes: Counter, used: int) -> FormattedSplit:
    """Fail when nothing is left to train on (now, not in the middle of a training run); name the shape."""
    if not used:
        why = "; ".join(f"{n} {reason}" for reason, n in out.dropped.most_common()) or "the file has no rows"
        raise DataError([Problem(out.source, f"no usable rows in the {out.split} split ({why})",
                                 "check data.column_mapping and data.chat_template against the data")],
                        title="the data does not fit the config")
    out.used = used
    out.shape = " + ".join(s for s, _ in shapes.most_common()) or "none"
    return out


def needed_columns(cfg: RunConfig) -> list[str]:
    """The columns the trainer reads; the rest are dropped before training."""
    from engine.config import template_fields

    cm, d, spec = cfg.data.column_mapping, cfg.data, cfg.spec
    preference = spec.pairwise
    cols: list[str] = []
    if d.prompt_template:
        cols += template_fields(d.prompt_template)
    elif cm.prompt_text_column and PROMPT in spec.roles:
        cols.append(cm.prompt_text_column)
    if d.completion_template and not preference:
        cols += template_fields(d.completion_template)
    elif TEXT in spec.roles:
        cols.append(cm.text_column)
    if preference and cm.rejected_text_column:
        cols.append(cm.rejected_text_column)
    return list(dict.fromkeys(c for c in cols if c))


def mapping_problems(cfg: RunConfig, columns: list[str]) -> list[Problem]:
    """The check of _check_columns, for a form: each mapped column (or template field) the data lacks, blamed
    on the config key that names it."""
    try:
        needed = needed_columns(cfg)
    except ValueError:
        return []  # a template that does not parse: the config's own rule says so
    shown = ", ".join(columns)
    out = []
    for key, value, name in _keys_of(cfg, [c for c in needed if c not in columns]):
        if key.startswith("data.column_mapping"):
            out.append(cfg.problem(key, f"names no column of the data; its columns are: {shown}",
                                   "pick one of the data's columns", value))
        else:
            out.append(cfg.problem(key, f"uses {{{name}}}, which is no column of the data; its columns are: "
                                   f"{shown}", "write the data's column names in braces", value))
    return out


def _keys_of(cfg: RunConfig, missing: list[str]) -> list[tuple[str, str, str]]:
    """(the config key naming each missing column, its value, the column)."""
    from engine.config import template_fields

    out = []
    cm, d = cfg.data.column_mapping, cfg.data
    for name in missing:
        for template in TEMPLATES:
            value = getattr(d, template)
            try:
                fields = template_fields(value) if value else []
            except ValueError:
                fields = []
            if name in fields:
                out.append((f"data.{template}", value, name))
                break
        else:
            role = next((r for r in ROLES if getattr(cm, r) == name), TEXT)
            out.append((f"data.column_mapping.{role}", name, name))
    return out


def check_columns(columns: list[str], needed: list[str], source: str) -> None:
    """Raise DataError for each needed column the data (`source`, as described to people) lacks."""
    missing = [c for c in needed if c not in columns]
    if not missing:
        return
    problems = []
    for name in missing:
        close = difflib.get_close_matches(name, columns, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        problems.append(Problem(source, f"has no column {name!r} (the config maps it); its "
                                f"columns are: {', '.join(columns)}",
                                f"{hint}fix data.column_mapping (or the template) to name an existing column"))
    raise DataError(problems, title="the data does not fit the config")


# ---------------------------------------------------------------- the formatter


class Formatter:
    def __init__(self, cfg: RunConfig, setup: TemplateSetup, render: Render | None, eos_token: str) -> None:
        self.cfg = cfg
        self.setup = setup
        self.render = render
        self.eos = eos_token
        self.roles_mapped: Counter = Counter()
        self.spec = cfg.spec
        # SFT learns from the responses only, unless asked otherwise; generic CLM learns from everything.
        self.responses_only = self.spec.responses_only and not cfg.params.train_on_all_tokens

    # -- SFT and generic

    def text(self, row: dict, location: str) -> tuple[TextExample, str]:
        d, cm = self.cfg.data, self.cfg.data.column_mapping
        if d.prompt_template:
            prompt = _fill(d.prompt_template, row)
            completion = _fill(d.completion_template, row) if d.completion_template else _text(row, cm.text_column)
            return self._pair_text(location, prompt, completion), "prompt/completion (templates)"
        if cm.prompt_text_column and PROMPT in self.spec.roles:
            prompt = _required(row, cm.prompt_text_column)
            completion = _text(row, cm.text_column)
            if isinstance(prompt, list) or _looks_like_messages(prompt):
                messages = self.messages(prompt, cm.prompt_text_column) + [{"role": "assistant",
                                                                             "content": completion}]
                return self._chat_text(location, messages), "prompt messages/completion"
            prompt_text = _valid_text(str(prompt), f"column {cm.prompt_text_column!r}")
            return self._pair_text(location, prompt_text, completion), "prompt/completion"
        value = _required(row, cm.text_column)
        if isinstance(value, list) or _looks_like_messages(value):
            return self._chat_text(location, self.messages(value, cm.text_column)), "messages"
        if not isinstance(value, str):
            raise RowError(f"column {cm.text_column!r} holds {type(value).__name__}, not text or messages")
        if self.setup.is_chat:
            raise RowError(f"column {cm.text_column!r} holds plain text, but data.chat_template is "
                           f"{self.setup.name}, which formats message lists",
                           "set data.chat_template: none to train on the text as written, or give message lists "
                           "([{\"role\": \"user\", \"content\": ...}, ...])")
        if not value.strip():
            raise Dropped("empty text")
        _valid_text(value, f"column {cm.text_column!r}")
        # add_eos_token is the switch of the trainers that read it (generic); the others always end with EOS.
        add_eos = self.cfg.params.add_eos_token or not self.spec.reads("add_eos_token")
        text = value + self.eos if add_eos else value
        return TextExample(location, text, [(0, len(text))]), "text"

    def _pair_text(self, location: str, prompt: str, completion: str) -> TextExample:
        if not completion.strip():
            raise Dropped("empty completion")
        if self.setup.is_chat:
            return self._chat_text(location, [{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": completion}])
        text = prompt + completion + self.eos
        span = (len(prompt), len(text)) if self.responses_only else (0, len(text))
        return TextExample(location, text, [span])

    def _chat_text(self, location: str, messages: Messages) -> TextExample:
        if not self.setup.is_chat:
            raise RowError("holds a conversation (a message list), but data.chat_template is none, so it would be "
                           "trained on as the literal text of the list",
                           "set data.chat_template to tokenizer (the model's own), chatml or zephyr")
        text = self._render(messages)
        if not self.responses_only:
            return TextExample(location, text, [(0, len(text))])
        turns = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
        if not turns:
            raise Dropped("no assistant turn to learn from")
        spans = self._located_spans(messages, turns, text) if len(turns) >= LOCATE_TURNS_FROM else None
        if spans is None:
            spans = self._prefix_spans(messages, turns, text)
        return TextExample(location, text, spans)

    def _prefix_spans(self, messages: Messages, turns: list[int], full: str) -> list[Span]:
        """The spans by definition: each turn's prefixes rendered (two renders per turn, each as long as the
        conversation so far)."""
        return [self._turn_span(messages, i, full) for i in turns]

    def _located_spans(self, messages: Messages, turns: list[int], full: str) -> list[Span] | None:
        """The spans of `_prefix_spans` from the one full render, or None when that cannot be shown to be safe.

        Each message's content is found in `full`, in order; the text between two messages must then be the
        same wherever their roles are the same (a template that numbers turns, moves the system prompt or
        rewrites earlier turns fails this or the content search). A few turns, one per kind of neighbourhood
        plus the first, middle and last, are measured by definition (`_turn_span`, which also raises its
        RowError for templates that render a prefix differently); every other turn with the same neighbours
        lies at the same distance from its content."""
        n, roles = len(messages), [m["role"] for m in messages]
        starts, cursor = [], 0
        for message in messages:
            at = full.find(message["content"], cursor)
            if at < 0:  # the template changes the content (strips it, say): measure every turn
                return None
            starts.append(at)
            cursor = at + len(message["content"])
        ends = [at + len(m["content"]) for at, m in zip(starts, messages)]
        gaps: dict[tuple[str, str], str] = {}
        for k in range(1, n):
            gap = full[ends[k - 1]:starts[k]]
            if gaps.setdefault((roles[k - 1], roles[k]), gap) != gap:
                return None

        def around(i: int) -> tuple[str | None, str | None]:
            return (roles[i - 1] if i else None, roles[i + 1] if i + 1 < n else None)

        measured = {around(i): i for i in reversed(turns)}  # the first turn of each kind
        offsets: dict[tuple[str | None, str | None], tuple[int, int]] = {}
        for i in sorted({*measured.values(), turns[0], turns[len(turns) // 2], turns[-1]}):
            before, upto = self._turn_span(messages, i, full)
            offset = (starts[i] - before, upto - ends[i])
            if offsets.setdefault(around(i), offset) != offset:
                return None
        spans = []
        for i in turns:
            lead, trail = offsets[around(i)]
            span = (starts[i] - lead, ends[i] + trail)
            if span[0] < (ends[i - 1] if i else 0) or span[1] > (starts[i + 1] if i + 1 < n else len(full)):
                return None  # it would reach into a neighbouring message: not the shape measured
            spans.append(span)
        return spans

    def _turn_span(self, messages: Messages, i: int, full: str) -> Span:
        """Where assistant turn i lies in the rendered text: what the template adds after the generation prompt."""
        before = self._render(messages[:i], add_generation_prompt=True) if i else ""
        upto = full if i + 1 == len(messages) else self._render(messages[: i + 1])  # the last turn: all of it
        if not (full.startswith(upto) and upto.startswith(before)):
            raise RowError("the chat template renders a conversation differently from its beginning, so the "
                           "assistant turns cannot be told apart",
                           "set params.train_on_all_tokens: true, or use data.chat_template: chatml or zephyr")
        return (len(before), len(upto))

    # -- reward, DPO, ORPO

    def pair(self, row: dict, location: str) -> tuple[PairExample, str]:
        d, cm = self.cfg.data, self.cfg.data.column_mapping
        chosen = _required(row, cm.text_column)
        rejected = _required(row, cm.rejected_text_column)
        prompt: Any = None
        if d.prompt_template:
            prompt = _fill(d.prompt_template, row)
        elif cm.prompt_text_column:
            prompt = _required(row, cm.prompt_text_column)
        lists = [isinstance(v, list) or _looks_like_messages(v) for v in (chosen, rejected)]
        if lists[0] != lists[1]:
            raise RowError(f"one of {cm.text_column!r} and {cm.rejected_text_column!r} is a message list and the "
                           "other is not", "give both as message lists or both as text")
        if lists[0]:
            return self._pair_messages(location, prompt, chosen, rejected), "preference (messages)"
        if isinstance(prompt, str) and not d.prompt_template:  # a template's fields are checked as it is filled
            _valid_text(prompt, f"column {cm.prompt_text_column!r}")
        chosen_text = _valid_text(str(chosen), f"column {cm.text_column!r}")
        rejected_text = _valid_text(str(rejected), f"column {cm.rejected_text_column!r}")
        return self._pair_strings(location, prompt, chosen_text, rejected_text), "preference (text)"

    def _pair_messages(self, location: str, prompt: Any, chosen: Any, rejected: Any) -> PairExample:
        cm = self.cfg.data.column_mapping
        if not self.setup.is_chat:
            raise RowError("chosen/rejected are message lists, but data.chat_template is none",
                           "set data.chat_template to tokenizer, chatml or zephyr")
        c = self.messages(chosen, cm.text_column)
        r = self.messages(rejected, cm.rejected_text_column)
        shared = 0  # the prompt is the turns the two conversations share
        while shared < min(len(c), len(r)) and c[shared] == r[shared]:
            shared += 1
        prompt_msgs = c[:shared]
        if prompt is not None and not any(m["role"] == "user" for m in prompt_msgs):
            prompt_msgs = self._as_messages(prompt, cm.prompt_text_column or "prompt") + prompt_msgs
        return self._render_pair(location, prompt_msgs, c[shared:], r[shared:])

    def _pair_strings(self, location: str, prompt: Any, chosen: str, rejected: str) -> PairExample:
        cm = self.cfg.data.column_mapping
        if not chosen.strip() or not rejected.strip():
            raise Dropped("empty chosen or rejected text")
        if chosen == rejected:
            raise Dropped("chosen and rejected are the same")
        if self.setup.is_chat:
            if prompt is None:
                raise RowError("chosen/rejected are plain text, and a chat template needs the prompt to build a "
                               "conversation", "map data.column_mapping.prompt_text_column, or set "
                               "data.chat_template: none if the texts are already formatted")
            prompt_msgs = self._as_messages(prompt, cm.prompt_text_column or "prompt")
            return self._render_pair(location, prompt_msgs, [{"role": "assistant", "content": chosen}],
                                     [{"role": "assistant", "content": rejected}])
        prompt_text = "" if prompt is None else str(prompt)
        if self.spec.whole_texts:  # the whole text is scored
            return PairExample(location, "", prompt_text + chosen + self.eos, prompt_text + rejected + self.eos)
        if not prompt_text.strip():
            raise Dropped("empty prompt")
        return PairExample(location, prompt_text, chosen + self.eos, rejected + self.eos)

    def _render_pair(self, location: str, prompt_msgs: Messages, chosen: Messages, rejected: Messages
                     ) -> PairExample:
        if not chosen or not rejected:
            raise Dropped("chosen and rejected are the same")
        if self.setup.name == "zephyr" and (not prompt_msgs or prompt_msgs[0]["role"] != "system"):
            prompt_msgs = [{"role": "system", "content": ""}] + prompt_msgs  # as AutoTrain does for zephyr
        if self.spec.whole_texts:
            return PairExample(location, "", self._render(prompt_msgs + chosen), self._render(prompt_msgs + rejected))
        if not any(m["role"] == "user" for m in prompt_msgs):
            raise Dropped("no prompt (the conversations share no user turn)")
        prompt = self._render(prompt_msgs, add_generation_prompt=True)
        full = [self._render(prompt_msgs + chosen), self._render(prompt_msgs + rejected)]
        if not all(f.startswith(prompt) for f in full):
            raise RowError("the chat template renders the prompt differently on its own, so prompt and "
                           "completion cannot be split", "use data.chat_template: chatml or zephyr")
        return PairExample(location, prompt, full[0][len(prompt):], full[1][len(prompt):])

    # -- GRPO, RLOO

    def prompt(self, row: dict, location: str) -> tuple[PromptExample, str]:
        d, cm = self.cfg.data, self.cfg.data.column_mapping
        column = cm.prompt_text_column or "prompt"
        value = _fill(d.prompt_template, row) if d.prompt_template else _required(row, column)
        listed = isinstance(value, list) or _looks_like_messages(value)
        if not self.setup.is_chat:
            if listed:
                raise RowError(f"column {column!r} holds a conversation (a message list), but data.chat_template is "
                               "none, so the model would read the literal text of the list",
                               "set data.chat_template to tokenizer (the model's own), chatml or zephyr")
            text = _valid_text(str(value), f"column {column!r}")
            if not text.strip():
                raise Dropped("empty prompt")
            return PromptExample(location, text, text), "prompt (text)"
        messages = self._as_messages(value, column)
        if messages[-1]["role"] == "assistant":
            raise RowError(f"the conversation in column {column!r} ends with an assistant turn: the prompt is what "
                           "the model answers", "end each prompt with the user's turn")
        if self.setup.name == "zephyr" and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": ""}] + messages  # as the other trainers render zephyr
        text = self._render(messages, add_generation_prompt=True)
        shape = "prompt (messages)" if listed else "prompt (text, as a user turn)"
        return PromptExample(location, text, messages), shape

    # -- messages

    def messages(self, value: Any, column: str) -> Messages:
        """Parse and check a message list; map role aliases and ShareGPT keys (counted for the report)."""
        if isinstance(value, str):
            value = _parse_list(value, column)
        if not isinstance(value, list) or not value:
            raise RowError(f"column {column!r} should hold a non-empty list of messages")
        out = []
        for n, message in enumerate(value, 1):
            if not isinstance(message, dict):
                raise RowError(f"message {n} in column {column!r} is not an object with role and content")
            role = message.get("role", message.get("from"))
            content = message.get("content", message.get("value"))
            if "from" in message and "role" not in message:
                self.roles_mapped["ShareGPT from/value -> role/content"] += 1
            if role is None:
                raise RowError(f"message {n} in column {column!r} has no role", "each message needs "
                               "\"role\" (system, user or assistant) and \"content\"")
            mapped = ROLE_ALIASES.get(str(role).strip().lower())
            if mapped is None:
                raise RowError(f"message {n} in column {column!r} has role {role!r}",
                               "roles must be system, user or assistant (human, gpt, bot and model are mapped)")
            if mapped != role:
                self.roles_mapped[f"{role} -> {mapped}"] += 1
            if isinstance(content, list):  # content parts: keep the text ones
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if content is None:
                raise RowError(f"message {n} in column {column!r} has no content (null)")
            out.append({"role": mapped,
                        "content": _valid_text(str(content), f"message {n} in column {column!r}", " of its content")})
        return out

    def _as_messages(self, prompt: Any, column: str) -> Messages:
        if isinstance(prompt, list) or _looks_like_messages(prompt):
            return self.messages(prompt, column)
        if not str(prompt).strip():
            raise Dropped("empty prompt")
        return [{"role": "user", "content": _valid_text(str(prompt), f"column {column!r}")}]

    def _render(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        assert self.render is not None
        try:
            return self.render(messages, add_generation_prompt)
        except Exception as e:  # templates raise for unsupported role orders etc.
            raise RowError(f"the chat template refused this conversation: {e}",
                           "check the order of roles, or use data.chat_template: chatml or zephyr") from None


# ---------------------------------------------------------------- cells


def _required(row: dict, column: str | None) -> Any:
    value = row.get(column) if column else None
    if value is None:
        raise RowError(f"column {column!r} is empty (null), and the trainer needs it",
                       "fill it in or remove the row")
    return value


def _text(row: dict, column: str) -> str:
    value = _required(row, column)
    if isinstance(value, (list, dict)):
        raise RowError(f"column {column!r} holds {type(value).__name__}, but text is expected here")
    return _valid_text(str(value), f"column {column!r}")


# A lone UTF-16 surrogate: JSON can spell one ("\ud800", half of an emoji's pair), but it is not a character
# and no tokenizer can encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_text(text: str, what: str, within: str = "") -> str:
    """`text`, or a RowError saying where it holds a character that cannot be tokenized."""
    if text.isascii():
        return text
    bad = _SURROGATE.search(text)
    if bad is None:
        return text
    raise RowError(f"{what} holds an invalid character at position {bad.start() + 1}{within}: a lone UTF-16 "
                   f"surrogate ({ascii(bad.group())[1:-1]}), which is not text and cannot be tokenized",
                   "remove or replace it (it usually comes from text cut in the middle of an emoji, or from a "
                   "broken \\u escape in JSON)")


def _too_deep(row: dict, columns: list[str]) -> tuple[str, str]:
    """The message and fix for a row whose used cell nests too deep to become text."""
    depths = {c: _depth(row.get(c)) for c in columns}
    column = max(depths, key=lambda c: depths[c]) if depths else "?"
    message = (f"column {column!r} holds a value nested {depths.get(column, 0)} levels deep (lists or objects "
               "inside each other), too deep to use as text")
    return message, "flatten it: a cell holds text, or a list of messages"


def _depth(value: Any) -> int:
    """How deep lists and dicts nest in `value`, without recursing (the point is that recursion fails)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


class _Blanks(dict):
    def __missing__(self, key: str) -> str:
        return ""  # a JSONL row without the key: as empty as a null


@functools.lru_cache(maxsize=16)
def _template_parts(template: str) -> tuple[tuple[str, bool, tuple[str, ...]], ...]:
    """(format string, optional, its columns) per piece of a template, parsed once per template, not per row."""
    from engine.config import template_fields, template_sections

    return tuple((piece, optional, tuple(template_fields(piece))) for piece, optional in template_sections(template))


def _blank(value: Any) -> bool:
    """A cell with nothing in it: null or absent, blank text, an empty list or object."""
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (list, dict)) and not value)


def _fill(template: str, row: dict) -> str:
    parts = _template_parts(template)
    for _, _, names in parts:
        for name in names:
            if isinstance(row.get(name), str):
                _valid_text(row[name], f"column {name!r}")
    values = _Blanks({k: ("" if v is None else v) for k, v in row.items()})  # a null or absent field reads as empty
    try:
        # An optional section ({[...]}) is left out when every column in it is blank in this row.
        return "".join(piece.format_map(values) for piece, optional, names in parts
                       if not (optional and all(_blank(row.get(n)) for n in names)))
    except (ValueError, TypeError) as e:  # a format spec the cell's type refuses: {messages:>3} on a list
        raise RowError(f"the template {template!r} cannot format this row ({e})",
                       "use plain {column} fields for columns that hold lists or objects") from None


def holds_messages(value: Any) -> bool:
    """A message list, or a string holding one (CSV cells): what is read as a conversation."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(m, dict) for m in value)
    return _looks_like_messages(value)


def _looks_like_messages(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    s = value.lstrip()
    return s.startswith("[") and ("role" in s[:200] or "from" in s[:200]) and s.rstrip().endswith("]")


def _parse_list(value: str, column: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)  # AutoTrain's docs show Python reprs with single quotes
    except (ValueError, SyntaxError):
        raise RowError(f"column {column!r} looks like a message list but is neither JSON nor a Python list",
                       "write it as JSON: [{\"role\": \"user\", \"content\": \"...\"}]") from None
