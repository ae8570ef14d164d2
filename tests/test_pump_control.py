"""The pump optimiser against the emulated 33.5 dB link: it finds and holds QBERz = 4.3 % (seed 000)."""

from __future__ import annotations

import pytest
from link_helpers import centre_on_truth

from bench import vtime
from bench.pump_control import PumpControlSettings, PumpOptimiser
from bench.rig import Rig, build_emulated_rig
from bench.scenario import Scenario
from bench.sifting import SiftedTally, sift
from drivers.interfaces import AcquisitionRequest

ACQ_S = 0.5
CONVERGE_S = 30.0  # the stated bound: a few estimates of ~1 s plus 1 s of pump settling each


def _run(rig: Rig, start_mw: float, seconds: float, loss_step_db: float = 0.0
         ) -> tuple[list[float], SiftedTally, int]:
    """Pump setpoint after every acquisition, the tally of the last 20 s, and the number of updates; Bob's
    fibre takes ``loss_step_db`` more loss halfway through."""
    optimiser = PumpOptimiser(rig.pump, PumpControlSettings())
    spec = rig.channels.coincidence_spec(120, 400)

    async def main() -> tuple[list[float], SiftedTally]:
        await rig.pump.set_power(start_mw)
        powers, last = [], SiftedTally()
        n = round(seconds / ACQ_S)
        for i in range(n):
            if i == n // 2 and loss_step_db:
                rig.faults.inject("loss_step", node="bob", delta_db=loss_step_db)
            await centre_on_truth(rig)  # sync is not under test here
            acquisition = await rig.tagger.acquire(AcquisitionRequest(round(ACQ_S * 1e12), coincidences=spec))
            tally = sift(acquisition.coincidences)
            optimiser.observe(tally, ACQ_S)
            await optimiser.step()
            powers.append((await rig.pump.status()).setpoint_mw)
            if i >= n - round(20.0 / ACQ_S):
                last += tally
        return powers, last

    powers, last = vtime.run(main(), rig.env)
    return powers, last, optimiser.updates


@pytest.mark.parametrize("start_mw", [5.0, 45.0])
def test_the_pump_converges_to_qber_z_4_3_percent_and_holds_it(smoke: Scenario, start_mw: float) -> None:
    rig = build_emulated_rig(smoke, smoke.seed)
    powers, last, _ = _run(rig, start_mw, CONVERGE_S + 20.0)
    settled = powers[round(CONVERGE_S / ACQ_S)]
    assert all(abs(p / settled - 1) < 0.1 for p in powers[round(CONVERGE_S / ACQ_S):])
    assert last.qber_z == pytest.approx(0.043, abs=0.003)
    assert 15.0 < settled < 25.0  # the model's 4.3 % point is 19.2 mW (tests/test_calibration.py)


def test_at_the_target_the_pump_is_left_alone(smoke: Scenario) -> None:
    rig = build_emulated_rig(smoke, smoke.seed)
    _, last, updates = _run(rig, smoke.link.pump.power_mw, 30.0)  # the smoke scenario sits at 4.3 %
    assert updates <= 1
    assert last.qber_z == pytest.approx(0.043, abs=0.003)


def test_a_loss_step_leaves_qber_z_on_target(smoke: Scenario) -> None:
    # Accidentals grow as S_A·S_B ∝ P²·η_A·η_B and true pairs as P·η_A·η_B: the accidental share, hence
    # QBERz, does not depend on either arm's loss, so the pump need not move when the loss steps; only the
    # time to pool an estimate grows (1/η_B: ~6 s here become ~60 s after +10 dB).
    rig = build_emulated_rig(smoke, smoke.seed)
    powers, last, _ = _run(rig, smoke.link.pump.power_mw, 120.0, loss_step_db=10.0)
    before, after = powers[len(powers) // 2 - 1], powers[-1]
    assert after == pytest.approx(before, rel=0.1)
    assert last.qber_z == pytest.approx(0.043, abs=0.003)
    assert rig.faults.log[-1][1] == "bob fibre loss +10 dB"
