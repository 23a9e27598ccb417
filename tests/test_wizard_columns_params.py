"""The wizard's Columns and Parameters steps, driven through the real WizardApp at 80x24.

Columns: the mapping suggested from the column names per task, the rendered first row following the choices,
columns the data lacks blocking Next. Parameters: the engine's own messages next to the field as values are
typed (and blocking Next), fields shown only where the task uses them, the memory estimate following LoRA and
quantization, values kept across Back and Next.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, Collapsible, Input, Select, Static

from engine.capabilities import Capabilities, Support
from engine.config import RunConfig
from engine.data import DataSource, Table
from engine.memory import GiB
from engine.model_info import ModelInfo
from support import until
from tui.app import WizardApp, new_config
from tui.steps.columns import NONE, ColumnsStep, suggest_mapping
from tui.steps.params import ParamsStep, param_fields
from tui.steps.rows import FieldRow

SIZE = (80, 24)
COLUMNS, PARAMS = 3, 4
CHATS = [{"messages": [{"role": "user", "content": "Hi there"},
                       {"role": "assistant", "content": "Hello! How can I help?"}], "id": 1}]
PAIRS = [{"prompt": "Which way does the river flow?", "chosen": "North.", "rejected": "Uphill."}]
ALPACA = [{"instruction": "Add the numbers.", "input": "2 and 2", "output": "4"}]
QA = [{"question": "Capital of France?", "answer": "Paris.", "notes": "Geography, easy."}]
QWEN = ModelInfo("Qwen/Qwen2.5-0.5B", available=True, parameters=494_032_768, hidden_size=896, num_layers=24,
                 num_heads=14, num_kv_heads=2, intermediate_size=4864, vocab_size=151936, context_length=32768)
NO = Support(False, "not on this test machine")
CPU = Capabilities("cpu", "test CPU", 0, "0", None, NO, NO, NO, NO)
TASKS = {"llm-sft": "sft", "llm-dpo": "dpo", "llm-orpo": "orpo", "llm-reward": "reward", "llm-generic": "default"}


def table(rows: list[dict[str, Any]]) -> Table:
    source = DataSource(kind="file", path=Path("train.jsonl"), format="jsonl", dataset_id=None, config_name=None,
                        split="train")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    locations = [f"train.jsonl:{i + 1}" for i in range(len(rows))]
    return Table(rows=rows, columns=columns, source=source, locations=locations)


def config(task: str = "llm-sft") -> RunConfig:
    cfg = new_config()  # no base model: the Model step looks nothing up; app.model_info stands in for it
    cfg.task, cfg.params.trainer = task, TASKS[task]
    return cfg


async def open_step(pilot: Pilot, index: int, rows: list[dict[str, Any]] | None = None, *,
                    info: ModelInfo | None = QWEN, capabilities: Any = CPU) -> Any:
    """Let the other steps' start-up workers finish (they may set app.table), then set the app's state the
    Data and Model steps would have left, and jump to the step."""
    app = pilot.app
    await app.workers.wait_for_complete()
    await pilot.pause()
    app.table = table(rows or PAIRS)
    app.model_info = info
    app.capabilities = capabilities
    app.gpu_total = None
    app.show(index)
    for _ in range(100):  # Parameters builds its fields when first shown (no worker: a GPU probe may be running)
        await pilot.pause()
        if getattr(app.step, "ready", True):
            return app.step
    raise AssertionError("the step was not built")


async def unfold(pilot: Pilot) -> None:
    """Open the Advanced fold; its fields are built on the first opening."""
    pilot.app.query_one("#advanced", Collapsible).collapsed = False
    await until(pilot, lambda: pilot.app.step.advanced_ready, "the advanced fields")


def text_of(app: WizardApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def row_problem(app: WizardApp, row_id: str) -> str:
    line = app.query_one(f"#{row_id} .field-problem", Static)
    return str(line.render()) if line.display else ""


# ---------------------------------------------------------------- Columns


async def test_sft_conversations_map_to_the_messages_column_with_a_chat_template() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        step = await open_step(pilot, COLUMNS, CHATS, info=None)
        assert isinstance(step, ColumnsStep)
        cfg = app.cfg
        assert cfg.data.column_mapping.text_column == "messages" and cfg.data.column_mapping.prompt_text_column is None
        assert cfg.data.chat_template == "chatml"  # message lists need one; the model has none known
        assert app.query_one("#col-text-column", Select).value == "messages"
        assert app.query_one("#col-prompt-text-column", Select).value == NONE
        assert not app.query_one("#row-rejected-text-column").display
        assert not app.query_one("#row-prompt-template").display  # conversations need no templates
        await until(pilot, lambda: "<|im_start|>assistant" in text_of(app, "#sample"), "the rendered chat")
        assert "Hello! How can I help?<|im_end|>" in text_of(app, "#sample")
        assert "chat template is now chatml" in text_of(app, "#columns-found")


async def test_dpo_maps_prompt_chosen_and_rejected() -> None:
    app = WizardApp(config("llm-dpo"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, PAIRS)
        cm = app.cfg.data.column_mapping
        assert (cm.prompt_text_column, cm.text_column, cm.rejected_text_column) == ("prompt", "chosen", "rejected")
        for role in ("prompt-text-column", "text-column", "rejected-text-column"):
            assert app.query_one(f"#row-{role}").display
        assert not app.query_one("#row-completion-template").display  # DPO reads no completion template
        sample = text_of(app, "#sample")
        assert "prompt: Which way does the river flow?" in sample and "chosen: North." in sample
        assert "rejected: Uphill." in sample
        assert app.step.problems(app.cfg) == []


async def test_instruction_data_gets_prompt_and_completion_templates() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, ALPACA)
        d = app.cfg.data
        assert "{instruction}" in d.prompt_template and "{input}" in d.prompt_template
        assert d.completion_template == "{output}"
        shown = app.query_one("#col-prompt-template", Input).value
        assert "\n" not in shown and "\\n" in shown  # one line, newlines written as \n
        assert app.query_one("#row-prompt-template").display
        await until(pilot, lambda: "### Response:" in text_of(app, "#sample"), "the templated sample")
        assert "Add the numbers." in text_of(app, "#sample")


async def test_the_models_own_chat_template_is_loaded_in_a_worker(tiny_model: Path) -> None:
    cfg = config("llm-sft")
    cfg.base_model, cfg.data.chat_template = str(tiny_model), "tokenizer"
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, CHATS)
        await until(pilot, lambda: "<|start_header_id|>assistant" in text_of(app, "#sample"), "the model's template")
        assert "Hello! How can I help?<|eot_id|>" in text_of(app, "#sample")


async def test_a_tokenizer_that_cannot_load_is_said_on_the_step(tmp_path: Path) -> None:
    cfg = config("llm-sft")
    cfg.base_model, cfg.data.chat_template = "nobody/no-such-model", "tokenizer"
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, CHATS)
        await until(pilot, lambda: "Cannot show the sample" in text_of(app, "#sample"), "the error")
        assert "cannot load its tokenizer" in text_of(app, "#sample")
        assert app.step.problems(app.cfg) == []  # the mapping is fine; the Model step owns the model


def test_suggestions_from_names_alone() -> None:
    assert suggest_mapping(["question", "answer"], "sft").prompt_text_column == "question"
    assert suggest_mapping(["content", "id"], "default").text_column == "content"
    reward = suggest_mapping(["chosen", "rejected"], "reward")
    assert (reward.text_column, reward.rejected_text_column) == ("chosen", "rejected")
    assert suggest_mapping(["id", "body"], "sft").text_column == "body"


async def test_changing_a_column_re_renders_the_sample() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, QA)
        assert app.cfg.data.column_mapping.prompt_text_column == "question"
        await until(pilot, lambda: "Paris." in text_of(app, "#sample"), "the answer in the sample")
        app.query_one("#col-text-column", Select).value = "notes"
        await until(pilot, lambda: "Geography, easy." in text_of(app, "#sample"), "the sample to follow the choice")
        assert "Paris." not in text_of(app, "#sample")
        assert app.cfg.data.column_mapping.text_column == "notes"


async def test_a_template_naming_a_missing_column_blocks_next() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, ALPACA)
        app.query_one("#col-prompt-template", Input).value = "{instructions}\\n"
        await pilot.pause()
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.query_one("#row-prompt-template .field-problem").display, "the problem")
        assert app.index == COLUMNS
        assert "uses {instructions}, which is no column of the data; its columns are: instruction, input, output" \
            in row_problem(app, "row-prompt-template")
        app.query_one("#col-prompt-template", Input).value = "{instruction"
        await pilot.pause()
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "is not a valid template" in row_problem(app, "row-prompt-template"),
                    "the engine's template rule")
        assert app.index == COLUMNS


async def test_a_role_the_data_cannot_fill_shows_the_engines_rule() -> None:
    app = WizardApp(config("llm-dpo"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, [{"prompt": "Hi", "chosen": "Hello.", "note": "no rejected answer"}])
        assert app.query_one("#col-rejected-text-column", Select).is_blank()
        await pilot.press("ctrl+n")
        await until(pilot, lambda: row_problem(app, "row-rejected-text-column"), "the problem")
        assert "task llm-dpo needs the rejected text, and no column is mapped to it" in \
            row_problem(app, "row-rejected-text-column")
        assert app.index == COLUMNS


async def test_columns_survive_next_and_back() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, QA)
        app.query_one("#col-prompt-text-column", Select).value = NONE
        app.query_one("#col-text-column", Select).value = "notes"
        await pilot.pause()
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.index == PARAMS, "the Parameters step")
        await pilot.press("escape")
        await until(pilot, lambda: app.index == COLUMNS, "back on Columns")
        assert app.query_one("#col-text-column", Select).value == "notes"
        assert app.query_one("#col-prompt-text-column", Select).value == NONE
        cm = app.cfg.data.column_mapping
        assert (cm.text_column, cm.prompt_text_column) == ("notes", None)


# ---------------------------------------------------------------- Parameters


async def test_a_negative_learning_rate_shows_the_engines_rule_and_blocks_next() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        step = await open_step(pilot, PARAMS)
        assert isinstance(step, ParamsStep)
        lr = app.query_one("#param-lr", Input)
        lr.focus()
        lr.value = ""
        await pilot.press("minus", "1")
        await until(pilot, lambda: row_problem(app, "row-param-lr"), "the inline problem")
        assert row_problem(app, "row-param-lr").startswith("params.lr = -1.0: must be greater than 0")
        assert app.cfg.params.lr == -1.0  # a number: assigned, then refused by the engine's range rule
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.index == PARAMS
        assert "fix: default: 3e-05" in row_problem(app, "row-param-lr")


@pytest.mark.parametrize("typed", ["nan", "inf", "-inf"])
async def test_a_non_finite_number_is_refused_and_blocks_next(typed: str) -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        app.query_one("#param-lr", Input).value = typed
        await until(pilot, lambda: row_problem(app, "row-param-lr"), "the inline problem")
        assert f"params.lr = '{typed}': must be a finite number" in row_problem(app, "row-param-lr")
        assert app.cfg.params.lr == 3e-5  # not assigned
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.index == PARAMS


async def test_text_that_is_no_number_keeps_the_value_and_blocks_next() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        app.query_one("#param-block-size", Input).value = "abc"
        await until(pilot, lambda: row_problem(app, "row-param-block-size"), "the inline problem")
        assert "params.block_size = 'abc': must be a whole number" in row_problem(app, "row-param-block-size")
        assert app.cfg.params.block_size == -1
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.index == PARAMS
        app.query_one("#param-block-size", Input).value = "512"
        await until(pilot, lambda: not row_problem(app, "row-param-block-size"), "the problem to clear")
        assert app.cfg.params.block_size == 512
        assert app.step.problems(app.cfg) == []  # what Next checks


@pytest.mark.parametrize(("task", "shown", "hidden"), [
    ("llm-sft", {"train_on_all_tokens"}, {"dpo_beta", "max_prompt_length", "add_eos_token", "model_ref"}),
    ("llm-dpo", {"dpo_beta", "max_prompt_length"}, {"train_on_all_tokens", "add_eos_token", "model_ref"}),
    ("llm-generic", {"add_eos_token"}, {"dpo_beta", "train_on_all_tokens"}),
])
async def test_fields_the_task_does_not_use_are_hidden(task: str, shown: set[str], hidden: set[str]) -> None:
    app = WizardApp(config(task))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        await unfold(pilot)

        def visible(name: str) -> bool:
            return bool(app.query_one(f"#row-param-{name.replace('_', '-')}", FieldRow).display)

        assert all(visible(n) for n in shown) and not any(visible(n) for n in hidden)
        assert not visible("trainer") and not visible("unsloth")
        assert visible("lora_r")  # new_config: LoRA on
        app.query_one("#param-peft", Checkbox).value = False
        await until(pilot, lambda: not visible("lora_r"), "the LoRA fields to go")
        assert visible("model_ref") == (task == "llm-dpo")  # full DPO needs a reference model


async def test_the_memory_estimate_follows_lora_and_quantization() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        memory = lambda: text_of(app, "#memory")  # noqa: E731
        lora = memory()
        assert "no GPU: CPU run" in lora and "weights 1.8 GiB" in lora  # 494M fp32
        app.query_one("#param-peft", Checkbox).value = False
        await until(pilot, lambda: memory() != lora, "the estimate without LoRA")
        full = memory()
        assert "optimizer 3.7 GiB" in full  # AdamW: 2 x 4 bytes x 494M
        app.query_one("#param-peft", Checkbox).value = True
        app.query_one("#param-quantization", Select).value = "int4"
        await until(pilot, lambda: "weights 695 MiB" in memory(), "int4 weights")  # linears 4-bit, embeddings fp32
        assert app.cfg.params.quantization == "int4"


async def test_the_memory_panel_shows_the_gpus_the_processes_and_the_estimate_per_gpu() -> None:
    gpus = Capabilities("cuda", "Test GPU", 4, "0", None, NO, NO, NO, NO)
    cfg = config("llm-sft")
    cfg.params.peft, cfg.params.quantization = False, None
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS, capabilities=gpus)
        app.gpu_total = 80 * GiB
        app.step.update_memory()
        memory = lambda: text_of(app, "#memory")  # noqa: E731
        await until(pilot, lambda: "4 GPUs (Test GPU): 4 processes, ddp" in memory(), "the launch on 4 GPUs")
        ddp = memory()
        assert "optimizer 3.7 GiB" in ddp  # ddp: a whole copy per GPU
        app.cfg.params.distributed_backend = "fsdp"  # as the Advanced field sets it
        app.step.update_memory()
        await until(pilot, lambda: "4 processes, fsdp" in memory(), "fsdp")
        assert "optimizer 942 MiB" in memory() and "fits: " in memory()  # sharded over the 4 GPUs


async def test_the_backend_and_process_count_are_basic_fields_and_deepspeed_shows_its_stage(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.capabilities

    monkeypatch.setattr(engine.capabilities, "probe", lambda: CPU)  # the machine known: its rules apply
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        await unfold(pilot)

        def visible(name: str) -> bool:
            return bool(app.query_one(f"#row-param-{name.replace('_', '-')}", FieldRow).display)

        assert visible("num_processes") and visible("distributed_backend") and not visible("deepspeed_stage")
        app.query_one("#param-distributed-backend", Select).value = "deepspeed"
        await until(pilot, lambda: visible("deepspeed_stage"), "the ZeRO stage field")
        assert app.cfg.params.distributed_backend == "deepspeed"
        # this test machine (CPU) cannot run it: said next to the field, as --yes would refuse it
        await until(pilot, lambda: "needs CUDA GPUs" in row_problem(app, "row-param-distributed-backend"),
                    "the machine's refusal")


async def test_the_gpu_is_probed_once_in_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.capabilities
    import tui.steps.params

    release = threading.Event()
    gpu = Capabilities("cuda", "Test GPU", 1, "0", None, NO, NO, NO, NO)

    def fake_probe() -> Capabilities:
        release.wait(10)
        return gpu

    monkeypatch.setattr(engine.capabilities, "probe", fake_probe)
    monkeypatch.setattr(tui.steps.params, "cuda_total_memory", lambda: 80 * GiB)
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS, capabilities=None)
        assert "checking the GPU…" in text_of(app, "#memory")
        app.query_one("#param-mixed-precision", Select).value = "fp16"
        await pilot.pause()
        assert app.step.problems(app.cfg) == []  # Next does not wait for the probe (it would block here)
        release.set()
        await until(pilot, lambda: "fits: " in text_of(app, "#memory"), "the probe's answer")
        assert "of 80.0 GiB" in text_of(app, "#memory")
        assert app.capabilities is gpu and app.gpu_total == 80 * GiB
        # Now known, the machine's rules join the engine's: inline and on Next.
        assert "this machine cannot run fp16: not on this test machine" in row_problem(app, "row-param-mixed-precision")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.index == PARAMS


async def test_parameters_survive_back_and_next() -> None:
    app = WizardApp(config("llm-dpo"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        await unfold(pilot)
        app.query_one("#param-lr", Input).value = "1e-4"
        app.query_one("#param-dpo-beta", Input).value = "0.5"
        app.query_one("#param-mixed-precision", Select).value = "bf16"
        await pilot.pause()
        await pilot.press("escape")
        await until(pilot, lambda: app.index == COLUMNS, "back on Columns")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.index == PARAMS, "Parameters again")
        assert app.query_one("#param-lr", Input).value == "0.0001"
        assert app.query_one("#param-dpo-beta", Input).value == "0.5"
        assert app.query_one("#param-mixed-precision", Select).value == "bf16"
        p = app.cfg.params
        assert (p.lr, p.dpo_beta, p.mixed_precision) == (1e-4, 0.5, "bf16")


async def test_a_problem_in_an_advanced_field_opens_the_fold() -> None:
    cfg = config("llm-sft")
    cfg.params.warmup_ratio = 2.0
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        assert app.query_one("#advanced", Collapsible).collapsed
        await pilot.press("ctrl+n")
        await until(pilot, lambda: not app.query_one("#advanced", Collapsible).collapsed, "the fold to open")
        assert "must be at most 1" in row_problem(app, "row-param-warmup-ratio")
        assert app.index == PARAMS


async def test_every_field_scrolls_into_view_above_the_memory_panel() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        step = await open_step(pilot, PARAMS)
        await unfold(pilot)
        last = app.query_one("#param-eval-steps", Input)
        last.focus()
        footer = app.query_one("#params-footer")

        def in_view() -> bool:
            return step.scroll_y > 0 and step.region.y <= last.region.y < footer.region.y

        await until(pilot, in_view, "the last field in view")
        assert "params.eval_steps" in text_of(app, "#param-help")


def test_every_param_has_a_field() -> None:
    from engine.params import PARAM_FIELDS

    keys = [f.key for f in param_fields()]
    assert keys[:3] == ["data.chat_template", "project_name", "log"]
    assert sorted(keys[3:]) == sorted(f"params.{n}" for n in PARAM_FIELDS)


async def test_the_tracker_field_offers_the_installed_trackers_and_says_how_to_add_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("mlflow", "trackio"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: import fails, find_spec finds nothing
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = config("llm-sft")
    cfg.log = "mlflow"  # the config names one that is not installed here
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        select = app.query_one("#param-log", Select)
        assert [v for _, v in select._options] == ["none", "tensorboard", "wandb", "mlflow"]
        assert select.value == "mlflow"
        await pilot.press("ctrl+n")  # the engine's refusal (the same as --yes), next to the field; Next blocked
        await until(pilot, lambda: "needs the mlflow-skinny package" in row_problem(app, "row-param-log"), "refusal")
        assert "pip install 'llmtune[mlflow]'" in row_problem(app, "row-param-log") and app.index == PARAMS
        select.focus()
        await until(pilot, lambda: "Installed here: tensorboard, wandb." in text_of(app, "#param-help"), "the help")
        assert "mlflow: pip install 'llmtune[mlflow]'; trackio: pip install 'llmtune[trackio]'" in text_of(
            app, "#param-help")
        select.value = "wandb"
        await until(pilot, lambda: app.cfg.log == "wandb" and not row_problem(app, "row-param-log"), "wandb taken")
        assert app.step.problems(app.cfg) == []


# ---------------------------------------------------------------- snapshots


def test_columns_step_snapshot(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        await open_step(pilot, COLUMNS, PAIRS)
        await until(pilot, lambda: "chosen: North." in text_of(pilot.app, "#sample"), "the sample")

    assert snap_compare(WizardApp(config("llm-dpo")), terminal_size=SIZE, run_before=run_before)


def test_params_step_snapshot(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        await open_step(pilot, PARAMS)
        await until(pilot, lambda: "no GPU" in text_of(pilot.app, "#memory"), "the estimate")

    assert snap_compare(WizardApp(config("llm-sft")), terminal_size=SIZE, run_before=run_before)
