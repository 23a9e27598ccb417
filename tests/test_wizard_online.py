"""The wizard for GRPO and RLOO (online RL from a reward model), through the real WizardApp at 80x24: the Task step
lists them, Columns asks for the prompt column only, Parameters offers the llm-reward runs under ./runs and shows
what the reward model gate finds (a causal LM refused, a weak model flagged), the Preview shows each prompt as the
policy and as the reward model see it, and the saved config names the run picked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Select, Static

from engine.config import load_config, load_config_lenient
from engine.tasks import SPECS
from support import make_config, next_step, run, until
from tui.steps.reward import find_reward_runs

SIZE = (80, 24)
PARAMS = 4
# Columns whose names say nothing: the prompt column is mapped by hand.
PROMPTS = [{"source": "quiz", "ask": f"What is {a} plus {b}?"} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]


def shown(app: Any, selector: str) -> str:
    widget = app.query_one(selector, Static)
    return str(widget.render()) if widget.display else ""


def fake_reward_run(directory: Path, task: str = "llm-reward") -> Path:
    """What inspect_reward_model reads of an llmtune run (its config and a LoRA adapter's config), no weights."""
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(f"task: {task}\nbase_model: llmtune/tiny-random\n")
    (directory / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS",
                                                               "base_model_name_or_path": "llmtune/tiny-random"}))
    return directory


def online_config(directory: Path, tiny_model: Path, reward_model: str | None = None) -> Path:
    (directory / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    path = directory / "grpo.yaml"
    path.write_text(f"task: llm-grpo\nbase_model: {tiny_model}\nproject_name: runs/grpo\ndata:\n  path: "
                    "prompts.jsonl\n  column_mapping:\n    prompt_text_column: ask\nparams:\n  peft: true\n"
                    "  quantization: null\n" + (f"  reward_model: {reward_model}\n" if reward_model else ""))
    return path


async def open_params(pilot: Any) -> Any:
    app = pilot.app
    app.show(PARAMS)
    await until(pilot, lambda: app.index == PARAMS and app.step.ready, "the parameter fields")
    return app.step


# ---------------------------------------------------------------- the runs offered


def test_the_picker_finds_reward_runs_only(in_tmp: Path) -> None:
    fake_reward_run(in_tmp / "runs" / "rm")
    fake_reward_run(in_tmp / "runs" / "team" / "rm2")
    fake_reward_run(in_tmp / "runs" / "sft", task="llm-sft")  # another task's run
    (in_tmp / "runs" / "training").mkdir()
    (in_tmp / "runs" / "training" / "config.yaml").write_text("task: llm-reward\n")  # no model saved yet
    fake_reward_run(in_tmp / "runs" / "rm" / "checkpoint-5")  # a run's own folders are not searched
    fake_reward_run(in_tmp / "runs" / "a" / "b" / "c" / "too-deep")
    assert find_reward_runs() == ["runs/rm", "runs/team/rm2"]
    assert find_reward_runs(in_tmp / "nowhere") == []


def test_the_columns_suggested_for_online_trainers_are_the_prompts_only() -> None:
    from tui.steps.columns import suggest_mapping

    for trainer in ("grpo", "rloo"):
        pairs = suggest_mapping(["prompt", "chosen", "rejected"], trainer)  # a preference file: its prompts
        assert (pairs.prompt_text_column, pairs.text_column, pairs.rejected_text_column) == ("prompt", None, None)
        assert suggest_mapping(["id", "question"], trainer, {"id": 1, "question": "Why?"}).prompt_text_column == (
            "question")
        chats = suggest_mapping(["turns"], trainer, {"turns": [{"role": "user", "content": "Hi"}]})
        assert chats.prompt_text_column == "turns" and chats.conversations


# ---------------------------------------------------------------- Task


async def test_the_task_step_lists_every_trainer_with_its_purpose(in_tmp: Path) -> None:
    from tui.app import WizardApp

    app = WizardApp()
    async with app.run_test(size=SIZE) as pilot:
        app.show(1)
        await until(pilot, lambda: app.index == 1, "the Task step")
        for spec in SPECS:
            assert app.query_one(f"#task-{spec.task}").label.plain == f"{spec.label}: {spec.purpose}"
        app.query_one("#task-llm-rloo").value = True
        await until(pilot, lambda: "RLOO" in shown(app, "#task-purpose"), "RLOO described")
        rloo = next(s for s in SPECS if s.trainer == "rloo")
        assert shown(app, "#task-purpose") == f"RLOO: {rloo.purpose}."  # in full: the list cuts it at 80 columns
        assert shown(app, "#task-columns") == "Columns needed: prompts (text or messages) and a reward model"


# ---------------------------------------------------------------- a whole walk


@pytest.mark.usefixtures("in_tmp")
async def test_a_grpo_walk_picks_a_reward_run_and_saves_it(in_tmp: Path, tiny_model: Path) -> None:
    from tui.app import WizardApp
    from tui.steps.columns import ColumnsStep
    from tui.steps.params import ParamsStep
    from tui.steps.preview import PreviewStep
    from tui.steps.reward import RewardModelRow

    reward = make_config(in_tmp, tiny_model, "reward", params={"peft": True, "quantization": None,
                                                                "valid_fraction": 0.34})  # pairs to check it on
    reward.project_name = str(in_tmp / "runs" / "rm")
    code, run_dir, _ = run(reward)
    assert code == 0
    (in_tmp / "prompts").mkdir()
    (in_tmp / "prompts" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))

    app = WizardApp()
    async with app.run_test(size=SIZE) as pilot:
        model = app.query_one("#model-input", Input)
        model.value = str(tiny_model)
        await pilot.press("enter")
        await until(pilot, lambda: app.model_info is not None and app.model_info.available, "the model's info")
        await next_step(pilot, app)
        app.query_one("#task-llm-grpo").value = True
        await next_step(pilot, app)
        assert app.cfg.task == "llm-grpo"
        app.query_one("#data-path", Input).value = "prompts"
        await pilot.press("enter")
        await until(pilot, lambda: app.table is not None, "the data's first rows")
        await next_step(pilot, app)

        # Columns: the prompt column only, mapped by hand (nothing in the names points to it)
        step = app.step
        assert isinstance(step, ColumnsStep)
        assert app.query_one("#row-prompt-text-column").display
        for role in ("text-column", "rejected-text-column"):
            assert not app.query_one(f"#row-{role}").display
        prompt = app.query_one("#col-prompt-text-column", Select)
        assert "\x00none" not in [value for _, value in prompt._options]  # the prompts are not optional
        prompt.value = "ask"
        await until(pilot, lambda: "What is 1 plus 2?" in shown(app, "#sample"), "the prompt in the sample")
        assert "the answers are sampled" in shown(app, "#sample")
        await next_step(pilot, app)
        assert app.cfg.data.column_mapping.prompt_text_column == "ask"

        # Parameters: the run found under ./runs, picked from the list; the gate's findings under it
        params = app.step
        assert isinstance(params, ParamsStep)
        await until(pilot, lambda: params.ready, "the parameter fields")
        row = app.query_one(RewardModelRow)
        assert row.display
        await until(pilot, lambda: row.runs == ["runs/rm"], "the reward runs found")
        app.query_one("#param-chat-template", Select).value = "tokenizer"  # the reward run's own template
        app.query_one("#reward-runs", Select).value = "runs/rm"
        await until(pilot, lambda: app.query_one("#param-reward-model", Input).value == "runs/rm", "the run picked")
        await until(pilot, lambda: "chosen above rejected" in shown(app, "#reward-gate"), "the reward model checked",
                    timeout=120)
        gate = shown(app, "#reward-gate")
        assert "runs/rm: llmtune run, a LoRA adapter on" in gate
        assert "chosen above rejected on" in gate and "pairs (" in gate  # its run's held-out pairs, scored
        if ": weak," in gate:  # two steps of training may leave it at chance: then it says so
            assert "!! weak reward model" in gate
        assert app.cfg.params.reward_model == "runs/rm"
        assert shown(app, "#row-param-reward-model .field-problem") == ""
        await next_step(pilot, app)

        # Preview: each prompt as the policy reads it, then as the reward model scores it
        preview = app.step
        assert isinstance(preview, PreviewStep)
        await until(pilot, lambda: not preview.building, "the preview", timeout=120)
        assert preview.errors == []
        view = shown(app, "#preview-reward-view")
        assert view.startswith("as reward model runs/rm scores it, with the answer")
        assert "What is 1 plus 2?" in view and "<the sampled answer>" in view
        assert "What is 1 plus 2?" in app.query_one("#preview-text").body.plain
        assert shown(app, "#preview-flag") == ""  # a prompt trains nothing itself: no "nothing is trained" flag
        stats = shown(app, "#preview-stats")
        assert "reward model\n  runs/rm: llmtune run" in stats and "the answers sampled during training" in stats
        await pilot.press("n")
        await until(pilot, lambda: "What is 3 plus 4?" in shown(app, "#preview-reward-view"), "the next sample")
        await next_step(pilot, app)

        assert app.step.title == "Review"
        app.query_one("#save-path", Input).value = "grpo.yaml"
        app.query_one("#save").press()
        await until(pilot, lambda: Path("grpo.yaml").exists(), "the saved config")

    saved = load_config(in_tmp / "grpo.yaml", check_env=True)  # the environment checks inspect the reward model
    assert saved.task == "llm-grpo" and saved.trainer == "grpo"
    assert saved.params.reward_model == "runs/rm"
    assert (in_tmp / saved.params.reward_model).resolve() == run_dir.resolve()
    assert saved.data.column_mapping.prompt_text_column == "ask"


# ---------------------------------------------------------------- the gate on the Parameters step


async def test_a_causal_lm_typed_as_reward_model_is_refused(in_tmp: Path, tiny_model: Path) -> None:
    from tui.app import WizardApp

    cfg, _ = load_config_lenient(online_config(in_tmp, tiny_model))  # as the wizard opens one: no reward model yet
    app = WizardApp(cfg)
    async with app.run_test(size=SIZE) as pilot:
        await open_params(pilot)
        await until(pilot, lambda: app.query_one("#reward-runs", Select).disabled, "no reward runs found")
        assert "none" in str(app.query_one("#reward-runs-label", Static).render())
        field = app.query_one("#param-reward-model", Input)
        field.focus()
        await pilot.press(*str(tiny_model))
        problem = "#row-param-reward-model .field-problem"
        await until(pilot, lambda: "causal language model" in shown(app, problem), "the refusal")
        assert "would be noise" in shown(app, problem) and "fix: give a sequence-classification model" in (
            shown(app, problem))
        assert shown(app, "#reward-gate") == ""  # nothing to say of what is no reward model
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.step.title == "Parameters"  # Next is blocked, with the engine's words
        assert any("causal language model" in p.message for p in app.step.problems(app.cfg))


async def test_a_weak_reward_model_is_flagged(in_tmp: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.reward_gate as reward_gate
    from tui.app import WizardApp

    fake_reward_run(in_tmp / "runs" / "coin")
    weak = reward_gate.judge_scores([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], "3 pairs of the test")
    monkeypatch.setattr(reward_gate, "check_reward_run", lambda reward, **kw: weak)
    app = WizardApp(load_config(online_config(in_tmp, tiny_model, "runs/coin")))
    async with app.run_test(size=SIZE) as pilot:
        await open_params(pilot)
        await until(pilot, lambda: "!! weak reward model" in shown(app, "#reward-gate"), "the weak flag")
        gate = shown(app, "#reward-gate")
        assert "runs/coin: llmtune run, a LoRA adapter on llmtune/tiny-random" in gate
        assert "near-constant" in gate and "params.allow_weak_reward_model" in gate
        assert app.query_one("#reward-runs", Select).value == "runs/coin"  # the run named is the one listed
        assert app.step.problems(app.cfg) == []  # a warning: launching stops on it, saving does not


async def test_reward_pairs_check_the_reward_model_on_that_file(in_tmp: Path, tiny_model: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.reward_gate as reward_gate
    from tui.app import WizardApp

    fake_reward_run(in_tmp / "runs" / "rm")
    asked: list[tuple[str, Path | None]] = []

    def on_pairs(reward: Any, path: str, base_dir: Path | None, **kw: Any) -> Any:
        asked.append((path, base_dir))
        return reward_gate.judge_scores([1.0, 2.0], [0.0, 0.5], "2 pairs of held-out.jsonl")

    monkeypatch.setattr(reward_gate, "check_reward_pairs", on_pairs)
    monkeypatch.setattr(reward_gate, "check_reward_run", lambda reward, **kw: pytest.fail("not its run's pairs"))
    path = online_config(in_tmp, tiny_model, "runs/rm")
    path.write_text(path.read_text() + "  reward_pairs: held-out.jsonl\n")
    app = WizardApp(load_config(path))
    async with app.run_test(size=SIZE) as pilot:
        await open_params(pilot)
        await until(pilot, lambda: "held-out.jsonl)" in shown(app, "#reward-gate"), "the check on the pairs file")
        assert "chosen above rejected on 100% of 2 pairs (2 pairs of held-out.jsonl)" in shown(app, "#reward-gate")
        assert asked == [("held-out.jsonl", in_tmp)]
