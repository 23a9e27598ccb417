"""A tiny random Llama built locally, so tests and the demo never download a model.

It is written to a directory exactly like a hub checkpoint (config, safetensors weights, tokenizer,
chat template, generation config), so it goes through the same `from_pretrained(path)` code as a
real model. Configs may name it as `base_model: llmtune/tiny-random`; `resolve_model` maps that id
to a cached copy under `$LLMTUNE_HOME/models/tiny-random`.

Tokenizer: byte-level BPE (~2000 tokens) trained on a built-in corpus. Like Llama,
`add_special_tokens=True` puts `<s>` (BOS) at the start and adds no EOS; the chat template also
starts with `{{ bos_token }}`, so tokenizing a rendered chat must use `add_special_tokens=False`,
as with Llama 3. Chat template: Llama-3 style, without `{% generation %}` markers (most real
templates lack them), and content is rendered as is (not trimmed).

torch, transformers and tokenizers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TINY_MODEL_ID = "llmtune/tiny-random"

# Bump when the files written by build_tiny_model change, so cached copies are rebuilt.
_BUILD_VERSION = 1
_MARKER = "llmtune-tiny.json"  # written last: its presence means the directory is complete

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, UNK, PAD, START_HEADER, END_HEADER, EOT]  # ids 0..6 in this order

TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

_VOCAB_SIZE = 2000
_MODEL_SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=2048,
)


def resolve_model(base_model: str) -> str:
    """The path or hub id to load: the built-in tiny id becomes its local directory."""
    if base_model == TINY_MODEL_ID:
        return str(tiny_model_path())
    return base_model


def llmtune_home() -> Path:
    return Path(os.environ.get("LLMTUNE_HOME") or Path.home() / ".cache" / "llmtune")


def tiny_model_path() -> Path:
    """The cached tiny model, built on first use.

    Built in a temporary sibling directory and renamed into place, so a concurrent caller sees
    either no model or a whole one; an incomplete or outdated directory is replaced.
    """
    final = llmtune_home() / "models" / "tiny-random"
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-random-", dir=final.parent))
    try:
        build_tiny_model(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        if final.exists() and not is_complete(final):
            _discard(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):  # losing the race to another builder is fine; anything else is not
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def is_complete(model_dir: Path) -> bool:
    try:
        marker = json.loads((model_dir / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("version") == _BUILD_VERSION


def _discard(path: Path) -> None:
    # Rename first so the stale copy vanishes in one step even if the removal is slow or fails.
    trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=path.parent))
    try:
        os.rename(path, trash / path.name)
    except OSError:
        pass  # someone else already moved it
    shutil.rmtree(trash, ignore_errors=True)


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random LlamaForCausalLM with its tokenizer and chat template to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out_dir)
    model = _build_model(tokenizer, seed)
    with _quiet_progress():
        model.save_pretrained(out_dir)  # safetensors, the default
    marker = {"id": TINY_MODEL_ID, "version": _BUILD_VERSION, "seed": seed}
    (out_dir / _MARKER).write_text(json.dumps(marker) + "\n")
    return out_dir


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Writing model shards" bar: a one-shard save of a 1 MB model is not worth a progress line."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_tokenizer():
    """The tiny model's tokenizer (a transformers fast tokenizer), trained in well under a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast  # TokenizersBackend in transformers 5

    backend = Tokenizer(models.BPE(unk_token=UNK))
    # Byte-level without a prefix space: every string round-trips and no token is ever unknown.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus(), trainer=trainer)
    bos_id = backend.token_to_id(BOS)
    # BOS via the backend's post-processor, as Llama 3 does it (the config then holds no add_bos_token).
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens=[START_HEADER, END_HEADER, EOT],
        model_max_length=2048,
        padding_side="right",
        clean_up_tokenization_spaces=False,  # keep " ." and " 's" as written: decode(encode(x)) == x
        chat_template=TINY_CHAT_TEMPLATE,
    )


def _build_model(tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    eos_ids = [tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(EOT)]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        **_MODEL_SHAPE,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id
    )
    return model


# --- the built-in training corpus -------------------------------------------------------------

_SUBJECTS = [
    "The model", "A small dog", "My friend", "The teacher", "This function", "Our team", "The weather",
    "A good answer", "The user", "The assistant", "Every student", "The old library", "Your code",
    "The training run", "She", "He", "They", "We", "I", "The data set",
]
_VERBS = [
    "reads", "writes", "explains", "needs", "finds", "learns", "changes", "helps with", "remembers",
    "checks", "builds", "loves", "answers", "describes", "computes", "improves", "saves", "loads",
]
_OBJECTS = [
    "the question", "a short story", "the loss curve", "three apples", "the config file", "a new recipe",
    "the results", "every token", "the chat template", "a clear summary", "the weights", "the garden",
    "a list of numbers", "the error message", "the first chapter", "a cup of coffee", "the map",
]
_ENDINGS = [".", "!", "?", " today.", " again.", " very quickly.", " after lunch.", ", then rests.",
            " in 2024.", " before 9:30 am.", " for 15 minutes.", " (twice)."]
_INSTRUCTIONS = [
    "Summarize the following text in one sentence.",
    "Translate this sentence into French: \"Where is the station?\"",
    "Write a haiku about the sea.",
    "Explain why the sky is blue.",
    "List three uses of a paper clip.",
    "What is 12 + 30? Answer: 42.",
    "Give me a Python function that adds two numbers.",
    "def add(a, b):\n    return a + b\n",
    "Classify the sentiment of this review as positive or negative.",
    "Rewrite the paragraph so that it is easier to read.",
    "### Instruction:\nName the capital of Italy.\n\n### Response:\nRome.",
    "Question: How many legs does a spider have?\nAnswer: Eight.",
    "Step 1: open the file. Step 2: read each line. Step 3: close it.",
    "Please answer briefly and politely.",
    "You are a helpful assistant.",
]
_PROSE = [
    "Once upon a time, a curious fox lived at the edge of a quiet forest.",
    "The river flows north through the valley, past farms, bridges and small villages.",
    "Scientists measured the temperature every hour and recorded it in a notebook.",
    "Learning rate, batch size and sequence length are the most important settings.",
    "The committee will publish its final report on Monday, March 3rd.",
    "Please remember to water the plants, feed the cat and lock the door.",
    "Mountains, oceans, deserts and islands cover our beautiful planet.",
    "A transformer reads tokens, attends to context and predicts the next word.",
    "Vegetables such as carrots, potatoes, onions and tomatoes grow in the garden.",
    "History teaches us that people, cities and empires change over centuries.",
    "The orchestra played a symphony; the audience applauded for several minutes.",
    "Could you send me the invoice, the receipt and the shipping address?",
    "Yesterday it rained heavily, but tomorrow should be sunny and warm.",
    "Her favourite colours are red, green, yellow, purple, orange and blue.",
    "The hospital opened a new wing for children, nurses and visiting doctors.",
    "Computers store information as bits, bytes, files, folders and databases.",
    "Economics studies markets, prices, money, trade, jobs and growth.",
    "The kitchen smelled of fresh bread, butter, cinnamon and strawberry jam.",
    "Football, tennis, swimming and running are popular sports around the world.",
    "Mathematics includes algebra, geometry, probability, statistics and calculus.",
    "Always check your work carefully: small mistakes can become big problems.",
    "The museum displays paintings, sculptures, ancient coins and old manuscripts.",
    "Birds were singing while the children played near the wooden bridge.",
    "Important: the meeting has moved from room 204 to room 310.",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday.",
    "January, February, April, May, June, July, August, September, October, November, December.",
    "One, two, three, four, five, six, seven, eight, nine, ten, hundred, thousand, million.",
    "North, south, east and west; left, right, up and down; inside and outside.",
    "The engineer designed a machine that could lift heavy stones without effort.",
    "Good writing is simple, honest, specific and kind to the reader.",
]
_CHAT = [
    "user: Hi! How are you?", "assistant: I'm fine, thank you. How can I help you today?",
    "user: Can you help me plan a trip to Rome?", "assistant: Of course! How many days will you stay?",
    "user: What's the weather like?", "assistant: I can't check live data, but spring is usually mild.",
    "system: You are a friendly, concise assistant.", "Thanks a lot!", "You're welcome.",
    "Sure - here is an example:", "Let me think about that step by step.", "I don't know, sorry.",
    "Good morning, everyone.", "See you tomorrow at 10:00.", "That's a great question!",
]


def corpus() -> list[str]:
    """A few hundred varied English lines: prose, instructions, chat turns, code and digits."""
    rng = random.Random(1234)  # fixed, so the tokenizer is the same whatever the model seed
    lines = list(_INSTRUCTIONS) + list(_CHAT) + list(_PROSE)
    words = sorted({w for line in _PROSE for w in re.findall(r"[a-z]+", line.lower())})
    for _ in range(300):  # shuffled prose words: more merges for rarer words, so the vocabulary fills
        lines.append(" ".join(rng.sample(words, 8)).capitalize() + rng.choice(_ENDINGS))
    for _ in range(400):
        lines.append(f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_ENDINGS)}")
    for _ in range(100):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        lines.append(f"{a} + {b} = {a + b}; {a} x {b} = {a * b}. Price: ${a}.{b % 100:02d}, {rng.randint(1, 100)}%.")
    return lines
