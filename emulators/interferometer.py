"""Emulated unbalanced Mach–Zehnder (Franson) interferometer with a piezo phase actuator.

Model: the true phase φ(t) = φ0 + κ·(T(t) − T_ref) + W(t) + g·v_eff + Σ jumps, in rad, where T is the
ambient temperature of :class:`emulators.environment.Environment`, κ = ``phase_per_kelvin_rad``, W a Wiener
process of diffusion D = ``drift_rad_per_sqrt_s`` (Var W(t) = D²·t), g = ``piezo_rad_per_v`` and v_eff the
piezo's effective voltage. W is advanced lazily on each read by one exact Gaussian increment drawn from the
device's generator, so a read costs a sine, a square root and a list index (reads must not go back in time).
The piezo's hysteresis is a backlash (play) operator of full width h = ``piezo_hysteresis_v``: v_eff follows
the commanded voltage only once it leaves the band [v_eff − h/2, v_eff + h/2], so approaching a voltage from
above and from below leaves phases g·h apart.

Figures: seed 000 "Interferometer: Ultra-stable delay-line interferometer, FSR = 2.5 GHz" (imbalance
1/FSR = 400 ps), "Interferometer visibility: >99.7%" and "Interferometer stability: 10⁻⁷ rad/s". A random
walk has no single rate, so the stability is mapped over the seed's "Drift period: Approximately 10 hours":
the RMS walk over P = 36 000 s equals 10⁻⁷ rad/s × P, i.e. D = 10⁻⁷ rad/s × √P ≈ 2e-5 rad/√s. The thermal
term is separate: it is what the piezo lock ("Phase locking: Piezoelectric phase control based on QBERx
minimization") exists to follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.errors import check_range
from drivers.interfaces.interferometer import PhaseActuator, PhaseActuatorConstraints, PhaseActuatorStatus
from emulators.environment import Environment
from emulators.world import PS_PER_S, NormalStream, World


@dataclass(frozen=True)
class InterferometerParams:
    visibility: float  # fringe visibility, 0..1; seed 000: "Interferometer visibility: >99.7%"
    fsr_ghz: float  # free spectral range, GHz; seed 000: "FSR = 2.5 GHz"
    phase0_rad: float  # rad, phase at T = T_ref with the piezo at 0 V effective and no drift
    phase_per_kelvin_rad: float  # rad/K of ambient temperature change (housing-attenuated thermo-optic)
    drift_rad_per_sqrt_s: float  # Wiener diffusion D, rad/√s; seed 000: "Interferometer stability: 10⁻⁷ rad/s"
    piezo_rad_per_v: float  # rad of phase per V of effective piezo voltage
    piezo_hysteresis_v: float  # V, full width of the backlash band between commanded and effective voltage
    min_voltage_v: float  # V, lowest accepted piezo command
    max_voltage_v: float  # V, highest accepted piezo command
    reference_temperature_c: float  # °C at which the thermal term vanishes


class EmulatedInterferometer(PhaseActuator):
    def __init__(self, world: World, params: InterferometerParams, environment: Environment, name: str) -> None:
        if not 0 < params.visibility <= 1:
            raise ValueError(f"{name}: visibility must be in (0, 1], got {params.visibility}")
        if params.piezo_hysteresis_v < 0 or params.min_voltage_v > params.max_voltage_v:
            raise ValueError(f"{name}: need piezo_hysteresis_v >= 0 and min_voltage_v <= max_voltage_v")
        self.name = name
        self.world = world
        self.params = params
        self.environment = environment
        self._rng = world.rng(name)
        self._standard_normal = NormalStream(self._rng)
        self._voltage_v = min(max(0.0, params.min_voltage_v), params.max_voltage_v)
        self._effective_v = self._voltage_v
        self._jumps_rad = 0.0
        self._walk_rad = 0.0
        self._walk_ps = world.now_ps

    @property
    def visibility(self) -> float:
        return self.params.visibility

    @property
    def imbalance_ps(self) -> float:
        """Delay between the long and short arms, 1/FSR, ps."""
        return 1000.0 / self.params.fsr_ghz

    def phase_rad(self, t_ps: int) -> float:
        """True interferometer phase at ``t_ps`` (not before the previous read), rad, unwrapped."""
        p = self.params
        dt_ps = t_ps - self._walk_ps
        if dt_ps:
            if dt_ps < 0:
                raise ValueError(f"{self.name}: phase read at {t_ps} ps, before the previous read at {self._walk_ps}")
            self._walk_rad += p.drift_rad_per_sqrt_s * math.sqrt(dt_ps / PS_PER_S) * self._standard_normal()
            self._walk_ps = t_ps
        thermal_rad = (p.phase_per_kelvin_rad * (self.environment.temperature_c(t_ps) - p.reference_temperature_c)
                       if p.phase_per_kelvin_rad else 0.0)
        return p.phase0_rad + thermal_rad + self._walk_rad + p.piezo_rad_per_v * self._effective_v + self._jumps_rad

    def phase_jump(self, delta_rad: float) -> None:
        """Fault hook: a sudden step of the phase (mechanical shock, mode hop)."""
        self._jumps_rad += delta_rad

    async def constraints(self) -> PhaseActuatorConstraints:
        return PhaseActuatorConstraints(self.params.min_voltage_v, self.params.max_voltage_v)

    async def status(self) -> PhaseActuatorStatus:
        return PhaseActuatorStatus(self._voltage_v, self.environment.temperature_c(self.world.now_ps))

    async def set_voltage(self, voltage_v: float) -> None:
        p = self.params
        check_range(self.name, "voltage_v", voltage_v, p.min_voltage_v, p.max_voltage_v)
        self._voltage_v = voltage_v
        half_width_v = p.piezo_hysteresis_v / 2
        if voltage_v > self._effective_v + half_width_v:
            self._effective_v = voltage_v - half_width_v
        elif voltage_v < self._effective_v - half_width_v:
            self._effective_v = voltage_v + half_width_v
