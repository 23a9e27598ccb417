"""Worker errors in the wizard go through the app's one funnel (WizardApp.on_worker_state_changed): the
traceback is written to a log under $LLMTUNE_HOME/logs, the error is shown in the step that ran the worker when
the step says it shows it, else in a dialog naming the log; the wizard goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Button, Static

from support import until
from tui.app import WizardApp, new_config
from tui.widgets.confirm import QuestionDialog

SIZE = (80, 24)


def a_bug() -> None:
    raise ZeroDivisionError("a bug in a worker")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def logs(home: Path) -> list[Path]:
    return sorted((home / "logs").glob("*.log"))


async def test_a_worker_that_raises_is_shown_in_a_dialog_naming_the_log(home: Path) -> None:
    app = WizardApp()
    async with app.run_test(size=SIZE) as pilot:
        app.step.run_worker(a_bug, thread=True)  # any step's worker: this one says nothing of its own
        # workers=False: waiting on a failed worker re-raises its error, which is what the app must not do
        await until(pilot, lambda: isinstance(app.screen, QuestionDialog), "the error dialog", workers=False)
        assert app.is_running
        said = str(app.screen.query_one("#error-message", Static).render())
        [log] = logs(home)
        assert "ZeroDivisionError: a bug in a worker" in said and str(log) in said
        text = log.read_text()
        assert text.startswith("Traceback") and "in a_bug" in text and "ZeroDivisionError: a bug in a worker" in text
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, QuestionDialog), "the dialog closed", workers=False)
        assert app.is_running and app.return_value is None


async def test_a_bug_while_checking_the_config_is_shown_in_the_review_step(home: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cfg: object) -> None:
        raise RuntimeError("a check that fails")

    monkeypatch.setattr("tui.steps.review.validate", broken)
    app = WizardApp(new_config())
    async with app.run_test(size=SIZE) as pilot:
        app.show(len(app.steps) - 1)
        await until(pilot, lambda: app.index == len(app.steps) - 1, "the Review step")
        app.step.query_one("#save", Button).press()
        problems = app.step.query_one(".problems", Static)
        await until(pilot, lambda: "internal error while checking" in str(problems.render()), "the problem shown",
                    workers=False)
        [log] = logs(home)
        shown = " ".join(str(problems.render()).split())
        assert "RuntimeError: a check that fails" in shown and f"the traceback is in {log}" in shown
        assert "in broken" in log.read_text()
        assert app.is_running and not isinstance(app.screen, QuestionDialog)  # said in the step, no dialog
        assert not Path("my-model.yaml").exists()


async def test_a_dashboard_worker_that_raises_is_shown_and_the_app_goes_on(home: Path) -> None:
    from engine.run_files import EVENTS_FILE, LOG_FILE
    from tui.dashboard import DashboardScreen

    run_dir = home.parent / "runs" / "run"
    run_dir.mkdir(parents=True)
    fixture = Path(__file__).parent / "fixtures" / "events" / "with_eval.jsonl"
    (run_dir / EVENTS_FILE).write_bytes(fixture.read_bytes())
    (run_dir / LOG_FILE).write_text("a log line\n")
    app = WizardApp(attach=(run_dir, None))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard", workers=False)
        app.screen.run_worker(a_bug, thread=True)
        await until(pilot, lambda: isinstance(app.screen, QuestionDialog), "the error dialog", workers=False)
        assert app.is_running
        [log] = logs(home)
        assert str(log) in str(app.screen.query_one("#error-message", Static).render())


def test_two_errors_in_one_second_get_two_logs(home: Path) -> None:
    from tui.errors import write_error_log

    paths = [write_error_log(ZeroDivisionError(str(n))) for n in range(3)]
    assert len(set(paths)) == 3 and all(p is not None and p.exists() for p in paths)
    assert [p.read_text().strip().splitlines()[-1] for p in paths if p] == [f"ZeroDivisionError: {n}" for n in range(3)]


async def test_a_bug_reading_the_data_writes_its_traceback(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tui.steps import data

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug in the data reader")

    monkeypatch.setattr(data, "read_preview", broken)
    (home.parent / "train.jsonl").write_text('{"text": "hi"}\n')
    app = WizardApp(new_config())
    async with app.run_test(size=SIZE) as pilot:
        step_index = 2  # Model, Task, Data
        app.show(step_index)
        await until(pilot, lambda: app.index == step_index, "the Data step")
        app.step.query_one("#data-path").value = str(home.parent / "train.jsonl")
        await until(pilot, lambda: logs(home), "the log of the bug", workers=False)
        [log] = logs(home)
        assert "KeyError: 'a bug in the data reader'" in log.read_text()
        assert app.is_running
