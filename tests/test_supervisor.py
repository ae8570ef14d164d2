"""The supervisor against every fault class the emulators inject: each alone, then all in one run. The link
must return to key generation with no manual intervention, and the supervisor's episodes must name each
fault, found from signals alone, with its time to recover (seed 000: "Fault recovery: Automatic detection
and recovery from system failures", "Manual interventions: Zero")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from link_helpers import with_node, without_distillation

from bench import vtime
from bench.monitor import Monitor
from bench.report import SYNC_ERROR_SERIES, score_sync
from bench.rig import build_emulated_rig
from bench.scenario import Scenario
from bench.stack import LinkStack
from bench.supervisor import Episode, Mode, Supervisor, SupervisorSettings
from bench.vtime import PS_PER_S

AT_S = 300.0

# kind, arguments, what the diagnosis says, the bound on its time to recover (s), run length (s)
FAULTS: list[tuple[str, dict[str, Any], str, float, float]] = [
    ("clock_unlock", {"node": "bob", "duration_s": 600.0}, "bob clock unlocked", 600.0 + 15.0, 1200.0),
    ("fibre_cut", {"node": "bob", "duration_s": 600.0}, "counts lost at bob: fibre", 600.0 + 30.0, 1200.0),
    ("detector_warm_up", {"node": "alice", "duration_s": 300.0},
     "counts lost at alice: detectors offline", 300.0 + 600.0 + 30.0, 1500.0),  # warm, then 600 s cool-down
    ("tagger_overflow", {"duration_s": 60.0, "buffer_rate_hz": 5e6}, "tagger overflow", 60.0 + 5.0, 600.0),
    ("instrument_silent", {"device": "tagger-link", "duration_s": 120.0}, "tagger-link not answering",
     120.0 + 15.0, 600.0),
    ("instrument_silent", {"device": "pump", "duration_s": 120.0}, "pump not answering", 120.0 + 65.0, 600.0),
    ("instrument_silent", {"device": "umzi-bob", "duration_s": 120.0}, "umzi-bob not answering",
     120.0 + 65.0, 600.0),
    ("phase_jump", {"node": "bob", "delta_rad": 3.1}, "QBERx", 15.0, 600.0),
    ("polarization_scramble", {"node": "bob"}, "at bob down", 240.0, 900.0),  # the polarization loop's bound
]


def _run(scenario: Scenario, seconds: float, faults: list[tuple[float, str, dict[str, Any]]]
         ) -> tuple[LinkStack, Monitor]:
    rig = build_emulated_rig(scenario, scenario.seed)
    for at_s, kind, arguments in faults:
        rig.faults.schedule(at_s, kind, **arguments)
    monitor = Monitor()
    score_sync(monitor, rig.emulator.true_offset_ps)
    stack = LinkStack(rig.devices(), without_distillation(scenario.stack), monitor)
    try:
        vtime.run(stack.run(seconds), rig.env)
    finally:
        stack.close()
    return stack, monitor


def _found(stack: LinkStack, diagnosis: str, after_s: float) -> Episode:
    matching = [e for e in stack.supervisor.episodes if diagnosis in e.diagnosis and e.start_s >= after_s]
    assert matching, f"no episode '{diagnosis}' in {[e.as_dict() for e in stack.supervisor.episodes]}"
    return matching[0]


@pytest.mark.parametrize(("kind", "arguments", "diagnosis", "bound_s", "seconds"), FAULTS,
                         ids=[f"{k}-{a.get('device', a.get('node', ''))}" for k, a, *_ in FAULTS])
def test_each_fault_alone_is_named_and_recovered_without_intervention(
        smoke: Scenario, kind: str, arguments: dict[str, Any], diagnosis: str, bound_s: float,
        seconds: float) -> None:
    stack, monitor = _run(smoke, seconds, [(AT_S, kind, arguments)])
    sup = stack.supervisor
    episode = _found(stack, diagnosis, AT_S)
    assert episode.start_s <= AT_S + 10.0  # found within one heartbeat
    assert episode.recovery_s is not None and episode.recovery_s <= bound_s, episode.as_dict()
    assert sup.manual_interventions == 0
    assert sup.mode is Mode.KEY
    assert all(e.end_s is not None for e in sup.episodes), [e.as_dict() for e in sup.episodes]
    assert not [e for e in sup.episodes if e.start_s < AT_S]  # nothing before the fault: no false alarms
    assert 0.03 < stack.totals.tally.qber_z < 0.05
    assert stack.totals.tally.qber_x < 0.05
    assert monitor.stats(SYNC_ERROR_SERIES).max_abs < 12.0  # seed 000: "drift within 12 ps"


def test_a_cooling_cycle_is_a_counts_outage_the_link_rides_out(smoke: Scenario) -> None:
    # seed 000: "Automatic restarts: 9 times (including 7 detector cooling cycles)"; here Bob's cryocooler
    # regenerates every 1500 s (600 s recycling + 600 s cool-down offline), the first within the first period.
    scenario = with_node(smoke, "bob", "detectors", recycle_period_s=1500.0)
    stack, _ = _run(scenario, 3000.0, [])
    cycles = [e for e in stack.supervisor.episodes if "counts lost at bob: detectors offline" in e.diagnosis]
    assert len(cycles) >= 1
    for episode in cycles:
        assert episode.recovery_s is not None and episode.recovery_s <= 1200.0 + 30.0
    assert stack.supervisor.automatic_restarts == len(cycles)  # what follows a cycle is part of its restart
    assert stack.supervisor.manual_interventions == 0


def test_a_restart_is_an_outage_with_its_follow_ons() -> None:
    sup = Supervisor(SupervisorSettings(restart_settle_s=60.0, recovery_budget_s=3600.0), Monitor())
    sup.fault(0.0, "counts", "counts lost at bob", "wait")
    sup.clear(1200.0, "counts")
    sup.fault(1203.0, "sync", "sync lost", "reacquire")  # the peak settling after the outage
    sup.clear(1206.0, "sync")
    sup.fault(1250.0, "clock", "bob clock unlocked", "track", link_level=False)  # not the link's
    sup.clear(1280.0, "clock")
    sup.fault(1300.0, "qber_x", "QBERx above", "scan")  # 94 s after: a fault of its own
    sup.clear(1306.0, "qber_x")
    assert [e.follow_on for e in sup.episodes] == [False, True, False, False]
    assert sup.automatic_restarts == 2
    sup.fault(9000.0, "cut", "counts lost at bob: fibre", "wait")
    sup.fault(9001.0, "sync2", "sync lost", "reacquire")  # while the first is still open
    sup.clear(9900.0, "cut")
    sup.check_budget(9001.0 + 3601.0)  # the follow-on outlives the budget: the outage was not automatic
    assert sup.episodes[-1].follow_on and sup.manual_interventions == 1
    assert sup.automatic_restarts == 2


def test_every_fault_in_one_run(smoke: Scenario) -> None:
    schedule, at_s = [], AT_S
    for kind, arguments, _, bound_s, _ in FAULTS:  # each after the last one's recovery bound
        schedule.append((at_s, kind, arguments))
        at_s += bound_s + 100.0
    schedule += [(at_s, "loss_step", {"node": "bob", "delta_db": 3.0}),
                 (at_s + 200.0, "temperature_excursion", {"duration_s": 600.0, "delta_c": 2.0})]
    seconds = at_s + 1500.0
    stack, monitor = _run(smoke, seconds, schedule)
    sup = stack.supervisor
    for (fault_s, _, _), (_, _, diagnosis, bound_s, _) in zip(schedule, FAULTS, strict=False):
        episode = _found(stack, diagnosis, fault_s)
        assert episode.recovery_s is not None and episode.recovery_s <= bound_s, episode.as_dict()
    step = _found(stack, "transmission at bob", at_s)
    assert step.end_s is not None  # a lasting 3 dB loss becomes the new reference
    assert sup.manual_interventions == 0
    assert sup.mode is Mode.KEY
    outages_s = 600.0 + (300.0 + 600.0) + 60.0 + 120.0  # fibre cut, warm-up and cool-down, overflow, silent tagger
    assert stack.totals.key_time_s >= seconds - outages_s - 30.0 * len(schedule)  # ≤ 30 s lost around each fault
    assert monitor.stats(SYNC_ERROR_SERIES).max_abs < 12.0


def test_the_same_stack_runs_on_the_wall_clock(smoke: Scenario) -> None:
    # No wall-clock call in the stack: on an ordinary event loop, with the emulators paced to real time,
    # the unchanged stack boots, acquires sync from photons and generates key within a few seconds.
    rig = build_emulated_rig(smoke, smoke.seed)
    monitor = Monitor()
    stack = LinkStack(rig.devices(), smoke.stack, monitor)  # distils too: the channel's latency on the wall clock
    seconds = 4.0

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await stack.run(until_s=start + seconds)
        return loop.time() - start

    wall0 = vtime.wall_clock_s()
    try:
        elapsed_s = vtime.run(main(), rig.env, virtual=False)
    finally:
        stack.close()
    assert vtime.wall_clock_s() - wall0 >= seconds - 0.5
    assert elapsed_s == pytest.approx(seconds, abs=0.6)
    assert rig.env.now / PS_PER_S == pytest.approx(elapsed_s, abs=0.1)  # the emulators kept real time
    assert stack.supervisor.mode is Mode.KEY
    assert stack.totals.key_time_s > 0 and 0.03 < stack.totals.tally.qber_z < 0.06
