"""The per-acquisition hot paths, made cheaper (issue 6: 325 h in minutes), give what the plain numpy versions
gave, bit for bit: the compiled peak fit and drift fit, the FlatPoisson table, the tagger's merged draws, the
sifting arithmetic, the cached offset, and a device face that keeps its methods while the device answers."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from scipy.special import pdtr

from bench import vtime
from bench.monitor import Monitor
from bench.rig import DRIVER_TIMEOUT_S, Rig
from bench.sifting import sift
from bench.sync import _pairwise_sum, _slope, fit_peak
from drivers.errors import DeviceTimeout
from drivers.interfaces import CoincidenceCounts, CorrelationHistogram, HistogramSpec
from emulators.world import _CELL_BITS, FlatPoisson, _table_cells


def _numpy_fit_peak(hist: CorrelationHistogram, half_width_ps: float) -> tuple[float, float, float, float]:
    """The peak fit as numpy computes it (median, argmax, centroid of the clipped window)."""
    counts = hist.counts.astype(float)
    centres = hist.bin_centres_ps()
    background = float(np.median(counts))
    peak = int(np.argmax(counts))
    half_bins = max(1, math.ceil(half_width_ps / hist.spec.binwidth_ps))
    lo, hi = max(0, peak - half_bins), min(counts.size, peak + half_bins + 1)
    window = counts[lo:hi] - background
    signal = float(window.sum())
    significance = signal / math.sqrt(max(background * (hi - lo), 1.0))
    weights = np.clip(window, 0.0, None)
    total = float(weights.sum())
    centre = float((weights * centres[lo:hi]).sum() / total) if total > 0 else float(centres[peak])
    return centre, significance, signal, background


def _histograms(rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Random histograms: flat backgrounds from 0.01 to 10⁴ per bin with or without a peak, ties, all-equal
    rows, and rows whose counts spread wider than the row is long (the median's fallback)."""
    for case in range(1500):
        n, binwidth = int(rng.integers(1, 3000)), int(rng.integers(1, 2000))
        counts = rng.poisson(10.0 ** rng.uniform(-2, 4), n)
        if case % 3:
            c = int(rng.integers(0, n))
            counts[max(0, c - 20):c + 20] += rng.poisson(10.0 ** rng.uniform(0, 4), counts[max(0, c - 20):c + 20].size)
        if case % 17 == 0:
            counts[:] = rng.integers(0, 3)
        if case % 23 == 0:
            counts = rng.integers(0, 10**7, n)
        yield CorrelationHistogram(HistogramSpec(1, 5, binwidth, n), counts), float(rng.uniform(1, 5000))


def test_the_compiled_peak_fit_is_numpys_bit_for_bit() -> None:
    for hist, half_width_ps in _histograms(np.random.default_rng(11)):
        assert tuple(fit_peak(hist, half_width_ps)) == _numpy_fit_peak(hist, half_width_ps)


def test_the_pairwise_sum_is_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(12)
    for n in [*range(1, 300), 1000, 1025, 4097]:
        values = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 6, n)
        assert _pairwise_sum(values, 0, n) == np.add.reduce(values)


def test_the_drift_fit_over_a_ring_buffer_is_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(13)
    for _ in range(2000):
        n = int(rng.integers(2, 40))
        size, first = n + int(rng.integers(0, 5)), int(rng.integers(0, 40))
        t_s = rng.uniform(0, 1e6) + 0.5 * np.arange(n) + 0.25
        offset_ps = rng.normal(3e5, 1e3) + 7.0 * 0.5 * np.arange(n) + rng.normal(0, 2, n)
        ring_t, ring_d = np.empty(size), np.empty(size)
        ring_t[(first + np.arange(n)) % size] = t_s
        ring_d[(first + np.arange(n)) % size] = offset_ps
        t = t_s - t_s.mean()
        numpy_slope = float((t * (offset_ps - offset_ps.mean())).sum() / (t * t).sum())
        assert _slope(ring_t, ring_d, first % size, n) == numpy_slope


@pytest.mark.parametrize("mean", [0.125, 1.0, 9.875, 13.25, 16.0, 250.5, 4096.0, 1e5])
def test_a_flat_poisson_table_is_the_one_two_searches_give(mean: float) -> None:
    spread = 12.0 * math.sqrt(mean) + 12.0
    k_min = max(0, math.floor(mean - spread))
    cdf = pdtr(np.arange(k_min, math.ceil(mean + spread) + 1), mean)
    edges = np.arange((1 << _CELL_BITS) + 1) / (1 << _CELL_BITS)
    lo = np.searchsorted(cdf, edges[:-1], side="right")
    hi = np.searchsorted(cdf, edges[1:], side="left")
    assert np.array_equal(_table_cells(cdf, k_min), np.where(lo == hi, lo + k_min, -1).astype(np.int32))


def test_counts_drawn_with_a_row_continue_the_same_stream() -> None:
    """The tagger draws the coincidence cells and the channel counts with one row, where it used to draw the
    channel counts in a second call: the same numbers."""
    means = np.array([1.0, 2e7, 13.3, 1.5, 25.6, 17258.0, 8861.0, 399.2, 399.2, 8861.0, 4.3e6, 2.3e6])
    apart_cells, apart_channels, together = np.empty(4, np.int64), np.empty(2, np.int64), np.empty(6, np.int64)
    apart = FlatPoisson(np.random.default_rng(14))
    row_apart = apart.draw(13.3, 1024, -1024.0, 2.0, means, 3, 6, 10.0, 6, apart_cells)
    apart.draw(0.0, 0, 0.0, 1.0, means, 0, 0, 0.0, 10, apart_channels)
    row_together = FlatPoisson(np.random.default_rng(14)).draw(13.3, 1024, -1024.0, 2.0, means, 3, 6, 10.0, 6,
                                                               together)
    assert np.array_equal(row_apart, row_together)
    assert np.array_equal(np.concatenate([apart_cells, apart_channels]), together)


def test_sifting_counts_as_the_matrix_reads() -> None:
    rng = np.random.default_rng(15)
    for _ in range(200):
        c = rng.integers(0, 10**6, (5, 2, 2))
        tally = sift(CoincidenceCounts(None, c))  # type: ignore[arg-type]
        differ = int(c[2].trace() + c[3].trace())
        assert (tally.n_z, tally.errors_z, tally.n_x, tally.errors_x) == (
            int(c[0].sum()), int(c[0, 0, 1] + c[0, 1, 0]), int(c[1].trace() + c[4].trace()) + differ, differ)


def test_running_extremes_are_those_min_and_max_keep() -> None:
    values = (math.nan, 2.0, 0.0, -0.0, math.nan, 7.0, -0.0, -3.0)
    monitor = Monitor()
    low, high = math.inf, -math.inf
    for i, v in enumerate(values):
        monitor.record("x", 0.0, v)
        low, high = min(low, v), max(high, v)
        s = monitor.stats("x")
        assert (str(s.min), str(s.max), s.count) == (str(low), str(high), i + 1)  # str: tells -0.0 from 0.0


def test_the_offset_kept_for_an_instant_is_the_one_computed_afresh(rig: Rig) -> None:
    async def main() -> None:
        link = rig.emulator.link
        await asyncio.sleep(1.25)
        now_ps = rig.emulator.world.now_ps
        kept = link.offset_ps(now_ps)
        await rig.clocks["bob"].steer(3.0)  # a new frequency segment starts now: the phase is continuous
        link.offset_ps(now_ps + 10**9)  # another instant: the kept one goes
        assert link.offset_ps(now_ps) == kept

    vtime.run(main(), rig.env)


def test_a_face_keeps_its_methods_while_the_device_answers_and_times_out_when_silenced(rig: Rig) -> None:
    pump = rig.pump

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert (await pump.status()).emission
        assert "status" in vars(pump)  # kept: the next lookup skips __getattr__
        rig.faults.inject("instrument_silent", device="pump", duration_s=20.0)
        assert "status" not in vars(pump)
        start = loop.time()
        with pytest.raises(DeviceTimeout, match="pump"):
            await pump.status()
        assert loop.time() - start == pytest.approx(DRIVER_TIMEOUT_S)
        await asyncio.sleep(20.0)
        assert (await pump.status()).emission

    vtime.run(main(), rig.env)
