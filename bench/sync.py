"""Clock synchronisation from the photons alone: find, then track, the Alice–Bob time offset.

The offset Δ is Bob's minus Alice's timestamp for the two photons of a pair (propagation difference plus
clock phase difference). Acquisition finds Δ within ±1 ms from the raw Z tags (:mod:`bench.acquisition`)
or, optionally on a tagger with on-device measurements, from a coarse ±1.07 ms histogram of 1 ns bins
whose peak must stand out of the flat accidental background; a picosecond histogram then confirms it.
On a tagger without on-device measurements every histogram is counted from raw tags by the stack's own
coincidence finder (:mod:`bench.coincidence`; the choice is made in :class:`Readout` alone). Tracking (seed 000:
"Coincidence histogram computed every 0.5 seconds with 4 ps precision") takes the background-subtracted
centroid of each 0.5 s histogram, fits the drift rate over the recent estimates, and moves Bob's input
delays to where the peak will be during the next acquisition. A peak that stays insignificant for a few
acquisitions means sync is lost. Both fits run compiled (numba) on every histogram, and give numpy's results
bit for bit (tests/test_hot_paths.py).
"""

from __future__ import annotations

import asyncio
import math
from typing import Literal, NamedTuple

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, Field

from bench.acquisition import PS_PER_S, SyncAcquisitionFailed, acquire_offset
from bench.coincidence import measure
from bench.sifting import LinkChannels
from drivers.interfaces.tagger import (
    Acquisition,
    AcquisitionRequest,
    CorrelationHistogram,
    EventType,
    HistogramSpec,
    TagBlock,
    TaggerConstraints,
    TimeTagger,
)


class SyncSettings(BaseModel):
    """Sync loop settings; also the ``stack.sync`` section of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    acquisition_s: float = Field(0.5, gt=0, description="integration per histogram, s (seed 000: 0.5 s)")
    coarse_binwidth_ps: int = Field(1024, ge=1, description="bin width of the acquisition histogram, ps")
    coarse_n_bins: int = Field(1 << 21, ge=16, description="bins of the acquisition histogram (±1.07 ms)")
    fine_binwidth_ps: int = Field(2, ge=1, description="bin width of the tracking histogram, ps")
    fine_n_bins: int = Field(1024, ge=16, description="bins of the tracking histogram (±1.02 ns)")
    peak_half_width_ps: int = Field(80, ge=1, description="centroid window around the peak, ± ps")
    min_significance: float = Field(8.0, gt=0, description="peak significance to count as found, σ")
    lost_after: int = Field(4, ge=1, description="consecutive weak histograms before sync is lost")
    acquisition: Literal["tags", "histogram"] = Field("tags", description=(
        "how Δ is found with no prior: 'tags', from raw Z tags (bench.acquisition; any tagger), or"
        " 'histogram', from the ±1.07 ms coarse histogram (taggers with on-device measurements only; at the"
        " emulator's pairs fidelity it would sample ~10¹⁰ accidentals)"))
    max_acquire_attempts: int = Field(6, ge=1, description="attempts, each doubling integration")
    max_tags_s: float = Field(2.0, gt=0, description=(
        "longest integration of one raw-tag acquisition attempt (no on-device measurements), s"))
    drift_history: int = Field(20, ge=2, description="offset estimates in the drift-rate fit")


class PeakFit(NamedTuple):
    centre_ps: float  # background-subtracted centroid, relative to the histogram's zero
    significance: float  # (window counts − background) / √background
    signal_counts: float
    background_per_bin: float


def fit_peak(hist: CorrelationHistogram, half_width_ps: float) -> PeakFit:
    """Locate the highest bin (the first of equals), then centroid the background-subtracted counts within
    ±half_width_ps; the background per bin is the median bin."""
    spec = hist.spec
    return PeakFit(*_fit_peak(np.ascontiguousarray(hist.counts, dtype=np.int64), spec.binwidth_ps,
                              max(1, math.ceil(half_width_ps / spec.binwidth_ps))))


@njit(cache=True)
def _fit_peak(counts: np.ndarray, binwidth_ps: int, half_bins: int) -> tuple[float, float, float, float]:
    """:func:`fit_peak` of the counts (int64) of bins of ``binwidth_ps``. A window count less the median is a
    half-integer and a bin centre (i − n/2 + ½)·binwidth, so every sum below adds exact multiples of ¼ far
    below 2⁵³: its value does not depend on the order of the terms, and equals numpy's pairwise sum."""
    n = counts.size
    background = _median(counts)
    peak = 0
    for i in range(1, n):
        if counts[i] > counts[peak]:
            peak = i
    lo, hi = max(0, peak - half_bins), min(n, peak + half_bins + 1)
    signal = total = moment = 0.0
    for i in range(lo, hi):
        excess = counts[i] - background
        signal += excess
        if excess > 0.0:
            total += excess
            moment += excess * ((i - n // 2 + 0.5) * binwidth_ps)
    significance = signal / math.sqrt(max(background * (hi - lo), 1.0))
    centre = moment / total if total > 0.0 else (peak - n // 2 + 0.5) * binwidth_ps
    return centre, significance, signal, background


@njit(cache=True)
def _median(values: np.ndarray) -> float:
    """The median of integer ``values`` as ``np.median`` gives it (the mean of the two middle ones for an even
    count), by counting: a histogram's bins mostly hold a narrow range of counts."""
    n = values.size
    low = values.min()
    tally = np.zeros(n + 1, np.int64)  # how many values equal low, low + 1, …, low + n − 1; then the rest
    for v in values:
        tally[min(v - low, n)] += 1
    lower_rank, upper_rank = (n - 1) // 2, n // 2
    seen = 0
    lower = 0.0
    for k in range(n):
        seen += tally[k]
        if seen > lower_rank and seen - tally[k] <= lower_rank:
            lower = float(low + k)
        if seen > upper_rank:
            return (lower + float(low + k)) / 2.0
    return np.median(values.astype(np.float64))  # the middle lies n or more above the lowest value


@njit(cache=True)
def _block_sum(values: np.ndarray, first: int, n: int) -> float:
    """Σ values[first:first + n], n ≤ 128, as numpy adds such a block: eight running sums, then the rest."""
    if n < 8:
        total = 0.0
        for i in range(first, first + n):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[first], values[first + 1], values[first + 2], values[first + 3]
    r4, r5, r6, r7 = values[first + 4], values[first + 5], values[first + 6], values[first + 7]
    i = first + 8
    end = first + n - n % 8
    while i < end:
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < first + n:
        total += values[i]
        i += 1
    return total


@njit(cache=True)
def _pairwise_sum(values: np.ndarray, first: int, n: int) -> float:
    """Σ values[first:first + n] in numpy's order (pairwise summation, as ``np.add.reduce`` adds a contiguous
    float64 array), so the sum is bit for bit numpy's: a range of more than 128 is the sum of its halves (the
    first rounded down to a multiple of 8). The recursion runs on explicit stacks: numba cannot cache a
    recursive function."""
    if n <= 128:
        return _block_sum(values, first, n)
    ranges = np.empty((128, 3), np.int64)  # to do: (first, n, 1 when its halves' sums are on ``sums``)
    sums = np.empty(128)
    ranges[0, 0], ranges[0, 1], ranges[0, 2] = first, n, 0
    todo, done = 1, 0
    while todo:
        todo -= 1
        f, m, halves_done = ranges[todo, 0], ranges[todo, 1], ranges[todo, 2]
        if halves_done:
            done -= 1
            sums[done - 1] += sums[done]
        elif m <= 128:
            sums[done] = _block_sum(values, f, m)
            done += 1
        else:
            half = m // 2
            half -= half % 8
            ranges[todo, 2] = 1
            ranges[todo + 1, 0], ranges[todo + 1, 1], ranges[todo + 1, 2] = f + half, m - half, 0
            ranges[todo + 2, 0], ranges[todo + 2, 1], ranges[todo + 2, 2] = f, half, 0
            todo += 3
    return sums[0]


@njit(cache=True)
def _slope(t: np.ndarray, d: np.ndarray, first: int, n: int) -> float:
    """Least-squares slope of the ``n`` points (t, d) of two ring buffers from ``first`` on, computed as
    numpy computes Σ(t − t̄)(d − d̄) / Σ(t − t̄)² (same order, same result)."""
    size = t.size
    dt, dd = np.empty(n), np.empty(n)
    for i in range(n):
        dt[i] = t[(first + i) % size]
        dd[i] = d[(first + i) % size]
    t_mean = _pairwise_sum(dt, 0, n) / n
    d_mean = _pairwise_sum(dd, 0, n) / n
    for i in range(n):
        dt[i] -= t_mean
        dd[i] = dt[i] * (dd[i] - d_mean)
    cross = _pairwise_sum(dd, 0, n)
    for i in range(n):
        dt[i] *= dt[i]
    return cross / _pairwise_sum(dt, 0, n)


class Readout:
    """The one place that chooses how a request is measured: ``tagger.acquire`` when the tagger offers
    on-device measurements, else :func:`bench.coincidence.measure` on the raw tags of the same interval."""

    def __init__(self, tagger: TimeTagger) -> None:
        self.tagger = tagger
        self._constraints: TaggerConstraints | None = None

    async def constraints(self) -> TaggerConstraints:
        if self._constraints is None:  # fixed for the tagger's lifetime: asked once
            self._constraints = await self.tagger.constraints()
        return self._constraints

    async def acquire(self, request: AcquisitionRequest) -> Acquisition:
        constraints = self._constraints
        if constraints is None:
            constraints = await self.constraints()
        if constraints.measurements:
            return await self.tagger.acquire(request)
        return measure(await self.read_tags(request.duration_ps), request)

    async def read_tags(self, duration_ps: int) -> TagBlock:
        """``duration_ps`` of raw tags, in consecutive blocks no longer than the tagger serves."""
        longest = (await self.constraints()).max_tag_block_ps
        blocks = []
        while duration_ps > 0:
            blocks.append(await self.tagger.read_tags(min(duration_ps, longest)))
            duration_ps -= longest
        if len(blocks) == 1:
            return blocks[0]
        return TagBlock(*(np.concatenate([getattr(b, f) for b in blocks])
                          for f in ("timestamps_ps", "channels", "event_types", "missed_events")))


def _stamps(block: TagBlock, channel: int) -> np.ndarray:
    return block.timestamps_ps[(block.channels == channel) & (block.event_types == EventType.TIME_TAG)]


class _Estimates:
    """The latest ``size`` offset estimates (loop time s, offset ps), oldest first, in two ring buffers."""

    def __init__(self, size: int) -> None:
        self.t_s = np.empty(size)
        self.offset_ps = np.empty(size)
        self.first = 0
        self.count = 0
        self.last: tuple[float, float] | None = None

    def append(self, t_s: float, offset_ps: float) -> None:
        size = self.t_s.size
        i = (self.first + self.count) % size
        self.t_s[i] = t_s
        self.offset_ps[i] = offset_ps
        if self.count < size:
            self.count += 1
        else:
            self.first = (self.first + 1) % size
        self.last = (t_s, offset_ps)

    def clear(self) -> None:
        self.first = self.count = 0
        self.last = None

    def slope(self) -> float:
        """Least-squares slope of offset over time, ps/s (0 until there are two)."""
        return float(_slope(self.t_s, self.offset_ps, self.first, self.count)) if self.count >= 2 else 0.0


class SyncTracker:
    def __init__(self, tagger: TimeTagger, channels: LinkChannels, settings: SyncSettings) -> None:
        self.tagger = tagger
        self.readout = Readout(tagger)
        self.channels = channels
        self._bob_channels = channels.bob
        self.settings = settings
        self.locked = False
        self.applied_ps = 0  # offset compensated by Bob's input delays now
        self._history = _Estimates(settings.drift_history)
        self._weak = 0
        self.last_fit: PeakFit | None = None

    @property
    def fine_spec(self) -> HistogramSpec:
        s = self.settings
        return HistogramSpec(self.channels.alice_z, self.channels.bob_z, s.fine_binwidth_ps, s.fine_n_bins)

    @property
    def estimate_ps(self) -> float | None:
        last = self._history.last
        return last[1] if last is not None else None

    def drift_ps_per_s(self) -> float:
        """Slope of the recent offset estimates (0 until there are two)."""
        return self._history.slope()

    def predict_ps(self, t_s: float) -> float:
        last = self._history.last
        if last is None:
            return float(self.applied_ps)
        t_last, d_last = last
        return d_last + self._history.slope() * (t_s - t_last)

    async def compensate(self, offset_ps: float) -> None:
        """Delay Bob's channels so that an offset of ``offset_ps`` appears at zero."""
        self.applied_ps = applied_ps = round(offset_ps)
        set_input_delay = self.tagger.set_input_delay
        for ch in self._bob_channels:
            await set_input_delay(ch, -applied_ps)

    async def _histogram(self, spec: HistogramSpec, duration_s: float) -> tuple[CorrelationHistogram, float]:
        """One histogram and the loop time of its mid-point."""
        acq = await self.readout.acquire(AcquisitionRequest(round(duration_s * PS_PER_S), histograms=(spec,)))
        return acq.histograms[0], asyncio.get_running_loop().time() - duration_s / 2

    async def acquire(self) -> PeakFit:
        """Find the offset with no prior knowledge; leaves the tracker locked."""
        s = self.settings
        self._history.clear()
        self._weak = 0
        await self.compensate(0)
        if s.acquisition == "histogram" and (await self.readout.constraints()).measurements:
            await self.compensate(await self._coarse_offset_ps())
        else:
            await self.compensate(await self._offset_from_tags_ps())
        fine, t_mid_s = await self._histogram(self.fine_spec, s.acquisition_s)
        estimate = self.update(fine, t_mid_s)
        fit = self.last_fit
        assert fit is not None
        if estimate is None:
            raise SyncAcquisitionFailed(f"offset found but fine peak only {fit.significance:.1f} σ")
        self.locked = True
        return fit

    async def _coarse_offset_ps(self) -> float:
        """Δ to ~the coarse bin width from a ±1.07 ms on-device histogram (needs no input delays applied)."""
        s = self.settings
        coarse = HistogramSpec(self.channels.alice_z, self.channels.bob_z, s.coarse_binwidth_ps, s.coarse_n_bins)
        duration_s = s.acquisition_s
        for _ in range(s.max_acquire_attempts):
            hist, _ = await self._histogram(coarse, duration_s)
            fit = fit_peak(hist, s.coarse_binwidth_ps)
            if fit.significance >= s.min_significance:
                break
            duration_s *= 2
        else:
            range_us = s.coarse_n_bins // 2 * s.coarse_binwidth_ps / 1e6
            raise SyncAcquisitionFailed(
                f"no coincidence peak above {s.min_significance:g} σ within ±{range_us:g} µs "
                f"after {s.max_acquire_attempts} attempts (last {fit.significance:.1f} σ)")
        return fit.centre_ps

    async def _offset_from_tags_ps(self) -> float:
        """Δ to a few ps from raw Z tags (needs no input delays applied), predicted to the middle of the
        next ``acquisition_s``; each failed attempt doubles the integration, up to ``max_tags_s``."""
        s = self.settings
        duration_s = s.acquisition_s
        for attempt in range(s.max_acquire_attempts):
            duration_s = min(duration_s, s.max_tags_s)
            block = await self.readout.read_tags(round(duration_s * PS_PER_S))
            bob = _stamps(block, self.channels.bob_z)
            try:
                found = acquire_offset(_stamps(block, self.channels.alice_z), bob)
            except SyncAcquisitionFailed as exc:
                if attempt == s.max_acquire_attempts - 1:
                    raise SyncAcquisitionFailed(f"{exc} after {s.max_acquire_attempts} attempts") from exc
                duration_s *= 2
                continue
            ahead_s = (int(bob[-1]) - found.reference_ps) / PS_PER_S + s.acquisition_s / 2  # now − reference
            return found.offset_ps + found.drift_ps_per_s * ahead_s
        raise AssertionError("unreachable")

    def update(self, hist: CorrelationHistogram, t_mid_s: float) -> float | None:
        """Take one tracking histogram measured around ``applied_ps``, mid-acquisition at ``t_mid_s``.

        Returns the new offset estimate in ps, or None when the peak was too weak to use (``last_fit``
        holds the fit either way).
        """
        s = self.settings
        fit = self.last_fit = fit_peak(hist, s.peak_half_width_ps)
        if fit.significance < s.min_significance:
            self._weak += 1
            if self._weak >= s.lost_after:
                self.locked = False
            return None
        self._weak = 0
        estimate = self.applied_ps + fit.centre_ps
        self._history.append(t_mid_s, estimate)
        return estimate
