"""The wiring: the one module that chooses emulated or real devices for a scenario.

Nothing else in ``bench/`` imports ``emulators/`` or a concrete driver. A :class:`Rig` hands the stack
only driver contracts, plus the run's SimPy environment (for the virtual-time loop) and a narrow truth
view used by the report to score the stack against the emulator's hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from bench.scenario import NodeConfig, Scenario
from bench.sifting import LinkChannels
from drivers.interfaces import DetectorSystem, FrequencyReference, PumpLaser, TimeTagger
from emulators.clock import ClockParams, EmulatedRbClock
from emulators.detectors import DetectorParams, EmulatedDetectors
from emulators.fibre import FibreArm, FibreParams
from emulators.link import AnalyserParams, LinkPhysics, Node, NodeChannels
from emulators.pump import EmulatedPump, PumpParams
from emulators.source import PairSource, SourceParams
from emulators.tagger import EmulatedLinkTagger, TaggerParams
from emulators.world import PS_PER_S, World


@dataclass
class Rig:
    env: simpy.Environment
    tagger: TimeTagger
    pump: PumpLaser
    clocks: dict[str, FrequencyReference]
    detectors: dict[str, DetectorSystem]
    channels: LinkChannels
    total_loss_db: float
    emulator: EmulatedLinkTagger  # hidden truth: for reports and tests, never for the stack

    def sync_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """(mid-acquisition time in s, true mean Alice–Bob offset in ps) of every acquisition so far."""
        log = self.emulator.truth_log
        t_mid_s = np.array([(a.start_ps + a.end_ps) / 2 / PS_PER_S for a in log])
        return t_mid_s, np.array([a.mean_offset_ps for a in log])


def _node(world: World, name: str, cfg: NodeConfig) -> Node:
    return Node(
        name=name,
        arm=FibreArm(FibreParams(**cfg.fibre.model_dump())),
        detectors=DetectorParams(**cfg.detectors.model_dump()),
        analyser=AnalyserParams(**cfg.analyser.model_dump()),
        clock=EmulatedRbClock(world, ClockParams(**cfg.clock.model_dump()), name=f"rb-{name}"),
        channels=NodeChannels(**cfg.channels.model_dump()),
    )


def build_emulated_rig(scenario: Scenario, seed: int) -> Rig:
    """An emulated link at ``stats`` fidelity, every device seeded from ``seed``."""
    if scenario.fidelity != "stats":
        raise NotImplementedError(f"fidelity {scenario.fidelity!r}: only 'stats' is emulated so far")
    world = World(seed)
    link_cfg = scenario.link
    pump = EmulatedPump(world, PumpParams(**link_cfg.pump.model_dump()), name="pump")
    source = PairSource(SourceParams(**link_cfg.source.model_dump()), pump)
    alice = _node(world, "alice", link_cfg.alice)
    bob = _node(world, "bob", link_cfg.bob)
    tagger_params = TaggerParams(**link_cfg.tagger.model_dump())
    physics = LinkPhysics(source, alice, bob, tagger_params.rms_jitter_ps)
    tagger = EmulatedLinkTagger(world, physics, tagger_params, name="tagger-link")
    channels = LinkChannels(
        alice.channels.z, alice.channels.x_plus, alice.channels.x_minus,
        bob.channels.z, bob.channels.x_plus, bob.channels.x_minus,
    )
    detectors = {n.name: EmulatedDetectors(n.detectors, n.channels.all(), name=f"snspd-{n.name}")
                 for n in (alice, bob)}
    return Rig(
        env=world.env,
        tagger=tagger,
        pump=pump,
        clocks={"alice": alice.clock, "bob": bob.clock},
        detectors=detectors,
        channels=channels,
        total_loss_db=physics.total_loss_db(),
        emulator=tagger,
    )


__all__ = ["Rig", "build_emulated_rig"]
