"""The wizard does what the keys say (issue 12), driven through the real WizardApp at 80x24.

Keys are sent the way a terminal sends them: in bursts, straight into the app's queue, with no wait between
them (Pilot's `press` waits for the app to go idle after every key, which hides every ordering problem), while
a thread keeps the CPU busy. Each burst is then awaited until the app has handled it (every queue on the way
empty), never with a sleep.

- Task: moving with the arrows chooses; the "Columns needed" line and Next follow.
- Typing: End, Ctrl+U, digits (and variations) always leave exactly what was typed, and the config follows.
- Tab into a field selects its value: typing replaces it.
- Parameters: the help line is the focused field's; Enter toggles the focused checkbox and nothing else.
- Ctrl+Q with unsaved changes asks: save, discard or cancel; with none it quits at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_wizard_columns_params import ALPACA, COLUMNS, PARAMS, SIZE, config, open_step, unfold
from textual import events
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Collapsible, Input, Static

from engine.config import load_config, to_yaml
from support import until
from tui.app import WizardApp, WizardResult
from tui.steps.rows import FieldRow

TASK, REVIEW = 1, 6
CHARS = {"slash": "/", "minus": "-", "full_stop": ".", "space": " "}
NAMES = {v: k for k, v in CHARS.items()}


# ---------------------------------------------------------------- helpers


@contextmanager
def busy_cpu() -> Iterator[None]:
    """Another thread in this process keeps a core busy (and contends for the GIL with the app)."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(i * i for i in range(2000))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def send(app: WizardApp, *keys: str) -> None:
    """Keys as a terminal delivers them: all at once into the app's queue. Single characters type
    themselves; names are Textual's key names ("end", "ctrl+u", "shift+tab")."""
    for key in keys:
        if len(key) == 1:
            key, char = NAMES.get(key, key), key
        else:
            char = CHARS.get(key)
        event = events.Key(key, char)
        event.set_sender(app)
        app.post_message(event)


def pumps(app: WizardApp) -> list[Any]:
    return [app, app.screen, *app.screen.walk_children(Widget)]


def settled(app: WizardApp) -> Any:
    """A condition for `until`: every message queue of the app and its current screen is empty, twice in a
    row (a handler between two awaits leaves the queues empty for a moment)."""
    calm = [0]

    def check() -> bool:
        calm[0] = calm[0] + 1 if all(p._message_queue.empty() for p in pumps(app)) else 0
        return calm[0] >= 2

    return check


async def handled(pilot: Pilot, app: WizardApp, what: str) -> None:
    await until(pilot, settled(app), f"the app to handle {what}", timeout=60, workers=False)


def shown(widget: Any) -> str:
    return str(widget.render())


def asking(app: WizardApp) -> bool:
    """The quit question (save / discard / cancel) is shown."""
    return type(app.screen).__name__ == "QuitDialog"


# ---------------------------------------------------------------- 1. Task: moving chooses


async def test_moving_through_the_tasks_chooses_and_next_takes_it() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        app.show(TASK)
        await pilot.pause()
        assert app.focused is app.query_one("#task")
        columns = app.query_one("#task-columns", Static)
        assert "messages (a chat)" in shown(columns)
        await pilot.press("down", "down", "down")  # SFT -> Generic -> Reward -> DPO
        await until(pilot, lambda: app.query_one("#task-llm-dpo").value, "DPO chosen")
        assert [b.id for b in app.query("#task RadioButton") if b.value] == ["task-llm-dpo"]
        assert shown(columns) == "Columns needed: prompt, chosen, rejected"
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.index == TASK + 1, "the Data step")
        assert (app.cfg.task, app.cfg.params.trainer) == ("llm-dpo", "dpo")
        await pilot.press("escape")
        await until(pilot, lambda: app.index == TASK, "back on Task")
        await pilot.press("up")  # DPO -> Reward
        await until(pilot, lambda: "chosen, rejected (prompt optional)" in shown(columns), "the reward line")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.index == TASK + 1, "the Data step")
        assert (app.cfg.task, app.cfg.params.trainer) == ("llm-reward", "reward")


async def test_a_burst_of_moves_then_next_takes_the_last_one() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        app.show(TASK)
        await pilot.pause()
        with busy_cpu():
            send(app, "down", "down", "down", "down", "up", "ctrl+n")  # ORPO, then back to DPO, then Next
            await until(pilot, lambda: app.index == TASK + 1, "the Data step", workers=False)
        assert (app.cfg.task, app.cfg.params.trainer) == ("llm-dpo", "dpo")


# ---------------------------------------------------------------- 2. typed text is never lost


def edits(i: int, before: str) -> tuple[list[str], str]:
    """The i-th burst of edits over a field holding `before`: the keys and the text they must leave."""
    a, b, c = str(1 + i % 9), str(i % 10), str((i * 7) % 10)
    variants: list[tuple[list[str], str]] = [
        (["end", "ctrl+u", a, b], a + b),
        (["home", "shift+end", a, b], a + b),  # a selection, replaced by what is typed
        (["end", *["backspace"] * len(before), a, c], a + c),
        (["end", "ctrl+u", a, "left", b], b + a),
        (["end", "ctrl+u", a, b, "backspace", c], a + c),
        (["home", "ctrl+k", b, "home", a], a + b),
    ]
    return variants[i % len(variants)]


@pytest.mark.parametrize(("selector", "value_of"), [
    ("#param-epochs", lambda cfg: str(cfg.params.epochs)),
    ("#param-batch-size", lambda cfg: str(cfg.params.batch_size)),
])
async def test_bursts_of_edits_under_load_leave_exactly_what_was_typed(selector: str, value_of: Any) -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        field = app.query_one(selector, Input)
        field.focus()
        await pilot.pause()
        wrong = []
        with busy_cpu():
            for i in range(50):
                keys, expected = edits(i, field.value)
                send(app, *keys)
                await handled(pilot, app, f"burst {i} {keys}")
                if field.value != expected or value_of(app.cfg) != expected.lstrip("0"):
                    wrong.append((i, keys, expected, field.value, value_of(app.cfg)))
        assert not wrong, f"{len(wrong)} of 50 bursts went wrong, e.g. {wrong[:3]}"


async def test_bursts_of_edits_in_a_text_field_under_load() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        field = app.query_one("#param-project-name", Input)
        field.focus()
        await pilot.pause()
        wrong = []
        with busy_cpu():
            for i in range(50):
                name = f"runs/m{i}"
                send(app, "end", "ctrl+u", *name, "ctrl+w", *f"x{i}")  # Ctrl+W: the word before the cursor
                await handled(pilot, app, f"burst {i}")
                if field.value != f"runs/x{i}" or app.cfg.project_name != f"runs/x{i}":
                    wrong.append((i, field.value, app.cfg.project_name))
        assert not wrong, f"{len(wrong)} of 50 bursts went wrong, e.g. {wrong[:3]}"


async def test_typing_into_the_model_field_under_load_keeps_every_key() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        field = app.query_one("#model-input", Input)
        assert app.focused is field
        wrong = []
        with busy_cpu():
            for i in range(50):
                send(app, "end", "ctrl+u", *f"org/m{i}", "left", "left", "backspace", "-")
                await handled(pilot, app, f"burst {i}")
                expected = f"org/m{i}"[:-3] + "-" + f"org/m{i}"[-2:]
                if field.value != expected:
                    wrong.append((i, expected, field.value))
        assert not wrong, f"{len(wrong)} of 50 bursts went wrong, e.g. {wrong[:3]}"
        app.step.store(app.cfg)  # what Next does
        assert app.cfg.base_model == field.value


# ---------------------------------------------------------------- 3. Tab selects the field's value


async def test_tab_into_a_parameter_selects_its_value_so_typing_replaces_it() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        app.query_one("#param-epochs", Input).focus()
        await pilot.pause()
        batch = app.query_one("#param-batch-size", Input)
        assert batch.value == "2"
        await pilot.press("tab", "1")
        assert app.focused is batch
        await until(pilot, lambda: app.cfg.params.batch_size == 1, "batch_size 1")
        assert batch.value == "1"  # not "21"
        await pilot.press("shift+tab", "5")
        await until(pilot, lambda: app.cfg.params.epochs == 5, "epochs 5")
        assert app.query_one("#param-epochs", Input).value == "5"
        # in a burst under load too: Tab, then the digits
        with busy_cpu():
            send(app, "tab", "tab", "4")  # batch_size, then gradient_accumulation
            await handled(pilot, app, "the burst")
        assert app.query_one("#param-gradient-accumulation", Input).value == "4"
        assert app.cfg.params.gradient_accumulation == 4 and app.cfg.params.batch_size == 1


async def test_tab_into_a_columns_template_selects_it() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, COLUMNS, ALPACA)
        prompt = app.query_one("#col-prompt-template", Input)
        completion = app.query_one("#col-completion-template", Input)
        assert completion.value == "{output}"
        prompt.focus()
        await pilot.pause()
        chain = app.screen.focus_chain
        presses = chain.index(completion) - chain.index(prompt)
        assert presses > 0
        await pilot.press(*["tab"] * presses, "{", "i", "n", "p", "u", "t", "}")
        assert app.focused is completion
        await until(pilot, lambda: completion.value == "{input}", "the template replaced")


async def test_tab_back_into_the_model_field_selects_it() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        field = app.query_one("#model-input", Input)
        field.value = "org/old-model"
        app.query_one("#model-browse", Button).focus()
        await pilot.pause()
        await pilot.press("shift+tab", *"new")
        assert app.focused is field
        await until(pilot, lambda: field.value == "new", "the name replaced")


# ---------------------------------------------------------------- 4. focus, help and Enter agree


def help_for(app: WizardApp, widget: Any) -> str:
    """What the help line must say for the focused widget: its field's key first, or the fold's words."""
    row = next((a for a in widget.ancestors_with_self if isinstance(a, FieldRow)), None)
    if row is not None:
        return row.key + ":"
    if any(isinstance(a, Collapsible) for a in widget.ancestors_with_self):
        return "Enter shows or hides the advanced parameters."
    return ""


async def test_help_and_enter_follow_the_focus_under_load() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        step = await open_step(pilot, PARAMS)
        await unfold(pilot)
        help_line = app.query_one("#param-help", Static)
        app.query_one("#param-quantization").focus()
        await pilot.pause()
        # Walks back and forth from the basic fields over the fold's title into the advanced ones, with Enter
        # after each walk that ends on a checkbox (train_on_all_tokens comes right before the title).
        moves = [2, -1, 2, -2, 1, 3, -4, 5, -3, 1, 1, -6, 8, -2, -1, 4, -5, 2, 6, -7]
        wrong: list[Any] = []
        with busy_cpu():
            for i in range(24):
                chain = app.screen.focus_chain
                here = chain.index(app.focused)
                low = chain.index(app.query_one("#param-mixed-precision"))
                high = chain.index(app.query_one("#advanced").query_one("CollapsibleTitle")) + 12
                there = min(max(here + moves[i % len(moves)], low), high)
                target = chain[there]
                keys = ["tab" if there > here else "shift+tab"] * abs(there - here)
                boxes = {b.id: b.value for b in step.query(Checkbox)}
                expected = dict(boxes)
                if isinstance(target, Checkbox):
                    keys.append("enter")
                    expected[target.id] = not boxes[target.id]
                send(app, *keys)
                await handled(pilot, app, f"{keys}")
                now = {b.id: b.value for b in step.query(Checkbox)}
                text = shown(help_line)
                should = help_for(app, target)
                if app.focused is not target or now != expected or not text.startswith(should) or \
                        (not should and text):
                    wrong.append((i, keys, target.id, getattr(app.focused, "id", None), text[:40],
                                  {k: v for k, v in now.items() if v != boxes[k]}))
        assert not wrong, f"{len(wrong)} of 24 walks went wrong, e.g. {wrong[:3]}"
        assert not app.query_one("#advanced", Collapsible).collapsed  # no Enter ever reached the fold


async def test_the_help_line_is_the_focused_fields_after_each_move() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        await unfold(pilot)
        help_line = app.query_one("#param-help", Static)
        app.query_one("#param-train-on-all-tokens").focus()
        await pilot.pause()
        send(app, "tab", "tab")  # num_processes (the last basic field), then the fold's title
        await handled(pilot, app, "two tabs")
        assert isinstance(app.focused.parent, Collapsible)
        assert shown(help_line) == "Enter shows or hides the advanced parameters."
        send(app, "shift+tab")
        await handled(pilot, app, "shift+tab")
        assert shown(help_line).startswith("params.num_processes:")
        app.query_one("#next", Button).focus()  # out of the step: no field to explain
        await handled(pilot, app, "the focus on Next")
        assert shown(help_line) == ""


# ---------------------------------------------------------------- 5. Ctrl+Q asks when something is unsaved


async def test_quit_with_nothing_changed_quits_at_once() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)  # looking is not changing
        await pilot.press("ctrl+q")
        await until(pilot, lambda: app.return_code is not None, "the app to quit")
    assert app.return_value is None


async def test_quit_with_changes_asks_and_cancel_or_discard_do_what_they_say(in_tmp: Path) -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        app.query_one("#param-epochs", Input).focus()
        await pilot.press("end", "ctrl+u", "7")
        await pilot.press("ctrl+q")
        await until(pilot, lambda: asking(app), "the question")
        assert "not saved" in shown(app.screen.query_one("#quit-question"))
        assert app.focused is app.screen.query_one("#quit-cancel")  # the safe answer
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the wizard again")
        assert app.return_code is None and app.query_one("#param-epochs", Input).value == "7"
        await pilot.press("ctrl+q")
        await until(pilot, lambda: asking(app), "the question again")
        await pilot.press("d")
        await until(pilot, lambda: app.return_code is not None, "the app to quit")
    assert app.return_value is None
    assert not list(in_tmp.glob("*.yaml"))  # discarded: nothing written


async def test_an_unsaved_task_choice_counts_as_a_change() -> None:
    app = WizardApp(config("llm-sft"))
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        app.show(TASK)
        await pilot.pause()
        await pilot.press("down")  # chosen, not yet stored by Next
        await pilot.press("ctrl+q")
        await until(pilot, lambda: asking(app), "the question")


CHATS = [{"messages": [{"role": "user", "content": "What is 1 plus 2?"},
                       {"role": "assistant", "content": "1 plus 2 is 3."}]}]


def write_config(directory: Path, tiny_model: Path) -> Path:
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHATS))
    path = directory / "run.yaml"
    path.write_text(f"task: llm-sft\nbase_model: {tiny_model}\nproject_name: runs/x\ndata:\n  path: .\n"
                    "  chat_template: chatml\n  column_mapping:\n    text_column: messages\n"
                    "params:\n  lr: 2e-4\n  peft: true\n  quantization: null\n")
    return path


async def test_quit_and_save_writes_where_review_saves_then_quits(in_tmp: Path, tiny_model: Path) -> None:
    path = write_config(in_tmp, tiny_model)
    app = WizardApp(load_config(path))
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("ctrl+q")  # opened from a file and unchanged: no question
        await until(pilot, lambda: app.return_code is not None, "the app to quit")
    assert app.return_value is None

    app = WizardApp(load_config(path))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS, info=None)
        lr = app.query_one("#param-lr", Input)
        lr.focus()
        await pilot.press("end", "ctrl+u", *"1e-4")
        await until(pilot, lambda: app.cfg.params.lr == 1e-4, "the new lr")
        await pilot.press("ctrl+q")
        await until(pilot, lambda: asking(app), "the question")
        await pilot.press("s")
        # The Review step saves over the file the wizard was opened from: it asks first.
        await until(pilot, lambda: app.step.title == "Review", "the Review step")
        await until(pilot, lambda: app.return_code is not None or type(app.screen).__name__ == "ConfirmDialog",
                    "the overwrite question")
        if app.return_code is None:
            await pilot.press("y")
        await until(pilot, lambda: app.return_code is not None, "the app to quit once saved")
    assert isinstance(app.return_value, WizardResult) and app.return_value.config_path is not None
    saved = load_config(app.return_value.config_path)
    assert saved.params.lr == 1e-4 and to_yaml(saved) == to_yaml(app.cfg)


async def test_quit_and_save_stays_when_the_config_cannot_be_saved(in_tmp: Path) -> None:
    app = WizardApp(config("llm-sft"))  # no model, no data: Review refuses to save
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS)
        app.query_one("#param-epochs", Input).focus()
        await pilot.press("end", "ctrl+u", "9")
        await pilot.press("ctrl+q")
        await until(pilot, lambda: asking(app), "the question")
        await pilot.press("s")
        await until(pilot, lambda: app.step.title == "Review" and not app.step.checking
                    and app.step.query_one(".problems").display, "Review's problems")
        await until(pilot, lambda: not getattr(app, "_quit_after_save", True), "the save to be given up")
        assert app.return_code is None and not list(in_tmp.glob("*.yaml"))
        assert app.cfg.params.epochs == 9  # nothing lost


async def test_quit_after_saving_on_review_asks_nothing(in_tmp: Path, tiny_model: Path) -> None:
    path = write_config(in_tmp, tiny_model)
    app = WizardApp(load_config(path))
    async with app.run_test(size=SIZE) as pilot:
        await open_step(pilot, PARAMS, info=None)
        app.query_one("#param-epochs", Input).value = "4"
        await pilot.pause()
        app.show(REVIEW)
        await pilot.pause()
        save_path = app.query_one("#save-path", Input)
        save_path.value = str(in_tmp / "other.yaml")
        app.query_one("#save", Button).press()
        await until(pilot, lambda: (in_tmp / "other.yaml").exists(), "the saved file")
        await pilot.press("ctrl+q")
        await until(pilot, lambda: app.return_code is not None, "the app to quit")
    assert load_config(in_tmp / "other.yaml").params.epochs == 4
