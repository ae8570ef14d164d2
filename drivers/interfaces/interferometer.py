"""Interferometer role: the piezo phase actuator of a node's unbalanced Mach–Zehnder (FSR 2.5 GHz)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PhaseActuatorConstraints:
    min_voltage_v: float
    max_voltage_v: float


@dataclass(frozen=True)
class PhaseActuatorStatus:
    voltage_v: float
    temperature_c: float  # interferometer housing temperature


@runtime_checkable
class PhaseActuator(Protocol):
    name: str

    async def constraints(self) -> PhaseActuatorConstraints: ...

    async def status(self) -> PhaseActuatorStatus: ...

    async def set_voltage(self, voltage_v: float) -> None:
        """Drive the piezo. Raises SetpointOutOfRange outside [min_voltage_v, max_voltage_v]."""
