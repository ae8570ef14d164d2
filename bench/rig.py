"""The wiring: the one module that chooses emulated or real devices for a scenario.

Nothing else in ``bench/`` imports ``emulators/`` or a concrete driver. A :class:`Rig` hands the stack
only driver contracts, plus the run's SimPy environment (for the virtual-time loop) and a narrow truth
view used by the report to score the stack against the emulator's hidden state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
import simpy

import drivers.errors
import emulators.world
from bench.scenario import NodeConfig, Scenario
from bench.sifting import LinkChannels
from bench.stack import LinkDevices
from drivers.interfaces import (
    DetectorSystem,
    FrequencyReference,
    PhaseActuator,
    PolarizationController,
    PumpLaser,
    TimeTagger,
)
from emulators.clock import ClockParams, EmulatedRbClock
from emulators.detectors import DetectorParams, EmulatedDetectors
from emulators.environment import Environment, EnvironmentParams, Excursion
from emulators.faults import Answering, FaultInjector, NodeDevices, Silence
from emulators.fibre import FibreArm, FibreParams
from emulators.interferometer import EmulatedInterferometer, InterferometerParams
from emulators.link import LinkPhysics, Node, NodeChannels
from emulators.polarization import EmulatedPolarization, PolarizationParams
from emulators.pump import EmulatedPump, PumpParams
from emulators.source import PairSource, SourceParams
from emulators.tagger import EmulatedLinkTagger, TaggerParams
from emulators.world import PS_PER_S, World

DRIVER_TIMEOUT_S = 5.0  # how long a driver waits for an instrument that stopped answering


@dataclass
class Rig:
    env: simpy.Environment
    tagger: TimeTagger
    pump: PumpLaser
    clocks: dict[str, FrequencyReference]
    detectors: dict[str, DetectorSystem]
    phase_actuators: dict[str, PhaseActuator]
    polarization: dict[str, PolarizationController]
    channels: LinkChannels
    total_loss_db: float
    emulator: EmulatedLinkTagger  # hidden truth: for reports and tests, never for the stack
    faults: FaultInjector  # hidden: the scenario's fault schedule and tests inject through it
    efficiency_truth: dict[str, Callable[[float], float]]  # hidden: node → polarization efficiency factor at t_s
    world: World  # the SimPy environment's owner: pickles without it (checkpoints), resumes on a fresh one

    def devices(self) -> LinkDevices:
        """What the stack may talk to: the driver contracts only."""
        return LinkDevices(self.tagger, self.channels, self.pump, self.phase_actuators, self.polarization,
                           self.clocks, self.detectors)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        del state["env"]  # rebuilt by resume()
        return state

    def resume(self, now_ps: int) -> None:
        """Continue an unpickled rig on a fresh SimPy environment starting at ``now_ps``."""
        self.env = simpy.Environment(initial_time=now_ps)
        self.world.resume(self.env)

    def sync_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """(mid-acquisition time in s, true mean Alice–Bob offset in ps) of the acquisitions in the emulator's
        bounded truth log (the latest ``emulators.tagger.TRUTH_LOG_LENGTH``)."""
        log = self.emulator.truth_log
        t_mid_s = np.array([(a.start_ps + a.end_ps) / 2 / PS_PER_S for a in log])
        return t_mid_s, np.array([a.mean_offset_ps for a in log])


def _temperature_offset_k(environment: Environment, mean_c: float, t_ps: int) -> float:
    return environment.temperature_c(t_ps) - mean_c


def _efficiency_factor(polarization: EmulatedPolarization, t_s: float) -> float:
    return polarization.efficiency_factor(round(t_s * PS_PER_S))


def _node(world: World, name: str, cfg: NodeConfig, environment: Environment) -> Node:
    mean_c = environment.params.mean_temperature_c
    mid_drive_v = (cfg.polarization.min_drive_v + cfg.polarization.max_drive_v) / 2
    return Node(
        name=name,
        arm=FibreArm(FibreParams(**cfg.fibre.model_dump()), partial(_temperature_offset_k, environment, mean_c)),
        detectors=EmulatedDetectors(world, DetectorParams(**cfg.detectors.model_dump()),
                                    tuple(cfg.channels.model_dump().values()), name=f"snspd-{name}"),
        z_fraction=cfg.analyser.z_fraction,
        interferometer=EmulatedInterferometer(
            world, InterferometerParams(**cfg.interferometer.model_dump(), reference_temperature_c=mean_c),
            environment, name=f"umzi-{name}"),
        polarization=EmulatedPolarization(
            world, PolarizationParams(**cfg.polarization.model_dump(), reference_temperature_c=mean_c,
                                      n_actuators=3, initial_drives_v=(mid_drive_v,) * 3),
            environment, name=f"epc-{name}"),
        clock=EmulatedRbClock(world, ClockParams(**cfg.clock.model_dump()), name=f"rb-{name}"),
        channels=NodeChannels(**cfg.channels.model_dump()),
        wavelength_nm=cfg.wavelength_nm,
    )


def build_emulated_rig(scenario: Scenario, seed: int, fidelity: str | None = None) -> Rig:
    """An emulated link, every device seeded from ``seed``, at the scenario's fidelity unless overridden."""
    world = World(seed)
    link_cfg = scenario.link
    env_cfg = link_cfg.environment
    environment = Environment(world, EnvironmentParams(
        env_cfg.mean_temperature_c, env_cfg.diurnal_amplitude_c, env_cfg.diurnal_period_s,
        env_cfg.diurnal_phase_rad))
    for e in env_cfg.excursions:
        environment.add_excursion(Excursion(e.start_s, e.duration_s, e.delta_c))
    pump = EmulatedPump(world, PumpParams(**link_cfg.pump.model_dump()), name="pump")
    source = PairSource(SourceParams(**link_cfg.source.model_dump()), pump, link_cfg.alice.wavelength_nm)
    alice = _node(world, "alice", link_cfg.alice, environment)
    bob = _node(world, "bob", link_cfg.bob, environment)
    for n in (alice, bob):
        n.polarization.align()  # commissioned aligned; drift and faults take it from there
    tagger_params = TaggerParams(**link_cfg.tagger.model_dump())
    physics = LinkPhysics(source, alice, bob, tagger_params.rms_jitter_ps, link_cfg.filter_fwhm_nm)
    tagger = EmulatedLinkTagger(world, physics, tagger_params, fidelity or scenario.fidelity, name="tagger-link")
    channels = LinkChannels(
        alice.channels.z, alice.channels.x_plus, alice.channels.x_minus,
        bob.channels.z, bob.channels.x_plus, bob.channels.x_minus,
    )
    nodes = (alice, bob)
    devices = [tagger, pump] + [d for n in nodes for d in (n.clock, n.detectors, n.interferometer, n.polarization)]
    silences = {d.name: Silence(world) for d in devices}

    def face(device):  # type: ignore[no-untyped-def]
        return Answering(device, silences[device.name], DRIVER_TIMEOUT_S)

    faults = FaultInjector(
        world,
        {n.name: NodeDevices(n.arm, n.clock, n.detectors, n.interferometer, n.polarization) for n in nodes},
        tagger, environment, silences)
    for f in scenario.fault_timeline():
        faults.schedule(f.at_s, f.kind, **f.arguments())
    return Rig(
        env=world.env,
        tagger=face(tagger),
        pump=face(pump),
        clocks={n.name: face(n.clock) for n in nodes},
        detectors={n.name: face(n.detectors) for n in nodes},
        phase_actuators={n.name: face(n.interferometer) for n in nodes},
        polarization={n.name: face(n.polarization) for n in nodes},
        channels=channels,
        total_loss_db=physics.total_loss_db(),
        emulator=tagger,
        faults=faults,
        efficiency_truth={n.name: partial(_efficiency_factor, n.polarization) for n in nodes},
        world=world,
    )


@cache
def source_digest() -> str:
    """SHA-256 (16 hex digits) of the Python sources a run state is made of (bench, emulators, drivers): a
    checkpoint resumes only on the code that wrote it, since its pickle holds objects, not their code."""
    digest = hashlib.sha256()
    # Each root from a module's own file: a stale namespace directory of the same name elsewhere on the path
    # (left by an uninstalled wheel) can shadow a package's __file__, never a module's.
    for module_file in (__file__, emulators.world.__file__, drivers.errors.__file__):
        root = Path(module_file).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


__all__ = ["Rig", "build_emulated_rig", "source_digest"]
