"""Pump-laser role: the 780 nm CW pump whose power sets the SPDC pair rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PumpConstraints:
    min_power_mw: float
    max_power_mw: float
    settling_time_s: float


@dataclass(frozen=True)
class PumpStatus:
    setpoint_mw: float
    power_mw: float  # measured output power
    emission: bool


@runtime_checkable
class PumpLaser(Protocol):
    name: str

    async def constraints(self) -> PumpConstraints: ...

    async def status(self) -> PumpStatus: ...

    async def set_power(self, power_mw: float) -> None:
        """Set the output power. Raises SetpointOutOfRange outside [min_power_mw, max_power_mw]."""
