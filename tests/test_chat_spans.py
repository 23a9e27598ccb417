"""The trained spans of long conversations: located in one render, and exactly those of the definition.

By definition (`Formatter._prefix_spans`) assistant turn i spans from the end of render(messages[:i], generation
prompt) to the end of render(messages[:i+1]); rendering every prefix grows with the square of the turns, so
long conversations locate their turns in one render. Here both are compared on varied conversations for each
template, templates that render a prefix differently must still be refused, and the time must grow linearly.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.chat_templates import renderer
from engine.data import DataSource, Table
from engine.formatting import LOCATE_TURNS_FROM, Formatter, RowError, format_split
from engine.pipeline import prepare_tokenizer
from support import tiny_config

pytestmark = pytest.mark.usefixtures("in_tmp")  # each test in its own directory (conftest)

Messages = list[dict[str, str]]
TEMPLATES = ["chatml", "zephyr", "tokenizer"]
# Contents that are easy to find in the wrong place: role names, template markers, repeats, blanks, unicode.
CONTENTS = ["ok", "ok", "user", "assistant", "Hello", "hi there", "  padded  ", "two\nlines", "<|im_start|>assistant\n",
            "<|assistant|>\n", "<|start_header_id|>assistant<|end_header_id|>\n\n", "</s>", "<|im_end|>", "😀 ünï",
            "{{ not jinja }}", "ok<|eot_id|>", "x" * 300]


def formatter(tmp_path: Path, tiny_model: Path, template: str, render: Callable[..., str] | None = None
              ) -> Formatter:
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": [{"text": "x"}]}, chat_template=template)
    tokenizer, setup = prepare_tokenizer(cfg)
    return Formatter(cfg, setup, render or renderer(tokenizer), tokenizer.eos_token)


def conversation(rng: random.Random, turns: int, tricky: float) -> Messages:
    """Roles in varied orders; contents plain, or with probability `tricky` one of CONTENTS."""
    words = ["the", "fox", "said", "no", "why", "42", "ok", "again"]

    def content() -> str:
        if rng.random() < tricky:
            return rng.choice(CONTENTS)
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))

    messages: Messages = [{"role": "system", "content": content()}] if rng.random() < 0.5 else []
    for _ in range(turns):
        for _ in range(1 if rng.random() < 0.8 else 2):  # sometimes two user messages in a row
            messages.append({"role": "user", "content": content()})
        for _ in range(1 if rng.random() < 0.9 else 2):
            messages.append({"role": "assistant", "content": content()})
    if rng.random() < 0.3:
        messages.append({"role": "user", "content": "a last question"})
    return messages


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except RowError as e:
        return ("RowError", e.message)


def assistant_turns(messages: Messages) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_located_spans_equal_the_prefix_spans(tmp_path: Path, tiny_model: Path, template: str) -> None:
    fmt = formatter(tmp_path, tiny_model, template)
    rng = random.Random(template)
    located = 0
    for n in range(90):
        messages = conversation(rng, rng.randint(LOCATE_TURNS_FROM, 40), tricky=[0.0, 0.02, 0.3][n % 3])
        turns = assistant_turns(messages)
        text = fmt._render(messages)
        exact = fmt._prefix_spans(messages, turns, text)
        fast = fmt._located_spans(messages, turns, text)
        if fast is not None:
            located += 1
            assert fast == exact, (template, n)
        assert fmt._chat_text("row", messages).spans == exact, (template, n)
    assert located >= 30  # the fast path is taken, not always given up


@pytest.mark.parametrize("template", TEMPLATES)
def test_plain_long_conversations_take_the_fast_path(tmp_path: Path, tiny_model: Path, template: str) -> None:
    fmt = formatter(tmp_path, tiny_model, template)
    messages = [{"role": "system", "content": "Be brief."}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(50)]
    turns = assistant_turns(messages)
    text = fmt._render(messages)
    assert fmt._located_spans(messages, turns, text) == fmt._prefix_spans(messages, turns, text)


# Templates written in Python, each breaking the "one render holds every prefix" rule in its own way.

def _piece(m: dict[str, str]) -> str:
    return f"<{m['role']}>{m['content']}</{m['role']}>"


def strips_old_thoughts(messages: Messages, add_generation_prompt: bool = False) -> str:
    """Like Qwen3: the reasoning of assistant turns before the last one is dropped."""
    last = max([i for i, m in enumerate(messages) if m["role"] == "assistant"], default=-1)
    out = [_piece({**m, "content": re.sub(r"<think>.*?</think>", "", m["content"])} if i < last else m)
           for i, m in enumerate(messages)]
    return "".join(out) + ("<assistant>" if add_generation_prompt else "")


def system_in_last_user(messages: Messages, add_generation_prompt: bool = False) -> str:
    """Like early Mistral templates: the system prompt goes into the last user message."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    last_user = max([i for i, m in enumerate(rest) if m["role"] == "user"], default=-1)
    out = [_piece({**m, "content": f"{system[0]}\n\n{m['content']}"} if i == last_user and system else m)
           for i, m in enumerate(rest)]
    return "".join(out) + ("<assistant>" if add_generation_prompt else "")


def ends_with_eos(messages: Messages, add_generation_prompt: bool = False) -> str:
    """An end marker after the last message only."""
    return "".join(map(_piece, messages)) + ("<assistant>" if add_generation_prompt else "<eos>")


def header_when_long(messages: Messages, add_generation_prompt: bool = False) -> str:
    """A header that only long conversations get."""
    head = "<long>" if len(messages) > 30 else ""
    return head + "".join(map(_piece, messages)) + ("<assistant>" if add_generation_prompt else "")


def numbered(messages: Messages, add_generation_prompt: bool = False) -> str:
    """Turns numbered: prefixes are consistent, but the text between turns is never the same twice."""
    out = [f"#{k} " + _piece(m) for k, m in enumerate(messages)]
    return "".join(out) + (f"#{len(messages)} <assistant>" if add_generation_prompt else "")


@pytest.mark.parametrize("render", [strips_old_thoughts, system_in_last_user, ends_with_eos, header_when_long,
                                    numbered])
def test_templates_that_render_prefixes_differently_get_the_outcome_of_the_definition(
        tmp_path: Path, tiny_model: Path, render: Callable[..., str]) -> None:
    fmt = formatter(tmp_path, tiny_model, "chatml", render)
    messages: Messages = [{"role": "system", "content": "Be brief."}]
    for i in range(40):
        messages += [{"role": "user", "content": f"question {i}"},
                     {"role": "assistant", "content": f"<think>hmm {i}</think>answer {i}"}]
    turns = assistant_turns(messages)
    text = fmt._render(messages)
    expected = outcome(lambda: fmt._prefix_spans(messages, turns, text))
    assert outcome(lambda: fmt._chat_text("row", messages).spans) == expected
    if render is not numbered:
        assert expected[0] == "RowError"  # these are refused by definition, and must still be


@pytest.mark.parametrize("template", ["chatml", "tokenizer"])
def test_formatting_time_grows_linearly_with_the_turns(tmp_path: Path, tiny_model: Path, template: str) -> None:
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": [{"text": "x"}]}, chat_template=template,
                      column_mapping={"text_column": "messages"})
    tokenizer, setup = prepare_tokenizer(cfg)
    render = renderer(tokenizer)
    source = DataSource("file", tmp_path / "train.jsonl", "jsonl", None, None, "train")

    def seconds(messages: int) -> float:
        row = {"messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
                            for i in range(messages)]}
        table = Table([row], ["messages"], source, ["train.jsonl:1"])
        start = time.perf_counter()
        [example] = format_split(table, cfg, setup, render, tokenizer.eos_token).examples
        elapsed = time.perf_counter() - start
        assert len(example.spans) == messages // 2
        return elapsed

    small = min(seconds(800) for _ in range(3))
    large = seconds(8000)
    # Ten times the turns: about ten times the time when linear, a hundred times when quadratic.
    assert large < 40 * small, (small, large)
