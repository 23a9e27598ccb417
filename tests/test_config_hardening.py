"""Nothing lost, nothing silently wrong (issue 11): inputs that used to pass the validator, hang it, or end in an
internal error now stop with exit 2 and a message naming the key, what is wrong and the fix.

Non-finite numbers; YAML alias bombs and self-references; nesting thousands deep; integers of thousands of
digits; template specs that exhaust memory; seeds outside numpy's range; project names no file system takes;
LoRA target modules the model lacks; AutoTrain's relocated keys whatever their order; dotted keys; secrets
never echoed; values shown in messages without ever being rendered whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.config import (
    MAX_NESTING,
    RELOCATED,
    SECRET_KEYS,
    RunConfig,
    build_config,
    coerce,
    load_config,
    parse_config_text,
    template_fields,
    validate,
)
from engine.errors import ConfigError, Problem, show_value
from support import time_limit

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = "task: llm-sft\nbase_model: org/model\nproject_name: out\ndata:\n  path: data\n"
SECRET = "hf_SeCrEtToKeN0123456789"


def problems(text: str, overrides: list[str] | None = None) -> dict[str, str]:
    """key -> rendered problems (with the file's name, so lines show), for a config expected to be invalid."""
    with time_limit(10), pytest.raises(ConfigError) as info:
        parse_config_text(text, environ={}, overrides=overrides, source=Path("run.yaml"))
    found: dict[str, str] = {}
    for p in info.value.problems:
        found[p.key] = (found[p.key] + "\n" if p.key in found else "") + p.render("run.yaml")
    return found


def config(text: str, overrides: list[str] | None = None) -> RunConfig:
    return parse_config_text(text, environ={}, overrides=overrides)




def run_cli(path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(path), "--dry-run", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False)


# ---------------------------------------------------------------- 1. NaN and infinity


FLOATS = ["lr", "warmup_ratio", "weight_decay", "max_grad_norm", "lora_dropout", "dpo_beta"]


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("written", [".nan", ".inf", "-.inf", "'nan'", "inf", "1e999"])
def test_non_finite_numbers_are_refused_in_the_file(name: str, written: str) -> None:
    found = problems(MINIMAL + f"params:\n  {name}: {written}\n")
    assert "must be a finite number, not NaN or infinity" in found[f"params.{name}"]
    assert "run.yaml:7:" in found[f"params.{name}"] and "fix: write it as e.g." in found[f"params.{name}"]


@pytest.mark.parametrize("written", ["nan", "inf", ".inf", "-Infinity", "NaN"])
def test_non_finite_numbers_are_refused_in_set(written: str) -> None:
    found = problems(MINIMAL, overrides=[f"params.lr={written}"])
    assert "must be a finite number" in found["params.lr"]


def test_a_huge_integer_where_a_number_goes_is_not_an_overflow() -> None:
    assert config(MINIMAL + "params:\n  lr: " + "9" * 90 + "\n").params.lr == float("9" * 90)
    # float(10**400) raises OverflowError; a raw mapping (the wizard's, a test's) can hold one
    _, problem = coerce(10**400, "float", "params.lr")
    assert problem and "must be a finite number" in problem[0]
    _, found = build_config({"task": "llm-sft", "base_model": "m", "params": {"lr": 10**400, "epochs": 10**400}})
    assert {p.key for p in found} == {"params.lr", "params.epochs"}
    assert "<a whole number of about 401 digits>" in found[0].render()


def test_a_non_finite_value_set_in_code_is_refused_too() -> None:
    cfg = config(MINIMAL)
    cfg.params.dpo_beta = float("nan")
    with pytest.raises(ConfigError) as info:
        validate(cfg, environment=False)
    assert "params.dpo_beta = nan: must be a finite number" in info.value.render()


def test_coerce_as_the_wizard_calls_it_refuses_nan() -> None:
    # tui/steps/params.py passes the field's text through coerce before assigning it
    for text in ("nan", "inf", "-inf", "1e999"):
        value, problem = coerce(text, "float", "params.lr")
        assert value is None and problem and "finite" in problem[0]
    assert coerce("3e-5", "float", "params.lr") == (3e-5, None)


# ---------------------------------------------------------------- 2. aliases, and values shown in messages


def billion_laughs(levels: int = 9) -> str:
    lines = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once() -> None:
    text = MINIMAL + "params:\n" + billion_laughs() + "  lr: *a8\n"
    assert len(text) < 2000
    found = problems(text)  # used to hang: 9**9 values rendered into the message
    (key, message), = found.items()
    assert key.startswith("params.a") and "expands through YAML aliases (*name) to more than 10000 values" in message
    assert "fix: write the value out instead of using anchors" in message and "run.yaml:" in message


@pytest.mark.parametrize("value", ["&r [*r]", "&m {a: *m}", "&n [1, [2, *n]]"])
def test_an_alias_to_itself_is_refused(value: str) -> None:
    message = problems(MINIMAL + f"params:\n  lr: {value}\n")["params.lr"]
    assert "refers to itself through a YAML alias" in message and "run.yaml:7:" in message


def test_a_chain_of_aliases_deeper_than_the_text_is_refused() -> None:
    chain = "".join(f"  x{i}: &x{i} [*x{i - 1}]\n" for i in range(1, 60))
    found = problems(MINIMAL + "params:\n  x0: &x0 [1]\n" + chain)
    assert any("levels deep through YAML aliases" in m for m in found.values())


def test_ordinary_anchors_and_merge_keys_still_work() -> None:
    cfg = config(MINIMAL + "params:\n  lr: &rate 1e-4\n  weight_decay: *rate\n")
    assert cfg.params.lr == cfg.params.weight_decay == 1e-4
    # a merge key (<<) whose keys the mapping then overrides: not "appears twice"
    merged = config(MINIMAL + "params:\n  <<: {epochs: 2, lr: 1.0e-4}\n  lr: 2.0e-4\n").params
    assert (merged.epochs, merged.lr) == (2, 2e-4)


def test_show_value_never_renders_a_value_whole() -> None:
    huge_text = "x" * 50_000_000
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    loop: list[Any] = [1]
    loop.append(loop)
    wide = {i: list(range(1000)) for i in range(10_000)}
    with time_limit(5):
        for value in (huge_text, 10**100_000, -(10**5000), deep, loop, wide, list(range(10**6)), b"y" * 10**7):
            shown = show_value(value)
            assert len(shown) <= 80
    assert show_value(10**100_000) == "<a whole number of about 100001 digits>"  # str() of it raises ValueError
    assert show_value("two") == "'two'" and show_value([1, "a"]) == "[1, 'a']" and show_value(-1.0) == "-1.0"
    assert show_value(loop) == "[1, [...]]"
    assert Problem("k", "m", value=huge_text).render().startswith("k = 'xxxx") and len(
        Problem("k", "m", value=huge_text).render()) < 100


# ---------------------------------------------------------------- 3. exit 1 before, a user error now


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 5000, 100_000])
def test_nesting_thousands_deep_is_refused_in_the_file(depth: int) -> None:
    message = problems(MINIMAL + "params:\n  lr: " + "[" * depth + "]" * depth + "\n")["params.lr"]
    assert f"is nested more than {MAX_NESTING} levels deep" in message and "run.yaml:7:" in message
    block = "".join("  " * i + "a:\n" for i in range(1, 200)) + "  " * 200 + "b: 1\n"
    ((key, message),) = problems(MINIMAL + "params:\n" + block).items()
    assert key.startswith("params.a.a.a") and "nested more than" in message and "run.yaml:" in message


def test_nesting_thousands_deep_is_refused_in_set() -> None:
    found = problems(MINIMAL, overrides=["params.lr=" + "[" * 5000 + "]" * 5000])
    assert "(in --set) is nested more than" in found["params.lr"]
    ((key, message),) = problems(MINIMAL, overrides=["params.lr=" + "{a: " * 3000 + "1" + "}" * 3000]).items()
    assert key.startswith("params.lr.a.a") and "(in --set) is nested more than" in message


def test_nesting_within_the_bound_is_an_ordinary_type_error() -> None:
    message = problems(MINIMAL + "params:\n  lr: " + "[" * 10 + "]" * 10 + "\n")["params.lr"]
    assert "must be a number" in message


@pytest.mark.parametrize("digits", [101, 5000, 100_000])
def test_integers_of_thousands_of_digits_are_refused(digits: int) -> None:
    message = problems(MINIMAL + "params:\n  epochs: " + "9" * digits + "\n")["params.epochs"]
    assert f"is a whole number of {digits} characters" in message and "run.yaml:7:" in message
    found = problems(MINIMAL, overrides=["params.epochs=" + "9" * digits])
    assert "far larger than any setting" in found["params.epochs"]


def test_integers_must_fit_the_types_torch_and_transformers_use() -> None:
    assert "must lie within ±9223372036854775807" in problems(MINIMAL + "params:\n  epochs: " + "9" * 30 + "\n")[
        "params.epochs"]
    assert "must lie within" in problems(MINIMAL, overrides=["params.max_steps=1e300"])["params.max_steps"]
    for name in ("block_size", "batch_size", "lora_r", "max_steps", "epochs", "model_max_length"):
        assert "must be at most 2147483647" in problems(MINIMAL + f"params:\n  {name}: {2**31}\n")[f"params.{name}"]
    assert config(MINIMAL + f"params:\n  max_steps: {2**31 - 1}\n").params.max_steps == 2**31 - 1


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_the_seed_must_be_one_numpy_takes(seed: int) -> None:
    message = problems(MINIMAL + f"params:\n  seed: {seed}\n")["params.seed"]
    assert "must be at least 0" in message or "must be at most 4294967295" in message


def test_seeds_at_the_ends_of_the_range_are_fine() -> None:
    assert config(MINIMAL + "params:\n  seed: 0\n").params.seed == 0
    assert config(MINIMAL + f"params:\n  seed: {2**32 - 1}\n").params.seed == 2**32 - 1


@pytest.mark.parametrize(("template", "said"), [
    ("{instruction:>999999999}", "asks for a width or precision of 999999999; at most 1000"),
    ("{instruction:.99999}", "asks for a width or precision of 99999"),
    ("{instruction:>" + "9" * 5000 + "}", "asks for a width or precision of"),
    ("{instruction:{width}}", "takes its format from the data"),
    ("{instruction:>{width}}", "takes its format from the data"),
    ("{instruction!z}", "has an unknown conversion"),
    ("{instruction:d}", "a format spec that not every value takes"),
    ("{instruction:=5}", "a format spec that not every value takes"),
])
def test_templates_that_could_blow_up_are_refused(template: str, said: str) -> None:
    found = problems(MINIMAL + f"  prompt_template: {template!r}\n")
    assert said in found["data.prompt_template"] and "is not a valid template" in found["data.prompt_template"]


def test_plain_and_modest_templates_keep_working() -> None:
    assert template_fields("### Q\n{instruction}\n{input}") == ["instruction", "input"]
    assert template_fields("{{literal}} {title:>20} {body!r} {note!s:.100}") == ["title", "body", "note"]
    cfg = config(MINIMAL + "  prompt_template: '{question:<10}'\n  completion_template: '{answer}'\n")
    assert cfg.data.prompt_template == "{question:<10}"


@pytest.mark.parametrize(("name", "said"), [
    ("'o\\0ut'", "contains a NUL byte"),
    ("x" * 256, "has a name of 256 bytes"),
    ("runs/" + "é" * 200, "has a name of 400 bytes"),
    ("a/" * 2100, "makes a path of"),
    ("'\\ud800x'", "contains a lone surrogate (U+D800)"),
])
def test_project_names_no_file_system_takes_are_refused(name: str, said: str) -> None:
    quoted = name.replace("'", '"') if name.startswith("'") else name
    message = problems(MINIMAL.replace("project_name: out", f"project_name: {quoted}"))["project_name"]
    assert said in message and "run.yaml:3:" in message


def test_a_project_name_of_255_bytes_is_fine() -> None:
    assert config(MINIMAL.replace("project_name: out", "project_name: " + "x" * 255)).project_name == "x" * 255


def test_text_no_file_can_hold_is_refused_everywhere_and_never_reaches_the_file_system(tmp_path: Path) -> None:
    text = MINIMAL.replace("path: data", 'path: "da\\0ta"').replace("org/model", '"x" ') + \
        '  valid_split: "v\\ud800"\n'
    found = problems(text)
    assert "NUL byte" in found["data.path"] and "lone surrogate" in found["data.valid_split"]
    cfg, _ = build_config(yaml.safe_load(MINIMAL.replace("path: data", "path: " + "d/" * 3000)))
    with pytest.raises(ConfigError) as info:  # checking the machine used to stat() the path: ENAMETOOLONG
        validate(cfg)
    assert "makes a path of" in info.value.render()


# -- target_modules, before launch


def lora_config(tmp_path: Path, tiny_model: Path, targets: str, task: str = "llm-sft") -> RunConfig:
    (tmp_path / "train.jsonl").write_text('{"text": "hi", "chosen": "a", "rejected": "b"}\n')
    columns = "\n  column_mapping:\n    text_column: chosen\n    rejected_text_column: rejected" \
        if task == "llm-reward" else ""
    text = (f"task: {task}\nbase_model: {tiny_model}\nproject_name: out\ndata:\n  path: {tmp_path}{columns}\n"
            f"params:\n  peft: true\n  quantization: null\n  target_modules: {targets!r}\n")
    return parse_config_text(text, environ={})


def test_target_modules_the_model_lacks_are_said_before_launch(tmp_path: Path, tiny_model: Path) -> None:
    cfg = lora_config(tmp_path, tiny_model, "q_proj, qkv_proj,v_proj,dense")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    (problem,) = info.value.problems
    text = problem.render()
    assert problem.key == "params.target_modules" and "names no module of" in text
    assert text.endswith("fix: use its linear layers, e.g. q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj "
                         "(or all-linear for all of them)")
    assert ": qkv_proj, dense\n" in text


def test_target_modules_match_as_peft_matches_them(tmp_path: Path, tiny_model: Path) -> None:
    for targets in ("q_proj,v_proj", "self_attn.q_proj", "model.layers.0.mlp.up_proj", "lm_head", "all-linear"):
        validate(lora_config(tmp_path, tiny_model, targets))
    with pytest.raises(ConfigError):
        validate(lora_config(tmp_path, tiny_model, "_proj"))  # a suffix of a name is no match, as in peft
    validate(lora_config(tmp_path, tiny_model, "score", task="llm-reward"))  # the reward model's head
    with pytest.raises(ConfigError):
        validate(lora_config(tmp_path, tiny_model, "score"))  # a causal LM has none


def test_target_modules_are_not_checked_without_a_readable_model(tmp_path: Path, tiny_model: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.target_modules

    cfg = lora_config(tmp_path, tiny_model, "nope")
    cfg.base_model = "someorg/not-in-the-cache"
    validate(cfg)  # nothing said: the model's config cannot be read here (the tokenizer check says so later)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was built for all-linear or without peft")

    monkeypatch.setattr(engine.target_modules, "model_modules", fail)
    validate(lora_config(tmp_path, tiny_model, "all-linear"))
    cfg = lora_config(tmp_path, tiny_model, "nope")
    cfg.params.peft = False
    validate(cfg)


def test_target_modules_that_name_nothing_at_all_are_a_static_problem() -> None:
    message = problems(MINIMAL + "params:\n  peft: true\n  target_modules: ' , '\n")["params.target_modules"]
    assert "names no module" in message and "q_proj,v_proj, or all-linear" in message


def test_importing_the_config_still_imports_no_torch() -> None:
    code = "import sys, engine.config, engine.target_modules; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- 4. order and shadowed keys


@pytest.mark.parametrize("before", [True, False])
def test_relocated_keys_give_the_same_verdict_in_any_order(before: bool) -> None:
    def text(relocated: str) -> str:
        body = MINIMAL + "  chat_template: zephyr\n"
        extra = f"params:\n  chat_template: {relocated}\n"
        return extra + body if before else body + extra

    message = problems(text("chatml"))["params.chat_template"]
    assert "conflicts with data.chat_template = 'zephyr'" in message and "fix: keep only data.chat_template" in message
    assert config(text("zephyr")).data.chat_template == "zephyr"  # equal: redundant, fine
    alone = "params:\n  chat_template: chatml\n" + MINIMAL if before else MINIMAL + "params:\n  chat_template: chatml\n"
    assert config(alone).data.chat_template == "chatml"


@pytest.mark.parametrize(("text", "key", "nested"), [
    (MINIMAL + "params.lr: 5\n", '"params.lr"', "params:\n        lr: ..."),
    (MINIMAL + "params:\n  lr: 1e-4\n'params.lr': 5\n", '"params.lr"', "params:\n        lr: ..."),
    (MINIMAL + "params:\n  lora.r: 2\n", 'params."lora.r"', "params:\n        lora:\n          r: ..."),
    (MINIMAL.replace("  path: data", "  column_mapping.text_column: t\n  path: data"),
     'data."column_mapping.text_column"', "data:\n        column_mapping:\n          text_column: ..."),
])
def test_keys_with_dots_in_the_file_are_refused(text: str, key: str, nested: str) -> None:
    found = problems(text)
    assert "is one key with dots in its name; keys are not split at dots" in found[key]
    assert "fix: write it nested:\n" in found[key] and nested in found[key]
    assert "run.yaml:" in found[key]


def test_a_dotted_key_does_not_override_the_nested_one() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(MINIMAL + "params:\n  lr: 1e-4\n'params.lr': 5\n", environ={})
    assert [p.key for p in info.value.problems] == ['"params.lr"']
    assert info.value.problems[0].line == 8  # its own line, not params.lr's


def test_set_keeps_its_dotted_syntax() -> None:
    cfg = config(MINIMAL + "params:\n  lr: 1e-4\n", overrides=["params.lr=2e-4", "data.column_mapping.text_column=t"])
    assert cfg.params.lr == 2e-4 and cfg.data.column_mapping.text_column == "t"


def test_set_does_not_change_a_section_shared_through_an_alias() -> None:
    from engine.config import apply_overrides

    raw = yaml.safe_load("params: &p\n  lr: 1.0e-4\nx-copy: *p\n")
    assert apply_overrides(raw, ["params.lr=2e-4"]) == []
    assert raw["params"]["lr"] == "2e-4" and raw["x-copy"]["lr"] == 1e-4  # YAML 1.1 reads 2e-4 as text


# ---------------------------------------------------------------- 5. secrets


def test_relocated_spellings_of_secret_keys_are_secret_too() -> None:
    for source, target in RELOCATED.items():
        if target in SECRET_KEYS:
            assert source in SECRET_KEYS


@pytest.mark.parametrize("token", [f"[{SECRET}]", f"{{t: {SECRET}}}", f"[[{SECRET}, 1]]", f"!!int {SECRET}",
                                   f"'{SECRET}\\0'".replace("'", '"')])
def test_a_malformed_token_is_never_echoed(token: str) -> None:
    found = problems(MINIMAL + f"hub:\n  token: {token}\n  push_to_hub: true\n")
    assert "hub.token" in found
    assert all(SECRET not in message for message in found.values())


def test_a_token_conflicting_with_its_autotrain_spelling_is_not_echoed() -> None:
    found = problems(MINIMAL + f"hub:\n  token: {SECRET}\nparams:\n  token: other-{SECRET}\n")
    assert "conflicts with hub.token" in found["params.token"]
    assert SECRET not in "".join(found.values())
    found = problems(MINIMAL, overrides=[f"hub.token=[{SECRET}]", f"params.token=[{SECRET}x]"])
    assert found and SECRET not in "".join(found.values())


def test_no_problem_about_a_secret_key_shows_its_value() -> None:
    for key in SECRET_KEYS:
        assert SECRET not in Problem(key, "is wrong", value=[SECRET]).render()
    assert "= 'x'" in Problem("hub.username", "is wrong", value="x").render()


def test_the_cli_never_echoes_a_malformed_token(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(MINIMAL + f"hub:\n  token: [{SECRET}]\n")
    out = run_cli(path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "hub.token: must be a single value (text)" in out.stderr
    assert SECRET not in out.stderr and SECRET not in out.stdout


# ---------------------------------------------------------------- through the CLI: exit 2, never 1


def test_inputs_that_ended_in_internal_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(MINIMAL + "params:\n  epochs: " + "9" * 5000 + "\n  lr: " + "[" * 5000 + "]" * 5000 +
                    "\n  seed: -1\n  lora_dropout: .nan\n  block_size: 2020-13-45\n"
                    "  prompt_template: '{instruction:>999999999}'\n")
    out = run_cli(path, "--set", "params.max_steps=" + "{a: " * 3000 + "}" * 3000)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "internal error" not in out.stderr
    assert "params.lr: is nested more than 32 levels deep" in out.stderr  # the file is refused before its values
    path.write_text(MINIMAL + "params:\n  epochs: " + "9" * 5000 + "\n  seed: -1\n  lora_dropout: .nan\n"
                    "  block_size: 2020-13-45\n")
    out = run_cli(path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{path}:7: params.epochs: is a whole number of 5000 characters" in out.stderr
    assert f"{path}:10: params.block_size: is not a valid date" in out.stderr
    path.write_text(MINIMAL + "  prompt_template: '{instruction:>999999999}'\nparams:\n  seed: -1\n"
                    "  lora_dropout: .nan\n")
    out = run_cli(path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "params.seed = -1: must be at least 0" in out.stderr and "params.lora_dropout = nan" in out.stderr
    assert "asks for a width or precision of 999999999" in out.stderr


def test_load_config_reads_a_file_with_every_bound_respected(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(MINIMAL + "params:\n  lr: &rate 1e-4\n  weight_decay: *rate\n  seed: 4294967295\n"
                    "  max_steps: 2147483647\n")
    cfg = load_config(path, environ={})
    assert (cfg.params.lr, cfg.params.weight_decay, cfg.params.seed) == (1e-4, 1e-4, 2**32 - 1)


def test_an_unknown_chat_template_is_refused_by_the_static_rules() -> None:
    with pytest.raises(ConfigError) as refused:
        config("task: llm-sft\nbase_model: x/y\ndata:\n  chat_template: chatlm\n")
    assert "data.chat_template = 'chatlm': is not one of the allowed values" in str(refused.value)
    assert "did you mean chatml?" in str(refused.value)
    assert config("task: llm-sft\nbase_model: x/y\ndata:\n  chat_template: ChatML\n").data.chat_template == "chatml"
