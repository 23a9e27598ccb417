"""A line plot drawn with braille characters (2 x 4 dots a cell): loss against step, for the dashboard.

Each line is a `tui.series.Series`, already bounded in size, resampled to one bucket per dot column. A column
draws its bucket's min..max dimly (the noise band, spikes included) and its mean brightly, joined to the
previous column's mean so the line stays continuous across gaps (eval every N steps, or fewer points than
columns); a line with a `band` (the reward, with its spread) draws that band too. A cell has one colour, so it
shows one layer only: the thin bright mean line wins over its own dim band, and a later line over an earlier one
(eval over train).

The rendered lines are cached until the data, the size, the theme or `log_y` change, so the compositor may
ask for them as often as it likes; `update_plot` only marks the cache stale.

Layout, top to bottom: the legend (title, then each line's label and last value in its colour), the plot with
y labels on the left, and the x axis (step labels at both ends and the middle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from tui.format import human_count, short_number
from tui.series import Bucket, Series

BRAILLE = 0x2800
# The bit of each dot of a braille cell, by [dot row][dot column].
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
# The bits of dot rows r0..r1 of one dot column of a cell, by [dot column][r0][r1]: a span is drawn a cell at a time.
_SPANS = tuple(tuple(tuple(sum(_DOTS[r][sub] for r in range(r0, r1 + 1)) for r1 in range(4)) for r0 in range(4))
               for sub in range(2))
LABEL_WIDTH = 7  # y labels are at most this wide
MARGIN = 0.05    # of the y span, above and below the data


@dataclass
class PlotLine:
    label: str           # legend text, e.g. "train" / "eval"; "" for the plot's one line: its value alone
    series: Series
    style: str           # a Rich colour or style ("cyan"), or a Textual theme variable ("$accent")
    markers: bool = False  # a sparse series (eval every N steps): a bead at each point, joined with lines
    # The dim band under the line, when not the series' own min..max: per column, from the first series' min to
    # the second's max (reward - reward_std and reward + reward_std); the legend gives its half-width, as ±.
    band: tuple[Series, Series] | None = None


class _Canvas:
    """Braille dots over cols x rows cells, in layers ranked 2k (line k's band) and 2k + 1 (its line).
    A cell shows only its highest-ranked layer, in that layer's colour: a later line hides an earlier one
    (eval drawn over train), and a line's thin mean hides its band rather than merging into a solid block."""

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.width, self.height = cols * 2, rows * 4
        self.layers: dict[int, list[int]] = {}
        self.rank = [-1] * (cols * rows)

    def vline(self, px: int, py0: int, py1: int, rank: int) -> None:
        """Dots in column px from row py0 to py1 (either order), clipped to the canvas."""
        if not 0 <= px < self.width:
            return
        if py0 > py1:
            py0, py1 = py1, py0
        py0, py1 = max(py0, 0), min(py1, self.height - 1)
        col, spans = px >> 1, _SPANS[px & 1]
        bits = self.layers.get(rank)
        if bits is None:
            bits = self.layers[rank] = [0] * (self.cols * self.rows)
        ranks, cols = self.rank, self.cols
        first, last = py0 >> 2, py1 >> 2
        for cy in range(first, last + 1):
            cell = cy * cols + col
            bits[cell] |= spans[py0 & 3 if cy == first else 0][py1 & 3 if cy == last else 3]
            if ranks[cell] < rank:
                ranks[cell] = rank

    def row(self, r: int) -> list[tuple[str, int]]:
        """Row r as runs of (characters, rank) of one rank each; rank -1 for empty cells."""
        runs: list[tuple[str, int]] = []
        chars: list[str] = []
        run_rank = -2
        layers = self.layers
        for index in range(r * self.cols, (r + 1) * self.cols):
            rank = self.rank[index]
            if rank != run_rank:
                if chars:
                    runs.append(("".join(chars), run_rank))
                chars, run_rank = [], rank
            chars.append(chr(BRAILLE + layers[rank][index]) if rank >= 0 else " ")
        if chars:
            runs.append(("".join(chars), run_rank))
        return runs


def _y_bounds(series: list[Series], x0: float, x1: float, log_y: bool) -> tuple[float, float] | None:
    """The y extent (log10 of it with log_y) of the data over [x0, x1], with a margin; None when nothing can
    be drawn. Taken from the buckets, so it does not depend on the plot's width."""
    lo, hi = math.inf, -math.inf
    for s in series:
        if (extent := s.y_range(x0, x1)) is None:
            continue
        ymin, ymax = extent
        if log_y:
            if ymax <= 0:
                continue
            if ymin <= 0:  # skip the non-positive values: the smallest positive one, from a coarse resample
                ymin = min((v for b in s.columns(x0, x1, 256) if b for v in (b.ymin, b.ymean, b.ymax) if v > 0),
                           default=ymax)
            ymin, ymax = math.log10(ymin), math.log10(ymax)
        lo, hi = min(lo, ymin), max(hi, ymax)
    if lo > hi:
        return None
    span = hi / 2 - lo / 2  # halves: hi - lo can overflow for huge values of opposite signs
    pad = span * 2 * MARGIN if span > 0 else (abs(lo) * MARGIN or 0.5)
    new_lo, new_hi = lo - pad, hi + pad
    return (new_lo if math.isfinite(new_lo) else lo), (new_hi if math.isfinite(new_hi) else hi)


class LossPlot(Widget, can_focus=False):
    """Line plots of metric series against step; see the module docstring."""

    DEFAULT_CSS = """
    LossPlot { height: 1fr; width: 1fr; }
    """

    log_y: reactive[bool] = reactive(False)  # log-scale y: loss falls 7.6 -> 0.3, log shows the tail
    title: reactive[str] = reactive("loss")
    empty_text: reactive[str] = reactive("waiting for the first step…")  # shown while no series has data

    def __init__(self, title: str = "loss", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.set_reactive(LossPlot.title, title)
        self.lines: list[PlotLine] = []
        self.x_limit: float | None = None
        self._strips: list[Strip] | None = None
        self._cache_size: Size | None = None

    def set_lines(self, lines: list[PlotLine]) -> None:
        self.lines = list(lines)
        self.update_plot()

    def set_x_limit(self, x_max: float | None) -> None:
        """The x axis spans [0, max(x_max, last x)]: e.g. the run's total steps, so progress shows."""
        self.x_limit = x_max
        self.update_plot()

    def update_plot(self) -> None:
        """Call after appending to the series: marks the drawing stale and schedules a repaint, which the
        compositor coalesces, so calling this for every event costs next to nothing."""
        self._strips = None
        self.refresh()

    def watch_log_y(self) -> None:
        self.update_plot()

    def watch_title(self) -> None:
        self.update_plot()

    def watch_empty_text(self) -> None:
        self.update_plot()

    def notify_style_update(self) -> None:
        super().notify_style_update()  # CSS or theme changed: colours and background with it
        self._strips = None

    def render_line(self, y: int) -> Strip:
        size = self.size
        if self._strips is None or self._cache_size != size:
            self._strips = self._render_strips(size.width, size.height, self.rich_style)
            self._cache_size = size
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return Strip.blank(size.width, self.rich_style)

    # Drawing

    def _style(self, name: str, base: Style) -> Style:
        if name.startswith("$"):
            name = self.app.theme_variables.get(name[1:], "")
        try:
            return base + Style.parse(name)
        except Exception:  # an unknown colour name must not break the dashboard
            return base

    def _render_strips(self, width: int, height: int, base: Style) -> list[Strip]:
        if width <= 0 or height <= 0:
            return []
        blank = Strip.blank(width, base)
        strips = [blank] * height
        dim = base + Style(dim=True)
        ranges = [r for line in self.lines if (r := line.series.x_range()) is not None]
        if not ranges:
            return self._message(strips, self.empty_text, width, dim)

        styles = [self._style(line.style, base) for line in self.lines]
        show_legend, show_axis = height >= 2, height >= 3
        rows = height - show_legend - show_axis
        if show_legend:
            strips[0] = self._legend(width, base, styles)
        if rows <= 0:
            return strips

        limit = self.x_limit if self.x_limit is not None and math.isfinite(self.x_limit) else 0.0
        x_lo = min(0.0, min(r[0] for r in ranges))
        x_hi = max([limit] + [r[1] for r in ranges])
        if not x_hi > x_lo:
            x_hi = x_lo + 1.0

        log_y = self.log_y
        bounds = _y_bounds([s for line in self.lines for s in (line.series, *(line.band or ()))], x_lo, x_hi, log_y)
        if bounds is None:
            return self._message(strips, "no values > 0 for a log scale", width, dim)
        lo, hi = bounds
        half = hi / 2 - lo / 2
        canvas_height = rows * 4

        def value_at(py: float) -> float:  # the y value shown at a dot row
            t = hi - (py / max(canvas_height - 1, 1)) * 2 * half
            return 10.0 ** min(t, 308.0) if log_y else t

        # The labels set the gutter's width, and so the plot's.
        ticks = 5 if rows >= 12 else 3
        tick_rows = sorted({round(i * (rows - 1) / (ticks - 1)) for i in range(ticks)})
        labels = {r: short_number(value_at(r * 4 + 1.5), LABEL_WIDTH) for r in tick_rows}
        gutter = max(map(len, labels.values())) + 1
        if width - gutter < 4:  # too narrow for labels: all plot
            labels, gutter = {}, 0
        canvas = _Canvas(width - gutter, rows)

        def to_py(v: float) -> int | None:
            if log_y:
                if v <= 0:
                    return None
                v = math.log10(v)
            frac = (v / 2 - lo / 2) / half if half > 0 else 0.5
            py = (1.0 - frac) * (canvas.height - 1)
            return 0 if py < 0 else canvas.height - 1 if py >= canvas.height - 1 else round(py)

        for k, line in enumerate(self.lines):
            cols = line.series.columns(x_lo, x_hi, canvas.width)
            band = None if line.band is None else tuple(s.columns(x_lo, x_hi, canvas.width) for s in line.band)
            _draw(canvas, cols, to_py, k, line.markers, band)

        band_styles = [s + Style(dim=True) for s in styles]
        for r in range(rows):
            strips[show_legend + r] = self._plot_row(canvas, r, labels, gutter, base, dim, styles, band_styles,
                                                     width)
        if show_axis:
            strips[height - 1] = self._x_axis(x_lo, x_hi, width, gutter, dim, base)
        return strips

    def _message(self, strips: list[Strip], text: str, width: int, style: Style) -> list[Strip]:
        text = text[:width]
        pad = (width - len(text)) // 2
        strips[len(strips) // 2] = Strip([Segment(" " * pad, style), Segment(text, style)]).adjust_cell_length(
            width, style)
        return strips

    def _legend(self, width: int, base: Style, styles: list[Style]) -> Strip:
        segments = [Segment(self.title, base + Style(bold=True))]
        for line, style in zip(self.lines, styles):
            last = line.series.last
            value = f"{last[1]:.4g}" if last is not None else "–"
            if line.band is not None and (spread := _spread(line.band, last)) is not None:
                value += f" ±{spread:.2g}"
            segments += [Segment("  ", base), Segment(f"{line.label} {value}" if line.label else value, style)]
        return Strip(segments).crop_extend(0, width, base)

    def _plot_row(self, canvas: _Canvas, r: int, labels: dict[int, str], gutter: int, base: Style, dim: Style,
                  styles: list[Style], band_styles: list[Style], width: int) -> Strip:
        segments = []
        if gutter:
            label = labels.get(r)
            segments.append(Segment((label or "").rjust(gutter - 1) + ("┤" if label else "│"), dim))
        segments += [Segment(text, _rank_style(rank, base, styles, band_styles)) for text, rank in canvas.row(r)]
        return Strip(segments).adjust_cell_length(width, base)

    def _x_axis(self, x_lo: float, x_hi: float, width: int, gutter: int, dim: Style, base: Style) -> Strip:
        cols = width - gutter
        axis = [" "] * cols
        left, right = human_count(x_lo, si=True), human_count(x_hi, si=True)
        mid_x = x_lo / 2 + x_hi / 2
        mid = human_count(round(mid_x) if x_hi - x_lo >= 10 else mid_x, si=True)  # steps are whole: 100, not 99.5
        axis[:len(left)] = left
        if len(left) + len(right) < cols:
            axis[cols - len(right):] = right
            at = (cols - len(mid)) // 2
            if at > len(left) + 1 and at + len(mid) < cols - len(right) - 1:
                axis[at:at + len(mid)] = mid
        return Strip([Segment(" " * gutter, base), Segment("".join(axis)[:cols], dim)]).adjust_cell_length(
            width, base)


def _spread(band: tuple[Series, Series], last: tuple[float, float] | None) -> float | None:
    """The band's half-width at the line's `last` point (reward_std at the last step), when the band has it."""
    low, high = band[0].last, band[1].last
    if low is None or high is None or last is None or not low[0] == high[0] == last[0]:
        return None
    return high[1] / 2 - low[1] / 2


def _rank_style(rank: int, base: Style, styles: list[Style], band_styles: list[Style]) -> Style:
    if rank < 0:
        return base
    return styles[rank // 2] if rank % 2 else band_styles[rank // 2]


def _draw(canvas: _Canvas, cols: list[Bucket | None], to_py: Callable[[float], int | None], k: int,
          markers: bool, band: tuple[list[Bucket | None], ...] | None = None) -> None:
    """Line k: each column's min..max as band (rank 2k), the means joined as the line (rank 2k + 1). With `band`
    (the low and high series' columns), a column's band reaches the low's min and the high's max too."""
    band_rank, line_rank = 2 * k, 2 * k + 1
    bottom = canvas.height - 1
    points: list[tuple[int, int]] = []
    for px, b in enumerate(cols):
        if b is None or (mean := to_py(b.ymean)) is None:
            continue
        ymin, ymax = b.ymin, b.ymax
        if band is not None:
            below, above = band[0][px], band[-1][px]
            ymin = min(ymin, below.ymin) if below is not None else ymin
            ymax = max(ymax, above.ymax) if above is not None else ymax
        top, low = to_py(ymax), to_py(ymin)
        low = bottom if low is None else low  # a non-positive min on a log scale: off the bottom
        if top != mean or low != mean:
            canvas.vline(px, mean if top is None else top, low, band_rank)
        points.append((px, mean))
    if not points:
        return
    px, py = points[0]
    canvas.vline(px, py, py, line_rank)
    for (ax, ay), (bx, by) in zip(points, points[1:]):
        # Join a to b: each dot column between them gets the span its stretch of the segment covers,
        # split at half columns so a steep step is shared by both columns around it.
        slope = (by - ay) / (bx - ax)
        for c in range(ax, bx):
            mid = ay + slope * (c + 0.5 - ax)
            canvas.vline(c, round(ay + slope * (c - ax)), round(mid), line_rank)
            canvas.vline(c + 1, round(mid), round(ay + slope * (c + 1 - ax)), line_rank)
    if markers and len(points) * 6 <= canvas.width:  # beads only while they stand ~3 cells apart
        for px, py in points:
            cx, cy = px & ~1, py & ~3  # the whole cell holding the point: a solid bead on a thin line
            canvas.vline(cx, cy, cy + 3, line_rank)
            canvas.vline(cx + 1, cy, cy + 3, line_rank)
