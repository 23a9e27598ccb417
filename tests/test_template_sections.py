"""Optional template sections `{[ ... ]}`, left out of a row whose columns in them are all empty, and templates
written back as YAML block scalars (`|`) that read back equal."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from engine.config import (
    parse_config_text,
    template_fields,
    template_sections,
    to_dict,
    to_yaml,
)
from engine.errors import ConfigError
from engine.preview import build_preview
from support import tiny_config

pytestmark = pytest.mark.usefixtures("in_tmp")

PROMPT = "### Instruction:\n{instruction}\n{[### Input:\n{input}\n]}### Response:\n"
MINIMAL = "task: llm-sft\nbase_model: Qwen/Qwen2.5-0.5B\nproject_name: out\ndata:\n  path: data\n"


def test_sections_are_parsed_and_their_columns_counted() -> None:
    assert template_sections(PROMPT) == [("### Instruction:\n{instruction}\n", False),
                                         ("### Input:\n{input}\n", True), ("### Response:\n", False)]
    assert template_fields(PROMPT) == ["instruction", "input"]
    assert template_fields("{[{a} and {b}]}") == ["a", "b"]
    assert template_sections("{{[literal]}} {x}") == [("{{[literal]}} {x}", False)]  # doubled braces stay text


@pytest.mark.parametrize("template, said", [
    ("{[### Input:\n{input}\n", "never closed with ]}"),
    ("{[a {x} {[b {y}]}]}", "cannot hold another one"),
    ("{[### Input:\n]}{x}", "uses no column"),
])
def test_malformed_sections_are_refused_by_the_config_check(template: str, said: str) -> None:
    with pytest.raises(ValueError, match=said.replace("[", r"\[").replace("]", r"\]")):
        template_fields(template)
    with pytest.raises(ConfigError) as info:
        parse_config_text(MINIMAL + "  prompt_template: " + yaml.safe_dump(template).strip().removesuffix("...")
                          .strip() + "\n  completion_template: '{out}'\n", environ={})
    (problem,) = info.value.problems
    assert problem.key == "data.prompt_template" and said in problem.message


ROWS = [
    {"instruction": "Add 1 and 2.", "input": "", "output": "3"},
    {"instruction": "Add these.", "input": "4 and 5", "output": "9"},
    {"instruction": "Say hi.", "input": None, "output": "hi"},
    {"instruction": "Say bye.", "output": "bye"},  # no input key at all
    {"instruction": "Wave.", "input": "   ", "output": "*waves*"},
]


def test_a_section_is_left_out_where_its_columns_are_empty(in_tmp: Path, tiny_model: Path) -> None:
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": ROWS}, prompt_template=PROMPT,
                      completion_template="{output}")
    texts = [e.text for e in build_preview(cfg).splits[0].formatted.examples]
    assert texts == [
        "### Instruction:\nAdd 1 and 2.\n### Response:\n3</s>",
        "### Instruction:\nAdd these.\n### Input:\n4 and 5\n### Response:\n9</s>",
        "### Instruction:\nSay hi.\n### Response:\nhi</s>",
        "### Instruction:\nSay bye.\n### Response:\nbye</s>",
        "### Instruction:\nWave.\n### Response:\n*waves*</s>",
    ]


def test_a_section_with_several_columns_stays_while_one_has_text(in_tmp: Path, tiny_model: Path) -> None:
    rows = [{"q": "Why?", "a": "", "b": "because", "out": "ok"}, {"q": "How?", "a": None, "b": "", "out": "so"}]
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": rows}, prompt_template="{q}{[ ({a}|{b})]}\n",
                      completion_template="{out}")
    texts = [e.text for e in build_preview(cfg).splits[0].formatted.examples]
    assert texts == ["Why? (|because)\nok</s>", "How?\nso</s>"]


# ---------------------------------------------------------------- writing templates back


@pytest.mark.parametrize("prompt", ["### Instruction:\n{instruction}\n\n### Response:\n", PROMPT],
                         ids=["plain", "sections"])
def test_multi_line_templates_are_written_as_block_scalars_and_read_back_equal(prompt: str) -> None:
    text = MINIMAL + "  prompt_template: " + json.dumps(prompt) + "\n  completion_template: '{output}'\n"
    cfg = parse_config_text(text, environ={})
    written = to_yaml(cfg)
    assert "  prompt_template: |\n    ### Instruction:\n    {instruction}\n" in written
    assert yaml.safe_load(written) == to_dict(cfg)
    assert parse_config_text(written, environ={}) == cfg


def test_any_multi_line_text_round_trips() -> None:
    """Where a block cannot hold a text exactly (trailing spaces, control characters, leading blank lines), the
    writer must fall back to a quoted scalar: the value read back is always the value written."""
    rng = random.Random(7)
    alphabet = ["\n", "\n\n", " ", "  ", "\t", "a", "b", "#", ":", "- ", "{x}", "'", '"', "|", ">", "\r", "é", "\u2028",
                "\x85", "\ufeff", "\\"]
    cfg = parse_config_text(MINIMAL, environ={})
    for _ in range(400):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        cfg.data.prompt_template = value
        assert yaml.safe_load(to_yaml(cfg))["data"]["prompt_template"] == value, repr(value)
