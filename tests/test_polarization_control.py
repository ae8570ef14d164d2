"""Polarization stabilisation against the emulated fibre and SNSPDs: the detection efficiency varies by less
than 3 % through a thermal cycle, and recovers within a stated bound after a scramble (seed 000:
"Stabilization precision: Detection efficiency variation <3%", "1 Hz update frequency")."""

from __future__ import annotations

import numpy as np
import pytest
from link_helpers import with_environment, with_node

from bench import vtime
from bench.polarization_control import PolarizationControlSettings, PolarizationLoop
from bench.rig import build_emulated_rig
from bench.scenario import Scenario
from drivers.interfaces import AcquisitionRequest

RECOVERY_BOUND_S = 240.0  # stated bound: back within 3 % of the best efficiency after a scramble


def _scenario(smoke: Scenario, kelvin_rad: float, swing_c: float, walk: float) -> Scenario:
    scenario = with_node(smoke, "bob", "polarization", rad_per_kelvin=kelvin_rad,
                         birefringence_walk_rad_per_sqrt_s=walk)
    return with_environment(scenario, diurnal_amplitude_c=swing_c, diurnal_period_s=3600.0)

def _run(scenario: Scenario, seconds: float, loop_on: bool = True, scramble_at_s: float | None = None
         ) -> np.ndarray:
    """Bob's true efficiency factor after every second."""
    rig = build_emulated_rig(scenario, scenario.seed)
    truth = rig.emulator.link.nodes["bob"].polarization
    loop = PolarizationLoop(rig.polarization["bob"], PolarizationControlSettings(
        rad_per_v=scenario.link.bob.polarization.rad_per_v))
    channels = rig.channels.bob

    async def main() -> list[float]:
        await loop.start()
        efficiency = []
        for second in range(round(seconds)):
            if scramble_at_s is not None and second == round(scramble_at_s):
                truth.scramble()
            acquisition = await rig.tagger.acquire(AcquisitionRequest(10**12, count_channels=channels))
            if loop_on:
                await loop.update(sum(acquisition.count_rates_hz.values()))
            efficiency.append(truth.efficiency_factor(rig.emulator.world.now_ps))
        return efficiency

    return np.array(vtime.run(main(), rig.env))


def test_efficiency_varies_by_less_than_3_percent_through_a_thermal_cycle(smoke: Scenario) -> None:
    # 1 rad/K over ±5 °C in an hour, plus a birefringence walk: far faster than the seed's 10 h cycle.
    scenario = _scenario(smoke, kelvin_rad=1.0, swing_c=5.0, walk=2e-3)
    # Every second counts, the loop's own trial seconds included; several seeds, as the fibre's start differs.
    free = _run(scenario, 3600.0, loop_on=False)
    assert (free.max() - free.min()) / free.max() > 0.05  # the drift alone would break the bound
    for seed in range(4):
        held = _run(scenario.model_copy(update={"seed": seed}), 3600.0)
        assert (held.max() - held.min()) / held.max() < 0.03, seed


def test_recovery_after_a_scramble_is_bounded(smoke: Scenario) -> None:
    scenario = _scenario(smoke, kelvin_rad=0.0, swing_c=0.0, walk=0.0)
    efficiencies = []
    for seed in range(6):  # a scramble is a random rotation: try several
        efficiencies.append(_run(scenario.model_copy(update={"seed": seed}), 60.0 + RECOVERY_BOUND_S,
                                 scramble_at_s=60.0))
    for eff in efficiencies:
        assert eff[59] == pytest.approx(1.0, abs=0.01)
        assert eff[-30:].min() > 0.97  # within 3 % of the best again, and staying there
