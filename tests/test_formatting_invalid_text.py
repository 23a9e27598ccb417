"""engine.formatting on cells that cannot become training text: a lone UTF-16 surrogate ("\\ud800", a valid JSON
escape that no tokenizer can encode) and values nested far too deep to turn into text. Each is refused like
any other bad row, naming the row, the column or message, and where the character is; never a traceback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from engine.chat_templates import renderer
from engine.data import DataSource, Table
from engine.errors import DataError
from engine.formatting import format_split
from engine.pipeline import prepare_tokenizer
from engine.preview import build_preview
from support import tiny_config

pytestmark = pytest.mark.usefixtures("in_tmp")  # each test in its own directory (conftest)

USER = {"role": "user", "content": "Hello"}
PREFERENCE_COLUMNS = {"prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"}


def refused(tmp_path: Path, tiny_model: Path, rows: list[dict[str, Any]], **kwargs: Any) -> DataError:
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": rows}, **kwargs)
    with pytest.raises(DataError) as excinfo:
        build_preview(cfg)
    return excinfo.value


# ---------------------------------------------------------------- lone surrogates


def test_surrogate_in_a_message_names_the_message_and_position(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"messages": [USER, {"role": "assistant", "content": "fine"}]},
            {"messages": [USER, {"role": "assistant", "content": "bad \ud800 here"}]},
            {"messages": [{"role": "user", "content": "\udfff"}, {"role": "assistant", "content": "ok"}]}]
    error = refused(tmp_path, tiny_model, rows, chat_template="tokenizer", column_mapping={"text_column": "messages"})
    assert [p.key for p in error.problems] == ["train.jsonl:2", "train.jsonl:3"]  # collected, not only the first
    first = error.problems[0]
    assert first.message == ("message 2 in column 'messages' holds an invalid character at position 5 of its "
                             "content: a lone UTF-16 surrogate (\\ud800), which is not text and cannot be tokenized")
    assert "remove or replace it" in (first.fix or "")
    assert error.problems[1].message.startswith("message 1 in column 'messages' holds an invalid character at "
                                                "position 1 of its content: a lone UTF-16 surrogate (\\udfff)")
    str(error).encode("utf-8")  # the message itself can be printed


@pytest.mark.parametrize("task, data", [
    ("llm-sft", {}),
    ("llm-generic", {}),
    ("llm-sft", {"prompt_template": "Q: {q}\nA: ", "completion_template": "{text}"}),
    ("llm-sft", {"column_mapping": {"prompt_text_column": "q", "text_column": "text"}}),
])
def test_surrogate_in_a_text_column_names_the_column(tmp_path: Path, tiny_model: Path, task: str,
                                                     data: dict[str, Any]) -> None:
    rows = [{"text": "fine", "q": "why?"}, {"text": "ab\ud83d", "q": "why?"}, {"text": "ok", "q": "wh\udc00y?"}]
    error = refused(tmp_path, tiny_model, rows, task=task, **data)
    messages = {p.key: p.message for p in error.problems}
    assert messages["train.jsonl:2"].startswith("column 'text' holds an invalid character at position 3: a lone "
                                                "UTF-16 surrogate (\\ud83d)")
    if "q" in str(data):  # the prompt's column is tokenized too
        assert messages["train.jsonl:3"].startswith("column 'q' holds an invalid character at position 3")
    else:
        assert "train.jsonl:3" not in messages  # an unused column may hold anything


@pytest.mark.parametrize("task", ["llm-dpo", "llm-reward"])
def test_surrogate_in_a_preference_pair(tmp_path: Path, tiny_model: Path, task: str) -> None:
    rows = [{"prompt": "2+2?", "chosen": " Four.", "rejected": " Five."},
            {"prompt": "2+2?", "chosen": " Four.", "rejected": " Fi\ud800ve."}]
    error = refused(tmp_path, tiny_model, rows, task=task, column_mapping=PREFERENCE_COLUMNS)
    [problem] = error.problems
    assert problem.key == "train.jsonl:2"
    assert problem.message.startswith("column 'rejected' holds an invalid character at position 4")


def test_surrogate_in_an_unused_column_is_fine(tmp_path: Path, tiny_model: Path) -> None:
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": [{"text": "fine", "note": "\ud800"}]})
    assert build_preview(cfg).splits[0].formatted.rows == 1


# ---------------------------------------------------------------- values nested too deep to be text


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):  # built in a loop: json.loads would give up on it, str() and repr() recurse
        value = {"a": value}
    return value


def formatted(tmp_path: Path, tiny_model: Path, rows: list[dict[str, Any]], **kwargs: Any) -> DataError:
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": [{"text": "x"}]}, **kwargs)
    tokenizer, setup = prepare_tokenizer(cfg)
    source = DataSource("file", tmp_path / "train.jsonl", "jsonl", None, None, "train")
    table = Table(rows, list(rows[0]), source, [f"train.jsonl:{i}" for i in range(1, len(rows) + 1)])
    render = renderer(tokenizer) if setup.is_chat else None
    with pytest.raises(DataError) as excinfo:
        format_split(table, cfg, setup, render, tokenizer.eos_token)
    return excinfo.value


@pytest.mark.parametrize("case", ["prompt column", "template field", "message content", "preference"])
def test_value_nested_too_deep_is_a_row_problem(tmp_path: Path, tiny_model: Path, case: str) -> None:
    nested = deep(100_000)
    if case == "prompt column":
        rows = [{"prompt": "fine", "text": "ok"}, {"prompt": nested, "text": "ok"}]
        kwargs: dict[str, Any] = {"column_mapping": {"prompt_text_column": "prompt", "text_column": "text"}}
        column = "prompt"
    elif case == "template field":
        rows = [{"prompt": "fine", "text": "ok"}, {"prompt": nested, "text": "ok"}]
        kwargs = {"prompt_template": "Q: {prompt}\n", "completion_template": "{text}"}
        column = "prompt"
    elif case == "message content":
        rows = [{"messages": [USER, {"role": "assistant", "content": "ok"}]},
                {"messages": [USER, {"role": "assistant", "content": nested}]}]
        kwargs = {"chat_template": "chatml", "column_mapping": {"text_column": "messages"}}
        column = "messages"
    else:
        rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": nested, "rejected": "b"}]
        kwargs = {"task": "llm-dpo", "column_mapping": PREFERENCE_COLUMNS}
        column = "chosen"
    error = formatted(tmp_path, tiny_model, rows, **kwargs)
    [problem] = error.problems
    assert problem.key == "train.jsonl:2"
    assert re.match(rf"column {column!r} holds a value nested 1000\d\d levels deep", problem.message)
    assert "flatten it" in (problem.fix or "")


def test_surrogate_in_an_unused_column_name_is_printed_escaped(tmp_path: Path, tiny_model: Path) -> None:
    import io

    from rich.console import Console

    from tui.dry_run import print_split

    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": [{"text": "fine", "\ud800x": 1}]})
    out = io.StringIO()
    print_split(Console(file=out, width=200), build_preview(cfg).splits[0])
    text = out.getvalue()
    text.encode("utf-8")  # stdout would refuse a lone surrogate: the dry run ended with an internal error
    assert "dropped before training: \\ud800x" in text


def test_a_template_spec_that_a_list_cell_refuses_is_a_row_problem(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"question": ["not", "text"], "answer": "yes"}, {"question": "fine", "answer": "yes"}]
    error = refused(tmp_path, tiny_model, rows, prompt_template="Q: {question:>3}\n", completion_template="{answer}")
    assert "train.jsonl:1" in str(error) and "cannot format this row" in str(error)
