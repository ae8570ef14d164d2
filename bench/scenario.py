"""Scenario files: YAML → validated schema, with errors that name the file, the line and the field.

Every physical default below is the calibration of the first Nice-like link and cites its source. A
scenario overrides any of them; unknown fields are refused, so a typo never silently means a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.stack import StackSettings

METRICS = (
    "qber_z_mean",
    "qber_x_mean",
    "sifted_key_rate_bps_mean",
    "secret_key_rate_bps_mean",
    "sync_offset_error_ps_rms",
    "sync_offset_error_ps_max",
    "availability",
    "automatic_restarts",
    "manual_interventions",
    "key_bits_distilled",
    "key_bits_lost",
    "secret_key_rate_bps_asymptotic_mean",
    "sync_offset_error_ps_p999",
    "sync_residual_ps_rms",
    "sync_residual_ps_max",
    "sync_residual_ps_p999",
    "efficiency_variation_p99",
    "efficiency_variation_max",
    "ec_efficiency",
    "worst_recovery_s",
)
Metric = Literal[METRICS]  # type: ignore[valid-type]


class ScenarioError(Exception):
    """A scenario that cannot be read or does not validate; the message is meant for the user as is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    brightness_pairs_per_s_per_mw: float = Field(
        gt=0, description="SPDC pairs per second per mW of pump into the link's channel pair")
    centre_wavelength_nm: float = Field(1560.20, gt=0, description='seed 000: "Center wavelength 1560.20 nm"')
    bandwidth_nm: float = Field(80.0, gt=0, description='seed 000: "80 nm FWHM"')


class PumpConfig(_Strict):
    power_mw: float = Field(ge=0, description="initial setpoint, mW")
    min_power_mw: float = Field(0.0, ge=0)
    max_power_mw: float = Field(50.0, gt=0)
    settling_time_s: float = Field(1.0, ge=0, description="time to settle within 1 % of a new setpoint")

    @model_validator(mode="after")
    def _setpoint_in_range(self) -> Self:
        if not self.min_power_mw <= self.power_mw <= self.max_power_mw:
            raise ValueError(f"power_mw={self.power_mw} outside [{self.min_power_mw}, {self.max_power_mw}]")
        return self


class FibreConfig(_Strict):
    length_km: float = Field(ge=0)
    loss_db_per_km: float = Field(0.35, ge=0, description='seed 000: "Fiber loss: 0.35 dB/km"')
    device_loss_db: float = Field(0.0, ge=0, description="connectors, filters, analyser, dB")
    delay_ps_per_km_k: float = Field(37.0, description="thermal coefficient of delay of SMF-28, ps/(km·K)")
    dispersion_ps_per_nm_km: float = Field(17.0, description='seed 001, eq. 1: "D0 is 17 ps/nm/km"')
    dispersion_slope_ps_per_nm2_km: float = Field(0.06, description='seed 001, eq. 1: "S0 is 0.06 ps/nm2/km"')
    reference_wavelength_nm: float = Field(1550.0, gt=0, description="λ0 of D0 and S0, nm")
    compensation_ps_per_nm: float = Field(0.0, description="lumped DCM/DCF dispersion on this arm, ps/nm")


class DetectorConfig(_Strict):
    efficiency: float = Field(0.85, gt=0, le=1, description="ID281-class SNSPD system detection efficiency")
    dark_count_hz: float = Field(30.0, ge=0, description='seed 001, S10: "dark counts of approximately 30 counts/s"')
    jitter_fwhm_ps: float = Field(30.0, ge=0, description='seed 001, S6: SNSPD "single-channel time jitters of 30 ps"')
    dead_time_ns: float = Field(20.0, ge=0, description="non-paralysable recovery time (SNSPD class; not in the seeds)")
    max_bias_ua: float = Field(20.0, gt=0)
    bias_ua: float = Field(12.0, ge=0)
    temperature_k: float = Field(0.8, gt=0)
    recycle_period_s: float = Field(167_143.0, gt=0,
                                    description='325 h / 7: seed 000, "9 times (including 7 detector cooling cycles)"')
    recycling_s: float = Field(600.0, ge=0, description="cryocooler regeneration, offline, s")
    cooldown_s: float = Field(600.0, ge=0, description="cool-down to base temperature, offline, s")


class AnalyserConfig(_Strict):
    z_fraction: float = Field(0.5, gt=0, lt=1, description="beam-splitter ratio to the Z detector")


class InterferometerConfig(_Strict):
    fsr_ghz: float = Field(2.5, gt=0, description='seed 000: "Interferometer: ... FSR = 2.5 GHz"')
    visibility: float = Field(0.997, ge=0, le=1, description='seed 000: "Interferometer visibility: >99.7%"')
    phase0_rad: float = Field(0.0, description="phase at the reference temperature, rad")
    phase_per_kelvin_rad: float = Field(0.0, description="thermal phase coefficient of the housing, rad/K")
    drift_rad_per_sqrt_s: float = Field(2e-5, ge=0,
                                        description='seed 000: "Interferometer stability: 10⁻⁷ rad/s" over 10 h')
    piezo_rad_per_v: float = Field(0.1, gt=0, description="piezo phase per volt, rad/V")
    piezo_hysteresis_v: float = Field(0.5, ge=0, description="backlash width of the piezo, V")
    min_voltage_v: float = Field(0.0)
    max_voltage_v: float = Field(150.0)


class PolarizationConfig(_Strict):
    birefringence_walk_rad_per_sqrt_s: float = Field(
        0.0, ge=0, description="Poincaré-sphere random walk of the fibre, rad/√s (seed 000: ~10 h drift)")
    rad_per_kelvin: float = Field(0.0, description="thermal rotation of the fibre's birefringence, rad/K")
    polarization_sensitivity: float = Field(0.1, ge=0, le=1,
                                            description="SNSPD efficiency difference, best vs worst polarization")
    rad_per_v: float = Field(1.0, gt=0, description="actuator retardance per volt, rad/V")
    min_drive_v: float = Field(0.0)
    max_drive_v: float = Field(10.0)
    response_time_s: float = Field(1.0, gt=0, description='seed 000: "Response time: 1 second update period"')


class ClockConfig(_Strict):
    fractional_offset: float = Field(0.0, description="y0; the two nodes differ by ~7e-12 (seed 000: 7 ps/s)")
    aging_per_day: float = Field(0.0, description="linear frequency drift, 1/day")
    white_fm_adev_1s: float = Field(2e-12, ge=0, description="Allan deviation at 1 s (PRS10 datasheet: < 2e-11)")
    random_walk_fm_per_sqrt_s: float = Field(0.0, ge=0)
    initial_phase_max_ps: int = Field(250_000_000, ge=0, description="initial phase uniform in ±this, ps")
    update_s: float = Field(1.0, gt=0, description="step of the frequency-noise process, s")
    max_steer_ppt: float = Field(2000.0, gt=0, description="PRS10 SF command range, parts in 1e12")
    unlocked_offset_sd: float = Field(1e-10, ge=0, description="free-running frequency spread while unlocked")


class ChannelsConfig(_Strict):
    z: int = Field(ge=1)
    x_plus: int = Field(ge=1)
    x_minus: int = Field(ge=1)


class NodeConfig(_Strict):
    fibre: FibreConfig
    channels: ChannelsConfig
    wavelength_nm: float = Field(1560.20, gt=0, description="centre of the DWDM channel the node receives, nm")
    detectors: DetectorConfig = Field(default_factory=DetectorConfig)
    analyser: AnalyserConfig = Field(default_factory=AnalyserConfig)
    interferometer: InterferometerConfig = Field(default_factory=InterferometerConfig)
    polarization: PolarizationConfig = Field(default_factory=PolarizationConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)


class TaggerConfig(_Strict):
    rms_jitter_ps: float = Field(8.0, ge=0, description='seed 001, S6: "single-channel RMS time jitter of 8 ps"')
    max_input_delay_ps: int = Field(2_000_000_000, gt=0, description="software input delay range, ± ps")
    max_histogram_bins: int = Field(1 << 22, gt=0)
    max_tag_block_ps: int = Field(1_000_000_000_000, gt=0, description="longest raw-tag block, ps")
    buffer_rate_hz: float = Field(65e6, gt=0, description="sustained tag rate before overflow, tags/s")


class Excursion(_Strict):
    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    delta_c: float


class EnvironmentConfig(_Strict):
    mean_temperature_c: float = 20.0
    diurnal_amplitude_c: float = Field(0.0, ge=0, description="half the peak-to-peak swing, °C")
    diurnal_period_s: float = Field(36_000.0, gt=0,
                                    description='seed 000: "Drift period: Approximately 10 hours (diurnal ...)"')
    diurnal_phase_rad: float = 0.0
    excursions: tuple[Excursion, ...] = ()


class LinkConfig(_Strict):
    source: SourceConfig
    pump: PumpConfig
    alice: NodeConfig
    bob: NodeConfig
    filter_fwhm_nm: float = Field(
        0.5, gt=0, description="effective spectral width of a DWDM channel (100 GHz); seed 001 Table 2 → 1.0 nm"
                               " for its 200 GHz channels")
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    tagger: TaggerConfig = Field(default_factory=TaggerConfig)

    @model_validator(mode="after")
    def _distinct_channels(self) -> Self:
        chans = [c for n in (self.alice, self.bob) for c in (n.channels.z, n.channels.x_plus, n.channels.x_minus)]
        if len(set(chans)) != len(chans):
            raise ValueError(f"tagger channels must be distinct across both nodes, got {chans}")
        return self


class Bound(_Strict):
    min: float | None = None
    max: float | None = None

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


class FaultConfig(_Strict):
    """One injected fault: what, when, and the arguments its kind takes (see FAULT_ARGUMENTS)."""

    at_s: float = Field(ge=0, description="virtual time of the fault, s")
    kind: FaultKind
    node: Literal["alice", "bob"] | None = None
    device: str | None = Field(None, description="instrument_silent: the device's name, e.g. 'tagger-link'")
    duration_s: float | None = Field(None, gt=0)
    delta_rad: float | None = None
    delta_c: float | None = None
    delta_db: float | None = Field(None, description="loss_step: lasting extra fibre loss, dB")
    buffer_rate_hz: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _arguments_of_kind(self) -> Self:
        wanted = FAULT_ARGUMENTS[self.kind]
        given = {k for k in ("node", "device", "duration_s", "delta_rad", "delta_c", "delta_db", "buffer_rate_hz")
                 if getattr(self, k) is not None}
        if missing := [k for k in wanted if k not in given]:
            raise ValueError(f"{self.kind} needs {', '.join(missing)}")
        if extra := sorted(given - set(wanted)):
            raise ValueError(f"{self.kind} takes only {', '.join(wanted)}, not {', '.join(extra)}")
        return self

    def arguments(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FAULT_ARGUMENTS[self.kind]}


class Scenario(_Strict):
    name: str
    description: str = ""
    seed: int = Field(ge=0)
    duration_s: float = Field(gt=0, description="simulated time, s")
    fidelity: Literal["tags", "pairs", "stats"] = "stats"
    link: LinkConfig
    stack: StackSettings = Field(default_factory=StackSettings)
    faults: tuple[FaultConfig, ...] = ()
    acceptance: dict[Metric, Bound] = Field(default_factory=dict)


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


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names the schema allows at ``loc`` (empty if ``loc`` is not a model)."""
    model: Any = Scenario
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _describe(error: dict[str, Any], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        return "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    got = error.get("input")
    got_text = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    return f"{error['msg']}{got_text}"


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
