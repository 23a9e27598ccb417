"""The live dashboard of one run: progress, the loss plot (and the reward's, for online RL), learning rate and
grad norm (and KL, the answers' length and how many were cut, for online RL), memory, the log; the header says
where the experiment tracker (`log:`) logs the run.

It only reads the run directory (events.jsonl, train.log) and asks the run for things through files
(engine.control.request), so leaving it, detaching or losing the terminal never touches the run. A worker
thread polls the files and posts one `RunPolled` per change; the screen folds the events into a RunState
and redraws at most REDRAW_INTERVAL apart, however fast events arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from threading import Event

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Sparkline, Static
from textual.worker import get_current_worker

from engine import control, launch
from engine.run_files import LOG_FILE
from tui.format import end_reason, number, shown_path, tracker_lines
from tui.run_follower import RunFollower, RunPolled
from tui.run_state import RunState
from tui.series import Series
from tui.widgets.log_tail import LogTail
from tui.widgets.loss_plot import LossPlot, PlotLine
from tui.widgets.memory_panel import MemoryPanel
from tui.widgets.run_dir_dialog import RunDirDialog
from tui.widgets.run_status import Liveness, RunOutcome, RunStatus, training
from tui.workers import FunnelledWorkers

POLL_INTERVAL = 0.25
REDRAW_INTERVAL = 0.25


@dataclass
class RunUpdated(Message):
    """The follower read something new (events, a changed log, or the process ended)."""

    polled: RunPolled


class SidePanel(Vertical):
    """Memory and the sparklines, sized to this panel: drawn again when its size changes."""

    def on_resize(self) -> None:
        if isinstance(self.screen, DashboardScreen):
            self.screen._draw_side()


# Online RL's (GRPO, RLOO) metrics in the side panel: name in the step event's `metrics`, label, format.
ONLINE_STATS = (("kl", "kl", ".3g"), ("completions/mean_length", "answer length", ".1f"),
                ("completions/clipped_ratio", "cut at max length", ".0%"))


def online_stats(metrics: object) -> list[str]:
    """The side panel's lines for the ONLINE_STATS a step event's `metrics` carries; none for other runs."""
    if not isinstance(metrics, dict):
        return []
    return [f"{label} {number(metrics[name], spec)}" for name, label, spec in ONLINE_STATS if name in metrics]


def spark_values(series: Series, width: int) -> list[float]:
    """The series' mean per column over its whole range, for a Sparkline `width` cells wide."""
    span = series.x_range()
    if span is None or width <= 0:
        return []
    columns = series.columns(span[0], span[1], width)
    return [c.ymean for c in columns if c is not None]


class DashboardScreen(FunnelledWorkers, Screen[None]):
    """s stop (checkpoint, then end) · c checkpoint now · d detach (the run goes on) · o run directory ·
    w back to the wizard · l log-scale loss · e the run's events instead of train.log (and back).
    Stop and checkpoint are offered only while the run is training (not once it has ended)."""

    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("c", "checkpoint", "Checkpoint"),
        Binding("d", "detach", "Detach"),
        Binding("o", "run_dir", "Run dir"),
        Binding("w", "wizard", "Wizard"),
        Binding("l", "log_scale", "Log y", show=False),
        Binding("e", "events", "Events/log", show=False),
    ]
    HORIZONTAL_BREAKPOINTS = [(0, "-small"), (80, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-low"), (24, "-short"), (34, "-tall")]
    COMPACT_BELOW = 80  # columns: a compact footer without the palette key, so every key still shows

    def __init__(self, run_dir: Path, handle: launch.RunHandle | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir).absolute()
        self.handle = handle
        self.state = RunState(self.run_dir)
        self.live = Liveness(alive=handle is not None, reachable=handle is not None)
        self.log_lines: list[str] = []
        self.show_events = False  # the log panel: train.log, or the run's notable events (e)
        self.polls = 0           # RunUpdated messages handled: tests wait on these, never on time
        self.redraws = 0
        self._dirty = True
        self._caught_up = False  # notifications only for what happens while watching, not the history
        self._stop_worker = Event()

    def compose(self) -> ComposeResult:
        yield Header()
        yield RunStatus(id="run-status")
        yield RunOutcome(id="run-outcome")
        with Horizontal(id="dash-middle"):
            with Container(id="dash-plots"):
                yield LossPlot("loss", id="loss-plot")
                yield LossPlot("reward", id="reward-plot")  # shown once a step carries a reward
            with SidePanel(id="dash-side"):
                yield MemoryPanel(id="memory")
                yield Static(id="lr-label", classes="spark-label")
                yield Sparkline([], id="lr-spark")
                yield Static(id="grad-label", classes="spark-label")
                yield Sparkline([], id="grad-spark")
                yield Static(id="online-stats")
        yield LogTail(id="run-log")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = shown_path(self.run_dir)
        plot = self.query_one("#loss-plot", LossPlot)
        self._title_plot()
        self._title_log()
        plot.set_lines([PlotLine("train", self.state.train_loss, "cyan"),
                        PlotLine("eval", self.state.eval_loss, "magenta", markers=True)])
        state = self.state
        self.query_one("#reward-plot", LossPlot).set_lines(
            [PlotLine("", state.reward, "green", band=(state.reward_low, state.reward_high))])
        self.follower = RunFollower(self.run_dir, self.handle)
        self._follow()
        self.set_interval(REDRAW_INTERVAL, self._redraw)
        self._redraw()

    def on_unmount(self) -> None:
        self._stop_worker.set()

    def on_resize(self) -> None:
        footer = self.query_one(Footer)
        small = self.size.width < self.COMPACT_BELOW
        if (footer.compact, footer.show_command_palette) != (small, not small):
            footer.compact, footer.show_command_palette = small, not small
            footer.refresh(recompose=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop and checkpoint leave the footer (and do nothing) once the run has ended or is stopping."""
        if action == "checkpoint":
            return self._can_ask()
        if action == "stop":  # while stopping, s offers to kill the run
            return self._can_ask() or (self.live.stop_requested and self._reachable())
        return True

    def _reachable(self) -> bool:
        return self.handle is not None and self.live.alive and not self.state.finished

    def _can_ask(self) -> bool:
        return self._reachable() and training(self.state, self.live)

    # ------------------------------------------------------------ reading the run

    @work(thread=True, exclusive=True, group="follow")
    def _follow(self) -> None:
        worker = get_current_worker()
        alive = None
        while not worker.is_cancelled and not self._stop_worker.is_set():
            polled = self.follower.poll()
            if not polled.empty or polled.alive != alive or alive is None:
                self.post_message(RunUpdated(polled))
            if not polled.alive and alive is not None:
                # The process is gone and its last events were read in this poll (liveness is taken first).
                break
            alive = polled.alive
            self._stop_worker.wait(POLL_INTERVAL)

    @on(RunUpdated)
    def _updated(self, message: RunUpdated) -> None:
        polled = message.polled
        before = self.state.summary.checkpoint, self.state.summary.status
        could_ask = self._can_ask(), self._reachable()
        self.state.update(polled.events)
        if polled.log is not None:
            self.log_lines = polled.log
        self.live.alive = polled.alive
        if not polled.alive and not self.state.finished:
            self.live.ended_without_event = (end_reason(self.handle) if self.handle is not None else
                                             "no process runs it (it was killed, or the machine restarted)")
        if self._caught_up:
            self._notify_changes(*before)
        self._caught_up = True
        if (self._can_ask(), self._reachable()) != could_ask:
            self.refresh_bindings()  # the run ended: no stop or checkpoint key any more
        self.polls += 1
        self._dirty = True

    def _notify_changes(self, checkpoint: str | None, status: str | None) -> None:
        s = self.state.summary
        # Only the checkpoint asked for here: the ones a run saves on its own (each epoch or save_steps)
        # show on the metrics line, not as a toast over the log every few seconds.
        if s.checkpoint and s.checkpoint != checkpoint and self.live.checkpoint_requested:
            self.live.checkpoint_requested = False
            saved = "checkpoint saved and kept" if self.state.checkpoint_kept else "checkpoint saved"
            self.notify(f"{saved}: {shown_path(s.checkpoint)}")
        if s.status and s.status != status:
            severity = "information" if s.status == "completed" else "warning" if s.status != "failed" else "error"
            self.notify(f"the run has {s.status}", severity=severity)

    # ------------------------------------------------------------ drawing

    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.redraws += 1
        state, live = self.state, self.live
        tracker = tracker_lines(state.tracker)[:1]  # in the header: the run dir, and where the tracker logs it
        self.sub_title = " · ".join([shown_path(self.run_dir), *(t.removeprefix("tracker: ") for t in tracker)])
        self.query_one(RunStatus).show(state, live)
        self.query_one(RunOutcome).show(state, live)
        self.query_one("#loss-plot", LossPlot).set_x_limit(state.summary.total_steps)  # stale too: the series grew
        self.set_class(state.rewarded, "-rewarded")  # app.tcss shows the reward plot
        self.query_one("#reward-plot", LossPlot).set_x_limit(state.summary.total_steps)
        self._draw_side()
        self.query_one(LogTail).show(self._log_lines(), wrap=self.show_events)

    def _draw_side(self) -> None:
        """Memory and the sparklines, for the side panel's size (again whenever that changes)."""
        state = self.state
        side = self.query_one("#dash-side")
        last = state.last_step or {}
        online = online_stats(last.get("metrics"))
        stats = self.query_one("#online-stats", Static)
        stats.display = bool(online)
        stats.update("\n".join(online))
        self.query_one(MemoryPanel).show(state, max(side.size.height - 4 - len(online), 3))
        width = max(side.size.width, 10)
        for name, label, key, series, spec in (("lr", "learning rate", "lr", state.lr, ".2e"),
                                               ("grad", "grad norm", "grad_norm", state.grad_norm, ".3g")):
            self.query_one(f"#{name}-label", Static).update(f"{label} {number(last.get(key), spec)}")
            self.query_one(f"#{name}-spark", Sparkline).data = spark_values(series, width)

    def _log_lines(self) -> list[str]:
        return [text for text, _ in self.state.lines] if self.show_events else self.log_lines

    # ------------------------------------------------------------ keys

    def _run_reachable(self) -> bool:
        if not self._reachable():
            self.notify("the run is not running: there is nothing to ask it", severity="warning")
            return False
        return True

    def action_stop(self) -> None:
        from tui.widgets.confirm import ConfirmDialog

        if not self._run_reachable():
            return
        if self.live.stop_requested:
            self.app.push_screen(ConfirmDialog("The run is saving a checkpoint before it stops. Kill it now "
                                               "instead? It ends at once, without a checkpoint.",
                                               yes="Kill", no="Wait"),
                                 lambda yes: self._kill() if yes else None)
            return
        self.app.push_screen(ConfirmDialog("Stop the run? It saves a checkpoint and ends cleanly; "
                                           f"`llmtune-tui resume {self.run_dir}` continues it later.",
                                           yes="Stop", no="Keep training"),
                             lambda yes: self._request_stop() if yes else None)

    def _request_stop(self) -> None:
        control.request(self.run_dir, "stop")
        self.live.stop_requested = True
        self.refresh_bindings()  # no checkpoint key while it stops
        self._dirty = True
        self.notify("stopping: the run saves a checkpoint at the end of this step, then ends")

    @work(thread=True, group="kill")
    def _kill(self) -> None:
        if self.handle is not None:
            launch.kill(self.handle)

    def action_checkpoint(self) -> None:
        if self._run_reachable():
            control.request(self.run_dir, "checkpoint")
            self.live.checkpoint_requested = True
            self.notify("checkpoint requested: saved after this step, and kept (never rotated away)")

    def action_detach(self) -> None:
        detach = getattr(self.app, "detach", None)
        if detach is not None:
            detach()
        else:
            self.app.exit()

    def action_run_dir(self) -> None:
        copied = True
        try:
            self.app.copy_to_clipboard(str(self.run_dir))
        except Exception:  # a terminal that refuses OSC 52 must not break the dialog
            copied = False
        self.app.push_screen(RunDirDialog(self.run_dir, copied=copied))

    def action_wizard(self) -> None:
        back = getattr(self.app, "back_to_wizard", None)
        if back is not None:
            back(self)

    def action_events(self) -> None:
        self.show_events = not self.show_events
        self._title_log()
        # The events' lines are wrapped (a sampled answer, an error read whole); train.log's are cut, see LogTail.
        self.query_one(LogTail).show(self._log_lines(), to_end=True, wrap=self.show_events)

    def _title_log(self) -> None:
        log = self.query_one(LogTail)
        log.border_title = "events" if self.show_events else LOG_FILE
        log.border_subtitle = f"e: {LOG_FILE}" if self.show_events else "e: events"

    def _title_plot(self) -> None:
        """The scale is state the eye cannot read off the labels: the border says it while it is log."""
        plot = self.query_one("#loss-plot", LossPlot)
        plot.border_title = "log scale" if plot.log_y else ""
        plot.border_subtitle = "l: linear" if plot.log_y else "l: log scale"

    def action_log_scale(self) -> None:
        plot = self.query_one("#loss-plot", LossPlot)
        plot.log_y = not plot.log_y
        self._title_plot()
