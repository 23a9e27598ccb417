"""The dashboard's plot: the bounded metric series, the braille LossPlot widget, and the long-run fixture."""

from __future__ import annotations

import json
import math
import random
from functools import partial

import pytest
from textual.app import App, ComposeResult

from engine.events import read_events, validate_event
from fixtures.events.long_run import START, long_run_events, write_long_run
from tui.format import human_count
from tui.format import short_number as format_value
from tui.series import Bucket, Series
from tui.widgets.loss_plot import LossPlot, PlotLine

format_step = partial(human_count, si=True)  # the x axis's step labels


@pytest.fixture(scope="module")
def long_run() -> list[dict]:
    return long_run_events()


def loss_series(events: list[dict]) -> tuple[Series, Series]:
    train, evals = Series(), Series()
    for e in events:
        if e["type"] == "step":
            train.append(e["step"], e["loss"])
        elif e["type"] == "eval":
            evals.append(e["step"], e["eval_loss"])
    return train, evals


# Series


def random_walk(n: int, seed: int = 1) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    y, points = 0.0, []
    for i in range(n):
        y += rng.gauss(0, 1)
        points.append((float(i * 3), y))  # steps logged every 3
    return points


def check_against_points(series: Series, points: list[tuple[float, float]]) -> None:
    """Every bucket's statistics are exactly those of the points in its x range, and nothing is lost."""
    buckets = series.buckets()
    assert sum(b.count for b in buckets) == len(series) == len(points)
    for earlier, later in zip(buckets, buckets[1:]):
        assert earlier.x1 < later.x0
    for b in buckets:
        ys = [y for x, y in points if b.x0 <= x <= b.x1]
        assert b.count == len(ys)
        assert (b.ymin, b.ymax) == (min(ys), max(ys))
        assert b.ymean == pytest.approx(sum(ys) / len(ys), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("n", [1, 7, 64, 65, 1000, 20_000])
def test_series_stays_bounded_and_exact_per_bucket(n: int) -> None:
    points = random_walk(n)
    series = Series(capacity=64)
    for x, y in points:
        series.append(x, y)
    assert len(series.buckets()) <= 64
    check_against_points(series, points)
    assert series.x_range() == (points[0][0], points[-1][0])
    assert series.y_range() == (min(y for _, y in points), max(y for _, y in points))
    assert series.last == points[-1]


def test_full_series_merges_neighbours_pairwise() -> None:
    series = Series(capacity=8)
    for i in range(9):
        series.append(i, i)
    # 8 single-point buckets merged into 4 pairs, then the ninth point starts a fifth bucket.
    assert [(b.x0, b.x1, b.count) for b in series.buckets()] == [(0, 1, 2), (2, 3, 2), (4, 5, 2), (6, 7, 2),
                                                                 (8, 8, 1)]
    series.append(9, 9)  # fills the fifth bucket to the new width of 2
    assert series.buckets()[-1] == Bucket(8, 9, 8, 9, 17, 2)


def test_capacity_below_two_is_refused() -> None:
    with pytest.raises(ValueError):
        Series(capacity=1)


def test_non_finite_values_are_skipped_and_counted() -> None:
    series = Series()
    series.append(1, 2.0)
    for bad in (math.nan, math.inf, -math.inf):
        series.append(2, bad)
    series.append(math.nan, 1.0)
    assert (len(series), series.skipped, series.last) == (1, 4, (1.0, 2.0))
    series.append(3, 1.5)
    assert series.y_range() == (1.5, 2.0)


def test_going_back_in_x_drops_the_later_points() -> None:
    """A run stopped after logging step 830, resumed from its checkpoint at 800: steps restart at 801."""
    series = Series()  # capacity 2048: one point per bucket, so the drop is exact
    for step in range(1, 831):
        series.append(step, 2.0)
    series.append(801, 1.0)
    assert len(series) == 801
    assert series.x_range() == (1, 801)
    assert series.last == (801, 1.0)
    assert series.y_range(801, 801) == (1.0, 1.0)
    for step in range(802, 900):
        series.append(step, 1.0)
    check_against_points(series, [(s, 2.0) for s in range(1, 801)] + [(s, 1.0) for s in range(801, 900)])


def test_going_back_keeps_a_straddling_bucket_clipped() -> None:
    series = Series(capacity=4)
    for step in range(1, 17):  # 4 buckets of 4: 1-4, 5-8, 9-12, 13-16
        series.append(step, float(step))
    series.append(7, 100.0)
    buckets = series.buckets()
    # 9-12 and 13-16 are gone; 5-8 straddles 7: kept, its statistics untouched, its end clipped to 7.
    assert [(b.x0, b.x1, b.count) for b in buckets] == [(1, 4, 4), (5, 7, 4), (7, 7, 1)]
    assert (buckets[1].ymin, buckets[1].ymax) == (5.0, 8.0)
    assert len(series) == 9
    series.append(0, 3.0)  # back before everything: all gone
    assert [(b.x0, b.count) for b in series.buckets()] == [(0, 1)]


def test_going_back_to_the_start_restores_the_resolution() -> None:
    series = Series(capacity=64)
    for step in range(1, 100_001):
        series.append(step, 1.0)
    points = [(float(step), 1.0 + step) for step in range(1, 41)]
    series.append(*points[0])  # the same series reused for a new run
    assert [(b.x0, b.count) for b in series.buckets()] == [(1, 1)]
    for x, y in points[1:]:
        series.append(x, y)
    assert len(series.buckets()) == 40  # one point a bucket, as in a fresh series
    check_against_points(series, points)


def test_columns_resample_exactly_when_unmerged() -> None:
    points = random_walk(300, seed=4)  # x 0..897
    series = Series()
    for x, y in points:
        series.append(x, y)
    n, x0, x1 = 50, 0.0, 1000.0
    columns = series.columns(x0, x1, n)
    assert len(columns) == n
    for c, column in enumerate(columns):
        ys = [y for x, y in points if min(int((x - x0) / (x1 - x0) * n), n - 1) == c]
        if not ys:
            assert column is None
            continue
        assert column is not None
        assert (column.ymin, column.ymax, column.count) == (min(ys), max(ys), len(ys))
        assert column.ymean == pytest.approx(sum(ys) / len(ys))
    assert columns[-1] is None  # x 900..1000: no data yet


def test_columns_of_merged_buckets_keep_every_extreme() -> None:
    points = random_walk(50_000, seed=2)
    series = Series(capacity=256)
    for x, y in points:
        series.append(x, y)
    columns = series.columns(0, points[-1][0], 100)
    assert all(column is not None for column in columns)
    assert min(c.ymin for c in columns) == min(y for _, y in points)
    assert max(c.ymax for c in columns) == max(y for _, y in points)


def test_columns_edge_cases() -> None:
    series = Series()
    assert series.columns(0, 10, 5) == [None] * 5
    assert series.x_range() is None and series.y_range() is None and series.last is None
    series.append(5, 1.0)
    assert series.columns(5, 5, 3)[0] == Bucket(5, 5, 1.0, 1.0, 1.0, 1)  # zero-width range
    assert series.columns(0, 10, 0) == []
    assert series.columns(6, 10, 4) == [None] * 4
    series.clear()
    assert (len(series), series.skipped, series.buckets()) == (0, 0, [])


# LossPlot


class PlotApp(App):
    def compose(self) -> ComposeResult:
        yield LossPlot()


def plot_text(plot: LossPlot) -> list[str]:
    return [plot.render_line(y).text for y in range(plot.size.height)]


def braille(text: str) -> int:
    return sum(0x2800 < ord(ch) <= 0x28FF for ch in text)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_long_run_plot(long_run: list[dict], size: tuple[int, int]) -> None:
    train, evals = loss_series(long_run)
    async with PlotApp().run_test(size=size) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.set_lines([PlotLine("train", train, "cyan"), PlotLine("eval", evals, "magenta", markers=True)])
        plot.set_x_limit(12_000)
        await pilot.pause()  # a real repaint through the compositor
        lines = plot_text(plot)
    assert len(lines) == size[1] and all(len(line) == size[0] for line in lines)
    legend, body, axis = lines[0], lines[1:-1], lines[-1]
    assert legend.startswith("loss")
    assert f"train {train.last[1]:.4g}" in legend and f"eval {evals.last[1]:.4g}" in legend
    assert sum(braille(line) for line in body) > size[0]  # a curve over the whole width
    labels = [line.split("┤")[0].strip() for line in body if "┤" in line]
    assert len(labels) >= 3
    values = [float(label) for label in labels]
    assert values == sorted(values, reverse=True)  # top to bottom
    assert values[0] >= 2.5 and values[-1] <= 0.9  # the loss falls from ~2.5 to ~0.9
    assert axis.split() == ["0", "6k", "12k"]


async def test_empty_plot_waits(long_run: list[dict]) -> None:
    async with PlotApp().run_test(size=(80, 24)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        assert any("waiting for the first step…" in line for line in plot_text(plot))
        plot.set_lines([PlotLine("train", Series(), "cyan")])
        plot.empty_text = "no steps yet"
        await pilot.pause()
        lines = plot_text(plot)
        assert lines[12].strip() == "no steps yet" and braille("".join(lines)) == 0


async def test_plot_follows_appends_and_x_limit() -> None:
    train = Series()
    async with PlotApp().run_test(size=(80, 24)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.set_lines([PlotLine("train", train, "cyan")])
        plot.set_x_limit(12_000)
        for step in range(1, 101):
            train.append(step, 2.5 - step / 100)
        plot.update_plot()
        await pilot.pause()
        lines = plot_text(plot)
        assert "train 1.5" in lines[0]
        assert lines[-1].split() == ["0", "6k", "12k"]  # the whole run's span, not only what is logged
        # the curve occupies the first 100/12000 of the width: the first cells only
        assert all(braille(line[15:]) == 0 for line in lines[1:-1])
        plot.set_x_limit(None)
        await pilot.pause()
        assert plot_text(plot)[-1].split() == ["0", "50", "100"]


async def test_log_scale_changes_the_drawing(long_run: list[dict]) -> None:
    train, evals = loss_series(long_run)
    async with PlotApp().run_test(size=(80, 24)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.set_lines([PlotLine("train", train, "cyan"), PlotLine("eval", evals, "magenta", markers=True)])
        linear = plot_text(plot)
        plot.log_y = True
        await pilot.pause()
        logarithmic = plot_text(plot)
        assert logarithmic[0] == linear[0] and logarithmic[1:-1] != linear[1:-1]
        # the middle label of a log axis is the geometric, not the arithmetic, middle
        ticks = [[(y, float(line.split("┤")[0])) for y, line in enumerate(lines) if "┤" in line]
                 for lines in (linear, logarithmic)]
        (linear_row, linear_mid), (log_row, log_mid) = (t[len(t) // 2] for t in ticks)
        assert linear_row == log_row and log_mid < linear_mid


async def test_log_scale_skips_non_positive_values() -> None:
    series = Series()
    for x, y in enumerate([-1.0, 0.0, 0.5, 0.25, -3.0, 0.125]):
        series.append(x, y)
    negative = Series()
    negative.append(0, -1.0)
    async with PlotApp().run_test(size=(40, 10)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.set_lines([PlotLine("train", series, "cyan")])
        plot.log_y = True
        await pilot.pause()
        assert braille("".join(plot_text(plot))) > 0
        plot.set_lines([PlotLine("train", negative, "cyan")])
        await pilot.pause()
        assert any("log scale" in line for line in plot_text(plot))


def odd_series() -> dict[str, list[tuple[float, float]]]:
    return {
        "single point": [(0, 1.0)],
        "single point later": [(7, 0.3)],
        "constant": [(x, 0.5) for x in range(50)],
        "zero": [(x, 0.0) for x in range(5)],
        "nan only": [(1, math.nan), (2, math.nan)],
        "huge": [(0, 1e308), (1, -1e308), (2, 1e300)],
        "tiny": [(0, 1e-300), (1, 2e-300)],
        "huge x": [(0, 1.0), (1e300, 2.0)],
        "same x twice": [(3, 1.0), (3, 2.0)],
    }


async def test_odd_data_never_raises() -> None:
    sparse = Series()
    sparse.append(0, 2.0)
    async with PlotApp().run_test(size=(80, 24)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        for size in [(80, 24), (20, 5), (300, 60), (12, 3), (5, 2), (1, 1)]:
            await pilot.resize_terminal(*size)
            await pilot.pause()
            for name, points in odd_series().items():
                series = Series()
                for x, y in points:
                    series.append(x, y)
                for log_y in (False, True):
                    plot.log_y = log_y
                    plot.set_lines([PlotLine("train", series, "cyan"),
                                    PlotLine("eval", sparse, "no-such-colour", markers=True)])
                    lines = plot_text(plot)
                    assert len(lines) == size[1] and all(len(line) == size[0] for line in lines), name
                    if size == (80, 24) and not log_y:
                        assert braille("".join(lines)) > 0, name  # `sparse` at least
            await pilot.pause()  # and once through the compositor


async def test_single_point_is_drawn() -> None:
    series = Series()
    series.append(0, 1.0)
    async with PlotApp().run_test(size=(40, 10)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.set_lines([PlotLine("train", series, "cyan")])
        lines = plot_text(plot)
    assert braille("".join(lines)) == 1 and lines[-1].split() == ["0", "0.5", "1"]
    assert lines[0].startswith("loss  train 1")


async def test_title_and_whole_steps_on_the_axis() -> None:
    series = Series()
    for step in range(200):
        series.append(step, 1.0 / (step + 1))
    async with PlotApp().run_test(size=(40, 10)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.set_lines([PlotLine("train", series, "cyan")])
        plot.title = "eval loss"
        await pilot.pause()
        lines = plot_text(plot)
    assert lines[0].startswith("eval loss  train 0.005")
    assert lines[-1].split() == ["0", "100", "199"]


async def test_theme_variable_styles_resolve() -> None:
    series = Series()
    series.append(1, 1.0)
    series.append(2, 0.5)
    async with PlotApp().run_test(size=(40, 10)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.set_lines([PlotLine("train", series, "$accent")])
        await pilot.pause()
        legend = plot.render_line(0)
        train = next(segment for segment in legend if segment.text.startswith("train"))
        assert train.style is not None and train.style.color is not None


def test_number_formats() -> None:
    assert [format_value(v) for v in (7.6, 0.25, 0.0012345, 1.2e-5, 12345.0, 0, -3.14159, -1.5e-100)] == [
        "7.6", "0.25", "0.00123", "1.2e-5", "1.23e4", "0", "-3.14", "-2e-100"]
    assert all(len(format_value(v)) <= 7 for v in (1e300, -1e-300, 123456789.0, -0.000123456))
    assert [format_step(x) for x in (0, 950, 1000, 2500, 12_000, 120_000, 1_200_000, 3.5)] == [
        "0", "950", "1k", "2.5k", "12k", "120k", "1.2M", "3.5"]


# The long-run fixture


def test_long_run_events_are_valid(long_run: list[dict]) -> None:
    problems = [(i, p) for i, event in enumerate(long_run) for p in validate_event(event)]
    assert problems == []
    types = [e["type"] for e in long_run]
    assert types.count("step") == 12_000 and types.count("eval") == 24 and types.count("checkpoint") == 6
    assert [e["type"] for e in long_run[:4]] == ["status", "log", "status", "run_started"]
    assert long_run[-1]["type"] == "run_finished" and long_run[-1]["status"] == "completed"
    assert long_run[3]["device"] == {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 2}
    times = [e["time"] for e in long_run]
    assert times == sorted(times)


def test_long_run_is_realistic(long_run: list[dict]) -> None:
    steps = [e for e in long_run if e["type"] == "step"]
    assert [s["step"] for s in steps] == list(range(1, 12_001))
    first, last = steps[:200], steps[-1000:]
    assert 2.2 < sum(s["loss"] for s in first) / len(first) < 2.6
    assert 0.85 < sum(s["loss"] for s in last) / len(last) < 0.95
    assert max(s["loss"] for s in steps[1000:]) > 1.8  # a few spikes
    assert steps[-1]["lr"] == 0.0 and max(s["lr"] for s in steps) == pytest.approx(2e-4)
    assert all(0.25 <= s["grad_norm"] for s in steps)
    tokens = [s["tokens"] for s in steps]
    assert tokens == sorted(tokens)
    assert 8500 < sum(s["tokens_per_s"] for s in steps) / len(steps) < 9500
    assert all(s["time"] == pytest.approx(START + s["elapsed"], abs=2e-3) for s in steps)
    gpus = steps[0]["memory"]["gpus"]
    assert [g["index"] for g in gpus] == [0, 1]
    assert isinstance(gpus[0]["used"], int) and gpus[1]["used"] is None
    assert {"name", "used", "total", "allocated", "reserved", "peak"} <= set(gpus[1])
    assert all(s["memory"]["rss_peak"] >= s["memory"]["rss"] for s in steps)
    evals = [e for e in long_run if e["type"] == "eval"]
    assert [e["step"] for e in evals] == list(range(500, 12_001, 500))
    for e in evals:  # eval loss a bit above the train trend
        near = [s["loss"] for s in steps[e["step"] - 100:e["step"]]]
        assert e["eval_loss"] > sorted(near)[len(near) // 2]
    paths = [e["path"] for e in long_run if e["type"] == "checkpoint"]
    assert paths[0].endswith("/checkpoint-2000") and paths[-1].endswith("/checkpoint-12000")


def test_long_run_options_and_determinism(tmp_path) -> None:
    small = long_run_events(1000, eval_every=100, checkpoint_every=0, log_every=10, gpus=1, seed=3)
    assert all(validate_event(e) == [] for e in small)
    assert [e["step"] for e in small if e["type"] == "step"] == list(range(10, 1001, 10))
    assert sum(e["type"] == "checkpoint" for e in small) == 0
    assert len(next(e for e in small if e["type"] == "step")["memory"]["gpus"]) == 1
    assert long_run_events(1000, seed=3) == long_run_events(1000, seed=3) != long_run_events(1000, seed=4)
    path = write_long_run(tmp_path / "events.jsonl", steps=300)
    assert read_events(path) == long_run_events(300)
    assert json.loads(path.read_text().splitlines()[0])["type"] == "status"
