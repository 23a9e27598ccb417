"""Step 2, Task: which trainer, with a line on what each is for and which columns it needs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import RadioButton, RadioSet, Static

from engine.config import TASKS, RunConfig
from tui.steps.base import Step

# task -> (name, what it is for, the columns it needs)
TASK_INFO: dict[str, tuple[str, str, str]] = {
    "llm-sft": ("SFT", "learn to answer (chat/instructions); loss on answers",
                "messages (a chat), or prompt + completion, or one text column"),
    "llm-generic": ("Generic causal LM", "continue pre-training on plain text",
                    "one text column"),
    "llm-reward": ("Reward model", "learn to score answers: chosen above rejected", "chosen, rejected (prompt optional)"),
    "llm-dpo": ("DPO", "prefer chosen over rejected answers, against a frozen reference",
                "prompt, chosen, rejected"),
    "llm-orpo": ("ORPO", "SFT and preference in one pass, no reference model", "prompt, chosen, rejected"),
}
assert set(TASK_INFO) <= set(TASKS)


class TaskStep(Step):
    """Pick the kind of training. SFT is the usual choice for chat or instruction data; DPO and ORPO need
    pairs of a better (chosen) and a worse (rejected) answer; a reward model learns to score answers; the
    generic trainer continues pre-training on plain text."""

    title = "Task"
    keys = ("task", "params.trainer")

    def compose(self) -> ComposeResult:
        yield Static("What should the model learn?", classes="label")
        with RadioSet(id="task"):
            for task, (name, what, _) in TASK_INFO.items():
                yield RadioButton(f"{name}: {what}", id=f"task-{task}")
        yield Static(id="task-columns", classes="hint")
        yield Static(classes="problems")

    def load(self, cfg: RunConfig) -> None:
        task = "llm-generic" if cfg.task == "llm" and cfg.trainer == "default" else cfg.task
        task = {"llm": f"llm-{cfg.trainer}"}.get(task, task)
        for button in self.query(RadioButton):
            button.value = button.id == f"task-{task}"
        self._describe(task)

    def store(self, cfg: RunConfig) -> None:
        pressed = self.query_one("#task", RadioSet).pressed_button
        if pressed is not None and pressed.id:
            cfg.task = pressed.id.removeprefix("task-")
            cfg.params.trainer = TASKS[cfg.task] or cfg.params.trainer
            cfg.defaulted.add("params.trainer")

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        if event.pressed.id:
            self._describe(event.pressed.id.removeprefix("task-"))

    def _describe(self, task: str) -> None:
        info = TASK_INFO.get(task)
        self.query_one("#task-columns", Static).update(f"Columns needed: {info[2]}" if info else "")
