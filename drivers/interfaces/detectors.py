"""Detector-system role: an SNSPD rack (ID281 class) with its cryocooler state."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class CoolingState(enum.Enum):
    """Cryocooler cycle: counts only while COLD; RECYCLING and COOLING are offline windows."""

    COLD = "cold"
    RECYCLING = "recycling"
    COOLING = "cooling"
    WARM = "warm"


@dataclass(frozen=True)
class DetectorConstraints:
    channels: tuple[int, ...]
    max_bias_ua: float


@dataclass(frozen=True)
class DetectorStatus:
    state: CoolingState
    temperature_k: float
    bias_ua: dict[int, float]


@runtime_checkable
class DetectorSystem(Protocol):
    name: str

    async def constraints(self) -> DetectorConstraints: ...

    async def status(self) -> DetectorStatus: ...

    async def set_bias(self, channel: int, bias_ua: float) -> None:
        """Set a channel's bias current. Raises SetpointOutOfRange above max_bias_ua or below 0."""
