"""Frequency-reference role: a rubidium clock (PRS10 class) that sets a node's timebase."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ClockStatus:
    locked: bool
    frequency_offset_ppt: float  # steering applied, parts in 1e12, as the instrument reports it


@dataclass(frozen=True)
class ClockConstraints:
    max_steer_ppt: float  # |offset| the steering command accepts, parts in 1e12


@runtime_checkable
class FrequencyReference(Protocol):
    name: str

    async def constraints(self) -> ClockConstraints: ...

    async def status(self) -> ClockStatus: ...

    async def steer(self, offset_ppt: float) -> None:
        """Set the fractional frequency offset. Raises SetpointOutOfRange beyond the device's limits."""
