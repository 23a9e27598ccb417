"""The wizard saves exactly what the user meant (issue 12), driven through the real WizardApp at 80x24:
a validation split found by its name is used (and a choice made is kept); going back and changing the task
re-checks what no longer fits, and data that fails blocks Next; a run directory that is not free is said
at once, worded for the wizard, with a free name one button away; the steps and a duration estimate (or why
there is none); the Columns sample and the Preview end texts with the same EOS; singular counts; the YAML
in view at 80x24; a suggestion shown as set; saving over the file the wizard was opened from; a validation
share held out of a single data file."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from textual.pilot import Pilot
from textual.widgets import Button, Input, Select, Static, TextArea

from engine.capabilities import Capabilities, Support
from engine.config import RunConfig, load_config, parse_config_text, to_yaml
from engine.params import Params
from support import until
from tui.app import WizardApp, new_config
from tui.steps.columns import NONE, ColumnsStep
from tui.steps.data import DataRequest, DataStep, read_preview
from tui.steps.preview import PreviewStep
from tui.steps.review import ReviewStep
from tui.widgets.confirm import ConfirmDialog

ROOT = Path(__file__).resolve().parents[1]
SIZE = (80, 24)
TASK, DATA, COLUMNS, PARAMS, PREVIEW, REVIEW = 1, 2, 3, 4, 5, 6
CHATS = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                       {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]} for a, b in [(1, 2), (3, 4)]]
PAIRS = [{"prompt": "Which way does the river flow?", "chosen": "Downhill.", "rejected": "Uphill."},
         {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."}]
NO = Support(False, "not here")
YES = Support(True, "yes")
CPU = Capabilities("cpu", "CPU", 0, "0", None, NO, NO, NO, NO)
H100 = Capabilities("cuda", "NVIDIA H100 80GB HBM3", 1, "0", None, YES, YES, NO, NO)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fresh(model: Path, data: str = "", task: str = "llm-sft") -> RunConfig:
    cfg = new_config()
    cfg.base_model, cfg.data.path = str(model), data
    cfg.task = task
    cfg.params.trainer = {"llm-sft": "sft", "llm-dpo": "dpo", "llm-generic": "default"}[task]
    return cfg


def from_file(directory: Path, text: str) -> RunConfig:
    path = directory / "run.yaml"
    path.write_text(text)
    return parse_config_text(text, source=path)


def text_of(app: WizardApp, selector: str) -> str:
    content = app.query_one(selector, Static).content
    if isinstance(content, str) or hasattr(content, "plain"):
        return str(getattr(content, "plain", content))
    from rich.console import (
        Console,  # a Rich renderable (the review's summary grid): its text at 78 columns
    )

    console = Console(width=78, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


def data_step(app: WizardApp) -> DataStep:
    return app.query_one(DataStep)


async def open_data(pilot: Pilot) -> DataStep:
    app: WizardApp = pilot.app  # type: ignore[assignment]
    await app.workers.wait_for_complete()
    app.show(DATA)
    step = data_step(app)
    await until(pilot, lambda: step.preview is not None and step.preview.request == step.request
                and set(step.counts) == set(step.preview.tables), "the data and its row counts")
    return step


async def press_next(pilot: Pilot, index: int) -> None:
    """Next, until the wizard is on step `index` (a step may still be reading in a worker)."""
    app: WizardApp = pilot.app  # type: ignore[assignment]
    for _ in range(200):
        app.action_next()
        await pilot.pause()
        if app.index == index:
            return
        await app.workers.wait_for_complete()
        await pilot.pause(0.02)
    raise AssertionError(f"Next did not reach step {index}: {app.step.problems(app.cfg)}")


# ---------------------------------------------------------------- A: a validation split found by its name


async def test_a_split_named_valid_is_picked_said_and_none_stays_possible(in_tmp: Path, tiny_model: Path) -> None:
    write_jsonl(in_tmp / "data" / "train.jsonl", CHATS)
    write_jsonl(in_tmp / "data" / "valid.jsonl", CHATS[:1])
    app = WizardApp(fresh(tiny_model, "data"))
    async with app.run_test(size=SIZE) as pilot:
        step = await open_data(pilot)
        valid = app.query_one("#valid-split", Select)
        assert valid.value == "valid"
        assert "Validation: valid (found by its name" in text_of(app, "#data-picked")
        assert "valid: 1 row" in text_of(app, "#data-counts")
        step.store(app.cfg)
        assert app.cfg.data.valid_split == "valid"

        valid.value = ""  # the user says: no evaluation
        await until(pilot, lambda: step.preview.request.valid is None and step.preview.request == step.request,
                    "the data read again without a validation split")
        assert valid.value == "" and not app.query_one("#data-picked").display
        await press_next(pilot, COLUMNS)
        assert app.cfg.data.valid_split is None
        app.action_back()
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.query_one("#valid-split", Select).value == "" and app.cfg.data.valid_split is None


def test_the_validation_names_are_preferred_in_order(in_tmp: Path) -> None:
    for files, expected in [(("train", "test", "validation", "dev"), "validation"), (("train", "dev", "test"), "test"),
                            (("train", "Val"), "Val"), (("train", "other"), None)]:
        directory = in_tmp / "-".join(files)
        for name in files:
            write_jsonl(directory / f"{name}.jsonl", CHATS)
        preview = read_preview(DataRequest(str(directory), "train", None), None, pick_valid=True)
        assert preview.picked == expected and preview.request.valid == expected
        assert read_preview(DataRequest(str(directory), "train", None), None).request.valid is None


@pytest.mark.parametrize("line, expected", [("  valid_split: null\n", None), ("", "valid")])
async def test_a_valid_split_the_config_file_sets_is_kept(in_tmp: Path, tiny_model: Path, line: str,
                                                          expected: str | None) -> None:
    write_jsonl(in_tmp / "data" / "train.jsonl", CHATS)
    write_jsonl(in_tmp / "data" / "valid.jsonl", CHATS[:1])
    cfg = from_file(in_tmp, f"task: llm-sft\nbase_model: {tiny_model}\ndata:\n  path: data\n{line}"
                    "  chat_template: chatml\n  column_mapping:\n    text_column: messages\n")
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        step = await open_data(pilot)
        step.store(app.cfg)
        assert app.cfg.data.valid_split == expected


# ---------------------------------------------------------------- B: a changed task is re-checked


async def test_changing_the_task_drops_a_chat_template_that_no_longer_fits(in_tmp: Path, tiny_model: Path) -> None:
    """DPO with the model's chat template, then Generic on the same plain-text file: the chat template
    follows the new task (none), and coming back to DPO brings the user's choice for DPO back."""
    write_jsonl(in_tmp / "pairs.jsonl", PAIRS)
    app = WizardApp(fresh(tiny_model, "pairs.jsonl", "llm-dpo"))
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot)
        await press_next(pilot, COLUMNS)
        await press_next(pilot, PARAMS)
        await until(pilot, lambda: app.step.ready, "the parameter fields")
        app.query_one("#param-chat-template", Select).value = "tokenizer"
        await pilot.pause()
        for index in (COLUMNS, DATA, TASK):
            app.action_back()
            await until(pilot, lambda index=index: app.index == index, f"step {index}")
        app.query_one("#task-llm-generic").value = True
        await pilot.pause()
        await press_next(pilot, DATA)
        await press_next(pilot, COLUMNS)
        assert app.cfg.data.chat_template == "none"
        assert "chat template is now none" in text_of(app, "#columns-found")
        sample = text_of(app, "#sample")
        assert "holds plain text" not in sample and "Which way does the river flow?" in sample
        await press_next(pilot, PARAMS)  # nothing fails: Next goes on

        for index in (COLUMNS, DATA, TASK):
            app.action_back()
            await until(pilot, lambda index=index: app.index == index, f"step {index}")
        app.query_one("#task-llm-dpo").value = True
        await pilot.pause()
        await press_next(pilot, DATA)
        await press_next(pilot, COLUMNS)
        assert app.cfg.data.chat_template == "tokenizer"  # what the user chose for DPO
        cm = app.cfg.data.column_mapping
        assert (cm.prompt_text_column, cm.text_column, cm.rejected_text_column) == ("prompt", "chosen", "rejected")


async def test_data_that_fails_to_format_blocks_next_with_the_engines_message(in_tmp: Path,
                                                                               tiny_model: Path) -> None:
    write_jsonl(in_tmp / "pairs.jsonl", [{"prompt": " ", "chosen": "Yes.", "rejected": "No."}] * 3)  # no prompt
    app = WizardApp(fresh(tiny_model, "pairs.jsonl", "llm-dpo"))
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot)
        await press_next(pilot, COLUMNS)
        app.action_next()
        await pilot.pause()
        assert app.index == COLUMNS
        problems = text_of(app, "#step-3 .problems")
        assert "no usable rows in the train split (3 empty prompt)" in problems
        step = app.query_one(ColumnsStep)
        assert any("no usable rows" in p.message for p in step.problems(app.cfg))


async def test_a_chat_template_the_user_set_for_this_task_is_kept_and_its_failure_blocks_next(
        in_tmp: Path, tiny_model: Path) -> None:
    write_jsonl(in_tmp / "train.jsonl", [{"text": "Plain text, not a conversation."}] * 2)
    cfg = from_file(in_tmp, f"task: llm-generic\nbase_model: {tiny_model}\ndata:\n  path: .\n  chat_template: chatml\n"
                    "  column_mapping:\n    text_column: text\n")
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot)
        await press_next(pilot, COLUMNS)
        assert app.cfg.data.chat_template == "chatml"  # the file's choice is not overridden...
        app.action_next()
        await pilot.pause()
        assert app.index == COLUMNS  # ... but it fails every row, and Next says so
        assert "holds plain text, but data.chat_template is chatml" in text_of(app, "#step-3 .problems")


# ---------------------------------------------------------------- C: a run directory that is not free


async def test_a_run_directory_that_is_not_free_is_said_first_and_a_free_name_is_offered(
        in_tmp: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.errors import ConfigError, Problem
    from tui import train_start
    from tui.steps import review

    write_jsonl(in_tmp / "train.jsonl", CHATS)
    (in_tmp / "runs" / "my-model").mkdir(parents=True)
    (in_tmp / "runs" / "my-model" / "notes.txt").write_text("mine")
    checked: list[str] = []
    real_validate = review.validate
    monkeypatch.setattr(review, "validate", lambda cfg: checked.append(cfg.project_name) or real_validate(cfg))

    def no_start(path: Path) -> None:
        raise ConfigError([Problem("launch", "not started in this test")])

    monkeypatch.setattr(train_start, "check_and_start", no_start)
    cfg = fresh(tiny_model, ".")
    cfg.data.chat_template, cfg.data.column_mapping.text_column = "chatml", "messages"
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        app.show(REVIEW)
        await pilot.pause()
        step = app.query_one(ReviewStep)
        use = step.query_one("#use-free-name", Button)
        assert use.display and str(use.label) == "Use runs/my-model-2"
        shown = text_of(app, "#step-6 .problems")
        assert "the run directory" in shown and "is not free" in shown and "notes.txt" in shown
        assert "--set" not in shown and "use runs/my-model-2" in shown

        step.query_one("#launch", Button).press()
        await until(pilot, lambda: "the run directory is not free" in text_of(app, "#review-status"),
                    "the launch to be refused")
        assert checked == []  # refused before the data check
        assert step.saved_path is None and not Path("my-model.yaml").exists()
        assert "is not free" in text_of(app, "#step-6 .problems")

        use.press()
        await until(pilot, lambda: app.cfg.project_name == "runs/my-model-2", "the free name")
        assert not use.display and "project_name: runs/my-model-2" in step.query_one("#review-yaml", TextArea).text
        assert not app.query_one("#step-6 .problems").display, text_of(app, "#step-6 .problems")
        step.query_one("#launch", Button).press()
        await until(pilot, lambda: "not started in this test" in text_of(app, "#step-6 .problems"), "the launch")
        assert checked == ["runs/my-model-2"]


# ---------------------------------------------------------------- D: steps, estimate, block size


def sft_config(directory: Path, tiny_model: Path, **params: Any) -> RunConfig:
    write_jsonl(directory / "train.jsonl", CHATS * 5)  # 10 conversations
    body = {"task": "llm-sft", "base_model": str(tiny_model), "data": {"path": ".", "chat_template": "chatml",
            "column_mapping": {"text_column": "messages"}}, "params": {"batch_size": 2, "gradient_accumulation": 1,
                                                                      "mixed_precision": "bf16", **params}}
    return from_file(directory, yaml.safe_dump(body, sort_keys=False))


async def open_preview(pilot: Pilot) -> PreviewStep:
    app: WizardApp = pilot.app  # type: ignore[assignment]
    await app.workers.wait_for_complete()
    app.show(PREVIEW)
    step = app.query_one(PreviewStep)
    await until(pilot, lambda: not step.building, "the preview")
    return step


async def test_preview_and_review_show_the_steps_the_estimate_and_the_resolved_block_size(
        in_tmp: Path, tiny_model: Path) -> None:
    app = WizardApp(sft_config(in_tmp, tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.model_info is not None and app.model_info.parameters, "the model's size")
        app.capabilities = H100
        step = await open_preview(pilot)
        stats = text_of(app, "#preview-stats")
        assert "5 optimizer steps (10 examples, batch 2 x accumulation 1, 1 epoch)" in stats
        assert "about " in stats and "(an estimate: " in stats and "of the H100 SXM's 989 TFLOP/s bf16 peak" in stats
        assert step.plan is not None and step.plan.steps == 5

        app.capabilities = CPU
        app.cfg.params.epochs = 3  # another config: built again
        step = await open_preview(pilot)
        stats = text_of(app, "#preview-stats")
        assert "15 optimizer steps" in stats and "duration: not estimated (no sound throughput figure for CPU " \
            "training" in stats

        app.show(REVIEW)
        await pilot.pause()
        summary = text_of(app, "#review-summary")
        assert "block_size -1 picked 1024" in summary  # the resolved size, not -1 alone
        assert "15 optimizer steps" in summary


async def test_review_resolves_the_block_size_without_the_preview(in_tmp: Path, tiny_model: Path) -> None:
    app = WizardApp(sft_config(in_tmp, tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        app.show(REVIEW)  # straight from the first step, as the command palette can
        await pilot.pause()  # a step is composed when first shown
        await until(pilot, lambda: "block_size -1 picked 1024" in text_of(app, "#review-summary"),
                    "the block size resolved")


def test_the_dry_run_prints_the_steps_and_why_there_is_no_estimate() -> None:
    out = subprocess.run([sys.executable, "-m", "tui.cli", "--config", "configs/sft-chat.yaml", "--dry-run", "-n",
                          "0"], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert "steps          10 optimizer steps (20 examples, batch 2 x accumulation 1, 1 epoch)" in out.stdout
    assert "duration       not estimated (" in out.stdout


# ---------------------------------------------------------------- E: what is shown


async def test_the_columns_sample_ends_with_the_eos_the_preview_shows(in_tmp: Path, tiny_model: Path) -> None:
    write_jsonl(in_tmp / "train.jsonl", [{"text": "The fox jumps over the lazy dog."}] * 2)
    cfg = fresh(tiny_model, ".", "llm-generic")
    cfg.params.add_eos_token = True
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot)
        await press_next(pilot, COLUMNS)
        await until(pilot, lambda: "lazy dog.</s>" in text_of(app, "#sample"), "the sample with the model's EOS")
        assert "<eos>" not in text_of(app, "#sample")
        preview = await open_preview(pilot)
        assert preview.samples[0].parts[0].segments[-1].text.endswith("lazy dog.</s>")


async def test_counts_of_one_are_singular(in_tmp: Path, tiny_model: Path) -> None:
    write_jsonl(in_tmp / "one.jsonl", [{"text": "Only row."}])
    app = WizardApp(fresh(tiny_model, "one.jsonl"))
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot)
        assert text_of(app, "#data-counts") == "train: 1 row · 1 column"


async def test_the_yaml_is_in_view_at_80x24(in_tmp: Path, tiny_model: Path) -> None:
    app = WizardApp(sft_config(in_tmp, tiny_model))
    async with app.run_test(size=SIZE) as pilot:
        app.show(REVIEW)
        await pilot.pause()
        step = app.query_one(ReviewStep)
        yaml_view = step.query_one("#review-yaml", TextArea)
        assert step.scroll_y == 0
        visible = yaml_view.region.intersection(step.region)
        assert visible.height >= 8  # several lines of the YAML without scrolling
        assert app.query_one("#save-path", Input).region.intersection(step.region).height == 3


async def test_a_suggestion_is_applied_where_the_config_left_a_role_unset(in_tmp: Path, tiny_model: Path) -> None:
    write_jsonl(in_tmp / "train.jsonl", PAIRS)
    cfg = from_file(in_tmp, f"task: llm-dpo\nbase_model: {tiny_model}\ndata:\n  path: .\n  chat_template: zephyr\n"
                    "  column_mapping:\n    text_column: chosen\n    rejected_text_column: rejected\n")
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot)
        await press_next(pilot, COLUMNS)
        assert app.query_one("#col-prompt-text-column", Select).value == "prompt"
        assert app.cfg.data.column_mapping.prompt_text_column == "prompt"
        assert "prompt_text_column: prompt" in text_of(app, "#columns-found")
        app.query_one("#col-prompt-text-column", Select).value = NONE  # the user's change wins...
        await pilot.pause()
        app.action_next()
        await pilot.pause()
        assert app.index == COLUMNS  # ... and the engine says what it costs
        assert "a chat template needs the prompt" in text_of(app, "#step-3 .problems")
        app.action_back()
        await until(pilot, lambda: app.index == DATA, "the Data step")
        app.action_next()
        await until(pilot, lambda: app.index == COLUMNS, "Columns again")
        assert app.cfg.data.column_mapping.prompt_text_column is None
        assert app.query_one("#col-prompt-text-column", Select).value == NONE


async def test_saving_over_the_file_the_wizard_was_opened_from_asks_nothing(in_tmp: Path, tiny_model: Path) -> None:
    cfg = sft_config(in_tmp, tiny_model)
    source = cfg.source
    Path("other.yaml").write_text("old: true\n")
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        app.show(REVIEW)
        await pilot.pause()
        step = app.query_one(ReviewStep)
        assert step.query_one("#save-path", Input).value == str(source)
        step.query_one("#save", Button).press()
        await until(pilot, lambda: step.saved_path is not None, "the file saved")
        assert not isinstance(app.screen, ConfirmDialog)
        assert to_yaml(load_config(source)) == to_yaml(app.cfg)
        step.query_one("#save-path", Input).value = "other.yaml"  # anyone else's file: still asked
        step.query_one("#save", Button).press()
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")


# ---------------------------------------------------------------- F: a validation share of a single file


def _valid_fraction_param() -> None:
    if not hasattr(Params(), "valid_fraction"):
        pytest.skip("params.valid_fraction is not in engine/params.py yet")


async def test_a_single_file_offers_a_validation_share(in_tmp: Path, tiny_model: Path) -> None:
    _valid_fraction_param()
    write_jsonl(in_tmp / "data" / "chats.jsonl", CHATS * 10)
    app = WizardApp(fresh(tiny_model, "data/chats.jsonl"))
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot)
        holdout = app.query_one("#data-holdout")
        assert holdout.display
        field = app.query_one("#valid-fraction", Input)
        field.value = "x"
        app.action_next()
        await pilot.pause()
        assert app.index == DATA and "params.valid_fraction" in text_of(app, "#step-2 .problems")
        field.value = "1.5"
        app.action_next()
        await pilot.pause()
        assert app.index == DATA and "params.valid_fraction" in text_of(app, "#step-2 .problems")
        field.value = "0.1"
        await press_next(pilot, COLUMNS)
        assert app.cfg.params.valid_fraction == 0.1 and app.cfg.data.valid_split is None
        app.action_back()
        await until(pilot, lambda: app.index == DATA, "the Data step again")
        assert app.query_one("#valid-fraction", Input).value == "0.1"

        write_jsonl(in_tmp / "data" / "valid.jsonl", CHATS)  # now there is a split to evaluate on
        app.query_one("#valid-split", Select).set_options([("(none)", ""), ("valid", "valid")])
        app.query_one("#valid-split", Select).value = "valid"
        await until(pilot, lambda: not holdout.display, "the share hidden")
        await press_next(pilot, COLUMNS)
        assert app.cfg.data.valid_split == "valid" and app.cfg.params.valid_fraction == 0.0


async def test_a_share_held_out_by_the_config_file_is_kept_over_a_split_found(in_tmp: Path, tiny_model: Path) -> None:
    _valid_fraction_param()
    write_jsonl(in_tmp / "data" / "train.jsonl", CHATS * 10)
    write_jsonl(in_tmp / "data" / "valid.jsonl", CHATS)
    cfg = from_file(in_tmp, f"task: llm-sft\nbase_model: {tiny_model}\ndata:\n  path: data\n  chat_template: chatml\n"
                    "  column_mapping:\n    text_column: messages\nparams:\n  valid_fraction: 0.05\n")
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        step = await open_data(pilot)
        assert app.query_one("#valid-split", Select).value == "" and app.query_one("#data-holdout").display
        assert app.query_one("#valid-fraction", Input).value == "0.05"
        step.store(app.cfg)
        assert (app.cfg.data.valid_split, app.cfg.params.valid_fraction) == (None, 0.05)
