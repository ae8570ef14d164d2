"""Scenario files: YAML → validated schema, with errors that name the file, the line and the field.

Every physical default below is the calibration of the first Nice-like link and cites its source. A
scenario overrides any of them; unknown fields are refused, so a typo never silently means a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self, get_args

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bench.stack import StackSettings

# what each metric of report.json (bench/report.py) means, with its unit: the metrics a scenario may bound
METRIC_MEANINGS: dict[str, str] = {
    "qber_z_mean": "Z-basis QBER pooled over every sifted Z bit of the run, fraction (not %)",
    "qber_x_mean": "X-basis QBER pooled over every sifted X bit of the run, fraction (not %)",
    "sifted_key_rate_bps_mean": "sifted Z bits per simulated second, bit/s",
    "secret_key_rate_bps_mean": ("every sifted Z bit at the secret fraction the distilled blocks reached (the"
                                 " asymptotic estimate if none was distilled), per simulated second, bit/s"),
    "sync_offset_error_ps_rms": "RMS of true − estimated Alice–Bob offset over the tracked acquisitions, ps",
    "sync_offset_error_ps_max": "largest |true − estimated offset|, ps",
    "availability": "share of the simulated time spent generating key, 0..1",
    "automatic_restarts": "link-level fault episodes the supervisor closed within its recovery budget, count",
    "manual_interventions": "fault episodes open longer than stack.supervisor.recovery_budget_s, count",
    "key_bits_distilled": "secret key bits confirmed in both key stores, bit",
    "key_bits_lost": "sifted bits of abandoned distillation blocks, bit",
    "secret_key_rate_bps_asymptotic_mean": "Σ over key blocks of N_z[1 − f·h(E_z) − h(E_x)] per simulated second,"
                                           " bit/s",
    "sync_offset_error_ps_p999": "99.9th percentile of |true − estimated offset|, ps",
    "sync_residual_ps_rms": "RMS of true offset − compensation applied (what the coincidence window sees), ps",
    "sync_residual_ps_max": "largest |true offset − compensation applied|, ps",
    "sync_residual_ps_p999": "99.9th percentile of |true offset − compensation applied|, ps",
    "efficiency_variation_p99": "99th percentile of 1 − polarization efficiency / best, worse node, 1 s samples,"
                                " fraction",
    "efficiency_variation_max": "worst 1 s sample of 1 − polarization efficiency / best, worse node, fraction",
    "ec_efficiency": "error-correction inefficiency f of the distilled blocks (leak / n·h(QBER))",
    "worst_recovery_s": "longest link-level fault episode, from its first sign to key generation, s",
    "sync_residual_fraction_above_12ps": ("share of tracked acquisitions whose |true offset − compensation"
                                          " applied| is 12 ps or more (seed 000: \"drift within 12 ps\"), 0..1"),
    "qber_z_ci95_low": "lower end of the 95 % Clopper–Pearson interval of qber_z_mean, fraction",
    "qber_z_ci95_high": "upper end of the 95 % Clopper–Pearson interval of qber_z_mean, fraction",
    "qber_x_ci95_low": "lower end of the 95 % Clopper–Pearson interval of qber_x_mean, fraction",
    "qber_x_ci95_high": "upper end of the 95 % Clopper–Pearson interval of qber_x_mean, fraction",
    "sifted_bits_z": "sifted Z-basis bits of the run (the key), bit",
    "sifted_bits_x": "sifted X-basis bits of the run (the phase-error test), bit",
    "key_blocks": ("key blocks of stack.key_block_s the stack closed (the points of the QBER and key-rate"
                   " series), count"),
}
METRICS = tuple(METRIC_MEANINGS)
Metric = Literal[METRICS]  # type: ignore[valid-type]
MAX_STOCHASTIC_FAULTS = 10_000  # expected faults of one stochastic_faults entry over the run, at most


class ScenarioError(Exception):
    """A scenario that cannot be read or does not validate; the message is meant for the user as is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourceConfig(_Strict):
    """The SPDC source of time-energy entangled pairs (seed 000)."""

    brightness_pairs_per_s_per_mw: float = Field(
        gt=0, description="SPDC pairs per second per mW of pump into the link's channel pair")
    centre_wavelength_nm: float = Field(1560.20, gt=0, description='seed 000: "Center wavelength 1560.20 nm"')
    bandwidth_nm: float = Field(80.0, gt=0, description='seed 000: "80 nm FWHM"')


class PumpConfig(_Strict):
    """The 780 nm CW pump laser: its power sets the pair rate."""

    power_mw: float = Field(ge=0, description="initial setpoint, mW (the pump optimiser moves it)")
    min_power_mw: float = Field(0.0, ge=0, description="lowest setpoint the laser accepts, mW")
    max_power_mw: float = Field(50.0, gt=0, description="highest setpoint the laser accepts, mW")
    settling_time_s: float = Field(1.0, ge=0, description="time to settle within 1 % of a new setpoint")

    @model_validator(mode="after")
    def _setpoint_in_range(self) -> Self:
        if not self.min_power_mw <= self.power_mw <= self.max_power_mw:
            raise ValueError(f"power_mw={self.power_mw} outside [{self.min_power_mw}, {self.max_power_mw}]")
        return self


class FibreConfig(_Strict):
    """One fibre arm, source to node: loss, thermal delay and chromatic dispersion (SMF-28)."""

    length_km: float = Field(ge=0, description="fibre from the source to the node's analyser, km")
    loss_db_per_km: float = Field(0.35, ge=0, description='seed 000: "Fiber loss: 0.35 dB/km"')
    device_loss_db: float = Field(0.0, ge=0, description="connectors, filters, analyser, dB")
    delay_ps_per_km_k: float = Field(37.0, description="thermal coefficient of delay of SMF-28, ps/(km·K)")
    dispersion_ps_per_nm_km: float = Field(17.0, description='seed 001, eq. 1: "D0 is 17 ps/nm/km"')
    dispersion_slope_ps_per_nm2_km: float = Field(0.06, description='seed 001, eq. 1: "S0 is 0.06 ps/nm2/km"')
    reference_wavelength_nm: float = Field(1550.0, gt=0, description="λ0 of D0 and S0, nm")
    compensation_ps_per_nm: float = Field(0.0, description="lumped DCM/DCF dispersion on this arm, ps/nm")


class DetectorConfig(_Strict):
    """The node's SNSPD rack (ID281 class), cooling cycles included."""

    efficiency: float = Field(0.85, gt=0, le=1, description="ID281-class SNSPD system detection efficiency")
    dark_count_hz: float = Field(30.0, ge=0, description='seed 001, S10: "dark counts of approximately 30 counts/s"')
    jitter_fwhm_ps: float = Field(30.0, ge=0, description='seed 001, S6: SNSPD "single-channel time jitters of 30 ps"')
    dead_time_ns: float = Field(20.0, ge=0, description="non-paralysable recovery time (SNSPD class; not in the seeds)")
    max_bias_ua: float = Field(20.0, gt=0, description="largest bias current the driver accepts, µA")
    bias_ua: float = Field(12.0, ge=0, description="bias current at start, µA")
    temperature_k: float = Field(0.8, gt=0, description="base temperature of the cryostat, K")
    recycle_period_s: float = Field(167_143.0, gt=0,
                                    description='325 h / 7: seed 000, "9 times (including 7 detector cooling cycles)"')
    first_recycle_s: float | None = Field(None, ge=0, description=(
        "virtual time of the first regeneration, s; unset: uniform in the first period (racks not in step)"))
    recycling_s: float = Field(600.0, ge=0, description="cryocooler regeneration, offline, s")
    cooldown_s: float = Field(600.0, ge=0, description="cool-down to base temperature, offline, s")


class AnalyserConfig(_Strict):
    """The passive basis choice: a beam splitter between the Z detector and the interferometer."""

    z_fraction: float = Field(0.5, gt=0, lt=1, description="beam-splitter ratio to the Z detector")


class InterferometerConfig(_Strict):
    """The node's unbalanced Mach-Zehnder (Franson) interferometer and its piezo."""

    fsr_ghz: float = Field(2.5, gt=0, description='seed 000: "Interferometer: ... FSR = 2.5 GHz"')
    visibility: float = Field(0.997, ge=0, le=1, description='seed 000: "Interferometer visibility: >99.7%"')
    phase0_rad: float = Field(0.0, description="phase at the reference temperature, rad")
    phase_per_kelvin_rad: float = Field(0.0, description="thermal phase coefficient of the housing, rad/K")
    drift_rad_per_sqrt_s: float = Field(2e-5, ge=0,
                                        description='seed 000: "Interferometer stability: 10⁻⁷ rad/s" over 10 h')
    piezo_rad_per_v: float = Field(0.1, gt=0, description="piezo phase per volt, rad/V")
    piezo_hysteresis_v: float = Field(0.5, ge=0, description="backlash width of the piezo, V")
    min_voltage_v: float = Field(0.0, description="lower end of the piezo driver's range, V")
    max_voltage_v: float = Field(150.0, description="upper end of the piezo driver's range, V")


class PolarizationConfig(_Strict):
    """Fibre birefringence drift and the node's thermo-optic polarization controller."""

    birefringence_walk_rad_per_sqrt_s: float = Field(
        0.0, ge=0, description="Poincaré-sphere random walk of the fibre, rad/√s (seed 000: ~10 h drift)")
    rad_per_kelvin: float = Field(0.0, description="thermal rotation of the fibre's birefringence, rad/K")
    polarization_sensitivity: float = Field(0.1, ge=0, le=1,
                                            description="SNSPD efficiency difference, best vs worst polarization")
    rad_per_v: float = Field(1.0, gt=0, description="actuator retardance per volt, rad/V")
    min_drive_v: float = Field(0.0, description="lower end of each actuator's drive range, V")
    max_drive_v: float = Field(10.0, description="upper end of each actuator's drive range, V")
    response_time_s: float = Field(1.0, gt=0, description='seed 000: "Response time: 1 second update period"')


class ClockConfig(_Strict):
    """The node's rubidium frequency reference (PRS10 class): offset, noise, aging, steering."""

    fractional_offset: float = Field(0.0, description="y0; the two nodes differ by ~7e-12 (seed 000: 7 ps/s)")
    aging_per_day: float = Field(0.0, description="linear frequency drift, 1/day")
    white_fm_adev_1s: float = Field(2e-12, ge=0, description="Allan deviation at 1 s (PRS10 datasheet: < 2e-11)")
    random_walk_fm_per_sqrt_s: float = Field(0.0, ge=0, description="random-walk frequency noise, 1/√s")
    initial_phase_max_ps: int = Field(250_000_000, ge=0, description="initial phase uniform in ±this, ps")
    update_s: float = Field(1.0, gt=0, description="step of the frequency-noise process, s")
    max_steer_ppt: float = Field(2000.0, gt=0, description="PRS10 SF command range, parts in 1e12")
    unlocked_offset_sd: float = Field(1e-10, ge=0, description="free-running frequency spread while unlocked")


class ChannelsConfig(_Strict):
    """Tagger inputs of the node's three detectors; distinct across both nodes."""

    z: int = Field(ge=1, description="tagger input of the node's Z-basis (arrival time) detector")
    x_plus: int = Field(ge=1, description="tagger input of the interferometer's + output detector")
    x_minus: int = Field(ge=1, description="tagger input of the interferometer's − output detector")


class NodeConfig(_Strict):
    """One node: its fibre arm from the source, its analyser and detectors, and its clock."""

    fibre: FibreConfig = Field(description="the fibre arm from the source to this node")
    channels: ChannelsConfig = Field(description="the node's detectors on the tagger's inputs")
    wavelength_nm: float = Field(1560.20, gt=0, description="centre of the DWDM channel the node receives, nm")
    detectors: DetectorConfig = Field(default_factory=DetectorConfig, description="the node's SNSPDs")
    analyser: AnalyserConfig = Field(default_factory=AnalyserConfig, description="the passive basis choice")
    interferometer: InterferometerConfig = Field(default_factory=InterferometerConfig,
                                                 description="the X-basis (Franson) interferometer")
    polarization: PolarizationConfig = Field(default_factory=PolarizationConfig,
                                             description="fibre birefringence and the polarization controller")
    clock: ClockConfig = Field(default_factory=ClockConfig, description="the node's rubidium reference")


class TaggerConfig(_Strict):
    """The time tagger (Swabian Time Tagger Ultra class)."""

    rms_jitter_ps: float = Field(8.0, ge=0, description='seed 001, S6: "single-channel RMS time jitter of 8 ps"')
    max_input_delay_ps: int = Field(2_000_000_000, gt=0, description="software input delay range, ± ps")
    max_histogram_bins: int = Field(1 << 22, gt=0, description="largest on-device correlation histogram, bins")
    max_tag_block_ps: int = Field(1_000_000_000_000, gt=0, description="longest raw-tag block, ps")
    buffer_rate_hz: float = Field(65e6, gt=0, description="sustained tag rate before overflow, tags/s")


class Excursion(_Strict):
    """A temperature disturbance: ramp up, plateau, ramp down."""

    start_s: float = Field(ge=0, description="virtual time the excursion starts, s")
    duration_s: float = Field(gt=0, description="from the start of the rise to the end of the fall, s")
    delta_c: float = Field(description="temperature change on the plateau, °C (negative: a cold spell)")


class EnvironmentConfig(_Strict):
    """Temperature seen by the fibre, the interferometers and the polarization: a diurnal cycle plus excursions."""

    mean_temperature_c: float = Field(20.0, description="mean temperature, the reference of every thermal"
                                                        " coefficient, °C")
    diurnal_amplitude_c: float = Field(0.0, ge=0, description="half the peak-to-peak swing, °C")
    diurnal_period_s: float = Field(36_000.0, gt=0,
                                    description='seed 000: "Drift period: Approximately 10 hours (diurnal ...)"')
    diurnal_phase_rad: float = Field(0.0, description="phase of the diurnal cycle at t = 0, rad")
    excursions: tuple[Excursion, ...] = Field((), description="temperature disturbances on top of the cycle")


class LinkConfig(_Strict):
    """The emulated link: what the physics of a run is made of."""

    source: SourceConfig = Field(description="the entangled-pair source")
    pump: PumpConfig = Field(description="the 780 nm CW pump laser")
    alice: NodeConfig = Field(description="one end of the link")
    bob: NodeConfig = Field(description="the other end of the link")
    filter_fwhm_nm: float = Field(
        0.5, gt=0, description="effective spectral width of a DWDM channel (100 GHz); seed 001 Table 2 → 1.0 nm"
                               " for its 200 GHz channels")
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig,
                                           description="temperature of huts and buried fibre")
    tagger: TaggerConfig = Field(default_factory=TaggerConfig, description="the time tagger both nodes' detectors"
                                                                           " feed")

    @model_validator(mode="after")
    def _distinct_channels(self) -> Self:
        chans = [c for n in (self.alice, self.bob) for c in (n.channels.z, n.channels.x_plus, n.channels.x_minus)]
        if len(set(chans)) != len(chans):
            raise ValueError(f"tagger channels must be distinct across both nodes, got {chans}")
        return self


class Bound(_Strict):
    """An acceptance criterion: the metric must lie within [min, max] (either may be left out)."""

    min: float | None = Field(None, description="lowest value that passes, in the metric's unit")
    max: float | None = Field(None, description="highest value that passes, in the metric's unit")

    @model_validator(mode="after")
    def _some_bound(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def __str__(self) -> str:
        if self.min is not None and self.max is not None:
            return f"[{self.min:g}, {self.max:g}]"
        return f">= {self.min:g}" if self.min is not None else f"<= {self.max:g}"


FAULT_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "clock_unlock": ("node", "duration_s"),
    "fibre_cut": ("node", "duration_s"),
    "detector_warm_up": ("node", "duration_s"),
    "tagger_overflow": ("duration_s", "buffer_rate_hz"),
    "instrument_silent": ("device", "duration_s"),
    "phase_jump": ("node", "delta_rad"),
    "polarization_scramble": ("node",),
    "temperature_excursion": ("duration_s", "delta_c"),
    "loss_step": ("node", "delta_db"),
}
FaultKind = Literal[tuple(FAULT_ARGUMENTS)]  # type: ignore[valid-type]
FAULT_EFFECTS: dict[str, str] = {  # what each kind does to the emulated link (emulators/faults.py)
    "clock_unlock": "the node's rubidium clock loses lock and free-runs for duration_s",
    "fibre_cut": "the node's fibre arm transmits nothing for duration_s",
    "detector_warm_up": "the node's detector rack warms up (a cryocooler trip) for duration_s, then cools"
                        " down for cooldown_s",
    "tagger_overflow": "the tagger's stream carries at most buffer_rate_hz tags/s for duration_s",
    "instrument_silent": "the device stops answering its driver (calls time out) for duration_s",
    "phase_jump": "the node's interferometer phase jumps by delta_rad",
    "polarization_scramble": "the node's fibre polarization rotation jumps to a random one (a cable knocked)",
    "temperature_excursion": "the temperature rises by delta_c (plateau) over duration_s, ramps included, on top"
                             " of the diurnal cycle",
    "loss_step": "the node's fibre loss grows by delta_db for the rest of the run",
}


class _FaultArguments(_Strict):
    """A fault's kind and the arguments that kind takes (FAULT_ARGUMENTS); any other argument is refused."""

    kind: FaultKind = Field(description="what fails; see the fault kinds table")
    node: Literal["alice", "bob"] | None = Field(None, description="the node whose device fails")
    device: str | None = Field(None, description="instrument_silent: the device's name, e.g. 'tagger-link'")
    duration_s: float | None = Field(None, gt=0, description="how long the fault lasts, s")
    delta_rad: float | None = Field(None, description="phase_jump: the jump of the interferometer phase, rad")
    delta_c: float | None = Field(None, description="temperature_excursion: change on the plateau, °C")
    delta_db: float | None = Field(None, description="loss_step: lasting extra fibre loss, dB")
    buffer_rate_hz: float | None = Field(None, gt=0, description="tagger_overflow: the choked tag rate, tags/s")

    @model_validator(mode="after")
    def _arguments_of_kind(self) -> Self:
        wanted = FAULT_ARGUMENTS[self.kind]
        given = {k for k in _ARGUMENT_FIELDS if getattr(self, k) is not None}
        if missing := [k for k in wanted if k not in given]:
            raise ValueError(f"{self.kind} needs {', '.join(missing)}")
        if extra := sorted(given - set(wanted)):
            raise ValueError(f"{self.kind} takes only {', '.join(wanted)}, not {', '.join(extra)}")
        return self

    def arguments(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FAULT_ARGUMENTS[self.kind]}


_ARGUMENT_FIELDS = tuple(k for k in _FaultArguments.model_fields if k != "kind")


class FaultConfig(_FaultArguments):
    """One fault at an explicit virtual time, with the arguments its kind takes (FAULT_ARGUMENTS)."""

    at_s: float = Field(ge=0, description="virtual time of the fault, s")


class StochasticFault(_FaultArguments):
    """Faults of one kind at random times: a Poisson process of rate 1/``mtbf_s`` drawn from its own ``seed``."""

    mtbf_s: float = Field(gt=0, description="mean time between the onsets of this entry's faults, s")
    seed: int = Field(ge=0, description="seed of this entry's own generator: the run's seed does not move the faults")
    max_duration_s: float | None = Field(None, gt=0, description=(
        "if given, each fault lasts a time drawn uniformly in [duration_s, max_duration_s], s"))

    @model_validator(mode="after")
    def _duration_range(self) -> Self:
        if self.max_duration_s is not None:
            if "duration_s" not in FAULT_ARGUMENTS[self.kind]:
                raise ValueError(f"max_duration_s needs a kind that takes duration_s, not {self.kind}")
            if self.max_duration_s < self.duration_s:  # type: ignore[operator]
                raise ValueError(f"max_duration_s {self.max_duration_s} < duration_s {self.duration_s}")
        return self

    def expand(self, duration_s: float) -> tuple[FaultConfig, ...]:
        """The explicit faults this entry makes over [0, ``duration_s``) s, in time order; the same for a seed."""
        rng = np.random.default_rng(self.seed)
        faults = []
        for t in np.sort(rng.uniform(0.0, duration_s, rng.poisson(duration_s / self.mtbf_s))):
            fault = {"at_s": float(t), "kind": self.kind, **self.arguments()}
            if self.max_duration_s is not None:
                fault["duration_s"] = float(rng.uniform(self.duration_s, self.max_duration_s))
            faults.append(FaultConfig(**fault))
        return tuple(faults)


class Reference(_Strict):
    """A published figure the scenario mirrors, for the report's comparison table (not an acceptance bound)."""

    value: float = Field(description="the figure, in the metric's own unit (fractions, not %)")
    tolerance: float | None = Field(None, gt=0, description="relative band the figure quotes or implies, e.g. 0.15")
    source: str = Field(min_length=1, description='where it comes from, e.g. \'seed 000: "7.069 kbps average"\'')


class Scenario(_Strict):
    """A scenario file: the link, the stack, the faults, how long, at which fidelity, and what must hold."""

    name: str = Field(description="the scenario's name, used for run directories and reports")
    description: str = Field("", description="what the scenario replays, for the report")
    seed: int = Field(ge=0, description="seed of every emulated device (`qkd-bench run --seed` overrides it)")
    duration_s: float = Field(gt=0, description="simulated time, s (`qkd-bench run --until` stops earlier)")
    checkpoint_interval_s: float = Field(3600.0, gt=0, description=(
        "simulated time between two checkpoints, s: the run is segmented there and a snapshot written to"
        " DIR/checkpoint, from which `qkd-bench resume DIR` continues a killed run (docs/decisions/0004)"))
    fidelity: Literal["tags", "pairs", "stats"] = Field("stats", description=(
        "what the emulated tagger hands over: every detection, every coincidence candidate, or sampled statistics"
        " (`qkd-bench run --fidelity` overrides it)"))
    link: LinkConfig = Field(description="the emulated link: source, pump, both nodes, environment, tagger")
    stack: StackSettings = Field(default_factory=StackSettings, description="the control and key-distillation stack")
    faults: tuple[FaultConfig, ...] = Field((), description="faults injected at explicit times")
    stochastic_faults: tuple[StochasticFault, ...] = Field((), description=(
        "faults injected at random times, each entry with its own MTBF and seed"))
    acceptance: dict[Metric, Bound] = Field(default_factory=dict, description=(
        "bounds on the run's metrics; the run passes (exit code 0) when every one holds"))
    reference: dict[Metric, Reference] = Field(default_factory=dict, description=(
        "published figures the run is compared with in the report, by metric"))

    @field_validator("faults")
    @classmethod
    def _within_the_run(cls, entries: tuple[FaultConfig, ...], info: ValidationInfo) -> tuple[FaultConfig, ...]:
        duration_s = info.data.get("duration_s")
        for i, entry in enumerate(entries):
            if duration_s is not None and entry.at_s >= duration_s:
                raise ValueError(f"entry {i}: at_s={entry.at_s:g} is not before duration_s={duration_s:g}; the fault"
                                 " would never be injected")
        return entries

    @field_validator("stochastic_faults")
    @classmethod
    def _few_enough(cls, entries: tuple[StochasticFault, ...], info: ValidationInfo) -> tuple[StochasticFault, ...]:
        duration_s = info.data.get("duration_s")
        for i, entry in enumerate(entries):
            if duration_s is not None and duration_s / entry.mtbf_s > MAX_STOCHASTIC_FAULTS:
                raise ValueError(f"entry {i}: mtbf_s={entry.mtbf_s:g} expects {duration_s / entry.mtbf_s:.3g} faults"
                                 f" in duration_s={duration_s:g}; at most {MAX_STOCHASTIC_FAULTS} per entry")
        return entries

    def fault_timeline(self) -> tuple[FaultConfig, ...]:
        """The explicit faults and every stochastic entry's faults over [0, duration_s), in time order."""
        stochastic = [f for entry in self.stochastic_faults for f in entry.expand(self.duration_s)]
        return tuple(sorted((*self.faults, *stochastic), key=lambda f: f.at_s))


def _line_map(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], file: str) -> None:
    """Record the 1-based line of every key path (where the key is written); refuse duplicate keys."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            k = key.value
            if k in seen:
                raise ScenarioError(f"{file}:{key.start_mark.line + 1}: {'.'.join(map(str, (*path, k)))}: "
                                    f"duplicate key")
            seen.add(k)
            lines[(*path, k)] = key.start_mark.line + 1
            _line_map(value, (*path, k), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), lines, file)


def _nearest_line(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds: itself, or the items of its tuple, or the values of its mapping."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names the schema allows at ``loc`` (empty if ``loc`` is not a model)."""
    model: type[BaseModel] = Scenario
    parts = list(loc)
    while parts:
        field = model.model_fields.get(parts.pop(0))
        inner = nested_model(field.annotation) if field is not None else None
        if inner is None:
            return []
        if field.annotation is not inner:  # a tuple or a mapping of models: skip the index or the key
            if not parts:
                return []
            parts.pop(0)
        model = inner
    return list(model.model_fields)


_IN_YAML_TERMS = {  # pydantic messages that name Python types, as a scenario's author would put them
    "model_type": "Input should be a mapping (field: value, …)",
    "dict_type": "Input should be a mapping (key: value, …)",
    "tuple_type": "Input should be a list (- item, …)",
}


def _describe(error: dict[str, Any], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        return "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    got = error.get("input")
    got_text = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    return f"{_IN_YAML_TERMS.get(kind, error['msg'])}{got_text}"


def parse_scenario(text: str, file: str = "<scenario>") -> Scenario:
    """Validate scenario YAML ``text``; ``file`` names it in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or root is None:
        raise ScenarioError(f"{file}:1: a scenario must be a YAML mapping (name:, seed:, duration_s:, link:, …)")
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(root, (), lines, file)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"]
                        if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))
            field = ".".join(map(str, loc)) or "(top level)"
            messages.append(f"{file}:{_nearest_line(lines, loc)}: {field}: {_describe(error, loc)}")
        raise ScenarioError("\n".join(messages)) from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from None
    return parse_scenario(text, str(path))
