"""Polarization-controller role: a thermo-optic fibre controller with a few actuators, updated at ~1 Hz."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PolarizationConstraints:
    n_actuators: int
    min_drive_v: float
    max_drive_v: float
    response_time_s: float  # thermal time constant of one actuator


@dataclass(frozen=True)
class PolarizationStatus:
    drives_v: tuple[float, ...]


@runtime_checkable
class PolarizationController(Protocol):
    name: str

    async def constraints(self) -> PolarizationConstraints: ...

    async def status(self) -> PolarizationStatus: ...

    async def set_drives(self, drives_v: tuple[float, ...]) -> None:
        """Set every actuator's drive. Raises SetpointOutOfRange for a drive outside the limits."""
