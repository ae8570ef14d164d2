"""Pump-power optimisation: hold QBERz at its target (seed 000: "Automatic pump power adjustment based on
optimal QBERz = 4.3%").

With frame-announcement sifting (docs/decisions/0003) QBERz is the accidental share of the Z
coincidences, plus a floor (dark counts, the Gaussian tail one slot away). Accidentals grow as the square
of the pair rate and true coincidences as the pair rate, so the share is proportional to the pump power
P, and transmission cancels out of it. The law is therefore multiplicative:

    P ← P · (target / QBERz)^gain

clamped to ``max_step`` per update and to the laser's limits. Each estimate pools sifted Z bits until it
holds ``min_errors`` errors, so its relative precision is about 1/√min_errors at any loss. It also gives
up after ``max_integration_s`` if that never happens. Within ``deadband_sigmas`` of the target's
statistical error the pump is left alone. Bits counted while the pump settles are not used.
Knows only the pump driver contract and sifted tallies.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from bench.sifting import SiftedTally
from drivers.interfaces.pump import PumpLaser


class PumpControlSettings(BaseModel):
    """Pump optimiser settings; also the ``stack.pump`` section of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="run the optimiser in the stack")
    target_qber_z: float = Field(0.043, gt=0, lt=0.11, description='seed 000: "optimal QBERz = 4.3%"')
    min_errors: int = Field(400, ge=10, description="Z errors pooled per estimate (≈5 % relative precision)")
    max_integration_s: float = Field(120.0, gt=0, description="longest pooling before a decision, s")
    gain: float = Field(0.8, gt=0, le=1, description="fraction of the logarithmic correction applied")
    max_step: float = Field(2.0, gt=1, description="largest factor the power may change by per update")
    deadband_sigmas: float = Field(3.0, ge=0, description="no change within this many standard errors")


class PumpOptimiser:
    """Feeds on sifted tallies; moves the pump when an estimate is ready."""

    def __init__(self, pump: PumpLaser, settings: PumpControlSettings) -> None:
        self.pump = pump
        self.settings = settings
        self._pooled = SiftedTally()
        self._pooled_s = 0.0
        self._settling_left_s = 0.0
        self.updates = 0

    def observe(self, tally: SiftedTally, duration_s: float) -> None:
        """Pool one acquisition's sifted bits (ignored while the pump settles)."""
        if self._settling_left_s > 0:
            self._settling_left_s -= duration_s
            return
        self._pooled += tally
        self._pooled_s += duration_s

    def ready(self) -> bool:
        s = self.settings
        return self._pooled.errors_z >= s.min_errors or (self._pooled_s >= s.max_integration_s
                                                         and self._pooled.n_z > 0)

    async def step(self) -> float | None:
        """If an estimate is ready, set the pump from it and return the new power (mW); else None."""
        if not self.ready():
            return None
        s = self.settings
        tally, self._pooled, self._pooled_s = self._pooled, SiftedTally(), 0.0
        qber = tally.qber_z
        if qber <= 0 or qber >= 0.5:  # no errors yet, or no correlation at all: not the pump's to fix
            return None
        sigma = math.sqrt(s.target_qber_z * (1 - s.target_qber_z) / tally.n_z)
        if abs(qber - s.target_qber_z) <= s.deadband_sigmas * sigma:
            return None
        limits = await self.pump.constraints()
        power_mw = (await self.pump.status()).setpoint_mw
        factor = min(s.max_step, max(1 / s.max_step, (s.target_qber_z / qber) ** s.gain))
        new_mw = min(limits.max_power_mw, max(limits.min_power_mw, power_mw * factor))
        if new_mw == power_mw:
            return None
        await self.pump.set_power(new_mw)
        self._settling_left_s = limits.settling_time_s
        self.updates += 1
        return new_mw
