"""Step 2, Task: which trainer, with a line on what each is for and which columns it needs (every spec of the
trainer registry, engine.tasks, in its order)."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.widgets import RadioButton, RadioSet, Static

from engine.config import RunConfig
from engine.tasks import BY_TRAINER, GENERIC_TASK, SPECS, TASKS, spec_for_task
from tui.steps.base import Step


class TaskChoice(RadioSet):
    """The task list. Moving with the arrow keys chooses (as a form's radio group does): the highlighted
    task is always the chosen one, so Next takes what is seen. Textual's RadioSet only moves a highlight and
    chooses on Enter or Space."""

    _chosen: RadioButton | None = None  # the button turned on last, whoever turned it on

    def on_mount(self) -> None:
        for button in self.query(RadioButton):
            self.watch(button, "value", self._watcher(button), init=False)

    def _watcher(self, button: RadioButton) -> Callable[[bool, bool], None]:
        def turned(was: bool, on: bool) -> None:
            if on:
                self._chosen = button

        return turned

    def action_next_button(self) -> None:
        super().action_next_button()
        self._choose_highlighted()

    def action_previous_button(self) -> None:
        super().action_previous_button()
        self._choose_highlighted()

    @property
    def chosen(self) -> RadioButton | None:
        """The button chosen, as of now: `pressed_button` follows a moment later (a message), so a Next
        pressed right after a move (or a click) would read the one before."""
        if self._chosen is not None and self._chosen.value:
            return self._chosen
        return self.pressed_button

    def _choose_highlighted(self) -> None:
        if not self.has_focus:  # RadioSet moves the highlight itself once, when mounted: no choice made
            return
        index = self._selected
        if index is not None:
            button = self._nodes[index]
            if isinstance(button, RadioButton) and not button.value:
                button.value = True  # the set turns the one chosen before off, and posts Changed


class TaskStep(Step):
    """Pick the kind of training. SFT is the usual choice for chat or instruction data; DPO and ORPO need
    pairs of a better (chosen) and a worse (rejected) answer; a reward model learns to score answers; the
    generic trainer continues pre-training on plain text; GRPO and RLOO sample their own answers to prompts and
    learn from a reward model's scores of them (train one first with the reward model task). Up and Down
    choose; the lines under the list say what the chosen task does and which columns it needs."""

    title = "Task"
    keys = ("task", "params.trainer")

    def compose(self) -> ComposeResult:
        yield Static("What should the model learn?", classes="label")
        with TaskChoice(id="task"):
            for spec in SPECS:
                yield RadioButton(f"{spec.label}: {spec.purpose}", id=f"task-{spec.task}")
        yield Static(id="task-purpose", classes="hint")  # in full: at 80 columns the list cuts the longer ones
        yield Static(id="task-columns", classes="hint")
        yield Static(classes="problems")

    def load(self, cfg: RunConfig) -> None:
        # `task: llm` runs params.trainer: the button of that trainer's own task
        task = BY_TRAINER[cfg.trainer].task if cfg.task == GENERIC_TASK and cfg.trainer in BY_TRAINER else cfg.task
        button = next((b for b in self.query(RadioButton) if b.id == f"task-{task}"), None)
        if button is not None and not button.value:
            button.value = True  # the set turns the others off (turning one off by hand, it would turn it back on)
        self._describe(task)

    def store(self, cfg: RunConfig) -> None:
        pressed = self.query_one("#task", TaskChoice).chosen
        if pressed is not None and pressed.id:
            cfg.task = pressed.id.removeprefix("task-")
            cfg.params.trainer = TASKS[cfg.task] or cfg.params.trainer
            cfg.defaulted.add("params.trainer")

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        # From the button chosen now, not the one the message names: messages can trail a quick series of moves.
        pressed = self.query_one("#task", TaskChoice).chosen
        if pressed is not None and pressed.id:
            self._describe(pressed.id.removeprefix("task-"))

    def _describe(self, task: str) -> None:
        spec = spec_for_task(task)
        self.query_one("#task-purpose", Static).update(f"{spec.label}: {spec.purpose}." if spec else "")
        self.query_one("#task-columns", Static).update(f"Columns needed: {spec.columns_hint}" if spec else "")
