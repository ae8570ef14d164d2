"""Emulated link physics against analytic expectations; tolerances are k standard errors of the sample."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from link_helpers import centre_on_truth
from scipy.special import erf
from scipy.stats import norm

from bench import vtime
from bench.coincidence import measure
from bench.rig import Rig, build_emulated_rig
from bench.scenario import Scenario
from drivers.errors import DriverError, SetpointOutOfRange
from drivers.interfaces import AcquisitionRequest, CoincidenceSpec, HistogramSpec
from emulators.link import LinkState

K_SIGMA = 5.0
ACQ_PS = 500_000_000_000
T_BIN = 400


def _state(rig: Rig, duration_s: float = 1.0) -> LinkState:
    """The link frozen over ``duration_s`` from now (the slow quantities do not move in a test)."""
    t = rig.emulator.world.now_ps
    return rig.emulator.link.state(t, t + round(duration_s * 1e12))


def _run(rig: Rig, coro):  # type: ignore[no-untyped-def]
    return vtime.run(coro, rig.env)


def _z_spec(rig: Rig) -> CoincidenceSpec:
    c = rig.channels
    return CoincidenceSpec(((c.alice_z, c.bob_z),), window_ps=120, time_bin_ps=T_BIN)


def test_total_loss_is_the_scenarios_33_5_db(rig: Rig) -> None:
    assert rig.total_loss_db == pytest.approx(33.5, abs=0.01)


def test_pair_rate_is_proportional_to_pump_power(rig: Rig) -> None:
    source_rate = rig.emulator.link.source.pair_rate_hz

    async def main() -> tuple[float, float]:
        before = source_rate()
        await rig.pump.set_power((await rig.pump.status()).setpoint_mw / 2)
        await asyncio.sleep(5.0)  # > settling time
        return before, source_rate()

    before, after = _run(rig, main())
    assert after / before == pytest.approx(0.5, rel=1e-6)


def test_expected_z_coincidences_match_closed_form(rig: Rig) -> None:
    link = rig.emulator.link
    state = _state(rig)
    c = rig.channels
    sigma = link.pair_sigma_ps(c.alice_z, c.bob_z)
    expected = state.expected_coincidences(c.alice_z, c.bob_z, 120, T_BIN, 0.0, 0.0)
    true_rate = (state.pair_rate_hz * state.eta["alice"] * state.eta["bob"] * 0.5 * 0.5
                 * state.live(c.alice_z) * state.live(c.bob_z))
    in_window = erf(60 / (sigma * math.sqrt(2)))
    accidental = state.singles_hz(c.alice_z) * state.singles_hz(c.bob_z) * 120e-12
    assert expected.trace() == pytest.approx(true_rate * in_window + accidental, rel=1e-3)
    # Frame-announcement sifting: a true pair errs only if it lands a whole slot (±T ± window/2) away.
    slot_error = norm.cdf(T_BIN + 60, scale=sigma) - norm.cdf(T_BIN - 60, scale=sigma)
    errors = expected[0, 1] + expected[1, 0]
    assert errors == pytest.approx(true_rate * slot_error + accidental, rel=1e-3)
    assert expected[0, 0] == pytest.approx(expected[1, 1])  # the start's slot parity is uniform


def test_sampled_coincidences_scatter_as_poisson_around_the_model(rig: Rig) -> None:
    c = rig.channels
    link = rig.emulator.link

    async def main() -> tuple[np.ndarray, np.ndarray]:
        counts, expected = [], []
        for _ in range(20):
            await centre_on_truth(rig)
            applied = -(await rig.tagger.status()).input_delays_ps[c.bob_z]
            acq = await rig.tagger.acquire(AcquisitionRequest(ACQ_PS, coincidences=_z_spec(rig)))
            truth = rig.emulator.truth_log[-1]
            counts.append(acq.coincidences.counts[0])
            state = link.state(truth.start_ps, truth.end_ps)
            expected.append(state.expected_coincidences(c.alice_z, c.bob_z, 120, T_BIN, truth.offset_start_ps - applied,
                                                        truth.offset_end_ps - applied))
        return np.array(counts).sum(axis=0), np.array(expected).sum(axis=0)

    counts, expected = _run(rig, main())
    assert np.all(np.abs(counts - expected) <= K_SIGMA * np.sqrt(expected))
    qber = (counts[0, 1] + counts[1, 0]) / counts.sum()
    qber_expected = (expected[0, 1] + expected[1, 0]) / expected.sum()
    assert qber == pytest.approx(qber_expected, abs=K_SIGMA * math.sqrt(qber_expected / counts.sum()))


def test_far_from_the_peak_accidentals_fill_both_windows_and_err_half_the_time(rig: Rig) -> None:
    c = rig.channels

    async def main() -> np.ndarray:
        await centre_on_truth(rig, extra_ps=20_000)  # windows 20 ns off the true peak
        acq = await rig.tagger.acquire(AcquisitionRequest(10 * ACQ_PS, coincidences=_z_spec(rig)))
        return acq.coincidences.counts[0]

    counts = _run(rig, main())
    state = _state(rig)
    accidental = state.singles_hz(c.alice_z) * state.singles_hz(c.bob_z) * 120e-12 * 5.0
    assert counts.sum() == pytest.approx(2 * accidental, abs=K_SIGMA * math.sqrt(2 * accidental))
    # Uncorrelated tags fall in the same-slot and the other-slot window alike: a random Z bit.
    errors = (counts[0, 1] + counts[1, 0]) / counts.sum()
    assert errors == pytest.approx(0.5, abs=K_SIGMA * math.sqrt(0.25 / counts.sum()))


def test_x_basis_qber_follows_the_franson_phase(smoke: Scenario) -> None:
    def qber_x(phase_rad: float) -> float:
        bob = smoke.link.bob.model_copy(update={"interferometer": smoke.link.bob.interferometer.model_copy(
            update={"phase0_rad": phase_rad, "drift_rad_per_sqrt_s": 0.0})})
        scenario = smoke.model_copy(update={"link": smoke.link.model_copy(update={"bob": bob})})
        rig = build_emulated_rig(scenario, seed=1)
        state, c = _state(rig), rig.channels
        e = {(a, b): state.expected_coincidences(a, b, 120, T_BIN, 0.0, 0.0).trace()  # central peak
             for a in (c.alice_x_plus, c.alice_x_minus) for b in (c.bob_x_plus, c.bob_x_minus)}
        differ = e[(c.alice_x_plus, c.bob_x_minus)] + e[(c.alice_x_minus, c.bob_x_plus)]
        return differ / sum(e.values())

    assert qber_x(math.pi / 2) == pytest.approx(0.5, abs=1e-4)  # Alice's phase walks ~1e-5 rad in 0.5 s
    assert qber_x(math.pi) > 0.95
    floor = qber_x(0.0)
    assert (1 - 0.997**2) / 2 < floor < 0.05  # visibility floor plus accidentals


def test_histogram_peaks_at_the_true_offset(rig: Rig) -> None:
    c = rig.channels
    spec = HistogramSpec(c.alice_z, c.bob_z, binwidth_ps=2, n_bins=1024)

    async def main() -> tuple[np.ndarray, np.ndarray, float]:
        await centre_on_truth(rig, extra_ps=137)
        acq = await rig.tagger.acquire(AcquisitionRequest(ACQ_PS, histograms=(spec,)))
        return acq.histograms[0].counts, acq.histograms[0].bin_centres_ps(), rig.emulator.truth_log[-1].mean_offset_ps

    counts, centres, _ = _run(rig, main())
    background = np.median(counts)
    window = np.abs(centres - 137) < 100
    signal = counts[window] - background
    centroid = (signal * centres[window]).sum() / signal.sum()
    sigma = rig.emulator.link.pair_sigma_ps(c.alice_z, c.bob_z)
    assert centroid == pytest.approx(137, abs=K_SIGMA * sigma / math.sqrt(signal.sum()) + 1.0)


def test_raw_tags_agree_with_the_stats_model(rig: Rig) -> None:
    c = rig.channels
    duration_ps = 10_000_000_000  # 10 ms

    async def main():  # type: ignore[no-untyped-def]
        await centre_on_truth(rig)
        return await rig.tagger.read_tags(duration_ps)

    block = _run(rig, main())
    state = _state(rig, duration_ps / 1e12)
    assert block.timestamps_ps.dtype == np.int64
    assert np.all(np.diff(block.timestamps_ps) >= 0)
    for ch in (c.alice_z, c.alice_x_plus, c.bob_z, c.bob_x_minus):
        n = int((block.channels == ch).sum())
        expected = state.singles_hz(ch) * state.duration_s
        assert n == pytest.approx(expected, abs=K_SIGMA * math.sqrt(expected))
    # The stack's coincidence finder on the raw stream versus the stats model's expectation.
    found = measure(block, AcquisitionRequest(duration_ps, coincidences=_z_spec(rig))).coincidences.counts[0].sum()
    expected = state.expected_coincidences(c.alice_z, c.bob_z, 120, T_BIN, 0.0, 0.0).sum()
    assert found == pytest.approx(expected, abs=K_SIGMA * math.sqrt(expected))


def test_clocks_drift_apart_at_7_ps_per_s(rig: Rig) -> None:
    async def main() -> float:
        t0 = rig.emulator.world.now_ps
        d0 = rig.emulator.link.offset_ps(t0)
        await asyncio.sleep(100.0)
        return (rig.emulator.link.offset_ps(rig.emulator.world.now_ps) - d0) / 100.0

    rate = _run(rig, main())
    # white FM 2e-12 at 1 s on each clock: the 100 s mean rate scatters by ~2e-12·√2/√100 s → 0.3 ps/s
    assert rate == pytest.approx(-7.0, abs=K_SIGMA * 0.3)


def test_steering_a_clock_changes_its_rate_and_limits_are_enforced(rig: Rig) -> None:
    clock = rig.clocks["bob"]

    async def main() -> float:
        await clock.steer(7.0)  # cancels Bob's −3.5e-12 and Alice's +3.5e-12 on the difference
        t0 = rig.emulator.world.now_ps
        d0 = rig.emulator.link.offset_ps(t0)
        await asyncio.sleep(100.0)
        assert (await clock.status()).frequency_offset_ppt == 7.0
        with pytest.raises(SetpointOutOfRange, match="rb-bob"):
            await clock.steer(1e6)
        return (rig.emulator.link.offset_ps(rig.emulator.world.now_ps) - d0) / 100.0

    assert _run(rig, main()) == pytest.approx(0.0, abs=K_SIGMA * 0.3)


def test_bad_requests_name_the_device(rig: Rig) -> None:
    async def main() -> None:
        with pytest.raises(SetpointOutOfRange, match="tagger-link"):
            await rig.tagger.set_input_delay(rig.channels.bob_z, 10**13)
        with pytest.raises(DriverError, match="tagger-link: no channel 42"):
            await rig.tagger.acquire(AcquisitionRequest(ACQ_PS, histograms=(HistogramSpec(1, 42, 2, 64),)))
        with pytest.raises(SetpointOutOfRange, match="pump"):
            await rig.pump.set_power(-1.0)
        with pytest.raises(SetpointOutOfRange, match="snspd-alice"):
            await rig.detectors["alice"].set_bias(rig.channels.alice_z, 1e3)

    _run(rig, main())


def test_overflow_is_flagged_and_counted(smoke: Scenario) -> None:
    tagger_cfg = smoke.link.tagger.model_copy(update={"buffer_rate_hz": 1e6})
    scenario = smoke.model_copy(update={"link": smoke.link.model_copy(update={"tagger": tagger_cfg})})
    rig = build_emulated_rig(scenario, seed=3)

    async def main():  # type: ignore[no-untyped-def]
        acq = await rig.tagger.acquire(AcquisitionRequest(ACQ_PS, count_channels=(rig.channels.alice_z,)))
        return acq, await rig.tagger.status()

    acq, status = _run(rig, main())
    assert acq.overflow and acq.missed_events > 0
    assert status.overflows == 1 and status.missed_events == acq.missed_events


def test_same_seed_same_tags_different_seed_different_tags(smoke: Scenario) -> None:
    def tags(seed: int) -> np.ndarray:
        rig = build_emulated_rig(smoke, seed)
        return vtime.run(rig.tagger.read_tags(1_000_000_000), rig.env).timestamps_ps

    assert np.array_equal(tags(5), tags(5))
    assert not np.array_equal(tags(5), tags(6))
