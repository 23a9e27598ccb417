"""A new user's walk through the wizard for each trainer with the keyboard only: typing, the arrow keys, Tab,
Enter and Ctrl+N, never a widget set from code. The saved YAML must be the YAML the Review step showed, and
it must hold what was chosen on the way (the task picked with the arrows, a value typed after Tab)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from textual.pilot import Pilot
from textual.widgets import TextArea

from engine.config import load_config
from support import next_step, until

CHATS = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                       {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]} for a, b in [(1, 2), (3, 4)]]
PAIRS = [{"prompt": "Which way does the river flow?", "chosen": "Downhill.", "rejected": "Uphill."},
         {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."}]
TEXTS = "text\n" + "".join(f"\"The fox number {i} jumps over the lazy dog.\"\n" for i in range(6))

# task -> (moves down from SFT on the Task step, data directory, its train file, its content)
WALKS: dict[str, tuple[int, str, str, Any]] = {
    "llm-sft": (0, "chat", "train.jsonl", CHATS),
    "llm-generic": (1, "texts", "train.csv", TEXTS),
    "llm-reward": (2, "pairs", "train.jsonl", PAIRS),
    "llm-dpo": (3, "pairs", "train.jsonl", PAIRS),
    "llm-orpo": (4, "pairs", "train.jsonl", PAIRS),
}


async def keys(pilot: Pilot, *pressed: str) -> None:
    for key in pressed:
        await pilot.press(key)


async def type_text(pilot: Pilot, text: str) -> None:
    await keys(pilot, *["space" if c == " " else c for c in text])


async def tab_to(pilot: Pilot, app: Any, widget_id: str, limit: int = 60) -> None:
    for _ in range(limit):
        if app.focused is not None and app.focused.id == widget_id:
            return
        await pilot.press("tab")
    raise AssertionError(f"Tab never reached #{widget_id} (focus: {app.focused})")


@pytest.mark.parametrize("task", list(WALKS))
@pytest.mark.usefixtures("in_tmp")
async def test_a_keyboard_only_walk_saves_what_the_screens_showed(in_tmp: Path, tiny_model: Path, task: str) -> None:
    from tui.app import WizardApp

    moves, directory, name, content = WALKS[task]
    (in_tmp / directory).mkdir()
    text = content if isinstance(content, str) else "".join(json.dumps(r) + "\n" for r in content)
    (in_tmp / directory / name).write_text(text)

    app = WizardApp()
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.focused is not None and app.focused.id == "model-input"
        await type_text(pilot, str(tiny_model))
        await pilot.press("enter")
        await until(pilot, lambda: app.model_info is not None and app.model_info.available, "the model's info")
        await next_step(pilot, app)

        await keys(pilot, *["down"] * moves)  # moving with the arrows chooses
        await next_step(pilot, app)
        assert app.cfg.task == task

        assert app.focused is not None and app.focused.id == "data-path"
        await type_text(pilot, directory)
        await pilot.press("enter")
        await until(pilot, lambda: app.table is not None, "the data's first rows")
        await next_step(pilot, app)  # Columns: its suggestion for this data and task
        await next_step(pilot, app)  # Parameters
        await until(pilot, lambda: app.step.ready, "the parameter fields")
        await tab_to(pilot, app, "param-epochs")
        await type_text(pilot, "3")  # Tab selected the value: typing replaces it
        await next_step(pilot, app)  # Preview
        await next_step(pilot, app)  # Review
        assert app.step.title == "Review"

        assert app.focused is not None and app.focused.id == "save-path"
        await keys(pilot, "end", "ctrl+u")
        await type_text(pilot, "walk.yaml")
        await tab_to(pilot, app, "save", limit=3)
        await pilot.press("enter")
        saved = in_tmp / "walk.yaml"
        await until(pilot, saved.exists, "the saved config")
        shown = app.query_one("#review-yaml", TextArea).text

    assert yaml.safe_load(saved.read_text()) == yaml.safe_load(shown)
    cfg = load_config(saved, check_env=True)
    assert cfg.task == task and cfg.base_model == str(tiny_model) and cfg.data.path == directory
    assert cfg.params.epochs == 3
