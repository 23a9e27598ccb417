"""A checkpoint asked for by hand (`c` on the dashboard, `control/checkpoint`) is kept: save_total_limit's rotation
leaves it alone and does not count it, and resume still finds the newest checkpoint. Real training on the tiny
model, in this process, as the training process runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import checkpoints
from engine.control import request
from engine.manifest import Manifest
from engine.run_files import CHECKPOINT_MARKER, CONFIG_FILE
from engine.rundir import prepare
from engine.train import train
from engine.trainers.progress import ProgressCallback
from support import make_config, run

pytestmark = pytest.mark.usefixtures("in_tmp")


def steps_of(paths: list[Path]) -> list[int]:
    return [checkpoints.step_of(p) or 0 for p in paths]


@pytest.fixture
def ask_at(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Touch control/checkpoint during the steps listed in `ask["steps"]` (as a user pressing `c` then), and
    note which checkpoints are on disk right after each save."""
    ask: dict[str, Any] = {"steps": set(), "after_save": {}}
    step_end, on_save = ProgressCallback.on_step_end, ProgressCallback.on_save

    def asking(self: ProgressCallback, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step in ask["steps"]:
            request(self.run_dir, "checkpoint")
        step_end(self, args, state, control, **kwargs)

    def noting(self: ProgressCallback, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        on_save(self, args, state, control, **kwargs)
        ask["after_save"][state.global_step] = steps_of(checkpoints.all_checkpoints(self.run_dir))

    monkeypatch.setattr(ProgressCallback, "on_step_end", asking)
    monkeypatch.setattr(ProgressCallback, "on_save", noting)
    return ask


def test_a_checkpoint_asked_for_is_kept_and_not_counted_in_save_total_limit(tiny_model: Path,
                                                                             ask_at: dict[str, Any]) -> None:
    cfg = make_config(Path.cwd(), tiny_model, "sft", params={"peft": False, "max_steps": 6, "save_steps": 2,
                                                              "save_total_limit": 1})
    ask_at["steps"] = {3}
    code, run_dir, events = run(cfg)
    assert code == 0
    saved = {e["step"]: e for e in events if e["type"] == "checkpoint"}
    assert sorted(saved) == [2, 3, 4, 6]
    assert [s for s, e in saved.items() if e.get("kept")] == [3] and saved[2]["kept"] is False
    # the asked-for checkpoint-3 does not push checkpoint-2 out (it is not counted), the next automatic one does
    assert ask_at["after_save"][3] == [2, 3] and ask_at["after_save"][4] == [3, 4]
    assert steps_of(checkpoints.complete_checkpoints(run_dir)) == [3, 6]
    assert checkpoints.read_marker(run_dir / "checkpoint-3")["kept"] is True
    assert "kept" not in checkpoints.read_marker(run_dir / "checkpoint-6")
    manifest = Manifest(run_dir)
    assert manifest.owns("checkpoint-3") and not manifest.owns("checkpoint-4")  # the books follow the rotation

    # resume takes the newest checkpoint; the kept one stays through the resumed run's rotation too
    assert checkpoints.last_complete(run_dir) == run_dir / "checkpoint-6"
    _set_max_steps(run_dir, 8)
    ask_at["steps"] = set()
    code, _, after = run(cfg, resume=True)
    assert code == 0
    resumed = after[len(events):]
    assert any(e.get("phase") == "resuming" and "checkpoint-6" in e["message"] for e in resumed)
    assert steps_of(checkpoints.complete_checkpoints(run_dir)) == [3, 8]


def test_resume_starts_from_a_kept_checkpoint_when_it_is_the_newest(tiny_model: Path,
                                                                     ask_at: dict[str, Any]) -> None:
    """A run whose later checkpoint is not complete (a kill while saving) resumes from the one asked for by
    hand; the resumed segment's training starts at its step, and says so."""
    cfg = make_config(Path.cwd(), tiny_model, "sft", params={"peft": False, "max_steps": 4, "save_steps": 100,
                                                              "save_total_limit": 1})
    ask_at["steps"] = {2}
    run_dir = prepare(cfg)
    assert train(run_dir) == 0
    assert steps_of(checkpoints.complete_checkpoints(run_dir)) == [2, 4]
    (run_dir / "checkpoint-4" / CHECKPOINT_MARKER).unlink()  # as if cut short: not complete
    (run_dir / "checkpoint-4" / "trainer_state.json").unlink()
    assert checkpoints.last_complete(run_dir) == run_dir / "checkpoint-2"
    _set_max_steps(run_dir, 5)
    ask_at["steps"] = set()
    code, _, events = run(cfg, resume=True)
    assert code == 0
    assert any(e.get("phase") == "resuming" and "checkpoint-2" in e["message"] for e in events)
    training = [e for e in events if e.get("phase") == "training"]
    assert training[-1]["step"] == 2  # where the resumed segment's training began
    assert steps_of(checkpoints.complete_checkpoints(run_dir)) == [2, 5]


def _set_max_steps(run_dir: Path, steps: int) -> None:
    import yaml

    path = run_dir / CONFIG_FILE
    data = yaml.safe_load(path.read_text())
    data["params"]["max_steps"] = steps
    path.write_text(yaml.safe_dump(data, sort_keys=False))
