"""Polarization stabilisation of one node: 1 Hz perturb-and-observe on the node's detector count rate
(seed 000: "Thermo-optic fiber polarization controller with 1 Hz update frequency", "Stabilization
precision: Detection efficiency variation <3%").

The SNSPDs are polarization-sensitive, so the node's summed count rate peaks at the best alignment. Each
update takes one second of counts (``update_s``):

- **Base second.** The first second measures the rate at the current drives.
- **Trial second.** The next second measures it with one actuator moved by ±step.
- **Decision.** A higher rate keeps the trial, grows the step by ``grow`` and tries the same direction
  again. A lower rate reverts, shrinks the step by ``shrink`` and turns to the next actuator, the other
  way.

A rate difference inside ``noise_sigmas`` Poisson standard errors counts as no gain. Three actuators are
one more than aligning a single state needs. So a drive within ``recentre_fraction`` of the range from
a limit is walked back towards mid-range (the band narrowed, if need be, so that the centre holds a full
turn plus a step on each side: every retardance then has a drive outside the bands, and two actuators
cannot both sit where neither way is inwards): its trial always points inwards and is kept unless the rate
drops significantly, and the other actuators then re-optimise around it ("endless" control). Only a
drive that still reaches a limit wraps by one turn (2π of retardance), and the actuator slews through
every retardance on the way. Count rates also follow the pump, so the caller
skips updates while the pump settles. Knows only the polarization-controller contract.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from drivers.interfaces.polarization import PolarizationController


class PolarizationControlSettings(BaseModel):
    """Polarization loop settings; also the ``stack.polarization`` section of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="run one loop per node in the stack")
    update_s: float = Field(1.0, gt=0, description='counting time per step, s (seed 000: "1 Hz update")')
    rad_per_v: float = Field(1.0, gt=0, description="actuator calibration, rad of retardance per volt")
    initial_step_rad: float = Field(0.2, gt=0, description="first perturbation, rad")
    min_step_rad: float = Field(0.15, gt=0, description="smallest perturbation, rad")
    max_step_rad: float = Field(0.35, gt=0, description=(
        "largest perturbation, rad: a trial second is itself a misalignment, and with ε = 0.1 a 1 rad trial"
        " from the optimum costs up to 2.3 % of efficiency; 0.35 rad keeps trials below 0.3 %"))
    grow: float = Field(1.5, gt=1, description="step factor after a kept trial")
    shrink: float = Field(0.7, gt=0, lt=1, description="step factor after a reverted trial")
    noise_sigmas: float = Field(1.0, ge=0, description="rate gain below this many Poisson σ counts as none")
    recentre_fraction: float = Field(0.2, ge=0, lt=0.5, description="edge band of the range walked out of")


class PolarizationLoop:
    """Call :meth:`update` once per ``update_s`` with the counts the node's detectors took meanwhile."""

    def __init__(self, controller: PolarizationController, settings: PolarizationControlSettings) -> None:
        self.controller = controller
        self.settings = settings
        self._drives_v: list[float] = []
        self._limits_v = (0.0, 0.0)
        self._band_v = 0.0
        self._actuator = 0
        self._direction = 1.0
        self._step_rad = settings.initial_step_rad
        self._base_counts: float | None = None
        self._trial: list[float] | None = None
        self._recentring = False
        self._free_visit: list[bool] = []
        self.kept = 0
        self.wraps = 0
        self.reverted = 0

    async def start(self) -> None:
        c = await self.controller.constraints()
        self._drives_v = list((await self.controller.status()).drives_v)
        self._free_visit = [False] * len(self._drives_v)
        self._limits_v = (c.min_drive_v, c.max_drive_v)
        s, span_v = self.settings, c.max_drive_v - c.min_drive_v
        turn_v = (2 * math.pi + 2 * s.max_step_rad) / s.rad_per_v
        self._band_v = max(0.0, min(s.recentre_fraction * span_v, (span_v - turn_v) / 2))
        self._base_counts = None
        self._trial = None

    async def update(self, counts: float) -> None:
        """Feed the counts of the last ``update_s`` (taken at whatever drives the loop last set)."""
        if self._trial is None:
            self._base_counts = counts
            await self._try_next()
            return
        assert self._base_counts is not None
        s = self.settings
        margin = s.noise_sigmas * math.sqrt(max(counts, 0.0) + self._base_counts)
        gain = counts - self._base_counts
        if gain > margin or (self._recentring and gain > -margin):
            self._drives_v = self._trial
            self._step_rad = min(s.max_step_rad, self._step_rad * s.grow)
            self.kept += 1
        else:
            await self.controller.set_drives(tuple(self._drives_v))
            self._step_rad = max(s.min_step_rad, self._step_rad * s.shrink)
            self._actuator = (self._actuator + 1) % len(self._drives_v)
            self._direction = -self._direction
            self.reverted += 1
        self._trial = None  # the next second re-measures the base at the kept drives

    async def discard(self) -> None:
        """The counts since the last update are not comparable (the pump moved): drop the base and any
        trial, back at the kept drives, so the next update measures a fresh base."""
        if self._trial is not None:
            await self.controller.set_drives(tuple(self._drives_v))
            self._trial = None
        self._base_counts = None

    async def _try_next(self) -> None:
        s = self.settings
        trial = list(self._drives_v)
        lo, hi = self._limits_v
        mid, band = (lo + hi) / 2, self._band_v
        v = trial[self._actuator]
        in_band = not lo + band <= v <= hi - band
        # In a band, every other visit walks inwards; the visits between move freely, so an actuator the
        # optimum pushes outwards is not held there while the alignment degrades.
        self._recentring = in_band and not self._free_visit[self._actuator]
        self._free_visit[self._actuator] = in_band and not self._free_visit[self._actuator]
        direction = math.copysign(1.0, mid - v) if self._recentring else self._direction
        v += direction * self._step_rad / s.rad_per_v
        if not lo <= v <= hi:
            v -= math.copysign(2 * math.pi / s.rad_per_v, v - mid)
            self.wraps += 1
        trial[self._actuator] = min(hi, max(lo, v))
        self._trial = trial
        await self.controller.set_drives(tuple(trial))
