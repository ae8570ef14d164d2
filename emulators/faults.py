"""Fault injection: what the scenario layer schedules to make an emulated link fail and recover.

Each fault acts on the emulated devices' hidden state (a clock loses lock, a fibre is cut, a detector rack
warms up, the tagger's buffer chokes, an interferometer's phase jumps, the polarization is scrambled, the
temperature makes an excursion) or on their driver face: :class:`Answering` wraps a device so that, while
it is silenced, every call hangs for the driver's timeout and then raises ``DeviceTimeout`` — what a real
instrument that stops answering looks like to the stack.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from drivers.errors import DeviceTimeout
from emulators.clock import EmulatedRbClock
from emulators.detectors import EmulatedDetectors
from emulators.environment import Environment, Excursion
from emulators.fibre import FibreArm
from emulators.interferometer import EmulatedInterferometer
from emulators.polarization import EmulatedPolarization
from emulators.tagger import EmulatedLinkTagger
from emulators.world import PS_PER_S, World

FAULT_KINDS = ("clock_unlock", "fibre_cut", "detector_warm_up", "tagger_overflow", "instrument_silent",
               "phase_jump", "polarization_scramble", "temperature_excursion", "loss_step")


class Silence:
    """Whether a device answers; silenced until a virtual time."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._until_ps = -1
        self._faces: list[Answering] = []

    def attach(self, face: Answering) -> None:
        """``face`` is told (:meth:`Answering.forget`) whenever the device is silenced."""
        self._faces.append(face)

    def silence(self, duration_s: float) -> None:
        self._until_ps = max(self._until_ps, self._world.now_ps + round(duration_s * PS_PER_S))
        for face in self._faces:
            face.forget()

    @property
    def active(self) -> bool:
        return self._world.now_ps < self._until_ps


class Answering:
    """A device's driver face that stops answering while its :class:`Silence` is active: every coroutine
    method called meanwhile hangs for the driver's timeout and then raises ``DeviceTimeout``.

    The stack makes several device calls per acquisition, so a coroutine method looked up while the device
    answers is the device's own, kept as an instance attribute (later lookups skip :meth:`__getattr__`) until
    the device is silenced; one looked up while it is silenced is a wrapper that checks again when called.
    A method is therefore to be called as soon as it is looked up (as the stack does), not held across a wait."""

    def __init__(self, device: Any, silence: Silence, timeout_s: float) -> None:
        self._device = device
        self._silence = silence
        self._timeout_s = timeout_s
        self.name: str = device.name
        self._kept: list[str] = []  # the device's methods kept as attributes
        silence.attach(self)

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._device, attr)
        if not inspect.iscoroutinefunction(target):
            return target
        silence = self._silence
        if not silence.active:
            self.__dict__[attr] = target
            self._kept.append(attr)
            return target
        timeout_s, name = self._timeout_s, self.name

        async def call(*args: Any, **kwargs: Any) -> Any:
            if silence.active:
                await asyncio.sleep(timeout_s)
                raise DeviceTimeout(name, timeout_s, attr)
            return await target(*args, **kwargs)

        return call

    def __setstate__(self, state: dict[str, Any]) -> None:  # explicit: pickle must not reach __getattr__
        self.__dict__.update(state)

    def forget(self) -> None:
        """The device stops answering: drop the methods kept while it answered."""
        for attr in self._kept:
            del self.__dict__[attr]
        self._kept.clear()


@dataclass
class NodeDevices:
    arm: FibreArm
    clock: EmulatedRbClock
    detectors: EmulatedDetectors
    interferometer: EmulatedInterferometer
    polarization: EmulatedPolarization


class FaultInjector:
    """Applies faults now or at a scheduled virtual time; ``log`` keeps (t_s, description) of each."""

    def __init__(self, world: World, nodes: dict[str, NodeDevices], tagger: EmulatedLinkTagger,
                 environment: Environment, silences: dict[str, Silence]) -> None:
        self.world = world
        self.nodes = nodes
        self.tagger = tagger
        self.environment = environment
        self.silences = silences
        self.log: list[tuple[float, str]] = []

    def schedule(self, at_s: float, kind: str, **kwargs: Any) -> None:
        """Inject ``kind`` (one of FAULT_KINDS) at virtual time ``at_s`` with its keyword arguments."""
        self.world.at(round(at_s * PS_PER_S), partial(self._action(kind), **kwargs))

    def inject(self, kind: str, **kwargs: Any) -> None:
        self._action(kind)(**kwargs)

    def _action(self, kind: str) -> Callable[..., None]:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; faults are {', '.join(FAULT_KINDS)}")
        return getattr(self, kind)

    def _note(self, text: str) -> None:
        self.log.append((self.world.now_ps / PS_PER_S, text))

    def _node(self, node: str) -> NodeDevices:
        if node not in self.nodes:
            raise ValueError(f"no node {node!r}; nodes are {', '.join(self.nodes)}")
        return self.nodes[node]

    # -- the faults -----------------------------------------------------------------------------
    def clock_unlock(self, node: str, duration_s: float) -> None:
        self._node(node).clock.unlock(duration_s)
        self._note(f"{node} clock unlocked for {duration_s:g} s")

    def fibre_cut(self, node: str, duration_s: float) -> None:
        self._node(node).arm.cut(self.world.now_ps, round(duration_s * PS_PER_S))
        self._note(f"{node} fibre cut for {duration_s:g} s")

    def loss_step(self, node: str, delta_db: float) -> None:
        self._node(node).arm.add_loss(delta_db)
        self._note(f"{node} fibre loss {delta_db:+g} dB")

    def detector_warm_up(self, node: str, duration_s: float) -> None:
        self._node(node).detectors.warm_up(duration_s)
        self._note(f"{node} detectors warm for {duration_s:g} s")

    def tagger_overflow(self, duration_s: float, buffer_rate_hz: float) -> None:
        self.tagger.choke(buffer_rate_hz, duration_s)
        self._note(f"tagger buffer limited to {buffer_rate_hz:g} tags/s for {duration_s:g} s")

    def instrument_silent(self, device: str, duration_s: float) -> None:
        if device not in self.silences:
            raise ValueError(f"no device {device!r}; devices are {', '.join(self.silences)}")
        self.silences[device].silence(duration_s)
        self._note(f"{device} stops answering for {duration_s:g} s")

    def phase_jump(self, node: str, delta_rad: float) -> None:
        self._node(node).interferometer.phase_jump(delta_rad)
        self._note(f"{node} interferometer phase jump {delta_rad:+g} rad")

    def polarization_scramble(self, node: str) -> None:
        self._node(node).polarization.scramble()
        self._note(f"{node} polarization scrambled")

    def temperature_excursion(self, duration_s: float, delta_c: float) -> None:
        self.environment.add_excursion(Excursion(self.world.now_ps / PS_PER_S, duration_s, delta_c))
        self._note(f"temperature excursion {delta_c:+g} °C over {duration_s:g} s")
