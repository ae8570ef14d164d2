"""Ambient temperature seen by the link's thermally sensitive devices (interferometers, fibre birefringence).

Model: T(t) = mean + amplitude·sin(2π t / period + phase) + Σ excursions, in °C with t in seconds of
virtual time. The cycle's period is the seed's drift period (seed 000: "Drift period: Approximately 10 hours
(diurnal temperature cycle)"), so a scenario's default is 36 000 s. An :class:`Excursion` is a disturbance
such as a "2 h temperature excursion" injected by a fault: a plateau of ``delta_c`` whose rising and falling
edges are raised-cosine ramps of a quarter of ``duration_s`` each (a Tukey window with α = 1/2), so the
temperature and its rate stay continuous. Everything is closed form: a read costs one sine plus one
comparison per excursion, and the latest read is kept, since several devices ask at the same instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emulators.world import PS_PER_S, World


@dataclass(frozen=True)
class EnvironmentParams:
    mean_temperature_c: float  # °C, centre of the cycle
    diurnal_amplitude_c: float  # °C, half the peak-to-peak swing of the cycle
    diurnal_period_s: float  # s, seed 000: "Drift period: Approximately 10 hours (diurnal temperature cycle)"
    diurnal_phase_rad: float  # rad, phase of the sine at t = 0


@dataclass(frozen=True)
class Excursion:
    start_s: float  # s of virtual time at which the rising edge begins
    duration_s: float  # s from the start of the rising edge to the end of the falling edge
    delta_c: float  # °C added on the plateau (negative for a cold spell)

    def __post_init__(self) -> None:
        if self.duration_s <= 0:
            raise ValueError(f"excursion duration_s must be > 0, got {self.duration_s}")


class Environment:
    def __init__(self, world: World, params: EnvironmentParams, name: str = "environment") -> None:
        if params.diurnal_period_s <= 0:
            raise ValueError(f"{name}: diurnal_period_s must be > 0, got {params.diurnal_period_s}")
        self.name = name
        self.world = world
        self.params = params
        self._omega_rad_per_s = 2 * math.pi / params.diurnal_period_s
        self._excursions: list[tuple[float, float, float, float]] = []  # (start_s, end_s, ramp_s, delta_c)
        self._latest: tuple[int, float] | None = None  # (t_ps, °C) of the latest read

    def add_excursion(self, excursion: Excursion) -> None:
        """Superpose ``excursion`` on the cycle (the fault-injection hook)."""
        start_s = excursion.start_s
        self._excursions.append(
            (start_s, start_s + excursion.duration_s, excursion.duration_s / 4, excursion.delta_c))
        self._latest = None

    def temperature_c(self, t_ps: int) -> float:
        """Ambient temperature at ``t_ps``, °C."""
        latest = self._latest
        if latest is not None and latest[0] == t_ps:
            return latest[1]
        p = self.params
        t_s = t_ps / PS_PER_S
        temperature_c = p.mean_temperature_c + p.diurnal_amplitude_c * math.sin(
            self._omega_rad_per_s * t_s + p.diurnal_phase_rad)
        for start_s, end_s, ramp_s, delta_c in self._excursions:
            if start_s < t_s < end_s:
                edge_s = min(t_s - start_s, end_s - t_s)
                if edge_s >= ramp_s:
                    temperature_c += delta_c
                else:
                    temperature_c += delta_c * 0.5 * (1 - math.cos(math.pi * edge_s / ramp_s))
        self._latest = (t_ps, temperature_c)
        return temperature_c
