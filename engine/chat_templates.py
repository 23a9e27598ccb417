"""Chat templates: `none`, `zephyr`, `chatml` (AutoTrain's own texts) and `tokenizer` (the model's).

`setup_tokenizer` puts the chosen template on a tokenizer the way AutoTrain does (same rendered text, same
EOS), adding only the special tokens the vocabulary lacks, and says what it changed. The tokenizer saved
with a trained model carries this template, so inference renders prompts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError, Problem

# Exactly AutoTrain's templates, so the text a model sees is what AutoTrain would produce for the same data.
# (transformers renders chat templates with trim_blocks, so the newlines after the block tags vanish.)
CHATML_TEMPLATE = (
    "{% for message in messages %}\n{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% if loop.last and add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
    "{% endfor %}"
)
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)


@dataclass(frozen=True)
class TemplateSpec:
    template: str
    eos_token: str
    special_tokens: tuple[str, ...]  # must each be one token: added to the vocabulary when missing


BUILTIN = {
    "chatml": TemplateSpec(CHATML_TEMPLATE, "<|im_end|>", ("<|im_start|>", "<|im_end|>")),
    "zephyr": TemplateSpec(ZEPHYR_TEMPLATE, "</s>", ("<|system|>", "<|user|>", "<|assistant|>", "</s>")),
}


@dataclass
class TemplateSetup:
    """What `setup_tokenizer` did, for the dry run, the model card and the embedding resize."""

    name: str
    template: str | None  # None for "none": plain text
    added_tokens: list[str] = field(default_factory=list)  # new to the vocabulary: embeddings must grow
    notes: list[str] = field(default_factory=list)

    @property
    def is_chat(self) -> bool:
        return self.template is not None


def setup_tokenizer(tokenizer: Any, name: str, *, padding: str | None = "right",
                    model_max_length: int | None = None) -> TemplateSetup:
    """Put template `name` on `tokenizer` (in place) and make padding work; report what changed."""
    setup = TemplateSetup(name=name, template=None)
    if name in BUILTIN:
        spec = BUILTIN[name]
        vocab = tokenizer.get_vocab()
        missing = [t for t in spec.special_tokens if t not in vocab]
        if missing:
            tokenizer.add_special_tokens({"extra_special_tokens": missing},
                                         replace_extra_special_tokens=False)
            setup.added_tokens = missing
            setup.notes.append(f"added {len(missing)} special token(s) for {name}: {' '.join(missing)}")
        if tokenizer.eos_token != spec.eos_token:
            setup.notes.append(f"EOS is now {spec.eos_token} (was {tokenizer.eos_token}), as {name} ends turns")
            tokenizer.eos_token = spec.eos_token
        tokenizer.chat_template = spec.template
        setup.template = spec.template
    elif name == "tokenizer":
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError([Problem("data.chat_template", "is `tokenizer`, but the model's tokenizer has no "
                                       "chat template", "use chatml or zephyr, or none for plain text",
                                       "tokenizer")])
        setup.template = tokenizer.chat_template
    elif name != "none":  # config validation already refuses this; a clear error if called directly
        raise ConfigError([Problem("data.chat_template", "unknown chat template",
                                   "use none, zephyr, chatml or tokenizer", name)])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        setup.notes.append(f"the tokenizer has no pad token: padding with EOS ({tokenizer.eos_token})")
    if padding in ("left", "right"):
        tokenizer.padding_side = padding
    if model_max_length and tokenizer.model_max_length > 100_000_000:
        tokenizer.model_max_length = model_max_length  # "no limit" sentinels would make block_size -1 meaningless
    return setup


def renderer(tokenizer: Any):
    """A function rendering a message list with the tokenizer's (already set up) chat template.

    It calls transformers' own renderer with what apply_chat_template would pass it for a plain list of
    {"role", "content"} strings (the template text and the special tokens, looked up once instead of on every
    call: 40% of rendering). The first conversation is rendered both ways; if they ever differ (another
    transformers), every conversation goes through apply_chat_template."""
    def slow(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    try:
        from transformers.utils.chat_template_utils import render_jinja_template

        template, special = tokenizer.get_chat_template(), dict(tokenizer.special_tokens_map)
    except Exception:  # noqa: BLE001 - an older or newer transformers: the public way
        return slow

    def fast(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                            add_generation_prompt=add_generation_prompt, **special)
        return rendered[0]

    checked: list[Any] = []

    def render(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        if checked:
            return checked[0](messages, add_generation_prompt)
        expected = slow(messages, add_generation_prompt)
        try:
            same = fast(messages, add_generation_prompt) == expected
        except Exception:  # noqa: BLE001 - its signature changed: the public way
            same = False
        checked.append(fast if same else slow)
        return expected
    return render
