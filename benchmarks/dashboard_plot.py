"""The dashboard's loss plot: appending points to a Series, and redrawing the LossPlot, for runs of 1k to 1M steps.

Run: .venv/bin/python benchmarks/dashboard_plot.py
(target: appends about 1 us a point; a redraw well under 25 ms, a tenth of the redraw interval, at any run
length, since the series keeps at most 2048 buckets: the dashboard redraws a few times a second and must
stay responsive)

A redraw is what the widget does when the compositor asks for its lines after `update_plot()`: resample
each series and draw all rows (the compositor's own work is not counted). Each figure is the median of
several repeats.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from textual.app import App, ComposeResult  # noqa: E402

from tui.series import Series  # noqa: E402
from tui.widgets.loss_plot import LossPlot, PlotLine  # noqa: E402

LENGTHS = (1_000, 10_000, 100_000, 1_000_000)
SIZES = ((80, 12), (200, 30))
EVAL_EVERY = 500


def losses(n: int, seed: int = 0) -> list[tuple[int, float]]:
    """A noisy loss decaying from ~2.5 to ~0.9 over n steps."""
    rng = random.Random(seed)
    return [(step, (0.9 + 1.6 * math.exp(-6 * step / n)) * (1 + 0.05 * rng.gauss(0, 1)))
            for step in range(1, n + 1)]


def time_appends(points: list[tuple[int, float]], repeats: int) -> tuple[float, Series]:
    """Median seconds to append all points to a fresh Series, and the last Series filled."""
    times = []
    for _ in range(repeats):
        series = Series()
        t0 = time.perf_counter()
        for x, y in points:
            series.append(x, y)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), series


class PlotApp(App):
    def compose(self) -> ComposeResult:
        yield LossPlot()


async def time_redraws(lines: list[PlotLine], x_max: int, size: tuple[int, int], repeats: int = 15) -> float:
    """Median seconds for one full redraw of a LossPlot filling a terminal of `size`."""
    async with PlotApp().run_test(size=size) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.set_lines(lines)
        plot.set_x_limit(x_max)
        await pilot.pause()
        assert tuple(plot.size) == size
        times = []
        for i in range(repeats):
            plot.log_y = i % 2 == 1  # alternate, so both scales are in the figure
            plot.update_plot()
            t0 = time.perf_counter()
            for y in range(size[1]):
                plot.render_line(y)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


async def main() -> None:
    print(f"{'points':>9}  {'append total':>12}  {'per point':>9}  "
          + "  ".join(f"{f'redraw {w}x{h}':>14}" for w, h in SIZES))
    for n in LENGTHS:
        points = losses(n)
        append_s, train = time_appends(points, repeats=5 if n <= 100_000 else 3)
        evals = Series()
        for step, loss in points[EVAL_EVERY - 1::EVAL_EVERY]:
            evals.append(step, loss * 1.05)
        lines = [PlotLine("train", train, "cyan"), PlotLine("eval", evals, "magenta", markers=True)]
        redraws = [await time_redraws(lines, n, size) for size in SIZES]
        print(f"{n:>9,}  {append_s * 1e3:>9.1f} ms  {append_s / n * 1e6:>6.2f} us  "
              + "  ".join(f"{r * 1e3:>11.2f} ms" for r in redraws))


if __name__ == "__main__":
    asyncio.run(main())
