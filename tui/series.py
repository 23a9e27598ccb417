"""A metric series with bounded memory: the points of a run of any length, kept as at most `capacity` buckets.

A live dashboard appends a point per logged step and redraws a few times a second, for runs of up to millions
of steps. Keeping every point would make each redraw cost grow with the run; instead points fill buckets of
`width` points each and, when all `capacity` buckets are used, neighbouring buckets merge pairwise (the width
doubles). Each bucket keeps its exact min, max, sum and count, so a plot drawn from buckets shows every spike
and the exact mean, whatever the zoom. Appending is O(1) amortised.

Standard library only: the plot widget and the headless follower can both use it.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """Consecutive points: the x of the first and last, and exact statistics of their y."""

    x0: float
    x1: float
    ymin: float
    ymax: float
    ysum: float
    count: int

    @property
    def ymean(self) -> float:
        # Clamped: a sum of huge values can overflow to inf, and rounding can put the mean just outside.
        return min(max(self.ysum / self.count, self.ymin), self.ymax)


class Series:
    """Points (x, y) appended in increasing x, kept as at most `capacity` buckets: when full, neighbouring
    buckets merge pairwise (bucket width doubles), so memory and render cost stay bounded and min/max/mean
    are exact per bucket.

    A non-finite y (NaN, inf: a diverged step) is not stored but counted in `skipped`. An x at or before the
    last one (a stopped run resumed from an earlier checkpoint logs those steps again) first drops the stored
    points with x >= the new x, at bucket granularity: whole buckets starting at or after it go; a bucket
    straddling it is kept, statistics included (a few superseded points may stay in its min/max/mean), its
    x1 clipped to the new x and closed, so the new points start a bucket of their own; the bucket width
    shrinks back to what the remaining points need.
    """

    def __init__(self, capacity: int = 2048) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        # Parallel lists rather than Bucket objects: append touches the last element only, and frozen
        # dataclasses are slow to build a million times.
        self._x0: list[float] = []
        self._x1: list[float] = []
        self._ymin: list[float] = []
        self._ymax: list[float] = []
        self._ysum: list[float] = []
        self._count: list[int] = []
        self._width = 1          # points per bucket before a new one starts
        self._open = False       # whether the last bucket may take more points
        self._total = 0
        self.skipped = 0
        self.last: tuple[float, float] | None = None

    def __len__(self) -> int:
        """The points currently represented (the sum of the buckets' counts)."""
        return self._total

    def append(self, x: float, y: float) -> None:
        x, y = float(x), float(y)
        if not (math.isfinite(x) and math.isfinite(y)):
            self.skipped += 1
            return
        if self.last is not None and x <= self.last[0]:
            self._rewind(x)
        self.last = (x, y)
        self._total += 1
        count = self._count
        if self._open and count[-1] < self._width:
            self._x1[-1] = x
            if y < self._ymin[-1]:
                self._ymin[-1] = y
            if y > self._ymax[-1]:
                self._ymax[-1] = y
            self._ysum[-1] += y
            count[-1] += 1
            return
        if len(count) >= self.capacity:
            self._merge()  # replaces the lists: no local aliases past here
        self._x0.append(x)
        self._x1.append(x)
        self._ymin.append(y)
        self._ymax.append(y)
        self._ysum.append(y)
        self._count.append(1)
        self._open = True

    def _rewind(self, x: float) -> None:
        keep = bisect_left(self._x0, x)  # buckets [keep:] start at or after x
        self._total -= sum(self._count[keep:])
        for values in (self._x0, self._x1, self._ymin, self._ymax, self._ysum, self._count):
            del values[keep:]
        if self._x1 and self._x1[-1] > x:  # straddles x: kept, see the class docstring
            self._x1[-1] = x
        self._open = False
        # Narrow the buckets again to what the points left need, so a run restarted from far back is not
        # drawn at the resolution of its longer past. Uneven bucket widths are fine: each is exact.
        need = max(1, -(-self._total // self.capacity))
        self._width = min(self._width, 1 << (need - 1).bit_length())

    def _merge(self) -> None:
        """Halve the number of buckets by merging neighbours pairwise; the bucket width doubles."""
        x0, x1, ymin, ymax, ysum, count = (self._x0, self._x1, self._ymin, self._ymax, self._ysum,
                                           self._count)
        n = len(count)
        pairs = range(0, n - 1, 2)
        new_x1 = [x1[i + 1] for i in pairs]
        new_min = [min(ymin[i], ymin[i + 1]) for i in pairs]
        new_max = [max(ymax[i], ymax[i + 1]) for i in pairs]
        new_sum = [ysum[i] + ysum[i + 1] for i in pairs]
        new_count = [count[i] + count[i + 1] for i in pairs]
        new_x0 = x0[0:n - 1:2]
        if n % 2:  # an odd one out stays as it is
            new_x0.append(x0[-1])
            new_x1.append(x1[-1])
            new_min.append(ymin[-1])
            new_max.append(ymax[-1])
            new_sum.append(ysum[-1])
            new_count.append(count[-1])
        self._x0, self._x1, self._ymin, self._ymax, self._ysum, self._count = (new_x0, new_x1, new_min,
                                                                               new_max, new_sum, new_count)
        self._width *= 2
        self._open = False

    def buckets(self) -> list[Bucket]:
        return [Bucket(*b) for b in zip(self._x0, self._x1, self._ymin, self._ymax, self._ysum, self._count)]

    def x_range(self) -> tuple[float, float] | None:
        return (self._x0[0], self._x1[-1]) if self._count else None

    def y_range(self, x0: float | None = None, x1: float | None = None) -> tuple[float, float] | None:
        """min and max y over the buckets overlapping [x0, x1] (all when None); None without data there."""
        lo, hi = self._overlapping(x0, x1)
        if lo >= hi:
            return None
        return min(self._ymin[lo:hi]), max(self._ymax[lo:hi])

    def _overlapping(self, x0: float | None, x1: float | None) -> tuple[int, int]:
        """The index range of the buckets that overlap [x0, x1]. Bucket x ranges never overlap and
        increase, so both ends are a bisection away."""
        lo = 0 if x0 is None else bisect_left(self._x1, x0)
        hi = len(self._count) if x1 is None else bisect_right(self._x0, x1, lo)
        return lo, hi

    def columns(self, x0: float, x1: float, n: int) -> list[Bucket | None]:
        """Resample into `n` equal-width x columns over [x0, x1]: per column, a bucket merging every stored
        bucket that overlaps it (so min/max stay exact to bucket granularity); None where there is no data.
        A bucket spanning several columns counts in each. With x1 <= x0 everything at x0 lands in column 0."""
        if n <= 0:
            return []
        lo, hi = self._overlapping(x0, x1)
        if lo >= hi:
            return [None] * n
        span = x1 - x0
        if not (span > 0 and math.isfinite(span)):
            return [self._merged(lo, hi)] + [None] * (n - 1)
        # Column c holds the buckets starting in [left_c, left_c+1) (the last one up to x1 inclusive), found
        # by bisection so the per-bucket work is C-level min/max/sum over slices, plus the bucket straddling
        # in from the left.
        x0s, x1s = self._x0, self._x1
        lefts = [x0 + span * c / n for c in range(n)]
        starts = [lo] + [bisect_left(x0s, left, lo, hi) for left in lefts[1:]] + [hi]
        out: list[Bucket | None] = []
        for c in range(n):
            a, b = starts[c], starts[c + 1]
            if a > lo and x1s[a - 1] >= lefts[c]:
                a -= 1
            out.append(self._merged(a, b) if a < b else None)
        return out

    def _merged(self, a: int, b: int) -> Bucket:
        """Buckets a..b-1 as one."""
        if b - a == 1:
            return Bucket(self._x0[a], self._x1[a], self._ymin[a], self._ymax[a], self._ysum[a], self._count[a])
        return Bucket(self._x0[a], self._x1[b - 1], min(self._ymin[a:b]), max(self._ymax[a:b]),
                      sum(self._ysum[a:b]), sum(self._count[a:b]))
