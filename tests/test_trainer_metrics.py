"""The trainer's own metrics (DPO/ORPO reward margins and accuracies, a reward model's accuracy, SFT's token
accuracy) travel in step events (`metrics`) and show on the dashboard and in `--yes`'s lines. Real training on
the tiny model for the events, and tests/fixtures/events/dpo_metrics.jsonl (recorded from one) for the views."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from test_dashboard import caught_up, recorded_run, shown

from engine.events import read_events, validate_event
from support import make_config, run
from tui.app import WizardApp
from tui.headless import PlainDisplay
from tui.run_state import RunState
from tui.widgets.run_status import metrics_line

FIXTURES = Path(__file__).parent / "fixtures" / "events"
DPO = read_events(FIXTURES / "dpo_metrics.jsonl")
LAST = [e for e in DPO if e["type"] == "step"][-1]
LOSS = f"{LAST['loss']:.4f}"
EVAL = f"{[e for e in DPO if e['type'] == 'eval'][-1]['eval_loss']:.4f}"
MARGIN, ACC = f"{LAST['metrics']['rewards/margins']:.3g}", f"{LAST['metrics']['rewards/accuracies']:.0%}"


@pytest.mark.parametrize("trainer, names", [("dpo", {"rewards/margins", "rewards/accuracies"}),
                                            ("reward", {"accuracy", "margin"}),
                                            ("sft", {"mean_token_accuracy"})])
def test_step_events_carry_the_trainers_metrics(in_tmp: Path, tiny_model: Path, trainer: str,
                                                names: set[str]) -> None:
    code, _, events = run(make_config(in_tmp, tiny_model, trainer))
    assert code == 0
    steps = [e for e in events if e["type"] == "step"]
    logged = [e for e in steps if e["loss"] is not None]
    assert logged and all(names <= set(e["metrics"]) for e in logged)
    assert all(validate_event(e) == [] for e in steps)
    for e in logged:  # what has a field of its own, and counters, are not repeated in `metrics`
        assert not {"loss", "learning_rate", "grad_norm", "epoch", "num_tokens"} & set(e["metrics"])
        assert all(isinstance(v, float) for v in e["metrics"].values())


def test_the_headline_metrics_of_each_trainer() -> None:
    from tui.format import headline_metrics

    assert headline_metrics({"rewards/margins": 0.1234, "rewards/accuracies": 0.75, "mean_token_accuracy": 0.3,
                             "rewards/chosen": 0.2}) == [("margin", "0.123"), ("acc", "75%")]
    assert headline_metrics({"accuracy": 0.5, "margin": 1.5, "min_reward": -3.0}) == [("acc", "50%"),
                                                                                       ("margin", "1.5")]
    assert headline_metrics({"mean_token_accuracy": 0.4123, "entropy": 7.5}) == [("tok acc", "41.2%")]
    assert headline_metrics({"entropy": 7.5}) == [] and headline_metrics(None) == []


def test_plain_lines_show_them() -> None:
    out = StringIO()
    display = PlainDisplay(Console(file=out, force_terminal=False, width=200))
    for event in DPO:
        display.show(event)
    display.close()
    last = [line for line in out.getvalue().splitlines() if line.startswith("step 30/30")]
    assert last and f"loss {LOSS} margin {MARGIN} acc {ACC} lr " in last[0]


def test_the_dashboard_shows_them_and_keeps_them_between_logging_steps() -> None:
    state = RunState(Path("run"))
    state.update(DPO)
    text = metrics_line(state).plain
    assert text.startswith(f"loss {LOSS}  eval {EVAL}  margin {MARGIN}  acc {ACC}"), text
    state.update([{**LAST, "step": 31, "loss": None, "lr": None, "grad_norm": None, "metrics": None}])
    assert f"margin {MARGIN}  acc {ACC}" in metrics_line(state).plain  # a progress-only step


async def test_attached_to_a_dpo_run(in_tmp: Path) -> None:
    run_dir = recorded_run(in_tmp, "dpo_metrics.jsonl")
    async with WizardApp(attach=(run_dir, None)).run_test(size=(80, 24)) as pilot:
        screen = await caught_up(pilot, len(DPO))
        status = shown(screen.query_one("#run-status"))
        assert "margin " in status and "acc " in status
