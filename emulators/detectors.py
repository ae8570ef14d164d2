"""Emulated SNSPD rack (ID281 class) of one node: efficiency, dark counts, jitter, dead time, cryocooler.

Figures: single-channel jitter 30 ps and 45 ps FWHM for the two racks (seed 001, S6: "Two different SNSPDs
were used ... single-channel time jitters of 30 ps and 45 ps"); dark counts ~30 counts/s (seed 001, S10).
Dead time is non-paralysable: a channel clicked at incident rate r counts r/(1 + r·τ) and is live a
fraction 1/(1 + r·τ) of the time. The closed-cycle cryocooler must be recycled periodically: COLD →
RECYCLING (sorption pump regenerating, no counts) → COOLING (no counts) → COLD; seed 000 counts "7 detector
cooling cycles" among the 9 automatic restarts of the 325 h run. A warm-up fault takes the rack WARM for
a while, then it cools down again. The rack counts only while COLD.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import partial

from drivers.errors import DriverError, check_range
from drivers.interfaces.detectors import (
    CoolingState,
    DetectorConstraints,
    DetectorStatus,
    DetectorSystem,
)
from emulators.world import PS_PER_S, World

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_WARM_K = 40.0  # reported temperature while warm or recycling, K
_HISTORY = 8  # state transitions kept to answer "how long was the rack cold in [t0, t1]"


@dataclass(frozen=True)
class DetectorParams:
    efficiency: float  # system detection efficiency at the best polarization
    dark_count_hz: float  # per channel
    jitter_fwhm_ps: float  # single-channel timing jitter
    dead_time_ns: float  # non-paralysable recovery time per channel
    max_bias_ua: float
    bias_ua: float  # initial bias of every channel
    temperature_k: float  # operating temperature when cold
    recycle_period_s: float  # cold time between two cryocooler recycles
    recycling_s: float  # regeneration, offline
    cooldown_s: float  # cooling back to base temperature, offline
    first_recycle_s: float | None = None  # time of the first recycle; None: uniform in the first period

    @property
    def jitter_sigma_ps(self) -> float:
        return self.jitter_fwhm_ps / FWHM_PER_SIGMA


class EmulatedDetectors(DetectorSystem):
    def __init__(self, world: World, params: DetectorParams, channels: tuple[int, ...], name: str) -> None:
        self.name = name
        self.world = world
        self.params = params
        self.channels = channels
        self._bias_ua = dict.fromkeys(channels, params.bias_ua)
        self._rng = world.rng(name)
        self._state = CoolingState.COLD
        self._transitions: deque[tuple[int, CoolingState]] = deque([(world.now_ps, CoolingState.COLD)],
                                                                    maxlen=_HISTORY)
        self._cycle = 0  # bumped when a warm-up takes over the cryocooler: steps scheduled before are void
        self.recycles = 0
        self._start_cycle()

    # -- truth for the link -------------------------------------------------------------------------
    @property
    def state(self) -> CoolingState:
        return self._state

    def cold_fraction(self, t0_ps: int, t1_ps: int) -> float:
        """Fraction of [t0, t1] (t1 ≤ now, within the last few transitions) the rack was COLD."""
        if t1_ps <= t0_ps:
            return 1.0 if self._state_at(t0_ps) is CoolingState.COLD else 0.0
        since_ps, last = self._transitions[-1]
        if since_ps <= t0_ps:  # no transition within the interval: the usual case
            return 1.0 if last is CoolingState.COLD else 0.0
        cold = 0
        marks = list(self._transitions)
        for i, (start, state) in enumerate(marks):
            end = marks[i + 1][0] if i + 1 < len(marks) else max(t1_ps, start)
            if state is CoolingState.COLD:
                cold += max(0, min(end, t1_ps) - max(start, t0_ps))
        return cold / (t1_ps - t0_ps)

    def _state_at(self, t_ps: int) -> CoolingState:
        state = self._transitions[0][1]
        for start, s in self._transitions:
            if start <= t_ps:
                state = s
        return state

    # -- cryocooler and faults ------------------------------------------------------------------------
    def _enter(self, state: CoolingState) -> None:
        self._state = state
        self._transitions.append((self.world.now_ps, state))

    def _start_cycle(self) -> None:
        """Run the cryocooler's cycle. Unless the scenario places it, the first recycle falls anywhere in the
        first period: racks are not switched on in step."""
        p = self.params
        wait_s = p.first_recycle_s if p.first_recycle_s is not None else float(
            self._rng.uniform(0.0, p.recycle_period_s))
        self._after(wait_s, "recycle")

    def _after(self, wait_s: float, step: str) -> None:
        self.world.at(self.world.now_ps + round(wait_s * PS_PER_S), partial(self._step, self._cycle, step))

    def _step(self, cycle: int, step: str) -> None:
        """One transition of the cycle (a :meth:`World.at` chain): recycle → cool → cold → recycle …, and after
        a warm-up: warm_cool → warm_cold, which starts the cycle again."""
        if cycle != self._cycle:  # a warm-up took over
            return
        p = self.params
        if step == "recycle":
            self.recycles += 1
            self._enter(CoolingState.RECYCLING)
            self._after(p.recycling_s, "cool")
        elif step in ("cool", "warm_cool"):
            self._enter(CoolingState.COOLING)
            self._after(p.cooldown_s, "cold" if step == "cool" else "warm_cold")
        elif step == "cold":
            self._enter(CoolingState.COLD)
            self._after(p.recycle_period_s, "recycle")
        else:
            self._enter(CoolingState.COLD)
            self._start_cycle()

    def warm_up(self, duration_s: float) -> None:
        """Fault: the rack warms up (e.g. a cryocooler trip) for ``duration_s``, then cools down again."""
        self._cycle += 1
        self._enter(CoolingState.WARM)
        self._after(duration_s, "warm_cool")

    # -- contract -------------------------------------------------------------------------------------
    async def constraints(self) -> DetectorConstraints:
        return DetectorConstraints(self.channels, self.params.max_bias_ua)

    async def status(self) -> DetectorStatus:
        t_k = self.params.temperature_k if self._state is CoolingState.COLD else _WARM_K
        return DetectorStatus(self._state, t_k, dict(self._bias_ua))

    async def set_bias(self, channel: int, bias_ua: float) -> None:
        if channel not in self._bias_ua:
            raise DriverError(self.name, f"no channel {channel}; channels are {self.channels}")
        check_range(self.name, "bias_ua", bias_ua, 0.0, self.params.max_bias_ua)
        self._bias_ua[channel] = bias_ua
