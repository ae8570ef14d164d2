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
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.sifting import SiftedTally
from drivers.interfaces.interferometer import PhaseActuator


class PhaseLockSettings(BaseModel):
    """Phase-lock settings; also the ``stack.phase_lock`` section of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="run the lock in the stack")
    node: Literal["alice", "bob"] = Field("bob", description="whose piezo the lock drives (the phase is A + B)")
    rad_per_v: float = Field(0.1, gt=0, description="piezo calibration, rad of phase per volt")
    dither_rad: float = Field(0.1, gt=0, lt=1.0, description="dither amplitude k·d, rad")
    bits_per_side: int = Field(20_000, ge=100, description="sifted X bits pooled at each dither side")
    gain: float = Field(0.7, gt=0, le=1, description="fraction of the estimated phase error corrected")
    range_margin_v: float = Field(5.0, ge=0, description="distance from the range limits that triggers a reset")
    scan_steps: int = Field(8, ge=3, description="piezo positions per fringe in a recovery scan")
    scan_bits_per_step: int = Field(2000, ge=100, description="sifted X bits pooled at each scan position")


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
        """Lock around the piezo's present voltage; one too near a limit moves by whole fringes (the same
        phase) towards mid-range, or, on a piezo with less than a fringe to spare, to the nearest usable."""
        limits = await self.actuator.constraints()
        v = (await self.actuator.status()).voltage_v
        margin = self.settings.range_margin_v + self.dither_v
        lo, hi = limits.min_voltage_v + margin, limits.max_voltage_v - margin
        fringe_v = 2 * math.pi / self.settings.rad_per_v
        while v < lo and v + fringe_v <= hi:
            v += fringe_v
        while v > hi and v - fringe_v >= lo:
            v -= fringe_v
        self.centre_v = min(max(v, lo), hi)
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


class FringeScan:
    """Recovery when the lock has nothing to follow: after a phase jump near π the dither's slope sin δ
    vanishes. Step the piezo across one fringe (2π/k) in ``scan_steps`` equal steps and pool
    ``scan_bits_per_step`` sifted X bits at each. QBERx over a fringe is a + b·cos φ + c·sin φ (the
    interference term of the Franson fringe), so a linear least-squares fit of the steps gives the minimum
    at φ = atan2(c, b) + π to within the QBER noise, where the lowest step alone would only be within
    π/``scan_steps`` (up to (1 − cos(π/8))/2 = 3.8 % of QBERx with 8 steps: enough to stay above a fault
    threshold and scan again and again). The dither lock takes over from there.
    """

    def __init__(self, actuator: PhaseActuator, settings: PhaseLockSettings) -> None:
        self.actuator = actuator
        self.settings = settings
        self.voltages_v: list[float] = []
        self.qber_x: list[float] = []
        self._pooled = SiftedTally()

    async def start(self) -> None:
        s = self.settings
        limits = await self.actuator.constraints()
        fringe_v = 2 * math.pi / s.rad_per_v
        first = min(max((await self.actuator.status()).voltage_v - fringe_v / 2, limits.min_voltage_v),
                    limits.max_voltage_v - fringe_v)
        if first < limits.min_voltage_v:
            raise RuntimeError(f"{self.actuator.name}: piezo range shorter than one fringe ({fringe_v:g} V)")
        self.voltages_v = [first + i * fringe_v / s.scan_steps for i in range(s.scan_steps)]
        self.qber_x = []
        self._pooled = SiftedTally()
        await self.actuator.set_voltage(self.voltages_v[0])

    def observe(self, tally: SiftedTally) -> None:
        """Pool one acquisition's sifted bits, taken at the scan position last set."""
        self._pooled += tally

    async def step(self) -> float | None:
        """Move on once this position has its bits; when the fringe is done, set and return the best voltage."""
        if self._pooled.n_x < self.settings.scan_bits_per_step:
            return None
        self.qber_x.append(self._pooled.qber_x)
        self._pooled = SiftedTally()
        if len(self.qber_x) < len(self.voltages_v):
            await self.actuator.set_voltage(self.voltages_v[len(self.qber_x)])
            return None
        best_v = self._fringe_minimum_v()
        await self.actuator.set_voltage(best_v)
        return best_v

    def _fringe_minimum_v(self) -> float:
        """Voltage of the fitted QBERx minimum, within the scanned fringe."""
        n = len(self.voltages_v)
        phase_rad = 2 * math.pi * np.arange(n) / n
        design = np.column_stack([np.ones(n), np.cos(phase_rad), np.sin(phase_rad)])
        (_a, b, c), *_ = np.linalg.lstsq(design, np.asarray(self.qber_x), rcond=None)
        minimum_rad = (math.atan2(c, b) + math.pi) % (2 * math.pi)
        return self.voltages_v[0] + minimum_rad / self.settings.rad_per_v
