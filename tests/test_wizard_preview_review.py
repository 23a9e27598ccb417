"""The wizard's Preview and Review steps, driven through the real WizardApp at 80x24.

Preview: what build_preview says (counts, truncation, trained/masked/cut spans) is what the step shows;
failures block Next. Review: saving validates first, asks before overwriting, writes YAML that reads back
as the same config. "Save and launch" (into the dashboard, or refused with the reason) is tested end to end
in test_dashboard_e2e.py.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Button, Input, Static

from engine.config import RunConfig, load_config, to_yaml
from engine.formatting import FormattedSplit
from engine.preview import Segment, SplitReport, build_preview
from support import tiny_config, until
from tui.app import WizardApp, WizardResult
from tui.dry_run import STYLES
from tui.steps.base import Step
from tui.steps.preview import N_SAMPLES, PREVIEW_LIMIT, STILL_LOADING, PreviewStep, config_copy, over_text, rows_line
from tui.steps.review import ReviewStep
from tui.widgets.confirm import ConfirmDialog
from tui.widgets.masked_text import MaskedText, render_segments

SIZE = (80, 24)
PREVIEW, REVIEW = 5, 6
LONG = "Once upon a time, a curious fox lived at the edge of a quiet forest."
CHATS = [  # with block_size 16: the first answer is wholly cut, the second partly, the third fits
    {"messages": [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Good."}]},
    {"messages": [{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "The river flows north through the valley."}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ok."}]},
]
PAIRS = [{"prompt": "Which way does the river flow?", "chosen": "North.", "rejected": "Uphill."}]
PREFERENCE_COLUMNS = {"prompt_text_column": "prompt", "text_column": "chosen", "rejected_text_column": "rejected"}


def sft_config(directory: Path, tiny_model: Path) -> RunConfig:
    return tiny_config(directory, tiny_model, {"train.jsonl": CHATS}, chat_template="chatml",
                       column_mapping={"text_column": "messages"}, params={"block_size": 16})


def dpo_config(directory: Path, tiny_model: Path) -> RunConfig:
    return tiny_config(directory, tiny_model, {"train.jsonl": PAIRS}, task="llm-dpo",
                       column_mapping=PREFERENCE_COLUMNS, params={"block_size": 32, "max_prompt_length": 16})


def preview_step(app: WizardApp) -> PreviewStep:
    return app.query_one(PreviewStep)


def review_step(app: WizardApp) -> ReviewStep:
    return app.query_one(ReviewStep)


def plain(step: Step, selector: str) -> str:
    return str(step.query_one(selector, Static).render())


def spans(widget: MaskedText) -> list[tuple[str, str]]:
    """(style, text) of each styled run of the part's text."""
    body = widget.body
    return [(str(span.style), body.plain[span.start:span.end]) for span in body.spans]


async def open_preview(pilot: Pilot) -> PreviewStep:
    app = pilot.app
    app.show(PREVIEW)
    step = preview_step(app)
    await until(pilot, lambda: not step.building, "the preview")
    return step


# ---------------------------------------------------------------- preview


def test_long_parts_lose_their_middle_and_keep_their_styles() -> None:
    segments = [Segment("a" * 30, "masked"), Segment("b" * 30, "trained"), Segment("c" * 30, "cut")]
    text = render_segments(segments, budget=20)
    assert text.plain == "a" * 10 + " … (70 characters not shown) … " + "c" * 10
    assert [(str(s.style), text.plain[s.start:s.end]) for s in text.spans] == [
        (STYLES["masked"], "a" * 10), ("italic", " … (70 characters not shown) … "), (STYLES["cut"], "c" * 10)]
    assert render_segments(segments, budget=90).plain == "a" * 30 + "b" * 30 + "c" * 30


def test_counts_say_when_only_the_first_rows_were_read() -> None:
    report = SplitReport(FormattedSplit("train", "train.jsonl", "messages", PREVIEW_LIMIT, []), [], 0, 0, 0)
    assert f"{PREVIEW_LIMIT} rows read (the first {PREVIEW_LIMIT} only)" in rows_line(report, PREVIEW_LIMIT)
    report.formatted.rows = 3
    assert rows_line(report, PREVIEW_LIMIT).startswith("3 rows read, 0 used, 0 dropped")


async def test_sft_preview_shows_the_engines_counts_and_trained_masked_cut_text(in_tmp: Path,
                                                                                tiny_model: Path) -> None:
    cfg = sft_config(in_tmp, tiny_model)
    expected = build_preview(config_copy(cfg), n_samples=N_SAMPLES, limit=PREVIEW_LIMIT)
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        step = await open_preview(pilot)
        assert step.errors == [] and step.problems(app.cfg) == []
        [report] = expected.splits
        [stats] = report.lengths
        assert (stats.count, stats.limit, stats.over, report.no_trained) == (3, 16, 2, 1)
        text = plain(step, "#preview-stats")
        assert "3 rows read, 3 used, 0 dropped; shape: messages" in text
        assert f"tokens: {report.trained_tokens} trained of {report.total_tokens}" in text
        assert f"sequence: min {stats.min}, median {stats.median:g}, p95 {stats.p95}, max {stats.max}" in text
        assert f"{over_text(stats)}" in text and "2 of 3 over 16 (truncated)" in text
        assert "1 sample(s) have nothing trained left" in text
        assert "sample 1 of 3 (train.jsonl:1)" in plain(step, "#preview-sample-title")

        # sample 1: the answer lies wholly beyond the block, and the step says so
        first = step.query_one("#preview-text", MaskedText)
        assert first.part == expected.samples[0].parts[0]
        assert [style for style, _ in spans(first)] == [STYLES["masked"], STYLES["cut"]]
        assert spans(first)[1][1].endswith("<|im_start|>assistant\nGood.<|im_end|>\n")
        flag = step.query_one("#preview-flag", Static)
        assert flag.display and "nothing is trained in this sample: the answer was cut off; raise " \
            "params.block_size" in plain(step, "#preview-flag")
        assert not step.query_one("#preview-pair").display  # SFT has no chosen/rejected

        await pilot.press("n")  # sample 2: masked prompt, trained answer, cut tail
        assert spans(first) == [(STYLES["masked"], "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
                                (STYLES["trained"], "The river flows north through the"),
                                (STYLES["cut"], " valley.<|im_end|>\n")]
        assert not flag.display
        await pilot.press("right", "right")  # wraps around to sample 1
        assert step.sample_index == 0
        await pilot.press("left")
        assert step.sample_index == 2 and "sample 3 of 3" in plain(step, "#preview-sample-title")

        await pilot.press("ctrl+n")  # a built preview lets the wizard go on
        assert app.index == REVIEW


async def test_dpo_preview_shows_chosen_and_rejected_stacked_at_80_columns(in_tmp: Path, tiny_model: Path) -> None:
    cfg = dpo_config(in_tmp, tiny_model)
    expected = build_preview(config_copy(cfg), n_samples=N_SAMPLES, limit=PREVIEW_LIMIT)
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        step = await open_preview(pilot)
        prompt, chosen, rejected = (step.query_one(f"#preview-{name}", MaskedText) for name in
                                    ("text", "chosen", "rejected"))
        assert [w.part for w in (prompt, chosen, rejected)] == expected.samples[0].parts
        assert prompt.body.plain.endswith("Which way does the river flow?")
        assert {style for style, _ in spans(prompt)} == {STYLES["masked"]}
        assert spans(chosen) == [(STYLES["trained"], "North.</s>")]
        assert spans(rejected) == [(STYLES["trained"], "Uphill.</s>")]
        assert "chosen" in str(chosen.render()) and "rejected" in str(rejected.render())
        assert not step.has_class("-wide")
        assert chosen.region.y < rejected.region.y  # stacked
        text = plain(step, "#preview-stats")
        for stats in expected.splits[0].lengths:
            assert f"{stats.name}: min {stats.min}" in text


async def test_dpo_preview_puts_chosen_and_rejected_side_by_side_when_wide(in_tmp: Path, tiny_model: Path) -> None:
    app = WizardApp(dpo_config(in_tmp, tiny_model))
    async with app.run_test(size=(120, 30)) as pilot:
        step = await open_preview(pilot)
        await until(pilot, lambda: step.has_class("-wide"), "the wide layout")
        await pilot.pause()
        chosen, rejected = step.query_one("#preview-chosen"), step.query_one("#preview-rejected")
        assert chosen.region.y == rejected.region.y and chosen.region.x < rejected.region.x


async def test_a_pair_with_nothing_left_to_train_is_flagged(in_tmp: Path, tiny_model: Path) -> None:
    rows = [{"prompt": LONG, "chosen": "Yes.", "rejected": "No."}]
    cfg = tiny_config(in_tmp, tiny_model, {"train.jsonl": rows}, task="llm-dpo", column_mapping=PREFERENCE_COLUMNS,
                      params={"block_size": 18, "max_prompt_length": 18})
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        step = await open_preview(pilot)
        assert "nothing is trained in this sample: the answers were cut off" in plain(step, "#preview-flag")
        assert [style for style, _ in spans(step.query_one("#preview-chosen", MaskedText))] == [STYLES["cut"]]


async def test_a_tokenizer_that_cannot_load_shows_the_engines_message_and_blocks_next(in_tmp: Path,
                                                                                       tiny_model: Path) -> None:
    cfg = sft_config(in_tmp, tiny_model)
    cfg.base_model = "no-such-org/no-such-model"
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        app.show(PREVIEW)
        step = preview_step(app)
        assert step.problems(app.cfg) == [STILL_LOADING]  # nothing has run yet: Next waits for the preview
        await until(pilot, lambda: not step.building, "the preview to fail")
        [problem] = step.problems(app.cfg)
        assert problem.key == "base_model" and "cannot load its tokenizer" in problem.message
        problems = step.query_one(".problems", Static)
        assert problems.display and "cannot load its tokenizer" in str(problems.render())
        await pilot.press("ctrl+n")
        assert app.index == PREVIEW
        assert "cannot load its tokenizer" in str(problems.render())


async def test_the_preview_is_rebuilt_when_the_config_changed(in_tmp: Path, tiny_model: Path) -> None:
    app = WizardApp(sft_config(in_tmp, tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        step = await open_preview(pilot)
        first = step.preview
        app.show(PREVIEW)  # shown again, same config: kept
        assert step.preview is first and not step.building
        app.cfg.params.block_size = 64
        app.show(PREVIEW)
        assert step.building and step.problems(app.cfg) == [STILL_LOADING]
        await until(pilot, lambda: not step.building, "the new preview")
        assert step.preview is not first and step.preview.splits[0].lengths[0].limit == 64
        assert "0 of 3 over 64" in plain(step, "#preview-stats")


# ---------------------------------------------------------------- review


async def open_review(pilot: Pilot, path: str | None = None) -> ReviewStep:
    app = pilot.app
    app.show(REVIEW)
    await pilot.pause()  # the focus moves on the next tick
    step = review_step(app)
    if path is not None:
        step.query_one("#save-path", Input).value = path
    return step


async def save(pilot: Pilot, step: ReviewStep, button: str = "save") -> None:
    """Press a save button and wait until the check is done."""
    step.query_one(f"#{button}", Button).press()
    await pilot.pause()
    await until(pilot, lambda: not step.checking, "the config check")


async def test_review_saves_yaml_that_reads_back_as_the_same_config(in_tmp: Path, tiny_model: Path) -> None:
    app = WizardApp(sft_config(in_tmp, tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        step = await open_review(pilot)
        path_input = step.query_one("#save-path", Input)
        assert path_input.value == str(in_tmp / "run.yaml")  # the file the config came from
        assert app.focused is path_input
        assert step.query_one("#review-yaml").text == to_yaml(app.cfg)
        assert step.query_one("#exit", Button).disabled
        path_input.value = "saved.yaml"
        await pilot.press("enter")  # Enter in the path saves
        await until(pilot, lambda: Path("saved.yaml").exists(), "the file")
        assert to_yaml(load_config("saved.yaml")) == to_yaml(app.cfg)
        assert "saved saved.yaml" in plain(step, "#review-status")
        exit_button = step.query_one("#exit", Button)
        assert not exit_button.disabled
        exit_button.press()
        await until(pilot, lambda: app.return_value is not None, "the wizard to exit")
    assert app.return_value == WizardResult(Path("saved.yaml"), [])


async def test_an_existing_file_is_overwritten_only_after_yes(in_tmp: Path, tiny_model: Path) -> None:
    Path("saved.yaml").write_text("old: true\n")
    app = WizardApp(sft_config(in_tmp, tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        step = await open_review(pilot, "saved.yaml")
        await save(pilot, step)
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        question = str(app.screen.query_one("#question", Static).render())
        assert "saved.yaml already exists. Overwrite it?" in question
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmDialog), "the answer")
        assert Path("saved.yaml").read_text() == "old: true\n"
        assert "not saved" in plain(step, "#review-status")

        await save(pilot, step)
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        await until(pilot, lambda: Path("saved.yaml").read_text() != "old: true\n", "the file")
        assert Path("saved.yaml").read_text() == to_yaml(app.cfg)
        await save(pilot, step)  # the file this wizard just wrote: no second question
        assert not isinstance(app.screen, ConfirmDialog)


async def test_an_invalid_config_shows_every_problem_and_writes_nothing(in_tmp: Path, tiny_model: Path) -> None:
    app = WizardApp(sft_config(in_tmp, tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        app.cfg.data.path = "./no-such-dir"
        app.cfg.params.lr = -1.0
        step = await open_review(pilot, "saved.yaml")
        await save(pilot, step)
        problems = str(step.query_one(".problems", Static).render())
        assert "data.path" in problems and "params.lr" in problems
        assert "not saved: 2 problems" in plain(step, "#review-status")
        assert not Path("saved.yaml").exists()


def first_command(app: WizardApp) -> str | None:
    from textual.command import CommandList

    commands = app.screen.query(CommandList)
    if not commands or not commands.first().option_count:
        return None
    return str(commands.first().get_option_at_index(0).prompt).splitlines()[0]  # the name, not the help


async def test_the_command_palette_jumps_to_a_step_and_saves(in_tmp: Path, tiny_model: Path) -> None:
    from textual.command import CommandPalette

    import tui.app
    from tui.commands import WizardCommands

    class PaletteApp(WizardApp):  # registered as the lead does in tui.app
        COMMANDS = WizardApp.COMMANDS | {WizardCommands}
        CSS_PATH = Path(tui.app.__file__).with_name("app.tcss")  # relative paths follow the subclass's module

    app = PaletteApp(sft_config(in_tmp, tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        names = [name for name, _, _ in WizardCommands(app.screen).commands()]
        assert names[:2] == ["Save config", "Save and launch"] and "Go to step: Preview" in names
        app.action_command_palette()
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await pilot.press(*"go to step: review")
        await until(pilot, lambda: first_command(app) == "Go to step: Review", "the best match")
        await pilot.press("enter")
        await until(pilot, lambda: app.index == REVIEW, "the review step")

        review_step(app).query_one("#save-path", Input).value = "palette.yaml"
        app.action_command_palette()
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await pilot.press(*"save config")
        await until(pilot, lambda: first_command(app) == "Save config", "the best match")
        await pilot.press("enter")
        await until(pilot, lambda: Path("palette.yaml").exists(), "the file")


# ---------------------------------------------------------------- snapshots (deterministic: relative paths)


def snapshot_app(directory: Path, tiny_model: Path) -> WizardApp:
    """The SFT config with only relative paths (model linked into the test's directory), so the screen
    shows the same text on every machine."""
    os.symlink(tiny_model, directory / "model")
    cfg = sft_config(directory, Path("model"))
    cfg.source = Path("run.yaml")
    return WizardApp(cfg)


def show_step(index: int) -> Callable[[Pilot], Awaitable[None]]:
    async def run_before(pilot: Pilot) -> None:
        pilot.app.show(index)
        step = pilot.app.step
        await until(pilot, lambda: not getattr(step, "building", False), "the preview")
        await pilot.pause()

    return run_before


def test_preview_snapshot(in_tmp: Path, tiny_model: Path, snap_compare: Any) -> None:
    assert snap_compare(snapshot_app(in_tmp, tiny_model), terminal_size=SIZE, run_before=show_step(PREVIEW))


def test_review_snapshot(in_tmp: Path, tiny_model: Path, snap_compare: Any) -> None:
    assert snap_compare(snapshot_app(in_tmp, tiny_model), terminal_size=SIZE, run_before=show_step(REVIEW))
