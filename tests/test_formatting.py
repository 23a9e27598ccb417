"""engine.formatting (with engine.chat_templates): rows -> the texts a trainer sees, with their trained spans.

Every data shape AutoTrain accepts (text, message lists, prompt/completion, preference pairs as strings or as
whole conversations) through each chat template, with the exact text asserted; and every way a row can be
refused or dropped. Token-level masks, truncation and statistics are in test_preview.py.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from engine.chat_templates import renderer, setup_tokenizer
from engine.errors import DataError
from engine.formatting import MAX_ROW_PROBLEMS, PairExample, TextExample
from engine.preview import Preview, build_preview
from support import tiny_config

SYSTEM = {"role": "system", "content": "You are terse."}
CONVERSATION = [
    SYSTEM,
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "hi there"},
    {"role": "user", "content": "How are you?"},
    {"role": "assistant", "content": "fine"},
]
PREFERENCE_COLUMNS = {"prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"}


pytestmark = pytest.mark.usefixtures("in_tmp")  # each test in its own directory (conftest)


def csv_text(header: list[str], *rows: list[Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def preview(tmp_path: Path, tiny_model: Path, files: dict[str, Any], *, task: str = "llm-sft",
            params: dict[str, Any] | None = None, n_samples: int = 3, **data: Any) -> Preview:
    """Write the data and an AutoTrain-style config into tmp_path, and preview it."""
    cfg = tiny_config(tmp_path, tiny_model, files, task=task, params=params, **data)
    return build_preview(cfg, n_samples=n_samples)


def examples(p: Preview) -> list[Any]:
    return p.splits[0].formatted.examples


def spans_text(example: TextExample) -> list[str]:
    return [example.text[a:b] for a, b in example.spans]


def pair_texts(example: PairExample) -> tuple[str, str, str]:
    return example.prompt, example.chosen, example.rejected


def refused(tmp_path: Path, tiny_model: Path, files: dict[str, Any], **kwargs: Any) -> DataError:
    with pytest.raises(DataError) as excinfo:
        preview(tmp_path, tiny_model, files, **kwargs)
    return excinfo.value


# ---------------------------------------------------------------- AutoTrain's chat templates


CHATML_TEXT = (
    "<|im_start|>system\nYou are terse.<|im_end|>\n"
    "<|im_start|>user\nHello<|im_end|>\n"
    "<|im_start|>assistant\nhi there<|im_end|>\n"
    "<|im_start|>user\nHow are you?<|im_end|>\n"
    "<|im_start|>assistant\nfine<|im_end|>\n"
)
# AutoTrain's zephyr template keeps the newline after each `{{ ... eos_token }}`: every turn ends "</s>\n".
ZEPHYR_TEXT = (
    "<|system|>\nYou are terse.</s>\n"
    "<|user|>\nHello</s>\n"
    "<|assistant|>\nhi there</s>\n"
    "<|user|>\nHow are you?</s>\n"
    "<|assistant|>\nfine</s>\n"
)
TOKENIZER_TEXT = (
    "<s><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nhi there<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nfine<|eot_id|>"
)


@pytest.mark.parametrize("name, text, generation_prompt, added, eos", [
    ("chatml", CHATML_TEXT, "<|im_start|>assistant\n", ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    ("zephyr", ZEPHYR_TEXT, "<|assistant|>\n", ["<|system|>", "<|user|>", "<|assistant|>"], "</s>"),
])
def test_builtin_templates_render_autotrain_text(tiny_model: Path, name: str, text: str, generation_prompt: str,
                                                 added: list[str], eos: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    setup = setup_tokenizer(tokenizer, name)
    render = renderer(tokenizer)
    assert render(CONVERSATION) == text
    assert render(CONVERSATION[:4], add_generation_prompt=True) == text[:text.index("fine")]
    assert render(CONVERSATION[:4], add_generation_prompt=True).endswith(generation_prompt)
    assert setup.added_tokens == added
    assert tokenizer.eos_token == eos
    for token in added:  # each marker is one token, never split into pieces
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("template, text, trained", [
    ("chatml", CHATML_TEXT, ["hi there<|im_end|>\n", "fine<|im_end|>\n"]),
    ("zephyr", ZEPHYR_TEXT, ["hi there</s>\n", "fine</s>\n"]),
    ("tokenizer", TOKENIZER_TEXT, ["hi there<|eot_id|>", "fine<|eot_id|>"]),
])
def test_conversation_text_and_assistant_spans(tmp_path: Path, tiny_model: Path, template: str, text: str,
                                               trained: list[str]) -> None:
    p = preview(tmp_path, tiny_model, {"train.jsonl": [{"messages": CONVERSATION}]}, chat_template=template,
                column_mapping={"text_column": "messages"})
    [example] = examples(p)
    assert example.text == text
    assert spans_text(example) == trained
    assert p.splits[0].formatted.shape == "messages"


def test_train_on_all_tokens_spans_the_whole_conversation(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, {"train.jsonl": [{"messages": CONVERSATION}]}, chat_template="chatml",
                column_mapping={"text_column": "messages"}, params={"train_on_all_tokens": True})
    [example] = examples(p)
    assert example.spans == [(0, len(CHATML_TEXT))]


def test_zephyr_adds_no_system_turn_to_sft_conversations(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, {"train.jsonl": [{"messages": CONVERSATION[1:3]}]}, chat_template="zephyr",
                column_mapping={"text_column": "messages"})
    assert examples(p)[0].text == "<|user|>\nHello</s>\n<|assistant|>\nhi there</s>\n"


def test_message_lists_need_a_chat_template(tmp_path: Path, tiny_model: Path) -> None:
    error = refused(tmp_path, tiny_model, {"train.jsonl": [{"messages": CONVERSATION}]},
                    column_mapping={"text_column": "messages"})
    [problem] = error.problems
    assert problem.key == "train.jsonl:1"
    assert "data.chat_template is none" in problem.message
    assert problem.fix == "set data.chat_template to tokenizer (the model's own), chatml or zephyr"


@pytest.mark.parametrize("template", ["chatml", "zephyr", "tokenizer"])
def test_plain_text_with_a_chat_template_is_refused(tmp_path: Path, tiny_model: Path, template: str) -> None:
    error = refused(tmp_path, tiny_model, {"train.jsonl": [{"text": "Just a sentence."}]}, chat_template=template)
    [problem] = error.problems
    assert problem.key == "train.jsonl:1"
    assert problem.message == (f"column 'text' holds plain text, but data.chat_template is {template}, which "
                               "formats message lists")
    assert problem.fix.startswith("set data.chat_template: none")


def test_plain_text_sft_ends_with_eos_and_is_trained_whole(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, {"train.jsonl": [{"text": "Just a sentence."}]})
    [example] = examples(p)
    assert example.text == "Just a sentence.</s>"
    assert spans_text(example) == ["Just a sentence.</s>"]
    assert p.splits[0].formatted.shape == "text"


# ---------------------------------------------------------------- prompt/completion


DOLLY = csv_text(
    ["instruction", "context", "response", "category"],
    ["Name a primary color.", "", "Red.", "open_qa"],
    ["Summarize the text.", "The cat sat on the mat, then slept.", "A cat napped.", "summarization"],
)
DOLLY_TEMPLATES = {
    "prompt_template": "### Instruction:\n{instruction}\n\n### Context:\n{context}\n\n### Response:\n",
    "completion_template": "{response}",
}
DOLLY_PROMPTS = [
    "### Instruction:\nName a primary color.\n\n### Context:\n\n\n### Response:\n",
    "### Instruction:\nSummarize the text.\n\n### Context:\nThe cat sat on the mat, then slept.\n\n### Response:\n",
]


def test_templates_without_chat_template_give_prompt_completion_eos(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, {"train.csv": DOLLY}, **DOLLY_TEMPLATES)
    first, second = examples(p)
    assert first.text == DOLLY_PROMPTS[0] + "Red.</s>"
    assert spans_text(first) == ["Red.</s>"]
    assert second.text == DOLLY_PROMPTS[1] + "A cat napped.</s>"
    assert spans_text(second) == ["A cat napped.</s>"]
    formatted = p.splits[0].formatted
    assert formatted.shape == "prompt/completion (templates)"
    assert formatted.columns_used == ["instruction", "context", "response"]
    assert formatted.columns_dropped == ["category"]
    assert first.location == "train.csv:row 1 (line 2)"


def test_templates_with_chatml_become_a_user_assistant_conversation(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, {"train.csv": DOLLY}, chat_template="chatml", **DOLLY_TEMPLATES)
    first, _ = examples(p)
    assert first.text == (f"<|im_start|>user\n{DOLLY_PROMPTS[0]}<|im_end|>\n"
                          "<|im_start|>assistant\nRed.<|im_end|>\n")
    assert spans_text(first) == ["Red.<|im_end|>\n"]


def test_train_on_all_tokens_trains_the_prompt_too(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, {"train.csv": DOLLY}, params={"train_on_all_tokens": True}, **DOLLY_TEMPLATES)
    first, _ = examples(p)
    assert spans_text(first) == [DOLLY_PROMPTS[0] + "Red.</s>"]


def test_prompt_template_with_text_column_as_completion(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, {"train.csv": DOLLY}, prompt_template="Q: {instruction}\nA: ",
                column_mapping={"text_column": "response"})
    first, _ = examples(p)
    assert first.text == "Q: Name a primary color.\nA: Red.</s>"
    assert spans_text(first) == ["Red.</s>"]
    assert p.splits[0].formatted.columns_used == ["instruction", "response"]


def test_template_field_absent_from_a_jsonl_row_reads_as_empty(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"instruction": "Say hi.", "context": "Be brief.", "response": "Hi."},
            {"instruction": "Say bye.", "response": "Bye."},  # no context key at all
            {"instruction": "Say yes.", "context": None, "response": "Yes."}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, prompt_template="{instruction}|{context}|",
                completion_template="{response}")
    assert [e.text for e in examples(p)] == ["Say hi.|Be brief.|Hi.</s>", "Say bye.||Bye.</s>",
                                             "Say yes.||Yes.</s>"]


@pytest.mark.parametrize("template, text, trained", [
    ("none", "What is 2+2?\nFour.</s>", ["Four.</s>"]),
    ("chatml", "<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\nFour.<|im_end|>\n",
     ["Four.<|im_end|>\n"]),
])
def test_sft_prompt_text_column(tmp_path: Path, tiny_model: Path, template: str, text: str,
                                trained: list[str]) -> None:
    data = csv_text(["question", "answer", "source"], ["What is 2+2?\n", "Four.", "math"])
    p = preview(tmp_path, tiny_model, {"train.csv": data}, chat_template=template,
                column_mapping={"prompt_text_column": "question", "text_column": "answer"})
    [example] = examples(p)
    assert example.text == text
    assert spans_text(example) == trained
    assert p.splits[0].formatted.shape == "prompt/completion"
    assert p.splits[0].formatted.columns_dropped == ["source"]


def test_sft_prompt_column_holding_messages_gets_the_completion_as_assistant(tmp_path: Path,
                                                                            tiny_model: Path) -> None:
    rows = [{"prompt": CONVERSATION[:2], "completion": "hi there"}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="chatml",
                column_mapping={"prompt_text_column": "prompt", "text_column": "completion"})
    [example] = examples(p)
    assert example.text == CHATML_TEXT[:CHATML_TEXT.index("<|im_start|>user\nHow")]
    assert spans_text(example) == ["hi there<|im_end|>\n"]
    assert p.splits[0].formatted.shape == "prompt messages/completion"


def test_template_column_missing_lists_the_columns(tmp_path: Path, tiny_model: Path) -> None:
    error = refused(tmp_path, tiny_model, {"train.csv": csv_text(["instruction", "response"], ["a", "b"])},
                    prompt_template="{instruction}\n{context}\n", completion_template="{response}")
    [problem] = error.problems
    assert problem.key == "train.csv"
    assert problem.message == "has no column 'context' (the config maps it); its columns are: instruction, response"


def test_empty_completion_is_dropped_and_counted(tmp_path: Path, tiny_model: Path) -> None:
    data = csv_text(["instruction", "context", "response"], ["a", "", "b"], ["c", "", "  "])
    p = preview(tmp_path, tiny_model, {"train.csv": data}, **DOLLY_TEMPLATES)
    formatted = p.splits[0].formatted
    assert formatted.rows == 2
    assert len(formatted.examples) == 1
    assert dict(formatted.dropped) == {"empty completion": 1}


# ---------------------------------------------------------------- preference pairs: strings


PAIR_ROWS = [{"prompt": "What is 2+2?", "chosen": " Four.", "rejected": " Five."},
             {"prompt": "Name a fruit.", "chosen": " Apple.", "rejected": " Rock."}]


def pair_files(fmt: str, rows: list[dict[str, Any]] = PAIR_ROWS) -> dict[str, Any]:
    if fmt == "jsonl":
        return {"train.jsonl": rows}
    return {"train.csv": csv_text(list(rows[0]), *[list(r.values()) for r in rows])}


@pytest.mark.parametrize("task", ["llm-dpo", "llm-orpo"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_preference_strings_without_template(tmp_path: Path, tiny_model: Path, task: str, fmt: str) -> None:
    p = preview(tmp_path, tiny_model, pair_files(fmt), task=task, column_mapping=PREFERENCE_COLUMNS)
    assert [pair_texts(e) for e in examples(p)] == [("What is 2+2?", " Four.</s>", " Five.</s>"),
                                                    ("Name a fruit.", " Apple.</s>", " Rock.</s>")]
    assert p.splits[0].formatted.shape == "preference (text)"
    assert p.splits[0].formatted.columns_used == ["prompt", "chosen", "rejected"]


@pytest.mark.parametrize("task", ["llm-dpo", "llm-orpo"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_preference_strings_with_chatml(tmp_path: Path, tiny_model: Path, task: str, fmt: str) -> None:
    p = preview(tmp_path, tiny_model, pair_files(fmt), task=task, chat_template="chatml",
                column_mapping=PREFERENCE_COLUMNS)
    assert pair_texts(examples(p)[0]) == ("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
                                          " Four.<|im_end|>\n", " Five.<|im_end|>\n")


def test_preference_strings_with_zephyr_get_an_empty_system_turn(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, pair_files("jsonl"), task="llm-dpo", chat_template="zephyr",
                column_mapping=PREFERENCE_COLUMNS)
    assert pair_texts(examples(p)[0]) == ("<|system|>\n</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n",
                                          " Four.</s>\n", " Five.</s>\n")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_reward_strings_are_whole_texts(tmp_path: Path, tiny_model: Path, fmt: str) -> None:
    p = preview(tmp_path, tiny_model, pair_files(fmt), task="llm-reward", column_mapping=PREFERENCE_COLUMNS)
    assert pair_texts(examples(p)[0]) == ("", "What is 2+2? Four.</s>", "What is 2+2? Five.</s>")


def test_reward_strings_without_prompt_column(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, pair_files("jsonl"), task="llm-reward",
                column_mapping={"text_column": "chosen", "rejected_text_column": "rejected"})
    assert pair_texts(examples(p)[0]) == ("", " Four.</s>", " Five.</s>")
    assert p.splits[0].formatted.columns_dropped == ["prompt"]


def test_reward_strings_with_chatml(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, pair_files("jsonl"), task="llm-reward", chat_template="chatml",
                column_mapping=PREFERENCE_COLUMNS)
    prompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert pair_texts(examples(p)[0]) == ("", prompt + " Four.<|im_end|>\n", prompt + " Five.<|im_end|>\n")


@pytest.mark.parametrize("template", ["none", "chatml"])
def test_empty_or_identical_pairs_are_dropped(tmp_path: Path, tiny_model: Path, template: str) -> None:
    rows = [{"prompt": "Q1", "chosen": "", "rejected": "no"},
            {"prompt": "Q2", "chosen": "same", "rejected": "same"},
            {"prompt": "", "chosen": "yes", "rejected": "no"},
            {"prompt": "Q4", "chosen": "yes", "rejected": "no"}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-dpo", chat_template=template,
                column_mapping=PREFERENCE_COLUMNS)
    formatted = p.splits[0].formatted
    assert [e.location for e in formatted.examples] == ["train.jsonl:4"]
    assert dict(formatted.dropped) == {"empty chosen or rejected text": 1, "chosen and rejected are the same": 1,
                                       "empty prompt": 1}


def test_preference_strings_with_a_chat_template_need_the_prompt(tmp_path: Path, tiny_model: Path) -> None:
    error = refused(tmp_path, tiny_model, pair_files("jsonl"), task="llm-dpo", chat_template="chatml",
                    column_mapping={"text_column": "chosen", "rejected_text_column": "rejected"})
    assert [p.key for p in error.problems] == ["train.jsonl:1", "train.jsonl:2"]
    assert "a chat template needs the prompt" in error.problems[0].message


# ---------------------------------------------------------------- preference pairs: whole conversations


USER = {"role": "user", "content": "What is 2+2?"}
ULTRAFEEDBACK = [{"prompt": "What is 2+2?",
                  "chosen": [USER, {"role": "assistant", "content": "Four."}],
                  "rejected": [USER, {"role": "assistant", "content": "Five."}],
                  "score_chosen": 9.0, "score_rejected": 2.0}]
WHOLE_COLUMNS = {"text_column": "chosen", "rejected_text_column": "rejected"}
CHATML_PROMPT = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("task", ["llm-dpo", "llm-orpo"])
def test_conversations_share_their_leading_turns_as_the_prompt(tmp_path: Path, tiny_model: Path,
                                                               task: str) -> None:
    p = preview(tmp_path, tiny_model, {"train.jsonl": ULTRAFEEDBACK}, task=task, chat_template="chatml",
                column_mapping=WHOLE_COLUMNS)
    assert pair_texts(examples(p)[0]) == (CHATML_PROMPT, "Four.<|im_end|>\n", "Five.<|im_end|>\n")
    formatted = p.splits[0].formatted
    assert formatted.shape == "preference (messages)"
    assert formatted.columns_used == ["chosen", "rejected"]
    assert formatted.columns_dropped == ["prompt", "score_chosen", "score_rejected"]


def test_conversations_as_json_and_python_strings_in_csv(tmp_path: Path, tiny_model: Path) -> None:
    row = ULTRAFEEDBACK[0]
    data = csv_text(["chosen", "rejected"], [json.dumps(row["chosen"]), repr(row["rejected"])])
    p = preview(tmp_path, tiny_model, {"train.csv": data}, task="llm-dpo", chat_template="chatml",
                column_mapping=WHOLE_COLUMNS)
    assert pair_texts(examples(p)[0]) == (CHATML_PROMPT, "Four.<|im_end|>\n", "Five.<|im_end|>\n")


def test_multi_turn_conversations_split_after_the_last_shared_turn(tmp_path: Path, tiny_model: Path) -> None:
    shared = CONVERSATION[:4]
    rows = [{"chosen": shared + [{"role": "assistant", "content": "fine"}],
             "rejected": shared + [{"role": "assistant", "content": "Go away."}]}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-dpo", chat_template="chatml",
                column_mapping=WHOLE_COLUMNS)
    prompt = CHATML_TEXT[:CHATML_TEXT.index("fine")]
    assert pair_texts(examples(p)[0]) == (prompt, "fine<|im_end|>\n", "Go away.<|im_end|>\n")


def test_zephyr_conversations_get_an_empty_system_turn_unless_they_have_one(tmp_path: Path,
                                                                            tiny_model: Path) -> None:
    with_system = {"chosen": [SYSTEM] + ULTRAFEEDBACK[0]["chosen"],
                   "rejected": [SYSTEM] + ULTRAFEEDBACK[0]["rejected"]}
    p = preview(tmp_path, tiny_model, {"train.jsonl": [ULTRAFEEDBACK[0], with_system]}, task="llm-dpo",
                chat_template="zephyr", column_mapping=WHOLE_COLUMNS)
    first, second = examples(p)
    assert pair_texts(first) == ("<|system|>\n</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n",
                                 "Four.</s>\n", "Five.</s>\n")
    assert second.prompt == "<|system|>\nYou are terse.</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n"


@pytest.mark.parametrize("template, chosen, rejected", [
    ("chatml", CHATML_PROMPT + "Four.<|im_end|>\n", CHATML_PROMPT + "Five.<|im_end|>\n"),
    ("zephyr", "<|system|>\n</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\nFour.</s>\n",
     "<|system|>\n</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\nFive.</s>\n"),
])
def test_reward_conversations_are_whole_texts(tmp_path: Path, tiny_model: Path, template: str, chosen: str,
                                              rejected: str) -> None:
    p = preview(tmp_path, tiny_model, {"train.jsonl": ULTRAFEEDBACK}, task="llm-reward", chat_template=template,
                column_mapping=WHOLE_COLUMNS)
    assert pair_texts(examples(p)[0]) == ("", chosen, rejected)


def test_prompt_column_is_prepended_when_conversations_share_no_user_turn(tmp_path: Path,
                                                                          tiny_model: Path) -> None:
    rows = [{"prompt": "What is 2+2?", "chosen": [{"role": "assistant", "content": "Four."}],
             "rejected": [{"role": "assistant", "content": "Five."}]}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-orpo", chat_template="chatml",
                column_mapping=PREFERENCE_COLUMNS)
    assert pair_texts(examples(p)[0]) == (CHATML_PROMPT, "Four.<|im_end|>\n", "Five.<|im_end|>\n")


def test_identical_conversations_are_dropped(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"chosen": ULTRAFEEDBACK[0]["chosen"], "rejected": ULTRAFEEDBACK[0]["chosen"]}] + ULTRAFEEDBACK
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-dpo", chat_template="chatml",
                column_mapping=WHOLE_COLUMNS)
    assert dict(p.splits[0].formatted.dropped) == {"chosen and rejected are the same": 1}
    assert len(examples(p)) == 1


def test_conversations_need_a_chat_template(tmp_path: Path, tiny_model: Path) -> None:
    error = refused(tmp_path, tiny_model, {"train.jsonl": ULTRAFEEDBACK}, task="llm-dpo",
                    column_mapping=PREFERENCE_COLUMNS)
    [problem] = error.problems
    assert problem.key == "train.jsonl:1"
    assert problem.message == "chosen/rejected are message lists, but data.chat_template is none"


def test_one_conversation_and_one_string_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"chosen": ULTRAFEEDBACK[0]["chosen"], "rejected": "Five."}]
    error = refused(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-dpo", chat_template="chatml",
                    column_mapping=WHOLE_COLUMNS)
    assert error.problems[0].message == ("one of 'chosen' and 'rejected' is a message list and the other is not")


# ---------------------------------------------------------------- messages: roles, parsing, bad rows


def test_role_aliases_and_sharegpt_keys_are_mapped_and_counted(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
            {"conversations": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"},
                               {"role": "human", "content": "x"}, {"role": "model", "content": "y"}]}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="chatml",
                column_mapping={"text_column": "conversations"})
    first, second = examples(p)
    assert first.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    assert spans_text(second) == ["Yo<|im_end|>\n", "y<|im_end|>\n"]
    assert dict(p.splits[0].formatted.roles_mapped) == {
        "ShareGPT from/value -> role/content": 2, "human -> user": 2, "gpt -> assistant": 1,
        "bot -> assistant": 1, "model -> assistant": 1}


def test_unknown_role_names_the_row_and_the_role(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"messages": CONVERSATION}, {"messages": [USER, {"role": "narrator", "content": "Meanwhile..."}]}]
    error = refused(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="chatml",
                    column_mapping={"text_column": "messages"})
    [problem] = error.problems
    assert problem.key == "train.jsonl:2"
    assert problem.message == "message 2 in column 'messages' has role 'narrator'"
    assert "human, gpt, bot and model are mapped" in problem.fix
    assert "train.jsonl:2: message 2 in column 'messages' has role 'narrator'" in str(error)


def test_null_content_names_the_row(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"messages": [USER, {"role": "assistant", "content": None}]}]
    error = refused(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="chatml",
                    column_mapping={"text_column": "messages"})
    [problem] = error.problems
    assert (problem.key, problem.message) == ("train.jsonl:1", "message 2 in column 'messages' has no content (null)")


@pytest.mark.parametrize("task, columns", [
    ("llm-sft", {"text_column": "text"}),
    ("llm-generic", {"text_column": "text"}),
    ("llm-reward", {"text_column": "text", "rejected_text_column": "rejected"}),
])
def test_null_where_text_is_required_names_file_and_line(tmp_path: Path, tiny_model: Path, task: str,
                                                         columns: dict[str, str]) -> None:
    rows = [{"text": "Fine.", "rejected": "Bad."}, {"text": None, "rejected": "Bad."}]
    error = refused(tmp_path, tiny_model, {"train.jsonl": rows}, task=task, column_mapping=columns)
    [problem] = error.problems
    assert problem.key == "train.jsonl:2"
    assert problem.message == "column 'text' is empty (null), and the trainer needs it"
    assert error.title == "the data does not fit the config"


def test_bad_rows_are_reported_together_up_to_a_limit(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"text": None} for _ in range(MAX_ROW_PROBLEMS + 3)]
    error = refused(tmp_path, tiny_model, {"train.jsonl": rows})
    assert [p.key for p in error.problems] == [f"train.jsonl:{n}" for n in range(1, MAX_ROW_PROBLEMS + 1)] + ["..."]
    assert error.problems[-1].message == "and 3 more row(s) with problems"


def test_message_lists_as_json_and_python_strings_in_csv_cells(tmp_path: Path, tiny_model: Path) -> None:
    messages = [{"role": "user", "content": "Hi, it's me"}, {"role": "assistant", "content": "Hello"}]
    data = csv_text(["text", "id"], [json.dumps(messages), 1], [repr(messages), 2])
    assert "'role': 'user'" in data  # AutoTrain's docs show message lists as Python reprs
    p = preview(tmp_path, tiny_model, {"train.csv": data}, chat_template="chatml")
    expected = "<|im_start|>user\nHi, it's me<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    assert [e.text for e in examples(p)] == [expected, expected]
    assert p.splits[0].formatted.columns_dropped == ["id"]


def test_unparseable_message_list_names_the_row(tmp_path: Path, tiny_model: Path) -> None:
    data = csv_text(["text"], ['[{"role": "user", "content": "Hi"}, {"role": "assistant"]'])
    error = refused(tmp_path, tiny_model, {"train.csv": data}, chat_template="chatml")
    [problem] = error.problems
    assert problem.key == "train.csv:row 1 (line 2)"
    assert problem.message == "column 'text' looks like a message list but is neither JSON nor a Python list"


def test_rows_without_text_or_assistant_turn_are_dropped_with_a_reason(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"messages": CONVERSATION, "id": 1},
            {"messages": [SYSTEM, USER], "id": 2},
            {"messages": CONVERSATION[:2], "id": 3}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="chatml",
                column_mapping={"text_column": "messages"})
    formatted = p.splits[0].formatted
    assert (formatted.rows, len(formatted.examples)) == (3, 1)
    assert dict(formatted.dropped) == {"no assistant turn to learn from": 2}
    assert formatted.columns_used == ["messages"]
    assert formatted.columns_dropped == ["id"]

    text_rows = [{"text": "Kept."}, {"text": ""}, {"text": "   \n"}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": text_rows}, task="llm-generic")
    assert dict(p.splits[0].formatted.dropped) == {"empty text": 2}
    assert [e.text for e in examples(p)] == ["Kept.</s>"]


def test_mapped_column_that_does_not_exist_lists_the_columns(tmp_path: Path, tiny_model: Path) -> None:
    error = refused(tmp_path, tiny_model, {"train.jsonl": [{"conversation": CONVERSATION, "id": 1}]},
                    chat_template="chatml", column_mapping={"text_column": "conversations"})
    [problem] = error.problems
    assert problem.key == "train.jsonl"
    assert problem.message == "has no column 'conversations' (the config maps it); its columns are: conversation, id"
    assert problem.fix.startswith("did you mean conversation? ")


def test_every_missing_preference_column_is_reported(tmp_path: Path, tiny_model: Path) -> None:
    data = csv_text(["question", "good", "bad"], ["q", "a", "b"])
    error = refused(tmp_path, tiny_model, {"train.csv": data}, task="llm-dpo", column_mapping=PREFERENCE_COLUMNS)
    assert [p.message.split(" (")[0] for p in error.problems] == [
        "has no column 'prompt'", "has no column 'chosen'", "has no column 'rejected'"]
    assert all(p.message.endswith("its columns are: question, good, bad") for p in error.problems)


def test_a_split_with_no_usable_rows_is_an_error(tmp_path: Path, tiny_model: Path) -> None:
    error = refused(tmp_path, tiny_model, {"train.jsonl": [{"messages": [{"role": "user", "content": "hi"}]}]},
                    chat_template="chatml", column_mapping={"text_column": "messages"})
    assert "no usable rows in the train split (1 no assistant turn to learn from)" in error.render()
