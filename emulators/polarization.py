"""Emulated fibre birefringence, thermo-optic polarization controller and polarization-sensitive SNSPD.

Model (Stokes space, rotations of the Poincaré sphere): the state reaching the detector is the unit vector
s = C(d(t)) · R_n(κ·(T(t) − T_ref)) · W(t) · s_in with s_in = S1. W is the fibre's slow birefringence drift:
it starts as a uniformly random rotation and performs a Brownian walk on SO(3), each lazy read applying a
rotation whose vector has independent N(0, σ²·dt) components (σ = ``birefringence_walk_rad_per_sqrt_s``; a
long gap is split so no step exceeds 0.1 rad RMS per axis). R_n is the thermal rotation about a fixed random
axis n by κ = ``rad_per_kelvin`` per kelvin of ambient change. C is the controller: three waveplate-like
rotations about S2, S1, S2 in that order (Euler angles, so any rotation is reachable with ≥ 2π of retardance
each; the outer axes differ from the detector's S1 so every actuator moves the count rate), each by
``rad_per_v`` × its actual drive, which follows a commanded step as a first-order lag of time constant
``response_time_s`` (closed form; 63 % after one time constant). The detector prefers S1, and its efficiency
factor is 1 − ε·(1 − s·S1)/2 with ε = ``polarization_sensitivity``, the fractional difference between its
best and worst polarization. Only W·s_in is kept as state, so a read is a few rotations of one 3-vector;
the controller's sines and cosines are cached once the drives have settled (30 time constants).

Figures, seed 000: "Polarization stabilization: Thermo-optic fiber polarization controller with 1 Hz update
frequency", "Response time: 1 second update period", "Stabilization precision: Detection efficiency
variation <3%" (what the stack's loop must achieve against this model) and "Drift period: Approximately 10
hours" (what sets the walk and the thermal coefficient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.errors import DriverError, check_range
from drivers.interfaces.polarization import PolarizationConstraints, PolarizationController, PolarizationStatus
from emulators.environment import Environment
from emulators.world import PS_PER_S, NormalStream, World

_MAX_STEP_RAD = 0.1  # RMS per-axis rotation of one walk step
_SETTLED_TIME_CONSTANTS = 30  # e^-30 ≈ 1e-13 of a step left: the drives are taken as settled
_N_ACTUATORS = 3  # rotations about S2, S1, S2
Vector = tuple[float, float, float]


@dataclass(frozen=True)
class PolarizationParams:
    birefringence_walk_rad_per_sqrt_s: float  # σ, rad/√s per axis; seed 000: "Drift period: Approximately 10 hours"
    rad_per_kelvin: float  # κ, rad of thermal fibre rotation per K of ambient change
    reference_temperature_c: float  # °C at which the thermal rotation vanishes
    polarization_sensitivity: float  # ε, fractional detection-efficiency difference best vs worst polarization
    n_actuators: int  # must be 3 (S2, S1, S2 rotations)
    rad_per_v: float  # rad of retardance per V of actual drive
    min_drive_v: float  # V, lowest accepted drive
    max_drive_v: float  # V, highest accepted drive
    response_time_s: float  # s, first-order time constant of one actuator (seed 000: "1 second update period")
    initial_drives_v: tuple[float, ...]  # V, drives at construction, one per actuator

    def __post_init__(self) -> None:
        if self.n_actuators != _N_ACTUATORS:
            raise ValueError(f"n_actuators must be {_N_ACTUATORS}, got {self.n_actuators}")
        if len(self.initial_drives_v) != self.n_actuators:
            raise ValueError(f"initial_drives_v needs {self.n_actuators} values, got {len(self.initial_drives_v)}")
        if not 0 <= self.polarization_sensitivity <= 1:
            raise ValueError(f"polarization_sensitivity must be in [0, 1], got {self.polarization_sensitivity}")
        if self.response_time_s < 0 or self.birefringence_walk_rad_per_sqrt_s < 0:
            raise ValueError("response_time_s and birefringence_walk_rad_per_sqrt_s must be >= 0")


def _rotate(v: Vector, axis: Vector, cos_a: float, sin_a: float) -> Vector:
    """Rodrigues: rotate ``v`` about the unit ``axis`` by the angle with the given cosine and sine."""
    x, y, z = v
    ax, ay, az = axis
    k = (ax * x + ay * y + az * z) * (1 - cos_a)
    return (x * cos_a + (ay * z - az * y) * sin_a + ax * k,
            y * cos_a + (az * x - ax * z) * sin_a + ay * k,
            z * cos_a + (ax * y - ay * x) * sin_a + az * k)


class EmulatedPolarization(PolarizationController):
    def __init__(self, world: World, params: PolarizationParams, environment: Environment, name: str) -> None:
        for i, drive_v in enumerate(params.initial_drives_v):
            check_range(name, f"drives_v[{i}]", drive_v, params.min_drive_v, params.max_drive_v)
        self.name = name
        self.world = world
        self.params = params
        self.environment = environment
        self._rng = world.rng(name)
        self._standard_normal = NormalStream(self._rng)
        self._fibre_out = self._random_rotation((1.0, 0.0, 0.0))  # W·s_in
        self._thermal_axis = self._random_unit_vector()
        self._walk_ps = world.now_ps
        self._commanded_v = tuple(params.initial_drives_v)
        self._from_v = self._commanded_v
        self._set_ps = world.now_ps
        self._settle_ps = round(_SETTLED_TIME_CONSTANTS * params.response_time_s * PS_PER_S)
        self._settled_trig: tuple[float, float, float, float, float, float] | None = None

    def _random_unit_vector(self) -> Vector:
        x, y, z = self._standard_normal(), self._standard_normal(), self._standard_normal()
        norm = math.sqrt(x * x + y * y + z * z)
        return (x / norm, y / norm, z / norm)

    def _random_rotation(self, v: Vector) -> Vector:
        """Apply a Haar-uniform rotation (a uniform unit quaternion) to ``v``."""
        w, qx, qy, qz = (self._standard_normal() for _ in range(4))
        norm = math.sqrt(w * w + qx * qx + qy * qy + qz * qz)
        w, qx, qy, qz = w / norm, qx / norm, qy / norm, qz / norm
        x, y, z = v
        tx, ty, tz = 2 * (qy * z - qz * y), 2 * (qz * x - qx * z), 2 * (qx * y - qy * x)  # t = 2 q × v
        return (x + w * tx + qy * tz - qz * ty,
                y + w * ty + qz * tx - qx * tz,
                z + w * tz + qx * ty - qy * tx)

    def _advance_walk(self, t_ps: int) -> None:
        dt_ps = t_ps - self._walk_ps
        if dt_ps < 0:
            raise ValueError(f"{self.name}: read at {t_ps} ps, before the previous read at {self._walk_ps}")
        self._walk_ps = t_ps
        sigma_rad_per_sqrt_s = self.params.birefringence_walk_rad_per_sqrt_s
        if not sigma_rad_per_sqrt_s:  # a fibre without a walk
            return
        variance_rad2 = sigma_rad_per_sqrt_s ** 2 * dt_ps / PS_PER_S
        if variance_rad2 == 0:
            return
        n_steps = math.ceil(variance_rad2 / _MAX_STEP_RAD ** 2)
        sigma_rad = math.sqrt(variance_rad2 / n_steps)
        normal = self._standard_normal
        v = self._fibre_out
        for _ in range(n_steps):
            wx, wy, wz = sigma_rad * normal(), sigma_rad * normal(), sigma_rad * normal()
            angle_rad = math.sqrt(wx * wx + wy * wy + wz * wz)
            if angle_rad > 0:
                axis = (wx / angle_rad, wy / angle_rad, wz / angle_rad)
                v = _rotate(v, axis, math.cos(angle_rad), math.sin(angle_rad))
        x, y, z = v
        norm = math.sqrt(x * x + y * y + z * z)
        self._fibre_out = (x / norm, y / norm, z / norm)

    def actual_drives_v(self, t_ps: int) -> tuple[float, ...]:
        """Truth: the drives the actuators have reached at ``t_ps`` (not before the last command), V."""
        tau_s = self.params.response_time_s
        if tau_s == 0:
            return self._commanded_v
        decay = math.exp(-max(t_ps - self._set_ps, 0) / PS_PER_S / tau_s)
        (f1, f2, f3), (c1, c2, c3) = self._from_v, self._commanded_v  # _N_ACTUATORS of them
        return (c1 + (f1 - c1) * decay, c2 + (f2 - c2) * decay, c3 + (f3 - c3) * decay)

    def _controller_trig(self, t_ps: int) -> tuple[float, float, float, float, float, float]:
        """(cos, sin) of each actuator's retardance at ``t_ps``, flat."""
        settled = t_ps - self._set_ps >= self._settle_ps
        if settled and self._settled_trig is not None:
            return self._settled_trig
        rad_per_v = self.params.rad_per_v
        d1, d2, d3 = self.actual_drives_v(t_ps)
        a1, a2, a3 = rad_per_v * d1, rad_per_v * d2, rad_per_v * d3
        trig = (math.cos(a1), math.sin(a1), math.cos(a2), math.sin(a2), math.cos(a3), math.sin(a3))
        if settled:
            self._settled_trig = trig
        return trig

    def alignment(self, t_ps: int) -> float:
        """Truth: s·S1 at ``t_ps`` (not before the previous read), the cosine of the angle to the best state."""
        p = self.params
        self._advance_walk(t_ps)
        x, y, z = self._fibre_out
        if p.rad_per_kelvin:  # else no thermal rotation (this is _rotate about the thermal axis, written out)
            angle_rad = p.rad_per_kelvin * (self.environment.temperature_c(t_ps) - p.reference_temperature_c)
            cos_a, sin_a = math.cos(angle_rad), math.sin(angle_rad)
            ax, ay, az = self._thermal_axis
            k = (ax * x + ay * y + az * z) * (1 - cos_a)
            x, y, z = (x * cos_a + (ay * z - az * y) * sin_a + ax * k,
                       y * cos_a + (az * x - ax * z) * sin_a + ay * k,
                       z * cos_a + (ax * y - ay * x) * sin_a + az * k)
        c1, s1, c2, s2, c3, s3 = self._controller_trig(t_ps)
        z, x = c1 * z - s1 * x, s1 * z + c1 * x  # about S2
        y, z = c2 * y - s2 * z, s2 * y + c2 * z  # about S1
        return s3 * z + c3 * x  # S1 component after the last rotation, about S2

    def efficiency_factor(self, t_ps: int) -> float:
        """Truth: the detector's efficiency relative to its best polarization at ``t_ps``, in [1 − ε, 1]."""
        return 1 - self.params.polarization_sensitivity * (1 - self.alignment(t_ps)) / 2

    def align(self) -> None:
        """Set the fibre's state so the detector sees its best polarization now: the link as commissioned."""
        t_ps = self.world.now_ps
        self._advance_walk(t_ps)
        p = self.params
        c1, s1, c2, s2, c3, s3 = self._controller_trig(t_ps)
        x, y, z = 1.0, 0.0, 0.0
        z, x = c3 * z + s3 * x, -s3 * z + c3 * x  # undo the last rotation, about S2
        y, z = c2 * y + s2 * z, -s2 * y + c2 * z  # undo the one about S1
        z, x = c1 * z + s1 * x, -s1 * z + c1 * x  # undo the first, about S2
        angle_rad = p.rad_per_kelvin * (self.environment.temperature_c(t_ps) - p.reference_temperature_c)
        self._fibre_out = _rotate((x, y, z), self._thermal_axis, math.cos(angle_rad), -math.sin(angle_rad))

    def scramble(self) -> None:
        """Fault hook: compose the fibre's rotation with a uniformly random one (a cable knocked or moved)."""
        self._fibre_out = self._random_rotation(self._fibre_out)

    async def constraints(self) -> PolarizationConstraints:
        p = self.params
        return PolarizationConstraints(p.n_actuators, p.min_drive_v, p.max_drive_v, p.response_time_s)

    async def status(self) -> PolarizationStatus:
        return PolarizationStatus(self._commanded_v)

    async def set_drives(self, drives_v: tuple[float, ...]) -> None:
        p = self.params
        if len(drives_v) != p.n_actuators:
            raise DriverError(self.name, f"expected {p.n_actuators} drives, got {len(drives_v)}")
        low, high = p.min_drive_v, p.max_drive_v
        for i, drive_v in enumerate(drives_v):
            if not low <= drive_v <= high:
                check_range(self.name, f"drives_v[{i}]", drive_v, low, high)
        now_ps = self.world.now_ps
        self._from_v = self.actual_drives_v(now_ps)
        self._commanded_v = tuple(drives_v)
        self._set_ps = now_ps
        self._settled_trig = None
