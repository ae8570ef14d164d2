"""Phase lock of a Franson interferometer: piezo control that minimises QBERx (seed 000: "Phase locking:
Piezoelectric phase control based on QBERx minimization").

QBERx as a function of the sum phase δ (zero at the correlated state) is F + (S/2)·(1 − cos δ). F holds
the accidentals and the visibility floor, and S ≈ 1 − 2F is the interfering share. The X outcomes only
give cos δ, so the sign of δ comes from a dither. The controller holds the piezo alternately at v − d and
v + d and pools ``bits_per_side`` sifted X bits at each. Then

    Q₊ − Q₋ = S·sin δ·sin(k·d)

with k = ``rad_per_v``, the piezo's calibration, which the bench configuration supplies. From this it
estimates δ and moves v by −gain·δ/k.

The dither costs QBERx: (S/2)(1 − cos k·d) ≈ S·(k·d)²/4, about 0.2 % at k·d = 0.1 rad. It is part of the
phase-lock residual that lifts QBERx above the visibility floor.

When v would leave the piezo's range less a margin, it jumps by a whole number of fringes (2π/k) back
towards mid-range. The phase is the same modulo 2π, so the lock survives. Hysteresis then leaves a small
offset that the next updates remove.
Knows only the phase-actuator driver contract and sifted tallies.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from bench.sifting import SiftedTally
from drivers.interfaces.interferometer import PhaseActuator


class PhaseLockSettings(BaseModel):
    """Phase-lock settings; also the ``stack.phase_lock`` section of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rad_per_v: float = Field(0.1, gt=0, description="piezo calibration, rad of phase per volt")
    dither_rad: float = Field(0.1, gt=0, lt=1.0, description="dither amplitude k·d, rad")
    bits_per_side: int = Field(20_000, ge=100, description="sifted X bits pooled at each dither side")
    gain: float = Field(0.7, gt=0, le=1, description="fraction of the estimated phase error corrected")
    range_margin_v: float = Field(5.0, ge=0, description="distance from the range limits that triggers a reset")


class PhaseLock:
    """Feeds on sifted X tallies taken at the voltage it last set; moves the piezo once both sides are in."""

    def __init__(self, actuator: PhaseActuator, settings: PhaseLockSettings) -> None:
        self.actuator = actuator
        self.settings = settings
        self.centre_v: float | None = None
        self._side = +1
        self._pooled: dict[int, SiftedTally] = {+1: SiftedTally(), -1: SiftedTally()}
        self.resets = 0
        self.last_error_rad = math.nan

    @property
    def dither_v(self) -> float:
        return self.settings.dither_rad / self.settings.rad_per_v

    async def start(self) -> None:
        """Lock around the piezo's present voltage (moved off the limits if needed)."""
        limits = await self.actuator.constraints()
        v = (await self.actuator.status()).voltage_v
        margin = self.settings.range_margin_v + self.dither_v
        self.centre_v = min(max(v, limits.min_voltage_v + margin), limits.max_voltage_v - margin)
        self._side = +1
        self._pooled = {+1: SiftedTally(), -1: SiftedTally()}
        await self.actuator.set_voltage(self.centre_v + self.dither_v)

    def observe(self, tally: SiftedTally) -> None:
        """Pool one acquisition's sifted bits, taken at the dither side last set."""
        self._pooled[self._side] += tally

    async def step(self) -> None:
        """Switch dither side when this one has its bits; correct the centre once both sides have."""
        if self.centre_v is None:
            raise RuntimeError(f"{self.actuator.name}: phase lock stepped before start()")
        s = self.settings
        if self._pooled[self._side].n_x < s.bits_per_side:
            return
        if self._side == +1:
            self._side = -1
        else:
            await self._correct()
            self._side = +1
        await self.actuator.set_voltage(self.centre_v + self._side * self.dither_v)

    async def _correct(self) -> None:
        s = self.settings
        q_plus, q_minus = self._pooled[+1].qber_x, self._pooled[-1].qber_x
        self._pooled = {+1: SiftedTally(), -1: SiftedTally()}
        floor = min(q_plus, q_minus)
        interfering = max(1.0 - 2.0 * floor, 0.1)
        sine = (q_plus - q_minus) / (interfering * math.sin(s.dither_rad))
        self.last_error_rad = math.asin(max(-1.0, min(1.0, sine)))
        centre = self.centre_v - s.gain * self.last_error_rad / s.rad_per_v
        limits = await self.actuator.constraints()
        lo = limits.min_voltage_v + s.range_margin_v + self.dither_v
        hi = limits.max_voltage_v - s.range_margin_v - self.dither_v
        if not lo <= centre <= hi:
            fringe_v = 2 * math.pi / s.rad_per_v
            mid = (limits.min_voltage_v + limits.max_voltage_v) / 2
            centre -= round((centre - mid) / fringe_v) * fringe_v
            self.resets += 1
        self.centre_v = centre
