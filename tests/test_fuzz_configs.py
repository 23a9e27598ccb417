"""A config fuzzer: seeded mutations of every example config, each run through `--config F --dry-run` in process
(the CLI's own app, its own error handling). Whatever a file holds (wrong types, NaN, huge or deep values,
aliases, odd unicode, dotted keys), the verdict is exit 0 or 2, without a traceback, within seconds, and a
secret is never echoed.

Deterministic: the cases come from SEED, so a failure is the same on every run. A failure prints the mutated
YAML (and keeps it in the test's temporary directory) to reproduce it with `llmtune-tui --config F --dry-run`.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from support import TookTooLong, time_limit
from tui.cli import app

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SEED = 11
CASES_PER_CONFIG = 100
FAILURES_SHOWN = 5
CASE_SECONDS = 5  # one dry run of the tiny model on the example data takes well under a second
SECRET = "hf_FUZZSECRETtoken0123"
ENV = {"HF_USERNAME": "someone", "HF_TOKEN": "hf_envtoken"}


@dataclass(frozen=True)
class Raw:
    """YAML text written as is (an alias, a tag, a number Python could not print, a bomb)."""

    text: str


@dataclass
class Case:
    name: str  # which mutations were applied, for the failure message
    doc: dict[Any, Any]
    overrides: list[str] = field(default_factory=list)

    def text(self) -> str:
        return emit(self.doc)


# ---------------------------------------------------------------- writing YAML (with Raw pieces)


def scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key_text(k)}: {scalar(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def quoted(text: str) -> str:
    """A double-quoted YAML scalar: what YAML may not hold raw (control characters, lone surrogates) as escapes,
    the rest as is (an escaped emoji would be read back as two lone surrogates)."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


_UNPRINTABLE = re.compile("[\ud800-\udfff\x7f-\x9f\u2028\u2029\ufffe\uffff]")  # YAML line breaks too


def key_text(key: Any) -> str:
    return key.text if isinstance(key, Raw) else quoted(key) if isinstance(key, str) else scalar(key)


def emit(mapping: dict[Any, Any], indent: int = 0) -> str:
    pad = " " * indent
    out = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.append(f"{pad}{key_text(key)}:\n{emit(value, indent + 2)}")
        else:
            out.append(f"{pad}{key_text(key)}: {scalar(value)}\n")
    return "".join(out)


# ---------------------------------------------------------------- mutations


def leaves(doc: dict, path: tuple = ()) -> Iterator[tuple]:
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, path + (key,))
        else:
            yield path + (key,)


def mappings(doc: dict, path: tuple = ()) -> Iterator[tuple]:
    yield path
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from mappings(value, path + (key,))


def get(doc: dict, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def put(doc: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
        doc = doc[key]
    doc[path[-1]] = value


def bomb(levels: int = 9) -> Raw:
    """The billion laughs, in one flow sequence: each anchor repeats the previous one nine times."""
    parts = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return Raw("[" + ", ".join(parts) + "]")


STRANGE_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "x\udc80y", "é", "😀", "\u202eevil", "\u200b", "\ufeff",
                "a\u2028b", "line\nbreak", "tab\there", "${UNSET_VAR}", "${HF_TOKEN}", "[/bold]", "[red]x", "%s%n",
                "{}", "../../etc", "/", ".", "~", "C:\\x", "x" * 300, "y" * 5000, "z" * 100_000, "ß" * 200]
NUMBERS = [0, -1, 1, 2, 0.5, -0.0, 1.5, 1e308, -1e308, 5e-324, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63,
           -2**63, 2**64, 10**30, float("nan"), float("inf"), float("-inf"), Raw(".NaN"), Raw("-.Inf"),
           "nan", "inf", "-Infinity", "1e999", "0x1F", "1_000", "1:30", Raw("0o17"), Raw("1:2:3:4:5:6:7:8"),
           Raw("9" * 400), Raw("-" + "9" * 5000), Raw("0x" + "f" * 5000), Raw("1e99999"), Raw("1" + ":59" * 300)]
TYPES = [None, True, False, [], {}, [1, 2], ["a"], {"a": 1}, "x", "", "true", "none", "null", [[[]]], [None],
         Raw("!!binary aGVsbG8="), Raw("!!set {a, b}"), Raw("2024-01-31"), Raw("2024-13-45"), Raw("!!int xyz"),
         Raw("!!float abc"), Raw("!!timestamp nope"), Raw("!!str 5"), Raw("!!python/object:os.system x"),
         Raw("!custom tag"), Raw("&r [*r]"), Raw("&m {a: *m}"), bomb(), bomb(5), Raw("*undefined")]
KEYS = ["params", "data", "hub", "lr", "params.lr", "data.path", "hub.token", "a.b.c", "..", ".", "", " ", "<<",
        "x" * 5000, "\x00", "\ud800", "ключ", "epochs", "chat_template", "text_column", "token", "trainer", "task",
        Raw("[a, b]"), Raw("{a: 1}"), Raw("null"), Raw("1.5"), Raw("9" * 5000), Raw("!!int xyz"), Raw("*undefined")]
TEMPLATES = ["{instruction:>999999999}", "{instruction:{response}}", "{instruction!z}", "{instruction:>50}",
             "{instruction:d}", "{instruction:.2f}", "{0}", "{}", "{a.b}", "{a[0]}", "{{literal}} {instruction}",
             "{instruction", "instruction}", "{instruction!r:^" + "9" * 5000 + "}", "{prompt}", "{chosen}", "{text}",
             "{messages}", "{\x00}", "{\ud800}", "{instruction:,}", "{instruction:%}", "{instruction:=10}"]
TARGETS = ["q_proj", "q_proj,v_proj", "nope", "q_proj,nope", ",", " , ", "ALL-LINEAR", "lm_head", "score", "model",
           "layers", "model.layers.0.self_attn.q_proj", "all-linear", "proj", "*", ".*", "q_proj;v_proj"]
SET_VALUES = ["nan", "inf", "-inf", ".nan", "1e999", "[" * 5000, "[" * 5000 + "]" * 5000, "9" * 5000, "-1",
              "{a: 1}", "", "&a [*a]", "!!int xyz", "\x00", "null", "true", "0", "x" * 100_000]
SET_KEYS = ["params.lr", "params.block_size", "params.seed", "params.epochs", "hub.token", "params.token",
            "data.chat_template", "params.chat_template", "data.path", "project_name", "params.target_modules",
            "params.lr.x", "lr", "", "params..lr", "data", "params", "data.prompt_template", "x" * 300]


# Values that pass the static rules, so that the case goes on to the data, the tokenizer and the preview.
PLAUSIBLE: dict[tuple[str, ...], list[Any]] = {
    ("task",): ["llm-sft", "llm-generic", "llm-dpo", "llm-orpo", "llm-reward", "llm"],
    ("params", "trainer"): ["sft", "default", "dpo", "orpo", "reward"],
    ("params", "block_size"): [1, 2, 8, -1, 2048],
    ("params", "model_max_length"): [1, 8, 2**31 - 1],
    ("params", "max_prompt_length"): [1, 2, 100],
    ("params", "max_completion_length"): [1, 2, None],
    ("params", "batch_size"): [1, 2**31 - 1],
    ("params", "max_steps"): [1, 2**31 - 1],
    ("params", "lr"): [1e-300, 1e308, "1e-4"],
    ("params", "padding"): ["left", "right", None],
    ("params", "train_on_all_tokens"): [True],
    ("params", "add_eos_token"): [False],
    ("params", "seed"): [0, 2**32 - 1],
    ("data", "chat_template"): ["none", "chatml", "zephyr", "tokenizer", None],
    ("data", "train_split"): ["train", "valid"],
    ("data", "column_mapping", "text_column"): ["messages", "text", "chosen", "prompt", "instruction", "response"],
    ("data", "column_mapping", "prompt_text_column"): ["prompt", "instruction", "messages", None],
    ("data", "column_mapping", "rejected_text_column"): ["rejected", "chosen", None],
    ("data", "prompt_template"): ["{instruction:>20}", "{instruction!r}", "{prompt}", "{context!s:.10}", "{text}",
                                  "{messages}", "{chosen:^7}"],
    ("data", "completion_template"): ["{response}", "{chosen}", "{response:<3}", "{messages!s}"],
}


def mutate(rng: random.Random, doc: dict, overrides: list[str]) -> str:
    """Apply one random mutation in place; return its name."""
    kind = rng.choice(["type", "number", "number", "delete", "unknown", "nesting", "alias", "text", "text",
                       "dotted", "relocated", "template", "targets", "section", "secret", "set", "key", "merge",
                       "plausible", "plausible", "plausible"])
    spots = list(leaves(doc))
    spot = rng.choice(spots) if spots else ("task",)
    if kind == "type":
        put(doc, spot, rng.choice(TYPES))
    elif kind == "number":
        spot = rng.choice([s for s in spots if s and s[0] == "params"] or spots)
        put(doc, spot, rng.choice(NUMBERS))
    elif kind == "delete":
        path = rng.choice(spots + [(k,) for k in doc])
        parent = get(doc, path[:-1])
        parent.pop(path[-1], None)
    elif kind == "unknown":
        put(doc, rng.choice(list(mappings(doc))) + (rng.choice(KEYS),), rng.choice(NUMBERS + TYPES))
    elif kind == "nesting":
        depth = rng.choice([5, 31, 33, 200, 5000])
        nested = rng.choice([Raw("[" * depth + "1" + "]" * depth), Raw("{a: " * depth + "1" + "}" * depth)])
        if depth <= 200 and rng.random() < 0.5:  # block style: every level on its own line
            block: Any = 1
            for _ in range(depth):
                block = {"a": block}
            nested = block
        put(doc, spot, nested)
    elif kind == "alias":
        if len(spots) >= 2 and rng.random() < 0.5:
            first, second = sorted(rng.sample(range(len(spots)), 2))
            put(doc, spots[first], Raw("&shared " + scalar(get(doc, spots[first]))))
            put(doc, spots[second], Raw("*shared"))
        else:
            put(doc, spot, rng.choice([bomb(), bomb(6), Raw("&r [*r]"), Raw("&m {a: *m}"), Raw("*nowhere")]))
    elif kind == "text":
        value = rng.choice(STRANGE_TEXT)
        original = get(doc, spot)
        if isinstance(original, str) and rng.random() < 0.5:
            value = original + value
        put(doc, spot, value)
    elif kind == "dotted":
        dotted = rng.choice(["params.lr", "params.epochs", "data.path", "hub.token", "data.column_mapping.text_column",
                             "a.b", "params.block_size"])
        where = rng.choice([(), ("params",), ("data",)])
        secret = [SECRET, [SECRET]] if dotted == "hub.token" else []
        put(doc, where + (dotted,), rng.choice([0.5, 3, "x", None] + secret))
    elif kind == "relocated":
        key = rng.choice(["chat_template", "text_column", "rejected_text_column", "prompt_text_column",
                          "train_split", "valid_split", "data_path", "model", "project_name", "log", "username",
                          "token", "push_to_hub", "evaluation_strategy"])
        secret = [SECRET, [SECRET], {"t": SECRET}] if key == "token" else []  # the marker only where it is one
        value = rng.choice(["chatml", "zephyr", "tokenizer", "none", None, "messages", "prompt", True, "steps", 3]
                           + secret)
        params = doc.setdefault("params", {})
        if not isinstance(params, dict):
            params = doc["params"] = {}
        items = list(params.items())
        items.insert(rng.randrange(len(items) + 1), (key, value))
        doc["params"] = dict(items)
        if rng.random() < 0.5:  # the same key before or after its proper section: the verdict must not change
            keys = list(doc)
            rng.shuffle(keys)
            reordered = {k: doc[k] for k in keys}
            doc.clear()
            doc.update(reordered)
    elif kind == "template":
        put(doc, ("data", rng.choice(["prompt_template", "completion_template"])), rng.choice(TEMPLATES))
    elif kind == "targets":
        put(doc, ("params", "peft"), True)
        put(doc, ("params", "target_modules"), rng.choice(TARGETS))
    elif kind == "section":
        doc[rng.choice(["data", "params", "hub", "data"])] = rng.choice(TYPES + NUMBERS[:5])
    elif kind == "secret":
        where = rng.choice([("hub", "token"), ("params", "token")])
        put(doc, where, rng.choice([[SECRET], {"t": SECRET}, [[SECRET]], SECRET, Raw(f"!!int {SECRET}"),
                                    Raw(f"[{SECRET}, *x]"), SECRET + "\x00", Raw(f"&s [{SECRET}]")]))
    elif kind == "set":
        key = rng.choice(SET_KEYS)
        secret = [f"[{SECRET}]", f"{{a: {SECRET}}}", f"!!int {SECRET}"] if key in ("hub.token", "params.token") else []
        overrides.append(f"{key}={rng.choice(SET_VALUES + secret)}")
    elif kind == "key":
        mapping = get(doc, rng.choice(list(mappings(doc))))
        if mapping:
            old = rng.choice(list(mapping))
            value = mapping.pop(old)
            mapping[rng.choice(KEYS)] = value
    elif kind == "plausible":
        where = rng.choice(list(PLAUSIBLE))
        put(doc, where, rng.choice(PLAUSIBLE[where]))
    elif kind == "merge":
        put(doc, ("params", Raw("<<")), rng.choice([{"lr": 0.5}, {"lr": float("nan")}, Raw("[1, 2]"), Raw("*none"),
                                                   {"epochs": Raw("9" * 5000)}]))
    return kind


def make_cases(path: Path, data_dir: Path) -> list[Case]:
    base = yaml.safe_load(path.read_text())
    data = base.get("data") or {}
    if data.get("path") and (data_dir / data["path"]).exists():
        data["path"] = str(data_dir / data["path"])  # the mutated file lives elsewhere; its data must not move
    rng = random.Random(f"{SEED}:{path.name}")
    cases = []
    for i in range(CASES_PER_CONFIG):
        doc = json.loads(json.dumps(base))  # a deep copy of plain YAML data
        overrides: list[str] = []
        kinds = [mutate(rng, doc, overrides) for _ in range(rng.choice([1, 1, 2, 3]))]
        cases.append(Case(f"{path.stem}#{i}: {'+'.join(kinds)}", doc, overrides))
    return cases


# ---------------------------------------------------------------- running




def dry_run(path: Path, overrides: list[str]) -> tuple[int, str]:
    args = ["--config", str(path), "--dry-run", "-n", "1"]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(app, args, env=ENV)
    return result.exit_code, result.output


def verdict(run: Callable[[], tuple[int, str]], seconds: float) -> str | None:
    """None when the case behaves; else what went wrong."""
    start = time.monotonic()
    try:
        with time_limit(seconds):
            code, output = run()
    except TookTooLong as e:
        return str(e)
    except RecursionError:
        return f"RecursionError after {time.monotonic() - start:.1f} s"
    if code not in (0, 2):
        return f"exit {code}:\n{output[-3000:]}"
    if "Traceback" in output:
        return f"a traceback in the output (exit {code}):\n{output[-3000:]}"
    if SECRET in output:
        return f"the secret {SECRET} is echoed (exit {code})"
    return None


def shown(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_mutated_configs_exit_0_or_2_quickly_without_a_traceback(config: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # project names are relative: nothing lands in the repository
    # The original first, untimed: the first dry run imports transformers and builds the tiny model.
    code, output = dry_run(config, [])
    assert code in (0, 2) and "Traceback" not in output, output
    failures = []
    for i, case in enumerate(make_cases(config, config.parent)):
        path = tmp_path / f"case-{i}.yaml"
        path.write_text(case.text(), encoding="utf-8")
        wrong = verdict(lambda path=path, case=case: dry_run(path, case.overrides), CASE_SECONDS)
        if wrong:
            failures.append(f"--- {case.name} ({path}); --set {case.overrides}\n{wrong}\n--- the YAML:\n"
                            f"{shown(case.text())}")
    assert not failures, (f"{len(failures)} of {CASES_PER_CONFIG} cases failed:\n"
                          + "\n\n".join(failures[:FAILURES_SHOWN]))


def test_the_cases_are_reproducible() -> None:
    first = [(c.name, c.text(), c.overrides) for c in make_cases(CONFIGS[0], CONFIGS[0].parent)]
    again = [(c.name, c.text(), c.overrides) for c in make_cases(CONFIGS[0], CONFIGS[0].parent)]
    assert first == again


def test_the_emitter_writes_what_yaml_reads_back() -> None:
    doc = {"a": {"b": [1, "x\u00e9😀", None, 0.5], "c": {"d": True}}, "e": "\x00\ud800\x85\u2028",
           "f": float("inf")}
    back = yaml.safe_load(emit(doc))
    assert back["a"] == doc["a"] and back["e"] == doc["e"] and back["f"] == math.inf
