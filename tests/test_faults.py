"""Fault injection: each fault changes what the stack can see through the driver contracts, then clears."""

from __future__ import annotations

import asyncio

import pytest
from scenario_text import edit

from bench import vtime
from bench.rig import DRIVER_TIMEOUT_S, build_emulated_rig
from bench.scenario import FAULT_ARGUMENTS, Scenario, ScenarioError, parse_scenario
from drivers.errors import DeviceTimeout
from drivers.interfaces import AcquisitionRequest, CoolingState
from emulators.faults import FAULT_KINDS

ACQ_PS = 500_000_000_000


def test_the_schema_and_the_injector_know_the_same_faults() -> None:
    assert set(FAULT_ARGUMENTS) == set(FAULT_KINDS)


def test_a_fault_missing_its_arguments_is_refused_with_its_line() -> None:
    text = edit("acceptance:\n", "faults:\n  - {at_s: 10, kind: clock_unlock, node: bob}\nacceptance:\n")
    with pytest.raises(ScenarioError, match=r"faults\.0: Value error, clock_unlock needs duration_s"):
        parse_scenario(text, "f.yaml")


def test_scheduled_clock_unlock_reports_unlocked_then_relocks(smoke: Scenario) -> None:
    text = edit("acceptance:\n", "faults:\n  - {at_s: 10, kind: clock_unlock, node: bob, duration_s: 30}\n"
                                 "acceptance:\n")
    rig = build_emulated_rig(parse_scenario(text), seed=1)
    clock = rig.clocks["bob"]

    async def main() -> list[bool]:
        seen = []
        for t in (5, 20, 50):
            await asyncio.sleep(t - asyncio.get_running_loop().time())
            seen.append((await clock.status()).locked)
        return seen

    assert vtime.run(main(), rig.env) == [True, False, True]
    assert rig.faults.log[0][1] == "bob clock unlocked for 30 s"


def test_fibre_cut_silences_coincidences_and_detector_warm_up_takes_the_rack_offline(smoke: Scenario) -> None:
    rig = build_emulated_rig(smoke, seed=1)
    c = rig.channels
    request = AcquisitionRequest(ACQ_PS, count_channels=(c.alice_z, c.bob_z))

    async def main():  # type: ignore[no-untyped-def]
        before = await rig.tagger.acquire(request)
        rig.faults.inject("fibre_cut", node="bob", duration_s=10)
        cut = await rig.tagger.acquire(request)
        await asyncio.sleep(10)
        rig.faults.inject("detector_warm_up", node="alice", duration_s=60)
        warm = await rig.tagger.acquire(request)
        state = (await rig.detectors["alice"].status()).state
        return before, cut, warm, state

    before, cut, warm, state = vtime.run(main(), rig.env)
    assert before.count_rates_hz[c.bob_z] > 1e4
    assert cut.count_rates_hz[c.bob_z] < 200  # dark counts only
    assert cut.count_rates_hz[c.alice_z] == pytest.approx(before.count_rates_hz[c.alice_z], rel=0.01)
    assert warm.count_rates_hz[c.alice_z] == 0.0
    assert state is CoolingState.WARM


def test_a_silent_instrument_times_out_naming_itself_then_answers_again(smoke: Scenario) -> None:
    rig = build_emulated_rig(smoke, seed=1)

    async def main() -> float:
        rig.faults.inject("instrument_silent", device="pump", duration_s=20)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(DeviceTimeout, match="pump"):
            await rig.pump.status()
        waited = asyncio.get_running_loop().time() - t0
        await asyncio.sleep(20)
        assert (await rig.pump.status()).emission
        return waited

    assert vtime.run(main(), rig.env) == pytest.approx(DRIVER_TIMEOUT_S)


def test_tagger_overflow_fault_flags_the_acquisitions_it_spans(smoke: Scenario) -> None:
    rig = build_emulated_rig(smoke, seed=1)
    request = AcquisitionRequest(ACQ_PS, count_channels=(rig.channels.alice_z,))

    async def main():  # type: ignore[no-untyped-def]
        rig.faults.inject("tagger_overflow", duration_s=1, buffer_rate_hz=1e6)
        during = await rig.tagger.acquire(request)
        await asyncio.sleep(1)
        after = await rig.tagger.acquire(request)
        return during, after

    during, after = vtime.run(main(), rig.env)
    assert during.overflow and during.missed_events > 0
    assert not after.overflow
