"""The wizard composes a step when it is first shown (tui.app WizardApp.show): the first frame waits for the
first step only, a jump composes the steps it passes over (so Back never waits), and keys typed while a step is
being composed wait for it, in order."""

from __future__ import annotations

from pathlib import Path

from textual import events

from support import fresh_python, until
from tui.app import WizardApp
from tui.steps.data import DataStep
from tui.steps.task import TaskStep

ROOT = Path(__file__).resolve().parents[1]
SIZE = (80, 24)
TASK, DATA = 1, 2


def test_the_first_frame_builds_the_first_step_only() -> None:
    code = ("import asyncio, sys\nfrom tui.app import WizardApp\n"
            "async def main():\n    app = WizardApp()\n    async with app.run_test(size=(80, 24)) as pilot:\n"
            "        await pilot.pause()\n"
            "        print(sorted(m for m in sys.modules if m.startswith('tui.steps.')))\n"
            "asyncio.run(main())\n")
    imported = fresh_python(code)
    assert "tui.steps.model" in imported
    assert not any(f"tui.steps.{name}'" in imported for name in ("task", "data", "columns", "params", "preview",
                                                                  "review"))


async def test_a_jump_composes_the_steps_it_passes_over(in_tmp: Path) -> None:
    app = WizardApp()
    async with app.run_test(size=SIZE) as pilot:
        assert app.steps[TASK].parent is None
        app.show(DATA)
        assert isinstance(app.step, DataStep)  # the step shown, still being composed
        await until(pilot, lambda: app.index == DATA, "the Data step filled")
        task = app.steps[TASK]
        assert task.is_mounted and not task.display  # composed, hidden
        app.action_back()
        assert app.index == TASK and isinstance(app.step, TaskStep)  # at once: nothing to compose
        await pilot.pause()  # the focus moves on the next tick
        assert app.step.display and app.focused is app.query_one("#task")


async def test_keys_typed_while_a_step_is_composed_wait_for_it(in_tmp: Path, tiny_model: Path) -> None:
    from engine.config import RunConfig

    cfg = RunConfig(task="llm-sft", base_model=str(tiny_model), project_name="runs/x")
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.model_info is not None and app.model_info.available, "the model's info")
        for _ in range(2):  # as a terminal delivers them: both in the app's queue before the first is handled
            key = events.Key("ctrl+n", None)
            key.set_sender(app)
            app.post_message(key)
        await until(pilot, lambda: app.index == DATA, "the Data step", workers=False)
        assert isinstance(app.step, DataStep) and app.cfg.task == "llm-sft"
