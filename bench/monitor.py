"""Time series of every metric the stack produces, on the event loop's clock, in bounded memory.

A 325 h run records ~2.3 M points per per-acquisition series, so a series is never held whole: each keeps
exact running statistics (count, sum, sum of squares, extremes, last point) and a decimated copy for plots
of at most ``max_points`` points, every ``stride``-th record, where the stride doubles (dropping every other
kept point) each time the copy fills up. Whoever needs every point (a scorer, a file) watches the series.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_POINTS = 4096


@dataclass(slots=True)
class SeriesStats:
    """Running statistics of every value recorded in one series (none dropped by the decimation)."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    last_t_s: float = math.nan
    last: float = math.nan

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def rms(self) -> float:
        return math.sqrt(self.total_sq / self.count) if self.count else math.nan

    @property
    def max_abs(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else math.nan


class AbsQuantiles:
    """Quantiles of |value| over every record of a series, in bounded memory: a histogram of ``bin_width``
    wide bins up to ``limit`` (larger values fall in the last bin, whose quantile reads as ``limit``)."""

    def __init__(self, bin_width: float, limit: float) -> None:
        if not 0 < bin_width < limit:
            raise ValueError(f"need 0 < bin_width < limit, got {bin_width} and {limit}")
        self.bin_width = bin_width
        self.limit = limit
        self._counts = [0] * (math.ceil(limit / bin_width) + 1)  # a list: one is bumped per record
        self._last_bin = len(self._counts) - 1

    def __call__(self, _t_s: float, value: float) -> None:
        self._counts[min(int(abs(value) / self.bin_width), self._last_bin)] += 1

    @property
    def counts(self) -> np.ndarray:
        """Records per bin (int64)."""
        return np.array(self._counts, np.int64)

    @property
    def count(self) -> int:
        return sum(self._counts)

    def quantile(self, q: float) -> float:
        """The smallest bin edge below which at least a fraction ``q`` of |values| lie (nan when empty)."""
        n = self.count
        if n == 0:
            return math.nan
        i = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q * n)))
        return min(self.limit, (i + 1) * self.bin_width)

    def fraction_above(self, threshold: float) -> float:
        """Fraction of |values| at or above ``threshold`` (to a bin)."""
        n = self.count
        return float(self.counts[int(threshold / self.bin_width):].sum() / n) if n else math.nan


class _Series:
    __slots__ = ("stats", "stride", "t_s", "values", "watchers")

    def __init__(self) -> None:
        self.stats = SeriesStats()
        self.t_s: list[float] = []
        self.values: list[float] = []
        self.stride = 1
        self.watchers: list[Callable[[float, float], None]] = []


class Monitor:
    """Named series of (time in s, value): cheap to record, bounded in memory, converted to arrays on read."""

    def __init__(self, max_points: int = DEFAULT_MAX_POINTS) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        self.max_points = max_points
        self._series: dict[str, _Series] = {}
        self.events: list[tuple[float, str]] = []
        self._quantiles: dict[str, AbsQuantiles] = {}

    def _get(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = _Series()
        return series

    def record(self, name: str, t_s: float, value: float) -> None:
        series = self._series.get(name)
        if series is None:
            series = self._get(name)
        s = series.stats
        count = s.count
        if count % series.stride == 0:
            series.t_s.append(t_s)
            series.values.append(value)
            if len(series.t_s) > self.max_points:
                del series.t_s[1::2], series.values[1::2]
                series.stride *= 2
        s.count = count + 1
        s.total += value
        s.total_sq += value * value
        if value < s.min:  # as min() and max() keep the running extremes (a nan never replaces them)
            s.min = value
        if value > s.max:
            s.max = value
        s.last_t_s = t_s
        s.last = value
        for watcher in series.watchers:
            watcher(t_s, value)

    def watch(self, name: str, watcher: Callable[[float, float], None]) -> None:
        """Call ``watcher(t_s, value)`` on every later record of ``name``."""
        self._get(name).watchers.append(watcher)

    def track_quantiles(self, name: str, bin_width: float, limit: float) -> AbsQuantiles:
        """Keep quantiles of |value| of every later record of ``name`` (:meth:`quantiles` reads them)."""
        tracker = self._quantiles[name] = AbsQuantiles(bin_width, limit)
        self.watch(name, tracker)
        return tracker

    def quantiles(self, name: str) -> AbsQuantiles | None:
        return self._quantiles.get(name)

    def event(self, t_s: float, text: str) -> None:
        """A discrete occurrence (sync acquired, sync lost, …) for the timeline."""
        self.events.append((t_s, text))

    def stats(self, name: str) -> SeriesStats:
        series = self._series.get(name)
        return series.stats if series is not None else SeriesStats()

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The decimated series: every point while fewer than ``max_points`` were recorded, else every stride-th."""
        series = self._series.get(name)
        if series is None:
            return np.empty(0), np.empty(0)
        return np.asarray(series.t_s, float), np.asarray(series.values, float)

    def last(self, name: str, default: float = float("nan")) -> float:
        s = self.stats(name)
        return s.last if s.count else default
