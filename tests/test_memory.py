"""Memory stays flat however long the run (issue 3): nothing recorded per acquisition is held for the whole run,
yet the run's figures stay exact."""

from __future__ import annotations

import numpy as np
import pytest
from link_helpers import without_distillation

from bench import vtime
from bench.monitor import Monitor
from bench.report import SYNC_ERROR_SERIES, score_sync, sync_errors_ps
from bench.rig import Rig
from bench.scenario import Scenario
from bench.stack import LinkStack
from emulators.tagger import TRUTH_LOG_LENGTH


def _run_stack(rig: Rig, smoke: Scenario, monitor: Monitor, seconds: float) -> None:
    score_sync(monitor, rig.emulator.true_offset_ps)
    stack = LinkStack(rig.devices(), without_distillation(smoke.stack), monitor)

    async def main() -> None:
        await stack.run(until_s=seconds)

    try:
        vtime.run(main(), rig.env)
    finally:
        stack.close()


def test_monitor_keeps_exact_statistics_and_a_bounded_decimated_series() -> None:
    values = np.random.default_rng(1).normal(3.0, 2.0, 10_000)
    monitor = Monitor(max_points=64)
    watched: list[float] = []
    monitor.watch("x", lambda _t, v: watched.append(v))
    for i, v in enumerate(values.tolist()):
        monitor.record("x", 0.5 * i, v)
    t, kept = monitor.series("x")
    assert 32 <= t.size <= 65
    stride = round((t[1] - t[0]) / 0.5)
    assert np.array_equal(kept, values[::stride])  # every stride-th record, from the first
    stats = monitor.stats("x")
    assert stats.count == values.size and watched == values.tolist()
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.rms == pytest.approx(np.sqrt(np.mean(values**2)), rel=1e-12)
    assert stats.max_abs == np.abs(values).max()
    assert monitor.last("x") == values[-1] and np.isnan(monitor.last("unknown"))


def test_streamed_sync_error_equals_the_error_matched_afterwards(rig: Rig, smoke: Scenario) -> None:
    monitor = Monitor()
    _run_stack(rig, smoke, monitor, 60.0)
    errors = sync_errors_ps(monitor, *rig.sync_truth())
    streamed = monitor.stats(SYNC_ERROR_SERIES)
    assert streamed.count == errors.size > 100
    assert streamed.rms == pytest.approx(np.sqrt(np.mean(errors**2)), rel=1e-12)
    assert streamed.max_abs == pytest.approx(np.abs(errors).max(), rel=1e-12)


def test_a_long_run_retains_a_bounded_number_of_entries(rig: Rig, smoke: Scenario) -> None:
    monitor = Monitor(max_points=256)
    _run_stack(rig, smoke, monitor, 2100.0)  # ~4200 acquisitions
    acquisitions = monitor.stats("sync.offset_ps").count
    assert acquisitions > TRUTH_LOG_LENGTH
    assert len(rig.emulator.truth_log) == TRUTH_LOG_LENGTH
    assert monitor.stats(SYNC_ERROR_SERIES).count == acquisitions
    assert monitor.stats(SYNC_ERROR_SERIES).rms <= 12.0
    for name in ("sync.offset_ps", "sync.significance", SYNC_ERROR_SERIES, "qber_z", "secret_key_rate_bps"):
        assert monitor.series(name)[0].size <= monitor.max_points + 1, name
    assert len(monitor.events) < 10


def test_quantiles_of_absolute_values_hold_to_a_bin_in_bounded_memory() -> None:
    values = np.random.default_rng(2).normal(0.0, 3.0, 100_000)
    monitor = Monitor(max_points=64)
    tracker = monitor.track_quantiles("x", 0.05, 50.0)
    for i, v in enumerate(values.tolist()):
        monitor.record("x", i, v)
    assert monitor.quantiles("x") is tracker and tracker.count == values.size
    for q in (0.5, 0.99, 0.999):
        exact = np.quantile(np.abs(values), q)
        assert exact <= tracker.quantile(q) <= exact + 0.05 + 1e-9
    assert tracker.fraction_above(6.0) == pytest.approx(np.mean(np.abs(values) >= 6.0), abs=1e-3)
    tracker(0.0, 1e6)  # beyond the limit: counted in the last bin, read as the limit
    assert tracker.quantile(1.0) == 50.0
