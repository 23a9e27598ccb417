"""The tiny local model: loads through the same from_pretrained code as a hub model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import tinymodel
from engine.tinymodel import TINY_CHAT_TEMPLATE, TINY_MODEL_ID, build_tiny_model, resolve_model, tiny_model_path

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "Hello, world!",
    "Line one.\nLine two:\n\n  indented, with  double spaces and a tab\t(end)",
    " leading space, trailing space ",
    "What is 12 + 30? Answer: 42. Don't panic... it's $3.50 (50%).",
    'def add(a, b):\n    return a + b  # "quoted"',
    "Ünïcödé, emoji 😀 and 中文 survive byte-level BPE.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_directory_is_a_small_checkpoint(tiny_model: Path) -> None:
    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "generation_config.json"} <= names
    size = sum(p.stat().st_size for p in tiny_model.iterdir())
    assert size < 4_000_000


def test_tokenizer_special_tokens(tokenizer) -> None:
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>", "</s>", "<pad>", "<unk>")
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 2048
    assert 1500 <= len(tokenizer) <= 2100
    for token in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        assert tokenizer(token, add_special_tokens=False).input_ids == [tokenizer.convert_tokens_to_ids(token)]


@pytest.mark.parametrize("text", TEXTS)
def test_decode_encode_round_trip(tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_bos_added_like_llama(tokenizer) -> None:
    with_special = tokenizer("Hello there").input_ids
    without = tokenizer("Hello there", add_special_tokens=False).input_ids
    assert with_special == [tokenizer.bos_token_id, *without]
    assert tokenizer.eos_token_id not in with_special


def test_offsets_point_into_the_text(tokenizer) -> None:
    text = "Hello, world!\nThe model reads 3 files."
    enc = tokenizer(text, return_offsets_mapping=True)
    assert enc.offset_mapping[0] == (0, 0)  # BOS covers no text
    assert "".join(text[s:e] for s, e in enc.offset_mapping[1:]) == text


def test_chat_template_renders_llama3_style(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello.\nHow can I help?"},
    ]
    assert tokenizer.chat_template == TINY_CHAT_TEMPLATE
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.\nHow can I help?<|eot_id|>"
    )


def test_chat_template_generation_prompt(tokenizer) -> None:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == ("<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tokenizer(text, add_special_tokens=False).input_ids  # the template already holds the BOS
    assert ids.count(tokenizer.bos_token_id) == 1


def test_causal_lm_loads_and_generates(tiny_model: Path, tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tokenizer) and not model.config.tie_word_embeddings
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, eot]
    inputs = tokenizer("Hello", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs.input_ids.shape[1] + 4


def test_sequence_classifier_loads(tiny_model: Path, tokenizer) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    batch = tokenizer(["a short one", "a somewhat longer second text"], return_tensors="pt", padding=True)
    assert tuple(model(**batch).logits.shape) == (2, 1)


def test_weights_are_seeded(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    same = load_file(build_tiny_model(tmp_path / "same") / "model.safetensors")
    other = load_file(build_tiny_model(tmp_path / "other", seed=1) / "model.safetensors")
    reference = load_file(tiny_model / "model.safetensors")
    assert all(reference[k].equal(same[k]) for k in reference)
    assert not reference["model.embed_tokens.weight"].equal(other["model.embed_tokens.weight"])


def test_tiny_model_path_builds_once_under_llmtune_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTUNE_HOME", str(tmp_path))
    path = tiny_model_path()
    assert path == tmp_path / "models" / "tiny-random"
    assert tinymodel.is_complete(path)
    assert [p.name for p in path.parent.iterdir()] == ["tiny-random"]  # no temp dirs left behind

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt a complete model")

    monkeypatch.setattr(tinymodel, "build_tiny_model", no_rebuild)
    assert tiny_model_path() == path


def test_tiny_model_path_replaces_an_incomplete_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTUNE_HOME", str(tmp_path))
    broken = tmp_path / "models" / "tiny-random"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")  # a half-written copy: no marker
    path = tiny_model_path()
    assert path == broken and tinymodel.is_complete(path)
    assert (path / "model.safetensors").exists()
    assert [p.name for p in path.parent.iterdir()] == ["tiny-random"]


def test_resolve_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTUNE_HOME", str(tmp_path))
    assert resolve_model(TINY_MODEL_ID) == str(tmp_path / "models" / "tiny-random")
    assert resolve_model("meta-llama/Llama-3.2-1B") == "meta-llama/Llama-3.2-1B"
    assert resolve_model("/some/local/dir") == "/some/local/dir"


def test_import_is_light() -> None:
    code = "import sys, engine.tinymodel; print(sorted({'torch', 'transformers', 'tokenizers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
