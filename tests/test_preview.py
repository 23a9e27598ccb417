"""engine.preview (with engine.encoding): the exact tokens trained on, what length limits cut, the statistics.

The loss mask is checked token by token from the encoder's output and decoded back to text, for each chat
template; truncation is checked in counts and in the samples' segments. Row formatting is in test_formatting.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.config import RunConfig
from engine.encoding import Encoded, encode_examples, encode_pairs
from engine.errors import ConfigError
from engine.pipeline import load_and_format, prepare_tokenizer
from engine.preview import Part, Preview, build_preview
from support import tiny_config

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "hi there"},
    {"role": "user", "content": "How are you?"},
    {"role": "assistant", "content": "fine"},
]
LONG = "Once upon a time, a curious fox lived at the edge of a quiet forest."
PREFERENCE_COLUMNS = {"prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"}


pytestmark = pytest.mark.usefixtures("in_tmp")  # each test in its own directory (conftest)


def config(tmp_path: Path, tiny_model: Path, files: dict[str, Any], *, task: str = "llm-sft",
           params: dict[str, Any] | None = None, **data: Any) -> RunConfig:
    """Write the data (name -> rows as JSONL, or text) and parse an AutoTrain-style config over it."""
    return tiny_config(tmp_path, tiny_model, files, task=task, params=params, **data)


def preview(tmp_path: Path, tiny_model: Path, files: dict[str, Any], *, n_samples: int = 3, **kwargs: Any
            ) -> Preview:
    return build_preview(config(tmp_path, tiny_model, files, **kwargs), n_samples=n_samples)


def encoded(cfg: RunConfig) -> tuple[Any, list[Any], list[Encoded]]:
    """The tokenizer, the train examples and their encodings, as the trainers get them."""
    tokenizer, setup = prepare_tokenizer(cfg)
    [train] = load_and_format(cfg, tokenizer, setup)
    return tokenizer, train.examples, encode_examples(tokenizer, train.examples, add_special_tokens=not setup.is_chat)


def trained_runs(tokenizer: Any, enc: Encoded) -> list[str]:
    """Each run of consecutive trained tokens, decoded."""
    runs: list[list[int]] = []
    for i, (token, trained) in enumerate(zip(enc.ids, enc.trained)):
        if trained:
            if i == 0 or not enc.trained[i - 1]:
                runs.append([])
            runs[-1].append(token)
    return [tokenizer.decode(run) for run in runs]


def segments(part: Part) -> list[tuple[str, str]]:
    return [(s.kind, s.text) for s in part.segments]


def joined(part: Part) -> str:
    return "".join(s.text for s in part.segments)


# ---------------------------------------------------------------- the loss mask of a conversation


@pytest.mark.parametrize("template, text, trained", [
    ("chatml",
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\nhi there<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
     "<|im_start|>assistant\nfine<|im_end|>\n",
     ["hi there<|im_end|>\n", "fine<|im_end|>\n"]),
    # AutoTrain's zephyr template writes a newline after each EOS, and it belongs to the assistant's turn.
    ("zephyr",
     "<|system|>\nYou are terse.</s>\n<|user|>\nHello</s>\n<|assistant|>\nhi there</s>\n"
     "<|user|>\nHow are you?</s>\n<|assistant|>\nfine</s>\n",
     ["hi there</s>\n", "fine</s>\n"]),
    ("tokenizer",
     "<s><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nhi there<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nfine<|eot_id|>",
     ["hi there<|eot_id|>", "fine<|eot_id|>"]),
])
def test_conversation_label_mask(tmp_path: Path, tiny_model: Path, template: str, text: str,
                                 trained: list[str]) -> None:
    cfg = config(tmp_path, tiny_model, {"train.jsonl": [{"messages": CONVERSATION}]}, chat_template=template,
                 column_mapping={"text_column": "messages"})
    tokenizer, [example], [enc] = encoded(cfg)
    assert example.text == text
    assert tokenizer.decode(enc.ids) == text  # rendered text holds its own special tokens: nothing is added
    assert trained_runs(tokenizer, enc) == trained
    # The preview shows the same mask as segments, and counts what it shows.
    p = build_preview(cfg, n_samples=1)
    [part] = p.samples[0].parts
    assert [s.text for s in part.segments if s.kind == "trained"] == trained
    assert {s.kind for s in part.segments} == {"trained", "masked"}
    assert joined(part) == text
    assert part.trained == sum(enc.trained) == p.splits[0].trained_tokens
    assert part.tokens == len(enc) == p.splits[0].total_tokens
    assert p.splits[0].no_trained == 0


@pytest.mark.parametrize("template", ["chatml", "zephyr", "tokenizer"])
def test_train_on_all_tokens_trains_every_token_but_the_first(tmp_path: Path, tiny_model: Path,
                                                              template: str) -> None:
    cfg = config(tmp_path, tiny_model, {"train.jsonl": [{"messages": CONVERSATION}]}, chat_template=template,
                 column_mapping={"text_column": "messages"}, params={"train_on_all_tokens": True})
    _, _, [enc] = encoded(cfg)
    assert enc.trained == [False] + [True] * (len(enc) - 1)


def test_plain_text_gets_bos_and_trains_all_after_it(tmp_path: Path, tiny_model: Path) -> None:
    cfg = config(tmp_path, tiny_model, {"train.jsonl": [{"text": "Hello world."}]})
    tokenizer, _, [enc] = encoded(cfg)
    assert tokenizer.convert_ids_to_tokens(enc.ids[0]) == "<s>"
    assert trained_runs(tokenizer, enc) == ["Hello world.</s>"]
    [part] = build_preview(cfg).samples[0].parts
    assert segments(part) == [("masked", "<s>"), ("trained", "Hello world.</s>")]


# ---------------------------------------------------------------- prompt/completion masks


DOLLY = ("instruction,context,response,category\n"
         "Name a primary color.,,Red.,open_qa\n"
         '"Summarize the text.","The cat sat on the mat, then slept.","A cat napped.",summarization\n')
DOLLY_TEMPLATES = {
    "prompt_template": "### Instruction:\n{instruction}\n\n### Context:\n{context}\n\n### Response:\n",
    "completion_template": "{response}",
}


@pytest.mark.parametrize("template, trained", [
    ("none", [["Red.</s>"], ["A cat napped.</s>"]]),
    ("chatml", [["Red.<|im_end|>\n"], ["A cat napped.<|im_end|>\n"]]),
])
def test_only_the_completion_is_trained(tmp_path: Path, tiny_model: Path, template: str,
                                        trained: list[list[str]]) -> None:
    cfg = config(tmp_path, tiny_model, {"train.csv": DOLLY}, chat_template=template, **DOLLY_TEMPLATES)
    tokenizer, _, encs = encoded(cfg)
    assert [trained_runs(tokenizer, e) for e in encs] == trained


def test_completion_token_merged_with_the_prompt_end_is_trained(tmp_path: Path, tiny_model: Path) -> None:
    # "Sentiment: " + "positive": the space and the word's start are one token, which must carry the loss
    # (masking it would leave a one-word label with nothing but EOS to learn).
    cfg = config(tmp_path, tiny_model, {"train.csv": "review,label\nGreat film!,positive\n"},
                 prompt_template="Review: {review}\nSentiment: ", completion_template="{label}")
    tokenizer, [example], [enc] = encoded(cfg)
    assert example.text[example.spans[0][0]:] == "positive</s>"
    assert trained_runs(tokenizer, enc) == [" positive</s>"]


def test_sft_prompt_column_trains_the_answer_only(tmp_path: Path, tiny_model: Path) -> None:
    cfg = config(tmp_path, tiny_model, {"train.csv": "question,answer\nWhat is 2+2?,Four.\n"},
                 column_mapping={"prompt_text_column": "question", "text_column": "answer"})
    tokenizer, _, [enc] = encoded(cfg)
    assert trained_runs(tokenizer, enc) == ["Four.</s>"]


# ---------------------------------------------------------------- SFT length limits


def test_sft_truncation_and_samples_left_with_nothing_to_learn(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Good."}]},
            {"messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "The river flows north through the valley."}]},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ok."}]}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="chatml",
                column_mapping={"text_column": "messages"}, params={"block_size": 16})
    report = p.splits[0]
    [stats] = report.lengths
    assert (stats.name, stats.count, stats.min, stats.max, stats.limit, stats.over) == ("sequence", 3, 15, 29, 16, 2)
    assert report.no_trained == 1  # the first row's answer lies wholly beyond the block
    cut_answer, cut_tail, whole = p.samples
    [part] = cut_answer.parts
    assert segments(part) == [
        ("masked", "<|im_start|>user\nOnce upon a time, a curious fox lived at the edge of"),
        ("cut", " a quiet forest.<|im_end|>\n<|im_start|>assistant\nGood.<|im_end|>\n")]
    assert (part.tokens, part.trained, part.cut) == (29, 0, 29 - 16)
    [part] = cut_tail.parts
    assert segments(part) == [("masked", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
                              ("trained", "The river flows north through the"),
                              ("cut", " valley.<|im_end|>\n")]
    assert (part.tokens, part.trained, part.cut) == (20, 6, 20 - 16)
    [part] = whole.parts
    assert (part.tokens, part.trained, part.cut) == (15, 5, 0)
    assert report.trained_tokens == 0 + 6 + 5
    assert report.total_tokens == 16 + 16 + 15


# ---------------------------------------------------------------- preference pairs


def test_dpo_keeps_the_end_of_a_long_prompt_and_cuts_completions_to_fit(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"prompt": LONG, "chosen": "The river flows north through the valley.", "rejected": "No."}]
    cfg = config(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-dpo", column_mapping=PREFERENCE_COLUMNS,
                 params={"block_size": 12, "max_prompt_length": 5})
    tokenizer, setup = prepare_tokenizer(cfg)
    [train] = load_and_format(cfg, tokenizer, setup)
    [pair] = encode_pairs(tokenizer, train.examples, add_special_tokens=True, max_prompt_length=5,
                          max_completion_length=None, max_length=12)
    prompt_ids = tokenizer(LONG)["input_ids"]  # with BOS
    assert pair.n_prompt == len(prompt_ids) == 18
    assert pair.prompt_cut == 18 - 5
    assert pair.prompt_ids == prompt_ids[-5:]
    assert tokenizer.decode(pair.prompt_ids) == " of a quiet forest."
    assert len(pair.chosen_full) - pair.n_prompt == 9
    assert (pair.chosen_cut, pair.rejected_cut) == (9 - (12 - 5), 0)
    assert tokenizer.decode(pair.chosen_ids) == "The river flows north through the valley"
    assert tokenizer.decode(pair.rejected_ids) == "No.</s>"

    p = build_preview(cfg)
    report = p.splits[0]
    assert [(s.name, s.max, s.limit, s.over) for s in report.lengths] == [
        ("prompt", 18, 5, 1), ("prompt+chosen", 27, 12, 1), ("prompt+rejected", 21, 12, 1)]
    assert report.trained_tokens == 7 + 3
    assert report.total_tokens == 5 * 2 + 7 + 3
    prompt, chosen, rejected = p.samples[0].parts
    assert segments(prompt) == [("cut", "<s>Once upon a time, a curious fox lived at the edge"),
                                ("masked", " of a quiet forest.")]
    assert (prompt.tokens, prompt.trained, prompt.cut) == (18, 0, 13)
    assert segments(chosen) == [("trained", "The river flows north through the valley"), ("cut", ".</s>")]
    assert (chosen.tokens, chosen.trained, chosen.cut) == (9, 7, 2)
    assert segments(rejected) == [("trained", "No.</s>")]


def test_max_completion_length_cuts_completions(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"prompt": "Hi", "chosen": "The river flows north through the valley.", "rejected": "No."}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-orpo", column_mapping=PREFERENCE_COLUMNS,
                params={"max_completion_length": 3})
    _, chosen, rejected = p.samples[0].parts
    assert segments(chosen) == [("trained", "The river flows"), ("cut", " north through the valley.</s>")]
    assert (chosen.trained, rejected.trained, rejected.cut) == (3, 3, 0)


def test_dpo_pair_whose_completion_is_wholly_cut_has_nothing_to_learn(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"prompt": LONG, "chosen": "Yes.", "rejected": "No."}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-dpo", column_mapping=PREFERENCE_COLUMNS,
                params={"block_size": 18, "max_prompt_length": 18})
    assert p.splits[0].no_trained == 1
    _, chosen, rejected = p.samples[0].parts
    assert segments(chosen) == [("cut", "Yes.</s>")]
    assert segments(rejected) == [("cut", "No.</s>")]


def test_chat_pair_segments_rebuild_the_rendered_texts(tmp_path: Path, tiny_model: Path) -> None:
    user = {"role": "user", "content": "What is 2+2?"}
    rows = [{"chosen": [user, {"role": "assistant", "content": "Four."}],
             "rejected": [user, {"role": "assistant", "content": "Five."}]}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-dpo", chat_template="chatml",
                column_mapping={"text_column": "chosen", "rejected_text_column": "rejected"})
    prompt, chosen, rejected = p.samples[0].parts
    assert segments(prompt) == [("masked", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")]
    assert segments(chosen) == [("trained", "Four.<|im_end|>\n")]
    assert segments(rejected) == [("trained", "Five.<|im_end|>\n")]
    assert [p.title for p in p.samples[0].parts] == ["prompt", "chosen", "rejected"]


def test_reward_scores_whole_texts_and_cuts_them_to_the_block(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"chosen": LONG, "rejected": "No."}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-reward",
                column_mapping={"text_column": "chosen", "rejected_text_column": "rejected"},
                params={"block_size": 12})
    report = p.splits[0]
    assert [(s.name, s.max, s.limit, s.over) for s in report.lengths] == [("chosen", 19, 12, 1),
                                                                          ("rejected", 4, 12, 0)]
    assert report.trained_tokens == report.total_tokens == 12 + 4  # nothing is masked
    chosen, rejected = p.samples[0].parts
    assert [part.title for part in p.samples[0].parts] == ["chosen", "rejected"]
    assert segments(chosen) == [("trained", "<s>Once upon a time, a curious fox lived at the"),
                                ("cut", " edge of a quiet forest.</s>")]
    assert (chosen.tokens, chosen.trained, chosen.cut) == (19, 12, 7)
    assert segments(rejected) == [("trained", "<s>No.</s>")]


# ---------------------------------------------------------------- the generic trainer


def test_generic_joins_texts_with_eos_and_trains_everything(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"text": "Hello world."}, {"text": LONG}]
    cfg = config(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-generic", params={"block_size": 8})
    tokenizer, examples, encs = encoded(cfg)
    assert [e.text for e in examples] == ["Hello world.</s>", LONG + "</s>"]
    assert [trained_runs(tokenizer, e) for e in encs] == [["Hello world.</s>"], [LONG + "</s>"]]
    total = sum(len(e) for e in encs)
    assert total == 8 + 19
    p = build_preview(cfg)
    report = p.splits[0]
    assert report.notes == ["2 texts, 27 tokens, joined and cut into 4 block(s) of 8 (the last has 3)"]
    assert report.trained_tokens == report.total_tokens == total
    assert (report.no_trained, report.lengths[0].over) == (0, 0)  # long texts continue in the next block
    short, long = p.samples
    assert segments(long.parts[0]) == [("masked", "<s>"), ("trained", LONG + "</s>")]
    assert long.parts[0].cut == 0
    assert joined(short.parts[0]) == "<s>Hello world.</s>"


def test_generic_without_eos(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"text": "Hello world."}, {"text": "Good night."}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-generic", params={"add_eos_token": False})
    assert [e.text for e in p.splits[0].formatted.examples] == ["Hello world.", "Good night."]
    assert [joined(s.parts[0]) for s in p.samples] == ["<s>Hello world.", "<s>Good night."]
    assert p.splits[0].notes[0].endswith("joined and cut into 1 block(s) of 1024 (the last has "
                                         f"{p.splits[0].total_tokens})")


# ---------------------------------------------------------------- block size


def test_block_size_minus_one_resolves_and_says_how(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"text": "Hello world."}]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows})
    assert p.block_size == 1024
    assert p.block_size_note == "block_size -1 picked 1024 = min(model_max_length 2048, tokenizer limit 2048, 1024)"
    assert p.splits[0].lengths[0].limit == 1024
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, params={"model_max_length": 300})
    assert p.block_size == 300
    assert p.block_size_note == "block_size -1 picked 300 = min(model_max_length 300, tokenizer limit 2048, 1024)"


def test_block_size_beyond_the_tokenizer_limit_is_capped(tmp_path: Path, tiny_model: Path) -> None:
    p = preview(tmp_path, tiny_model, {"train.jsonl": [{"text": "Hi."}]},
                params={"block_size": 4096, "model_max_length": 8192})
    assert (p.block_size, p.block_size_note) == (2048, "block_size 4096 exceeds the tokenizer's limit; using 2048")


def test_length_rules_are_checked_against_the_resolved_block_size(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"prompt": "Hi", "chosen": "Yes.", "rejected": "No."}]
    cfg = config(tmp_path, tiny_model, {"train.jsonl": rows}, task="llm-dpo", column_mapping=PREFERENCE_COLUMNS,
                 params={"max_prompt_length": 1500})  # fine for the config alone: block_size is -1
    with pytest.raises(ConfigError) as excinfo:
        build_preview(cfg)
    [problem] = excinfo.value.problems
    assert problem.key == "params.max_prompt_length"
    assert problem.message.startswith("must not exceed params.block_size (1024)")


# ---------------------------------------------------------------- samples


def test_samples_are_the_first_n_train_rows(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"text": f"Row {n}."} for n in range(1, 6)]
    p = preview(tmp_path, tiny_model, {"train.jsonl": rows}, n_samples=2)
    assert [s.location for s in p.samples] == ["train.jsonl:1", "train.jsonl:2"]
    assert [joined(s.parts[0]) for s in p.samples] == ["<s>Row 1.</s>", "<s>Row 2.</s>"]
    assert all(s.parts[0].title == "text" for s in p.samples)


def test_sample_segments_keep_unicode_and_whitespace_exactly(tmp_path: Path, tiny_model: Path) -> None:
    content = "Ünïcödé, emoji 😀 and 中文\n  indented\ttab "
    rows = [{"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": content}]}]
    cfg = config(tmp_path, tiny_model, {"train.jsonl": rows}, chat_template="zephyr",
                 column_mapping={"text_column": "messages"}, params={"block_size": 60})
    p = build_preview(cfg)
    [part] = p.samples[0].parts
    text = p.splits[0].formatted.examples[0].text
    assert joined(part) == text
    assert [s.kind for s in part.segments] == ["masked", "trained", "cut"]
    assert part.cut == part.tokens - 60 > 0
