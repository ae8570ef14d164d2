"""The phase lock against the emulated link: it finds the correlated state, follows thermal drift through
piezo range resets, and holds QBERx near the visibility floor (seed 000: "Phase locking: Piezoelectric
phase control based on QBERx minimization", "Average QBERx: 4.7%")."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from link_helpers import centre_on_truth, with_environment, with_node

from bench import vtime
from bench.phase_lock import FringeScan, PhaseLock, PhaseLockSettings
from bench.rig import build_emulated_rig
from bench.scenario import Scenario
from bench.sifting import SiftedTally, sift
from drivers.interfaces import AcquisitionRequest
from drivers.interfaces.interferometer import PhaseActuatorConstraints, PhaseActuatorStatus

ACQ_S = 0.5


def _scenario(smoke: Scenario, phase0_rad: float, kelvin_rad: float = 0.0, swing_c: float = 0.0) -> Scenario:
    scenario = with_node(smoke, "bob", "interferometer", phase0_rad=phase0_rad, phase_per_kelvin_rad=kelvin_rad)
    return with_environment(scenario, diurnal_amplitude_c=swing_c, diurnal_period_s=3600.0)

def _run(scenario: Scenario, seconds: float, lock: bool = True) -> tuple[np.ndarray, PhaseLock]:
    """QBERx of every 10 s window while the lock (or nothing) drives Bob's piezo."""
    rig = build_emulated_rig(scenario, scenario.seed)
    phase_lock = PhaseLock(rig.phase_actuators["bob"], PhaseLockSettings(
        rad_per_v=scenario.link.bob.interferometer.piezo_rad_per_v))
    spec = rig.channels.coincidence_spec(120, 400)

    async def main() -> list[float]:
        if lock:
            await phase_lock.start()
        windows, window = [], SiftedTally()
        for i in range(round(seconds / ACQ_S)):
            await centre_on_truth(rig)  # sync is not under test here
            tally = sift((await rig.tagger.acquire(AcquisitionRequest(round(ACQ_S * 1e12), coincidences=spec)))
                         .coincidences)
            window += tally
            if lock:
                phase_lock.observe(tally)
                await phase_lock.step()
            if (i + 1) % round(10.0 / ACQ_S) == 0:
                windows.append(window.qber_x)
                window = SiftedTally()
        return windows

    return np.array(vtime.run(main(), rig.env)), phase_lock


def test_the_lock_finds_the_correlated_state_from_a_wrong_phase(smoke: Scenario) -> None:
    aligned, _ = _run(_scenario(smoke, 0.0), 60.0, lock=False)
    off, _ = _run(_scenario(smoke, 1.0), 60.0, lock=False)
    locked, _ = _run(_scenario(smoke, 1.0), 120.0)
    floor = aligned.mean()
    assert off.mean() > floor + 0.15  # 1 rad off: (1 − cos 1)/2 ≈ 23 % more errors
    assert locked[-6:].mean() == pytest.approx(floor, abs=0.004)  # the dither's own cost is ~0.2 %
    assert locked[-6:].mean() <= 0.05


def test_the_lock_follows_thermal_drift_through_piezo_resets(smoke: Scenario) -> None:
    # 2 rad/K over a ±5 °C swing: 20 rad peak to peak, more than the piezo's 15 rad (150 V at 0.1 rad/V).
    qber_x, phase_lock = _run(_scenario(smoke, 0.0, kelvin_rad=2.0, swing_c=5.0), 1800.0)
    assert phase_lock.resets >= 1
    assert qber_x.mean() <= 0.05
    assert qber_x.max() < 0.08  # no 10 s window lost to a reset


class _Piezo:
    """A piezo whose fringe has its QBERx minimum at ``minimum_v`` (visibility 99.7 %, 1 % accidentals)."""

    name = "piezo-fake"

    def __init__(self, minimum_v: float, rad_per_v: float) -> None:
        self.minimum_v, self.rad_per_v, self.voltage_v = minimum_v, rad_per_v, 75.0

    async def constraints(self) -> PhaseActuatorConstraints:
        return PhaseActuatorConstraints(0.0, 150.0)

    async def status(self) -> PhaseActuatorStatus:
        return PhaseActuatorStatus(self.voltage_v, 20.0)

    async def set_voltage(self, voltage_v: float) -> None:
        self.voltage_v = voltage_v

    def qber_x(self) -> float:
        return 0.01 + 0.99 * (1 - 0.997 * np.cos(self.rad_per_v * (self.voltage_v - self.minimum_v))) / 2


@pytest.mark.parametrize("offset_steps", [0.0, 0.5, 2.37, 7.5])
def test_fringe_scan_lands_on_the_fitted_minimum_between_its_steps(offset_steps: float) -> None:
    # Eight steps per fringe: the lowest step alone can be π/8 off, +3.8 % of QBERx; the cosine fit is exact.
    settings = PhaseLockSettings(rad_per_v=0.1)
    fringe_v = 2 * np.pi / settings.rad_per_v
    piezo = _Piezo(75.0 - fringe_v / 2 + offset_steps * fringe_v / settings.scan_steps, settings.rad_per_v)
    scan = FringeScan(piezo, settings)

    async def main() -> float:
        await scan.start()
        while True:
            n = settings.scan_bits_per_step
            scan.observe(SiftedTally(n_x=n, errors_x=round(piezo.qber_x() * n)))
            if (best_v := await scan.step()) is not None:
                return best_v

    best_v = asyncio.run(main())
    residual_rad = (settings.rad_per_v * (best_v - piezo.minimum_v) + np.pi) % (2 * np.pi) - np.pi
    assert abs(residual_rad) < 0.02
    assert piezo.qber_x() < 0.016
