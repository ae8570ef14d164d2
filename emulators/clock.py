"""Emulated rubidium frequency reference (PRS10 class) that sets a node's timebase.

Model: the fractional frequency y(t) = y0 + aging·t + random-walk FM + white FM + steering, held
piecewise constant over ``update_s`` steps; the clock's phase (its reading minus true time, in ps) is the
exact integral, so it can be read at any picosecond. Figures: the two nodes drift apart at the "7 ps/s"
class (seed 000: "Clock stability: Rubidium clock 7 ps/s"), i.e. |y_A − y_B| ≈ 7e-12. The PRS10 datasheet
bounds the Allan deviation at 1 s by 2e-11; the default white FM of 2e-12 keeps the phase wander
between two 0.5 s histograms (~1.4 ps) inside the seed's 4 ps sync precision. Loss of lock (a fault):
the unit reports unlocked and its oscillator free-runs with an extra fractional offset drawn from
N(0, ``unlocked_offset_sd``) until it relocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.errors import check_range
from drivers.interfaces.clock import ClockConstraints, ClockStatus, FrequencyReference
from emulators.world import PS_PER_S, World

_NOISE_CHUNK = 4096


@dataclass(frozen=True)
class ClockParams:
    fractional_offset: float  # y0, dimensionless
    aging_per_day: float  # linear frequency drift, 1/day
    white_fm_adev_1s: float  # Allan deviation at 1 s from white frequency noise
    random_walk_fm_per_sqrt_s: float  # frequency random-walk step, 1/sqrt(s)
    initial_phase_max_ps: int  # initial phase drawn uniformly in ±this
    update_s: float
    max_steer_ppt: float  # |steering| accepted, parts in 1e12
    unlocked_offset_sd: float  # spread of the free-running offset while unlocked, dimensionless


@dataclass(frozen=True)
class ClockTruth:
    """Hidden state for tests and reports; never reachable through the driver contract."""

    phase_ps: float
    fractional_frequency: float


class EmulatedRbClock(FrequencyReference):
    def __init__(self, world: World, params: ClockParams, name: str) -> None:
        self.name = name
        self.world = world
        self.params = params
        self._rng = world.rng(name)
        self._update_ps = round(params.update_s * PS_PER_S)
        self._steer_ppt = 0.0
        self._unlocked_offset = 0.0
        self.locked = True
        self._random_walk = 0.0
        self._white = 0.0
        self._noise: list[list[float]] = []  # (white, walk) standard normals, drawn in chunks
        self._next_noise = 0
        self._segment_ps = world.now_ps
        self._segment_phase_ps = float(self._rng.uniform(-params.initial_phase_max_ps,
                                                         params.initial_phase_max_ps))
        self._y = self._frequency(world.now_ps)
        self._next_step_ps = world.now_ps + self._update_ps  # the next noise step, taken when a read passes it

    def _frequency(self, t_ps: int) -> float:
        p = self.params
        age_days = t_ps / PS_PER_S / 86400.0
        return (p.fractional_offset + p.aging_per_day * age_days + self._random_walk + self._white
                + self._steer_ppt * 1e-12 + self._unlocked_offset)

    def _new_segment(self, t_ps: int) -> None:
        """Close the constant-frequency segment at ``t_ps`` and start one at the current frequency."""
        self._segment_phase_ps += self._y * (t_ps - self._segment_ps)
        self._segment_ps = t_ps
        self._y = self._frequency(t_ps)

    def _catch_up(self, t_ps: int) -> None:
        """Take the noise steps due at or before ``t_ps``, in order. Lazily, on a read, instead of one
        scheduled event per step: the steps draw from this clock's own stream and depend on nothing else
        that changes in between (steering and lock changes catch up first), so the phase is the same."""
        while self._next_step_ps <= t_ps:
            self._drift(self._next_step_ps)
            self._next_step_ps += self._update_ps

    def _drift(self, t_ps: int) -> None:
        """One noise step of the frequency at ``t_ps``, every ``update_s``."""
        p = self.params
        root_update_s = math.sqrt(p.update_s)
        if self._next_noise == len(self._noise):
            self._noise = self._rng.standard_normal((_NOISE_CHUNK, 2)).tolist()
            self._next_noise = 0
        white, walk = self._noise[self._next_noise]
        self._next_noise += 1
        self._white = white * p.white_fm_adev_1s / root_update_s
        self._random_walk += walk * p.random_walk_fm_per_sqrt_s * root_update_s
        self._new_segment(t_ps)

    def phase_ps(self, t_ps: int) -> float:
        """Clock reading minus true time at ``t_ps`` (not before the current segment), in ps."""
        if t_ps >= self._next_step_ps:
            self._catch_up(t_ps)
        return self._segment_phase_ps + self._y * (t_ps - self._segment_ps)

    def truth(self) -> ClockTruth:
        now = self.world.now_ps
        self._catch_up(now)
        return ClockTruth(self.phase_ps(now), self._y)

    def unlock(self, duration_s: float) -> None:
        """Fault: lose lock for ``duration_s``, free-running meanwhile, then relock."""
        now = self.world.now_ps
        self._catch_up(now)  # the steps due draw from this stream before the offset does
        self.locked = False
        self._unlocked_offset = float(self._rng.normal(0.0, self.params.unlocked_offset_sd))
        self._new_segment(now)
        self.world.at(now + round(duration_s * PS_PER_S), self._relock)

    def _relock(self) -> None:
        now = self.world.now_ps
        self._catch_up(now)
        self.locked = True
        self._unlocked_offset = 0.0
        self._new_segment(now)

    async def constraints(self) -> ClockConstraints:
        return ClockConstraints(self.params.max_steer_ppt)

    async def status(self) -> ClockStatus:
        return ClockStatus(locked=self.locked, frequency_offset_ppt=self._steer_ppt)

    async def steer(self, offset_ppt: float) -> None:
        m = self.params.max_steer_ppt
        check_range(self.name, "offset_ppt", offset_ppt, -m, m)
        now = self.world.now_ps
        self._catch_up(now)
        self._steer_ppt = offset_ppt
        self._new_segment(now)
