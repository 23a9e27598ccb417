"""The dashboard at 80x24 and 60x20, fed from recorded event files: every status line and every key still shows,
stop and checkpoint only while the run trains, no ETA once it has ended or stops, toasts off the log, the
loss plot's scale said, the run directory's sizes whole. And Select menus with a border (app.tcss, globally),
and `--yes`'s live display without a spinner or an ETA once the run has ended. Snapshots are in
test_dashboard.py."""

from __future__ import annotations

from functools import partial
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from test_dashboard import FIXTURES, caught_up, held_alive, live_part, recorded_run, shown, until
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Select, Static
from textual.widgets._footer import FooterKey
from textual.widgets._select import SelectOverlay
from textual.widgets._toast import Toast

import tui
from engine import checkpoints, control
from engine.events import EventWriter, read_events
from engine.run_files import EVENTS_FILE
from tui.app import WizardApp
from tui.dashboard import DashboardScreen
from tui.format import human_bytes
from tui.headless import LiveDisplay
from tui.widgets.confirm import ConfirmDialog
from tui.widgets.loss_plot import LossPlot
from tui.widgets.run_dir_dialog import RunDirDialog

SIZE, SMALL = (80, 24), (60, 20)
shown_size = partial(human_bytes, compact=True)  # as the run directory dialog shows sizes


def drawn(widget: Widget) -> list[str]:
    """The widget's lines as drawn, its border included."""
    region = Region(0, 0, widget.outer_size.width, widget.outer_size.height)
    return [strip.text.rstrip() for strip in widget.render_lines(region)]


def keys(screen: DashboardScreen) -> list[str]:
    return [key.key for key in screen.query(FooterKey) if "-command-palette" not in key.classes]


async def test_stop_and_checkpoint_are_offered_only_while_the_run_trains(in_tmp: Path) -> None:
    run_dir = live_part(in_tmp, "dpo_metrics.jsonl", 24)
    with held_alive(run_dir) as handle:
        app = WizardApp(attach=(run_dir, handle))
        async with app.run_test(size=SIZE) as pilot:
            screen = await caught_up(pilot)
            await until(pilot, lambda: keys(screen)[:2] == ["s", "c"], "the stop and checkpoint keys")
            with EventWriter(run_dir / EVENTS_FILE) as writer:
                writer.emit("run_finished", status="completed", exit_code=0, step=24, metrics={}, output=None,
                            merged=None)
            await until(pilot, lambda: screen.state.finished, "the end of the run")
            await until(pilot, lambda: "s" not in keys(screen) and "c" not in keys(screen), "the keys to go")
            assert keys(screen)[:3] == ["d", "o", "w"]
            await pilot.press("c")  # no longer bound: nothing is asked of the run
            assert control.pending(run_dir) == set()


async def test_a_stopping_run_shows_no_eta_and_no_checkpoint_key(in_tmp: Path) -> None:
    run_dir = live_part(in_tmp, "dpo_metrics.jsonl", 24)
    with held_alive(run_dir) as handle:
        app = WizardApp(attach=(run_dir, handle))
        async with app.run_test(size=SIZE) as pilot:
            screen = await caught_up(pilot)
            assert "eta " in shown(screen.query_one("#run-status"))
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
            await pilot.press("y")
            await until(pilot, lambda: app.screen is screen and screen.live.stop_requested, "the stop request")
            await until(pilot, lambda: "stopping" in shown(screen.query_one("#run-status")), "stopping shown")
            status = shown(screen.query_one("#run-status"))
            assert "eta " not in status and "elapsed " in status
            await until(pilot, lambda: "c" not in keys(screen), "the checkpoint key to go")
            assert "s" in keys(screen)  # s now offers to kill the run


async def test_a_run_whose_process_vanished_shows_no_eta(in_tmp: Path) -> None:
    run_dir = live_part(in_tmp, "dpo_metrics.jsonl", 24)  # no run_finished, and no process
    async with WizardApp(attach=(run_dir, None)).run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        assert screen.live.ended_without_event
        status = shown(screen.query_one("#run-status"))
        assert "ended without a final event" in status and "eta " not in status and "elapsed " in status
        assert "s" not in keys(screen) and "c" not in keys(screen)


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["80x24", "60x20"])
async def test_every_status_line_and_every_key_fit(in_tmp: Path, size: tuple[int, int]) -> None:
    run_dir = live_part(in_tmp, "dpo_metrics.jsonl", 24)
    with held_alive(run_dir) as handle:
        app = WizardApp(attach=(run_dir, handle))
        async with app.run_test(size=size) as pilot:
            screen = await caught_up(pilot)
            await until(pilot, lambda: keys(screen)[:2] == ["s", "c"], "the keys")
            lines = [line.strip() for line in shown(screen.query_one("#run-status")).splitlines()]
            assert lines[0].startswith("▶ training  step 24/30") and lines[1].startswith("epoch ")
            assert "eta " in lines[1] and lines[2].startswith("loss ") and "margin " in lines[2]
            assert keys(screen)[:6] == ["s", "c", "d", "o", "w", "ctrl+q"]
            assert all(key.region.right <= size[0] for key in screen.query(FooterKey))  # none cut off


async def test_toasts_stay_off_the_log(in_tmp: Path) -> None:
    run_dir = live_part(in_tmp, "dpo_metrics.jsonl", 24)
    with held_alive(run_dir) as handle:
        app = WizardApp(attach=(run_dir, handle))
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            screen = await caught_up(pilot)
            await pilot.press("c")
            await until(pilot, lambda: list(screen.query(Toast)), "the toast")
            await pilot.pause()
            log, side = screen.query_one("#run-log").region, screen.query_one("#dash-side").region
            for toast in screen.query(Toast):
                assert not toast.region.overlaps(log) and not toast.region.overlaps(side), toast.region
                assert screen.query_one(LossPlot).region.contains_region(toast.region)
            # the checkpoint asked for is saved, kept out of the rotation: the toast says so
            with EventWriter(run_dir / EVENTS_FILE) as writer:
                writer.emit("checkpoint", step=25, path=str(run_dir / "checkpoint-25"), kept=True)
            said = lambda: [n.message for n in app._notifications if "checkpoint saved" in n.message]  # noqa: E731
            await until(pilot, said, "the checkpoint's toast")
            assert said() == ["checkpoint saved and kept: runs/run/checkpoint-25"]


async def test_the_loss_plot_says_when_its_scale_is_log(in_tmp: Path) -> None:
    run_dir = recorded_run(in_tmp, "with_eval.jsonl")
    async with WizardApp(attach=(run_dir, None)).run_test(size=SIZE) as pilot:
        screen = await caught_up(pilot)
        plot = screen.query_one(LossPlot)
        assert "log" not in drawn(plot)[0] and drawn(plot)[-1].endswith("l: log scale ─╯")
        await pilot.press("l")
        await pilot.pause()
        assert plot.log_y and drawn(plot)[0].startswith("╭─ log scale ─") and drawn(plot)[-1].endswith("l: linear ─╯")


def run_directory(directory: Path) -> Path:
    """A finished run's directory as it looks: checkpoints, the adapter, the tokenizer, long names."""
    run_dir = directory / "runs" / "llama-3.1-8b-instruct-sft-chat-2"
    run_dir.mkdir(parents=True)
    for name, nbytes in [("events.jsonl", 53_000), ("train.log", 393), ("config.yaml", 1800), ("README.md", 4100),
                         ("training_params.json", 1200), ("adapter_model.safetensors", 31_000_000),
                         ("adapter_config.json", 900), ("tokenizer.json", 17_000_000),
                         ("tokenizer_config.json", 50_000), ("special_tokens_map.json", 600)]:
        (run_dir / name).write_bytes(b"x" * nbytes)
    for step in (500, 1000, 1500):
        (run_dir / f"checkpoint-{step}").mkdir()
        (run_dir / f"checkpoint-{step}" / "optimizer.pt").write_bytes(b"x" * 62_000_000)
        checkpoints.write_marker(run_dir / f"checkpoint-{step}", **({"kept": True} if step == 1000 else {}))
    return run_dir


class DialogApp(App[None]):
    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def on_mount(self) -> None:
        self.push_screen(RunDirDialog(self.run_dir, copied=True))


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["80x24", "60x20"])
async def test_the_run_directory_dialog_shows_whole_sizes(in_tmp: Path, size: tuple[int, int]) -> None:
    run_dir = run_directory(in_tmp)
    sizes = {p.name + ("/" if p.is_dir() else ""): shown_size(sum(f.stat().st_size for f in p.rglob("*"))
                                                               if p.is_dir() else p.stat().st_size)
             for p in run_dir.iterdir()}
    async with DialogApp(run_dir).run_test(size=size) as pilot:
        await until(pilot, lambda: isinstance(pilot.app.screen, RunDirDialog), "the dialog")
        await pilot.pause()
        dialog = pilot.app.screen
        listed = shown(dialog.query_one("#run-dir-files")).splitlines()
        entries = [line for line in listed if not line.startswith("…")]
        assert len(entries) >= 4
        for line in entries:
            name = line.split()[0]
            assert name in sizes and f" {sizes[name]}" in line, line  # the size whole, never cut to "…"
        kept = next(line for line in entries if line.startswith("checkpoint-1000/"))
        assert "kept" in kept and "kept" not in next(line for line in entries if line.startswith("checkpoint-500/"))
        assert " ".join(shown(dialog.query_one("#run-dir-hint")).split()).endswith("Esc closes")  # shows whole
        box = dialog.query_one("Vertical").region
        assert box.bottom <= size[1] and dialog.query_one("#run-dir-hint").region.bottom <= box.bottom


class SelectApp(App[None]):
    """A compact Select (as the wizard's Columns step has) over some text, with llmtune's stylesheet."""

    CSS_PATH = str(Path(tui.__file__).parent / "app.tcss")

    def compose(self) -> ComposeResult:
        yield Select([("prompt", "prompt"), ("chosen", "chosen"), ("rejected", "rejected")], compact=True,
                     id="choice")
        for _ in range(6):
            yield Static("text behind the menu " * 4)


async def test_select_menus_have_a_border_and_hide_what_is_behind() -> None:
    async with SelectApp().run_test(size=SIZE) as pilot:
        select = pilot.app.query_one(Select)
        select.focus()
        select.expanded = True
        await pilot.pause()
        overlay = pilot.app.query_one(SelectOverlay)
        assert overlay.display and overlay.has_class("-textual-compact")
        assert all(edge[0] not in ("", "none", "hidden") for edge in overlay.styles.border)
        assert overlay.styles.background.a == 1  # opaque
        rows = drawn(overlay)
        assert rows[0].startswith("╭") and rows[-1].startswith("╰") and "text behind" not in "".join(rows)


def test_the_live_display_of_a_stopped_run_ends_without_spinner_or_eta() -> None:
    out = StringIO()
    display = LiveDisplay(Console(file=out, force_terminal=True, width=120, color_system=None))
    for event in read_events(FIXTURES / "stopped.jsonl"):
        display.show(event)
    display.close()
    last = out.getvalue().rsplit("\x1b[2K", 1)[-1]  # the final frame
    assert last.startswith("■ stopped") and "eta" not in last and "elapsed 0:02:21" in last
