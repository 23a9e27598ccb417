"""The wizard as a whole: start-up without the ML stack, the CLI's way in, and walks through every step."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Select

from engine.config import load_config, to_yaml
from support import next_step, until

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "bitsandbytes", "accelerate")


def test_building_the_app_imports_no_ml_stack() -> None:
    """The wizard and the dashboard (attach opens it at once, even on a busy GPU box) stay light."""
    code = ("import sys\nfrom tui.app import WizardApp\nWizardApp()\nimport tui.dashboard, tui.attach\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_without_a_terminal_the_cli_says_what_to_run_instead() -> None:
    out = subprocess.run([sys.executable, "-m", "tui.cli"], capture_output=True, text=True, cwd=ROOT,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "the wizard needs a terminal" in out.stderr and "--yes" in out.stderr


# ---------------------------------------------------------------- whole walks through the real app


CHATS = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                       {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]} for a, b in [(1, 2), (3, 4)]]
PAIRS = [{"prompt": "Which way does the river flow?", "chosen": "Downhill.", "rejected": "Uphill."},
         {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."}]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


async def type_into(pilot: Pilot, app: Any, selector: str, text: str) -> None:
    widget = app.query_one(selector, Input)
    widget.focus()
    widget.value = ""
    await pilot.press(*list(text))


async def walk(pilot: Pilot, app: Any, tiny_model: Path, data: str, task_button: str,
               set_params: Callable[[Any], None]) -> Path:
    from tui.steps.task import TaskStep

    await type_into(pilot, app, "#model-input", str(tiny_model))
    await pilot.press("enter")
    await until(pilot, lambda: app.model_info is not None and app.model_info.available, "the model's info")
    await next_step(pilot, app)
    assert isinstance(app.step, TaskStep)
    app.query_one(f"#{task_button}").value = True
    await next_step(pilot, app)
    await type_into(pilot, app, "#data-path", data)
    await pilot.press("enter")
    await until(pilot, lambda: app.table is not None, "the data's first rows")
    await next_step(pilot, app)  # columns: the suggestion from the column names is taken as is
    await next_step(pilot, app)  # parameters: its fields are built once shown
    await until(pilot, lambda: app.step.ready, "the parameter fields")
    set_params(app)
    await next_step(pilot, app)  # to the preview
    await next_step(pilot, app)  # Next waits while it tokenizes
    assert app.step.title == "Review"
    await type_into(pilot, app, "#save-path", "run.yaml")
    app.query_one("#save").press()
    await until(pilot, lambda: Path("run.yaml").exists(), "the saved config")
    return Path("run.yaml").absolute()


@pytest.mark.usefixtures("in_tmp")
async def test_a_new_user_builds_an_sft_config_for_chat_data(in_tmp: Path, tiny_model: Path) -> None:
    from tui.app import WizardApp

    write_jsonl(in_tmp / "chat" / "train.jsonl", CHATS)

    def params(app: Any) -> None:
        app.query_one("#param-chat-template", Select).value = "chatml"
        app.query_one("#param-project-name", Input).value = "runs/chat"

    app = WizardApp()
    async with app.run_test(size=(80, 24)) as pilot:
        path = await walk(pilot, app, tiny_model, "chat", "task-llm-sft", params)
        saved = load_config(path, check_env=True)
        assert to_yaml(saved) == to_yaml(app.cfg)
    assert saved.task == "llm-sft" and saved.base_model == str(tiny_model)
    assert saved.data.path == "chat" and saved.data.chat_template == "chatml"
    assert saved.data.column_mapping.text_column == "messages" and saved.project_name == "runs/chat"


@pytest.mark.usefixtures("in_tmp")
async def test_a_new_user_builds_a_dpo_config_that_trains(in_tmp: Path, tiny_model: Path) -> None:
    from engine.rundir import prepare
    from engine.train import train
    from tui.app import WizardApp

    write_jsonl(in_tmp / "pairs.jsonl", PAIRS)

    def params(app: Any) -> None:
        app.query_one("#param-chat-template", Select).value = "zephyr"
        app.query_one("#param-block-size", Input).value = "256"

    app = WizardApp()
    async with app.run_test(size=(80, 24)) as pilot:
        path = await walk(pilot, app, tiny_model, "pairs.jsonl", "task-llm-dpo", params)
    saved = load_config(path, ["params.max_steps=1", "params.disable_gradient_checkpointing=true"], check_env=True)
    cm = saved.data.column_mapping
    assert saved.task == "llm-dpo" and (cm.prompt_text_column, cm.text_column, cm.rejected_text_column) == (
        "prompt", "chosen", "rejected")
    assert saved.params.block_size == 256 and saved.data.chat_template == "zephyr"
    assert train(prepare(saved)) == 0  # the saved config trains


TEXTS = [{"text": f"The fox number {i} jumps over the lazy dog."} for i in range(6)]


@pytest.mark.usefixtures("in_tmp")
@pytest.mark.parametrize("task, rows", [("llm-generic", TEXTS), ("llm-reward", PAIRS), ("llm-orpo", PAIRS)])
async def test_the_other_trainers_build_configs_that_train(in_tmp: Path, tiny_model: Path, task: str,
                                                          rows: list[dict]) -> None:
    from engine.rundir import prepare
    from engine.train import train
    from tui.app import WizardApp

    write_jsonl(in_tmp / "train.jsonl", rows)
    app = WizardApp()
    async with app.run_test(size=(80, 24)) as pilot:
        path = await walk(pilot, app, tiny_model, "train.jsonl", f"task-{task}", lambda app: None)
    saved = load_config(path, ["params.max_steps=1", "params.disable_gradient_checkpointing=true"], check_env=True)
    assert saved.task == task
    assert train(prepare(saved)) == 0


async def test_an_invalid_value_blocks_next_with_the_engines_message(in_tmp: Path, tiny_model: Path) -> None:
    from tui.app import WizardApp

    write_jsonl(in_tmp / "train.jsonl", CHATS)
    cfg = load_config(_write_config(in_tmp, tiny_model))
    app = WizardApp(cfg)
    async with app.run_test(size=(80, 24)) as pilot:
        app.show(4)
        await until(pilot, lambda: app.step.ready, "the parameter fields")
        app.query_one("#param-lr", Input).value = "-1"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.step.title == "Parameters"
        shown = str(app.query_one("#row-param-lr").query_one(".field-problem").render())
        assert "must be greater than 0" in shown  # the engine's own words, under the field


async def test_config_prefills_every_step_and_back_next_keep_values(in_tmp: Path, tiny_model: Path) -> None:
    from tui.app import WizardApp

    write_jsonl(in_tmp / "train.jsonl", CHATS)
    cfg = load_config(_write_config(in_tmp, tiny_model))
    before = to_yaml(cfg)
    app = WizardApp(cfg)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.query_one("#model-input", Input).value == str(tiny_model)
        for _ in range(4):
            await next_step(pilot, app)
        assert app.step.title == "Parameters"
        await until(pilot, lambda: app.step.ready, "the parameter fields")
        assert app.query_one("#param-lr", Input).value == "0.0002"
        for _ in range(4):
            await pilot.press("escape")
            await pilot.pause()
        assert app.index == 0
        assert to_yaml(app.cfg) == before  # walking back and forth changed nothing


def _write_config(directory: Path, tiny_model: Path) -> Path:
    path = directory / "run.yaml"
    path.write_text(f"task: llm-sft\nbase_model: {tiny_model}\nproject_name: runs/x\ndata:\n  path: .\n"
                    "  chat_template: chatml\n  column_mapping:\n    text_column: messages\n"
                    "params:\n  lr: 2e-4\n  peft: true\n  quantization: null\n")
    return path


def test_task_step_snapshot(snap_compare: Any) -> None:
    from engine.config import RunConfig
    from tui.app import WizardApp

    async def run_before(pilot: Pilot) -> None:
        pilot.app.show(1)
        await pilot.pause()

    cfg = RunConfig(task="llm-dpo", base_model="llmtune/tiny-random", project_name="runs/x")
    assert snap_compare(WizardApp(cfg), terminal_size=(80, 24), run_before=run_before)
