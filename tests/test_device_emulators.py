"""Environment, interferometer and polarization emulators against closed-form expectations.

Statistical tolerances are K_SIGMA standard errors of the sample; time moves through the world's SimPy clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from drivers.errors import DriverError, SetpointOutOfRange
from drivers.interfaces import PhaseActuator, PolarizationController
from emulators.environment import Environment, EnvironmentParams, Excursion
from emulators.interferometer import EmulatedInterferometer, InterferometerParams
from emulators.polarization import EmulatedPolarization, PolarizationParams
from emulators.world import PS_PER_S, World

K_SIGMA = 5.0
HOUR_S = 3600.0
PERIOD_S = 10 * HOUR_S


def _ps(t_s: float) -> int:
    return round(t_s * PS_PER_S)


def _environment(world: World, amplitude_c: float = 2.0) -> Environment:
    return Environment(world, EnvironmentParams(20.0, amplitude_c, PERIOD_S, 0.0))


def _interferometer(world: World, env: Environment, name: str = "umzi-bob", **changes: float) -> EmulatedInterferometer:
    params = dict(visibility=0.997, fsr_ghz=2.5, phase0_rad=0.3, phase_per_kelvin_rad=0.05,
                  drift_rad_per_sqrt_s=0.0, piezo_rad_per_v=0.2, piezo_hysteresis_v=0.5,
                  min_voltage_v=0.0, max_voltage_v=100.0, reference_temperature_c=20.0)
    params.update(changes)
    return EmulatedInterferometer(world, InterferometerParams(**params), env, name)  # type: ignore[arg-type]


def _polarization(world: World, env: Environment, name: str = "pol-bob", **changes: object) -> EmulatedPolarization:
    params: dict[str, object] = dict(
        birefringence_walk_rad_per_sqrt_s=5e-3, rad_per_kelvin=1.0, reference_temperature_c=20.0,
        polarization_sensitivity=0.3, n_actuators=3, rad_per_v=math.pi / 2, min_drive_v=0.0, max_drive_v=10.0,
        response_time_s=0.2, initial_drives_v=(5.0, 5.0, 5.0))
    params.update(changes)
    return EmulatedPolarization(world, PolarizationParams(**params), env, name)  # type: ignore[arg-type]


# --- environment -------------------------------------------------------------------------------------------


def test_environment_follows_the_diurnal_sine() -> None:
    env = _environment(World(1), amplitude_c=2.0)
    for fraction, expected_c in [(0.0, 20.0), (0.25, 22.0), (0.5, 20.0), (0.75, 18.0), (1.0, 20.0)]:
        assert env.temperature_c(_ps(fraction * PERIOD_S)) == pytest.approx(expected_c, abs=1e-9)


def test_excursion_adds_its_delta_on_the_plateau_only() -> None:
    env = _environment(World(1), amplitude_c=0.0)
    env.add_excursion(Excursion(start_s=HOUR_S, duration_s=2 * HOUR_S, delta_c=5.0))
    assert env.temperature_c(_ps(HOUR_S)) == pytest.approx(20.0)
    assert env.temperature_c(_ps(HOUR_S + 0.25 * HOUR_S)) == pytest.approx(22.5)  # half-way up the ramp
    assert env.temperature_c(_ps(2 * HOUR_S)) == pytest.approx(25.0)  # mid-plateau
    assert env.temperature_c(_ps(1.5 * HOUR_S)) == pytest.approx(25.0)  # plateau starts after a quarter
    assert env.temperature_c(_ps(2.25 * HOUR_S)) == pytest.approx(25.0)  # ... and lasts half the duration
    falling_c = 20.0 + 5.0 * (1 - math.cos(math.pi / 4)) / 2  # an eighth of the duration before the end
    assert env.temperature_c(_ps(2.875 * HOUR_S)) == pytest.approx(falling_c)
    assert env.temperature_c(_ps(3 * HOUR_S + 1)) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        Excursion(0.0, 0.0, 1.0)


# --- interferometer ----------------------------------------------------------------------------------------


def test_interferometer_implements_the_contract_and_seed_figures() -> None:
    world = World(1)
    umzi = _interferometer(world, _environment(world))
    assert isinstance(umzi, PhaseActuator)
    assert umzi.imbalance_ps == pytest.approx(400.0)
    assert umzi.visibility == 0.997
    status = asyncio.run(umzi.status())
    assert status.voltage_v == 0.0
    assert status.temperature_c == pytest.approx(20.0)


def test_interferometer_phase_tracks_temperature() -> None:
    world = World(1)
    env = _environment(world, amplitude_c=2.0)
    umzi = _interferometer(world, env, piezo_hysteresis_v=0.0)
    phase0_rad = umzi.phase_rad(0)
    world.env.run(until=_ps(PERIOD_S / 4))
    delta_c = env.temperature_c(world.now_ps) - env.temperature_c(0)
    assert delta_c == pytest.approx(2.0)
    assert umzi.phase_rad(world.now_ps) - phase0_rad == pytest.approx(0.05 * delta_c, abs=1e-12)
    assert asyncio.run(umzi.status()).temperature_c == pytest.approx(22.0)


def test_interferometer_drift_variance_is_d2_t() -> None:
    world = World(7)
    d_rad_per_sqrt_s, dt_s, n = 0.01, 0.5, 20_000
    umzi = _interferometer(world, _environment(world, amplitude_c=0.0), drift_rad_per_sqrt_s=d_rad_per_sqrt_s)
    phases = [umzi.phase_rad(_ps(i * dt_s)) for i in range(n + 1)]
    steps = [b - a for a, b in itertools.pairwise(phases)]
    expected = d_rad_per_sqrt_s**2 * dt_s
    variance = sum(s * s for s in steps) / n
    assert abs(variance / expected - 1) < K_SIGMA * math.sqrt(2 / n)
    assert abs(sum(steps) / n) < K_SIGMA * math.sqrt(expected / n)
    with pytest.raises(ValueError, match="umzi-bob"):
        umzi.phase_rad(0)


def test_piezo_hysteresis_leaves_the_backlash_width() -> None:
    async def scenario() -> tuple[float, float, float]:
        world = World(1)
        umzi = _interferometer(world, _environment(world, amplitude_c=0.0), piezo_hysteresis_v=0.5)
        await umzi.set_voltage(5.0)
        up_rad = umzi.phase_rad(0)
        await umzi.set_voltage(10.0)
        await umzi.set_voltage(5.0)
        down_rad = umzi.phase_rad(0)
        await umzi.set_voltage(5.2)  # inside the band: no motion
        return up_rad, down_rad, umzi.phase_rad(0)

    up_rad, down_rad, inside_rad = asyncio.run(scenario())
    assert down_rad - up_rad == pytest.approx(0.2 * 0.5, abs=1e-12)
    assert inside_rad == down_rad


@pytest.mark.asyncio
async def test_piezo_out_of_range_names_the_device() -> None:
    world = World(1)
    umzi = _interferometer(world, _environment(world))
    with pytest.raises(SetpointOutOfRange, match="umzi-bob"):
        await umzi.set_voltage(100.5)
    assert (await umzi.status()).voltage_v == 0.0
    limits = await umzi.constraints()
    assert (limits.min_voltage_v, limits.max_voltage_v) == (0.0, 100.0)


def test_phase_jump_adds_a_step() -> None:
    world = World(1)
    umzi = _interferometer(world, _environment(world))
    before_rad = umzi.phase_rad(0)
    umzi.phase_jump(1.25)
    assert umzi.phase_rad(0) - before_rad == pytest.approx(1.25)


def _phase_path(seed: int) -> list[float]:
    world = World(seed)
    umzi = _interferometer(world, _environment(world), drift_rad_per_sqrt_s=1e-3)
    return [umzi.phase_rad(_ps(t_s)) for t_s in range(0, 100, 10)]


def test_interferometer_is_deterministic_per_seed() -> None:
    assert _phase_path(3) == _phase_path(3)
    assert _phase_path(3) != _phase_path(4)


# --- polarization ------------------------------------------------------------------------------------------


def test_polarization_implements_the_contract_and_validates() -> None:
    world = World(1)
    env = _environment(world)
    pol = _polarization(world, env)
    assert isinstance(pol, PolarizationController)
    limits = asyncio.run(pol.constraints())
    assert (limits.n_actuators, limits.response_time_s) == (3, 0.2)
    with pytest.raises(ValueError, match="n_actuators"):
        _polarization(world, env, n_actuators=2, initial_drives_v=(5.0, 5.0))
    with pytest.raises(SetpointOutOfRange, match="pol-bob"):
        asyncio.run(pol.set_drives((5.0, 10.5, 5.0)))
    with pytest.raises(DriverError, match="pol-bob"):
        asyncio.run(pol.set_drives((5.0, 5.0)))


def test_actuator_reaches_63_percent_after_one_time_constant() -> None:
    world = World(1)
    pol = _polarization(world, _environment(world), response_time_s=1.0, initial_drives_v=(0.0, 0.0, 0.0))
    world.env.run(until=_ps(2.0))
    asyncio.run(pol.set_drives((4.0, 0.0, 0.0)))
    assert asyncio.run(pol.status()).drives_v == (4.0, 0.0, 0.0)
    world.env.run(until=_ps(3.0))
    reached_v = pol.actual_drives_v(world.now_ps)[0]
    assert reached_v == pytest.approx(4.0 * (1 - math.exp(-1)), rel=1e-12)
    assert 0.63 < reached_v / 4.0 < 0.64
    world.env.run(until=_ps(40.0))
    assert pol.actual_drives_v(world.now_ps) == pytest.approx((4.0, 0.0, 0.0), abs=1e-12)


@pytest.mark.asyncio
async def test_drives_restore_efficiency_after_a_scramble() -> None:
    world = World(11)
    pol = _polarization(world, _environment(world), response_time_s=0.0)
    pol.scramble()
    now_ps = world.now_ps

    async def efficiency(drives_v: tuple[float, ...]) -> float:
        await pol.set_drives(drives_v)
        return pol.efficiency_factor(now_ps)

    grid_v = [2.0 + 0.5 * i for i in range(9)]  # 2..6 V: 2π of retardance in π/4 steps, clear of the limits
    best_v = (2.0, 2.0, 2.0)
    best = await efficiency(best_v)
    for drives_v in itertools.product(grid_v, repeat=3):
        if (eff := await efficiency(drives_v)) > best:
            best, best_v = eff, drives_v
    step_v = 0.25
    while step_v > 1e-3:  # coordinate descent from the best grid point
        improved = False
        for i, sign in itertools.product(range(3), (-1, 1)):
            trial_v = tuple(min(max(d + sign * step_v * (j == i), 0.0), 10.0) for j, d in enumerate(best_v))
            if (eff := await efficiency(trial_v)) > best:
                best, best_v, improved = eff, trial_v, True
        if not improved:
            step_v /= 2
    assert best > 0.999


def test_scrambled_states_are_uniform_on_the_sphere_and_efficiency_bounded() -> None:
    world = World(5)
    pol = _polarization(world, _environment(world))
    n = 3000
    alignments = []
    for _ in range(n):
        pol.scramble()
        alignments.append(pol.alignment(0))
        assert 0.7 <= pol.efficiency_factor(0) <= 1.0
    mean = sum(alignments) / n
    second_moment = sum(a * a for a in alignments) / n
    assert abs(mean) < K_SIGMA / math.sqrt(3 * n)  # s1 uniform on [-1, 1]: variance 1/3
    assert abs(second_moment - 1 / 3) < K_SIGMA * math.sqrt(4 / 45 / n)  # Var(s1²) = 1/5 - 1/9
    assert min(alignments) < -0.99 and max(alignments) > 0.99


def test_birefringence_walk_has_the_configured_diffusion() -> None:
    world = World(9)
    sigma_rad_per_sqrt_s, dt_s, n = 0.02, 0.5, 20_000
    pol = _polarization(world, _environment(world, amplitude_c=0.0),
                        birefringence_walk_rad_per_sqrt_s=sigma_rad_per_sqrt_s)
    s1 = [pol.alignment(_ps(i * dt_s)) for i in range(n + 1)]
    # For a small rotation ω, Δs1 = ω·(v × S1): variance σ²·dt·(1 − s1²).
    observed = sum((b - a) ** 2 for a, b in itertools.pairwise(s1))
    expected = sum(sigma_rad_per_sqrt_s**2 * dt_s * (1 - a * a) for a in s1[:-1])
    assert abs(observed / expected - 1) < K_SIGMA * math.sqrt(2 / n)
    assert all(0.7 <= 1 - 0.3 * (1 - a) / 2 <= 1.0 for a in s1)


def test_thermal_rotation_repeats_with_the_temperature_cycle() -> None:
    world = World(2)
    pol = _polarization(world, _environment(world, amplitude_c=2.0), birefringence_walk_rad_per_sqrt_s=0.0)
    start = pol.alignment(0)
    world.env.run(until=_ps(PERIOD_S / 4))
    warm = pol.alignment(world.now_ps)
    world.env.run(until=_ps(PERIOD_S))
    assert pol.alignment(world.now_ps) == pytest.approx(start, abs=1e-9)
    assert abs(warm - start) > 1e-3


def _efficiency_path(seed: int) -> list[float]:
    world = World(seed)
    pol = _polarization(world, _environment(world))
    return [pol.efficiency_factor(_ps(t_s)) for t_s in range(0, 1000, 100)]


def test_polarization_is_deterministic_per_seed() -> None:
    assert _efficiency_path(3) == _efficiency_path(3)
    assert _efficiency_path(3) != _efficiency_path(4)
