"""Emulated 780 nm CW pump laser: power setpoint with limits and first-order settling.

The output approaches a new setpoint exponentially with time constant ``settling_time_s / 5`` (so it is
within 1 % after ``settling_time_s``); evaluated in closed form, no SimPy process needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.errors import check_range
from drivers.interfaces.pump import PumpConstraints, PumpLaser, PumpStatus
from emulators.world import PS_PER_S, World


@dataclass(frozen=True)
class PumpParams:
    power_mw: float  # initial setpoint
    min_power_mw: float
    max_power_mw: float
    settling_time_s: float


class EmulatedPump(PumpLaser):
    def __init__(self, world: World, params: PumpParams, name: str = "pump") -> None:
        check_range(name, "power_mw", params.power_mw, params.min_power_mw, params.max_power_mw)
        self.name = name
        self.world = world
        self.params = params
        self._setpoint_mw = params.power_mw
        self._from_mw = params.power_mw
        self._set_at_ps = 0

    def power_mw(self) -> float:
        """True optical output power now, mW."""
        tau_s = self.params.settling_time_s / 5
        if tau_s <= 0:
            return self._setpoint_mw
        elapsed_s = (self.world.now_ps - self._set_at_ps) / PS_PER_S
        return self._setpoint_mw + (self._from_mw - self._setpoint_mw) * math.exp(-elapsed_s / tau_s)

    async def constraints(self) -> PumpConstraints:
        p = self.params
        return PumpConstraints(p.min_power_mw, p.max_power_mw, p.settling_time_s)

    async def status(self) -> PumpStatus:
        return PumpStatus(setpoint_mw=self._setpoint_mw, power_mw=self.power_mw(), emission=True)

    async def set_power(self, power_mw: float) -> None:
        check_range(self.name, "power_mw", power_mw, self.params.min_power_mw, self.params.max_power_mw)
        self._from_mw = self.power_mw()
        self._setpoint_mw = power_mw
        self._set_at_ps = self.world.now_ps
