"""Scenario loading: the shipped file validates, and every bad input names the file, the line and the field.

Bad scenarios are made by editing the text of the shipped scenario, so line numbers are those of a realistic file;
expected line numbers are computed from the edited text, never hard-coded. The generated cases break every field of
the schema in each way it can be broken, in the shipped scenario loaded and dumped back to YAML; their expected line
is where PyYAML's parser finds the field's key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import numpy as np
import pytest
import yaml
from poisson_checks import K, check_poisson
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from scenario_text import SMOKE, TEXT, edit, line_of
from scipy.stats import expon, kstest

from bench.rig import build_emulated_rig
from bench.scenario import (
    FAULT_ARGUMENTS,
    MAX_STOCHASTIC_FAULTS,
    METRICS,
    FaultConfig,
    Scenario,
    ScenarioError,
    StochasticFault,
    load_scenario,
    nested_model,
    parse_scenario,
)
from emulators.world import PS_PER_S

FILE = "bad.yaml"


def first_key_line(text: str) -> int:
    """1-based line of the first top-level key (where the document's mapping starts)."""
    for n, line in enumerate(text.splitlines(), start=1):
        if line and not line.startswith(("#", " ")):
            return n
    raise AssertionError("no top-level key")


def error_of(text: str, file: str = FILE) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, file)
    return str(info.value)


def assert_names(message: str, file: str, line: int, field: str, *problem: str) -> str:
    """Some line of ``message`` is ``file:line: field: ...`` and mentions every ``problem`` fragment."""
    prefix = f"{file}:{line}: {field}: "
    matching = [m for m in message.splitlines() if m.startswith(prefix)]
    assert matching, f"no line starts with {prefix!r} in:\n{message}"
    for fragment in problem:
        assert fragment in matching[0], f"{fragment!r} not in {matching[0]!r}"
    return matching[0]


# --- the shipped scenario -----------------------------------------------------------------------------------------


def test_shipped_scenario_validates_and_defaults_resolve() -> None:
    scenario = load_scenario(SMOKE)
    assert isinstance(scenario, Scenario)
    assert scenario.name == "smoke-50km-1h"
    assert scenario.seed == 20251105
    assert scenario.duration_s == 3600
    assert scenario.fidelity == "stats"
    # values given in the file
    assert scenario.link.pump.power_mw == 19.2
    assert scenario.link.bob.fibre.length_km == 50.0
    assert scenario.link.bob.fibre.device_loss_db == pytest.approx(2.553)
    assert (scenario.link.bob.channels.z, scenario.link.bob.channels.x_plus, scenario.link.bob.channels.x_minus) == (
        5, 6, 7)
    # defaults the file leaves out
    assert scenario.stack.coincidence_window_ps == 120
    assert scenario.link.alice.fibre.loss_db_per_km == 0.35
    assert scenario.link.bob.detectors.efficiency == 0.85
    assert scenario.link.bob.detectors.dark_count_hz == 30.0
    assert scenario.link.alice.interferometer.visibility == 0.997
    assert scenario.link.tagger.rms_jitter_ps == 8.0
    assert scenario.link.pump.min_power_mw == 0.0
    assert scenario.link.pump.max_power_mw == 50.0
    # acceptance criteria
    assert set(scenario.acceptance) == {"qber_z_mean", "secret_key_rate_bps_mean", "sync_offset_error_ps_rms"}
    qber = scenario.acceptance["qber_z_mean"]
    assert (qber.min, qber.max) == (0.03, 0.06)
    assert qber.holds(0.043) and not qber.holds(0.07) and not qber.holds(0.01)
    assert scenario.acceptance["sync_offset_error_ps_rms"].max == 12.0


def test_parse_and_load_agree_on_the_shipped_scenario() -> None:
    assert parse_scenario(TEXT, str(SMOKE)) == load_scenario(SMOKE)


def test_optional_top_level_fields_have_defaults() -> None:
    text = edit("fidelity: stats\n", "")
    text = text[:text.index("acceptance:")]
    scenario = parse_scenario(text, FILE)
    assert scenario.fidelity == "stats"
    assert scenario.acceptance == {}
    assert scenario.stack.coincidence_window_ps == 120


# --- unknown fields -----------------------------------------------------------------------------------------------


def test_unknown_nested_field_is_refused_with_allowed_names() -> None:
    text = edit("fibre: {length_km: 0.1, device_loss_db: 12.0, compensation_ps_per_nm: -880.0}",
                "fibre: {length_km: 0.1, lenght: 0.1, device_loss_db: 12.0, "
                           "compensation_ps_per_nm: -880.0}")
    message = error_of(text)
    line = line_of(text, "lenght")
    assert message.splitlines() == [message]  # exactly one problem
    assert_names(message, FILE, line, "link.alice.fibre.lenght", "unknown field",
                 "allowed: length_km, loss_db_per_km, device_loss_db")


def test_misspelt_required_field_reports_the_typo_and_the_missing_field() -> None:
    text = edit("fibre: {length_km: 0.1,", "fibre: {lenght: 0.1,")
    message = error_of(text)
    line = line_of(text, "lenght")
    assert_names(message, FILE, line, "link.alice.fibre.lenght", "unknown field", "length_km")
    assert_names(message, FILE, line, "link.alice.fibre.length_km", "required field is missing")


def test_unknown_field_in_a_block_mapping_points_at_its_own_line() -> None:
    text = edit("    power_mw: 19.2\n", "    power_mw: 19.2\n    powr_mw: 6.0\n")
    assert_names(error_of(text), FILE, line_of(text, "powr_mw"), "link.pump.powr_mw", "unknown field", "power_mw")


def test_unknown_top_level_field() -> None:
    text = edit("fidelity: stats\n", "fidelity: stats\nfidellity: pairs\n")
    assert_names(error_of(text), FILE, line_of(text, "fidellity"), "fidellity", "unknown field", "fidelity")


# --- wrong types --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "field", "problem"), [
    pytest.param("seed: 20251105", 'seed: "abc"', "seed", ("valid integer", "'abc'"), id="seed-string"),
    pytest.param("duration_s: 3600", "duration_s: [1]", "duration_s", ("valid number",), id="duration-list"),
    pytest.param("fidelity: stats", "fidelity: photons", "fidelity", ("'stats'", "'photons'"), id="fidelity-literal"),
    pytest.param("{z: 5,", "{z: five,", "link.bob.channels.z", ("valid integer", "'five'"), id="channel-string"),
])
def test_wrong_type_names_field_and_line(old: str, new: str, field: str, problem: tuple[str, ...]) -> None:
    text = edit(old, new)
    message = error_of(text)
    assert message.splitlines() == [message]
    assert_names(message, FILE, line_of(text, new), field, *problem)


# --- out-of-range values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "field", "got"), [
    pytest.param("fibre: {length_km: 0.1, device_loss_db: 12.0, compensation_ps_per_nm: -880.0}",
                 "fibre: {length_km: 0.1, device_loss_db: -1}",
                 "link.alice.fibre.device_loss_db", "(got -1)", id="device-loss"),
    pytest.param("fibre: {length_km: 50.0,", "fibre: {length_km: -2,", "link.bob.fibre.length_km", "(got -2)",
                 id="length"),
])
def test_negative_loss_is_refused(old: str, new: str, field: str, got: str) -> None:
    text = edit(old, new)
    message = error_of(text)
    assert message.splitlines() == [message]
    assert_names(message, FILE, line_of(text, new), field, "greater than or equal to 0", got)


@pytest.mark.parametrize(("pump", "problem"), [
    pytest.param("{power_mw: 60.0}", "power_mw=60.0 outside [0.0, 50.0]", id="above-default-max"),
    pytest.param("{power_mw: 5.0, min_power_mw: 6.0}", "power_mw=5.0 outside [6.0, 50.0]", id="below-min"),
    pytest.param("{power_mw: 5.0, max_power_mw: 4.0}", "power_mw=5.0 outside [0.0, 4.0]", id="above-max"),
])
def test_pump_power_outside_its_range(pump: str, problem: str) -> None:
    text = edit("  pump:\n    power_mw: 19.2\n", f"  pump: {pump}\n")
    message = error_of(text)
    assert message.splitlines() == [message]
    assert_names(message, FILE, line_of(text, "pump:"), "link.pump", problem)


def test_pump_power_at_its_bounds_is_accepted() -> None:
    text = edit("  pump:\n    power_mw: 19.2\n", "  pump: {power_mw: 50.0, min_power_mw: 50.0}\n")
    assert parse_scenario(text, FILE).link.pump.power_mw == 50.0


# --- missing fields -----------------------------------------------------------------------------------------------


def test_missing_duration_is_reported_at_the_top_level_mapping() -> None:
    text = edit("duration_s: 3600\n", "")
    message = error_of(text)
    assert message.splitlines() == [message]
    assert_names(message, FILE, first_key_line(text), "duration_s", "required field is missing")


@pytest.mark.parametrize(("old", "new", "key", "field", "problem"), [
    pytest.param("    channels: {z: 1, x_plus: 2, x_minus: 3}\n", "", "  alice:", "link.alice.channels",
                 "required field is missing", id="missing-nested-field"),
    pytest.param("{z: 5,", "{z: 1,", "link:", "link", "tagger channels must be distinct", id="link-validator"),
])
def test_error_about_a_block_mapping_points_at_its_key(old: str, new: str, key: str, field: str,
                                                        problem: str) -> None:
    text = edit(old, new)
    key_line = text.splitlines().index(key) + 1  # ``key`` is the whole line
    assert_names(error_of(text), FILE, key_line, field, problem)


# --- unreadable YAML ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "problem"), [
    pytest.param("fidelity: stats", "fidelity: stats: pairs", "mapping values are not allowed", id="colon"),
    pytest.param("  pump:\n    power_mw: 19.2\n", "  pump:\n\tpower_mw: 19.2\n", "'\\t'", id="tab"),
])
def test_yaml_syntax_error_names_file_and_line(old: str, new: str, problem: str) -> None:
    text = edit(old, new)
    message = error_of(text)
    assert message.splitlines() == [message]
    line = line_of(text, new.strip().splitlines()[-1])  # the offending line itself
    assert message.startswith(f"{FILE}:{line}: not valid YAML: "), message
    assert problem in message


def test_two_yaml_documents_are_refused() -> None:
    text = TEXT + "---\nname: second\n"
    message = error_of(text)
    assert message.startswith(f"{FILE}:{line_of(text, '---')}: not valid YAML: "), message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(edit("name: smoke-50km-1h", "name: smoke-50km-1h  # Nice–Sophia, café").encode("cp1252"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "utf-8" in message.lower()
    assert "Traceback" not in message


def test_file_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError, match="no such scenario file") as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: ")


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario") as info:
        load_scenario(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_load_names_the_path_in_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "neg.yaml"
    text = edit("fibre: {length_km: 50.0,", "fibre: {length_km: -2,")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert_names(str(info.value), str(path), line_of(text, "length_km: -2"), "link.bob.fibre.length_km", "(got -2)")


# --- duplicate keys -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "needle", "field"), [
    pytest.param("fidelity: stats\n", "fidelity: stats\nseed: 1\n", "seed: 1", "seed", id="top-level"),
    pytest.param("{z: 1,", "{z: 1, z: 4,", "z: 4", "link.alice.channels.z", id="flow-mapping"),
    pytest.param("    power_mw: 19.2\n", "    power_mw: 19.2\n    power_mw: 6.0\n", "power_mw: 6.0",
                 "link.pump.power_mw", id="block-mapping"),
])
def test_duplicate_key_is_refused_at_its_second_occurrence(old: str, new: str, needle: str, field: str) -> None:
    text = edit(old, new)
    message = error_of(text)
    assert message.splitlines() == [message]
    assert_names(message, FILE, line_of(text, needle), field, "duplicate key")


# --- not a mapping ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    pytest.param("- name: smoke\n- seed: 1\n", id="list"),
    pytest.param("smoke-50km-1h\n", id="scalar"),
    pytest.param("42\n", id="number"),
    pytest.param("", id="empty"),
    pytest.param("# nothing but a comment\n", id="comment-only"),
])
def test_document_that_is_not_a_mapping(text: str) -> None:
    message = error_of(text)
    assert message.startswith(f"{FILE}:1: "), message
    assert "must be a YAML mapping" in message


# --- acceptance ---------------------------------------------------------------------------------------------------


def test_unknown_acceptance_metric() -> None:
    text = edit("  qber_z_mean: {min", "  qber_y_mean: {max: 0.1}\n  qber_z_mean: {min")
    message = error_of(text)
    assert message.splitlines() == [message]
    line = assert_names(message, FILE, line_of(text, "qber_y_mean"), "acceptance.qber_y_mean", "'qber_y_mean'")
    for metric in METRICS:  # the message lists what is allowed
        assert f"'{metric}'" in line


@pytest.mark.parametrize(("bound", "problem"), [
    pytest.param("{}", "give min, max or both", id="empty"),
    pytest.param("{min: 0.06, max: 0.03}", "min 0.06 > max 0.03", id="inverted"),
    pytest.param("{max: 0.06, maximum: 0.1}", "unknown field", id="unknown-key"),
])
def test_bad_acceptance_bound(bound: str, problem: str) -> None:
    text = edit("qber_z_mean: {min: 0.03, max: 0.06}", f"qber_z_mean: {bound}")
    field = "acceptance.qber_z_mean.maximum" if "maximum" in bound else "acceptance.qber_z_mean"
    assert_names(error_of(text), FILE, line_of(text, "qber_z_mean"), field, problem)


def test_reference_to_an_unknown_metric() -> None:
    text = edit("acceptance:\n", "reference:\n  qber_y_mean: {value: 0.04, source: seed 000}\nacceptance:\n")
    assert_names(error_of(text), FILE, line_of(text, "qber_y_mean"), "reference.qber_y_mean", "'qber_y_mean'")


@pytest.mark.parametrize(("old", "new", "field"), [
    pytest.param("duration_s: 3600", "duration_s: .inf", "duration_s", id="infinite-duration"),
    pytest.param("power_mw: 19.2", "power_mw: .nan", "link.pump.power_mw", id="nan-power"),
])
def test_non_finite_numbers_are_refused(old: str, new: str, field: str) -> None:
    text = edit(old, new)
    assert_names(error_of(text), FILE, line_of(text, new), field, "finite number")


# --- every field of the schema, malformed -------------------------------------------------------------------------
# The shipped scenario, with one entry in each list and mapping of sections so that their fields can be reached too;
# every field the schema has is then broken in each way it can be, and the error must name the file, the field's
# dotted path and the line where that field (or, when it is missing, its section) is written.

BASE: dict[str, Any] = yaml.safe_load(TEXT) | {
    "faults": [{"at_s": 10.0, "kind": "clock_unlock", "node": "bob", "duration_s": 30.0}],
    "stochastic_faults": [{"kind": "detector_warm_up", "node": "alice", "duration_s": 60.0, "max_duration_s": 600.0,
                           "mtbf_s": 1200.0, "seed": 1}],
    "reference": {"qber_z_mean": {"value": 0.0424, "tolerance": 0.1, "source": 'seed 000: "QBERz 4.24 %"'}},
}
BASE["link"]["environment"] = {"excursions": [{"start_s": 100.0, "duration_s": 600.0, "delta_c": 1.0}]}
ENTRY = {tuple: 0, dict: "qber_z_mean"}  # the entry of a list or a mapping of sections whose fields are broken
MISSING = object()


def sections(model: type[BaseModel] = Scenario, path: tuple[Any, ...] = ()) -> Iterator[
        tuple[tuple[Any, ...], type[BaseModel]]]:
    """(path, model) of every section of the schema, through lists and mappings of sections (their ENTRY)."""
    yield path, model
    for name, field in model.model_fields.items():
        if (inner := nested_model(field.annotation)) is not None:
            entry = ENTRY.get(get_origin(field.annotation))
            yield from sections(inner, (*path, name) if entry is None else (*path, name, entry))


def schema_fields() -> Iterator[tuple[tuple[Any, ...], FieldInfo]]:
    """(path, field) of every field of the schema, sections included."""
    for path, model in sections():
        for name, field in model.model_fields.items():
            yield (*path, name), field


def mutated(path: tuple[Any, ...], value: Any) -> str:
    """BASE as YAML with the field at ``path`` set to ``value`` (removed if MISSING); absent sections are added."""
    doc = copy.deepcopy(BASE)
    parent = doc
    for part in path[:-1]:
        parent = parent.setdefault(part, {}) if isinstance(parent, dict) else parent[part]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def written_at(text: str, path: tuple[Any, ...]) -> int:
    """1-based line where the deepest part of ``path`` that ``text`` has is written (its key, or its list item)."""
    node = yaml.compose(text)
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode) and (hits := [(k, v) for k, v in node.value if k.value == part]):
            key, node = hits[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def scalar_kinds(field: FieldInfo) -> tuple[Any, ...]:
    annotation = field.annotation
    return tuple(a for a in (get_args(annotation) if get_origin(annotation) is not Literal else ()) or (annotation,)
                 if a is not type(None))


def wrong_type(field: FieldInfo) -> Any:
    """A value of the wrong type: a number where a string goes, a string anywhere else (a section, a list, an
    enumeration, a number, a boolean)."""
    return 12 if str in scalar_kinds(field) else "oops"


def beyond_bounds(field: FieldInfo) -> Iterator[tuple[Any, str]]:
    """(value, problem) just beyond each bound of ``field`` (pydantic's constraint metadata: gt, ge, …)."""
    beyond = {"gt": (0, "greater than"), "ge": (-1, "greater than or equal"), "lt": (0, "less than"),
              "le": (1, "less than or equal")}
    for m in field.metadata:
        for name, (step, problem) in beyond.items():
            if (bound := getattr(m, name, None)) is not None:
                yield bound + step, problem
        if getattr(m, "min_length", None):
            yield "", f"at least {m.min_length} character"


def dotted(path: tuple[Any, ...]) -> str:
    return ".".join(map(str, path))


CASES = [
    *(pytest.param(path, value, (f"(got {value!r})",), id=f"type:{dotted(path)}")
      for path, field in schema_fields() for value in [wrong_type(field)]),
    *(pytest.param(path, value, (problem, f"(got {value!r})"), id=f"bound:{dotted(path)}={value!r}")
      for path, field in schema_fields() for value, problem in beyond_bounds(field)),
    *(pytest.param(path, MISSING, ("required field is missing",), id=f"missing:{dotted(path)}")
      for path, field in schema_fields() if field.is_required()),
    *(pytest.param((*path, "bogus_field"), 1, (f"unknown field (allowed: {', '.join(model.model_fields)})",),
                   id=f"unknown:{dotted((*path, 'bogus_field'))}") for path, model in sections()),
]


def test_the_base_of_the_malformed_cases_is_valid() -> None:
    scenario = parse_scenario(yaml.safe_dump(BASE, sort_keys=False), FILE)
    assert scenario.faults and scenario.stochastic_faults and scenario.reference
    assert scenario.link.environment.excursions


def test_every_field_and_section_is_broken_in_each_way_it_can_be() -> None:
    broken = {c.values[0] for c in CASES}
    assert {path for path, _ in schema_fields()} <= broken
    assert len([c for c in CASES if c.id.startswith("bound:")]) >= 100  # numeric ranges are the bulk of the schema
    assert ("stack", "distillation", "fraction") in broken and ("stochastic_faults", 0, "mtbf_s") in broken


@pytest.mark.parametrize(("path", "value", "problem"), CASES)
def test_malformed_field_names_file_line_and_field(path: tuple[Any, ...], value: Any,
                                                   problem: tuple[str, ...]) -> None:
    text = mutated(path, value)
    message = error_of(text)
    assert message.splitlines() == [message]
    line = assert_names(message, FILE, written_at(text, path), dotted(path), *problem)
    field = dict(schema_fields()).get(path)
    if field is not None and value is not MISSING and get_origin(field.annotation) is Literal:  # a bad enumeration
        assert all(repr(option) in line for option in get_args(field.annotation)), line


# --- faults: the arguments of each kind ---------------------------------------------------------------------------

ARGUMENT_VALUES = {"node": "bob", "device": "tagger-link", "duration_s": 5.0, "delta_rad": 1.0, "delta_c": 1.0,
                   "delta_db": 1.0, "buffer_rate_hz": 1e6}
WHEN = {"faults": {"at_s": 10.0}, "stochastic_faults": {"mtbf_s": 600.0, "seed": 3}}


def fault_entry(kind: str, **change: Any) -> dict[str, Any]:
    entry = {"kind": kind, **{a: ARGUMENT_VALUES[a] for a in FAULT_ARGUMENTS[kind]}, **change}
    return {k: v for k, v in entry.items() if v is not MISSING}


def with_entry(section: str, entry: dict[str, Any]) -> str:
    return yaml.safe_dump(BASE | {section: [WHEN[section] | entry]}, sort_keys=False)


@pytest.mark.parametrize("section", WHEN)
@pytest.mark.parametrize("kind", FAULT_ARGUMENTS)
def test_each_fault_kind_with_its_arguments_is_accepted(section: str, kind: str) -> None:
    scenario = parse_scenario(with_entry(section, fault_entry(kind)), FILE)
    assert getattr(scenario, section)[0].arguments() == {a: ARGUMENT_VALUES[a] for a in FAULT_ARGUMENTS[kind]}


@pytest.mark.parametrize("section", WHEN)
@pytest.mark.parametrize(("kind", "argument"), [(k, a) for k, args in FAULT_ARGUMENTS.items() for a in args])
def test_a_fault_without_one_of_its_arguments(section: str, kind: str, argument: str) -> None:
    text = with_entry(section, fault_entry(kind, **{argument: MISSING}))
    assert_names(error_of(text), FILE, written_at(text, (section, 0)), f"{section}.0", f"{kind} needs {argument}")


@pytest.mark.parametrize("section", WHEN)
@pytest.mark.parametrize(("kind", "argument"), [(k, a) for k, args in FAULT_ARGUMENTS.items()
                                                for a in ARGUMENT_VALUES if a not in args])
def test_a_fault_with_an_argument_its_kind_does_not_take(section: str, kind: str, argument: str) -> None:
    text = with_entry(section, fault_entry(kind, **{argument: ARGUMENT_VALUES[argument]}))
    assert_names(error_of(text), FILE, written_at(text, (section, 0)), f"{section}.0",
                 f"{kind} takes only {', '.join(FAULT_ARGUMENTS[kind])}, not {argument}")


@pytest.mark.parametrize(("entry", "field", "problem"), [
    pytest.param(fault_entry("clock_unlock", duration_s=60.0, max_duration_s=10.0), "stochastic_faults.0",
                 "max_duration_s 10.0 < duration_s 60.0", id="inverted-duration-range"),
    pytest.param(fault_entry("clock_unlock", duration_s=MISSING, max_duration_s=60.0), "stochastic_faults.0",
                 "clock_unlock needs duration_s", id="range-without-its-start"),
    pytest.param(fault_entry("phase_jump", max_duration_s=10.0), "stochastic_faults.0",
                 "max_duration_s needs a kind that takes duration_s, not phase_jump", id="range-without-duration"),
    pytest.param(fault_entry("fibre_cut", mtbf_s=3600 / (MAX_STOCHASTIC_FAULTS + 1)), "stochastic_faults",
                 f"at most {MAX_STOCHASTIC_FAULTS} per entry", id="too-many-faults"),
    pytest.param(fault_entry("fibre_cut", at_s=5.0), "stochastic_faults.0.at_s", "unknown field", id="explicit-time"),
    pytest.param(fault_entry("fibre_cut", seed=-1), "stochastic_faults.0.seed", "greater than or equal to 0",
                 id="negative-seed"),
    pytest.param(fault_entry("fibre_cut", seed=1.5), "stochastic_faults.0.seed", "valid integer", id="float-seed"),
])
def test_bad_stochastic_fault(entry: dict[str, Any], field: str, problem: str) -> None:
    text = with_entry("stochastic_faults", entry)
    message = error_of(text)
    assert message.splitlines() == [message]
    assert_names(message, FILE, written_at(text, tuple(int(p) if p.isdigit() else p for p in field.split("."))),
                 field, problem)


def test_an_explicit_fault_after_the_end_of_the_run() -> None:
    duration_s = BASE["duration_s"]
    text = yaml.safe_dump(BASE | {"faults": [{"at_s": duration_s} | fault_entry("fibre_cut")]}, sort_keys=False)
    assert_names(error_of(text), FILE, written_at(text, ("faults",)), "faults",
                 f"entry 0: at_s={duration_s:g} is not before duration_s={duration_s:g}")


# --- the fault timeline -------------------------------------------------------------------------------------------


def stochastic(mtbf_s: float, seed: int, **change: Any) -> StochasticFault:
    return StochasticFault(**fault_entry("clock_unlock", **change), mtbf_s=mtbf_s, seed=seed)


def test_a_stochastic_entry_gives_the_same_timeline_for_the_same_seed_and_another_for_another() -> None:
    timeline = stochastic(300.0, seed=5).expand(36_000.0)
    assert len(timeline) > 50
    assert timeline == stochastic(300.0, seed=5).expand(36_000.0)
    assert [f.at_s for f in timeline] != [f.at_s for f in stochastic(300.0, seed=6).expand(36_000.0)]
    assert all(f == FaultConfig(at_s=f.at_s, kind="clock_unlock", node="bob", duration_s=5.0) for f in timeline)


def test_stochastic_faults_are_a_poisson_process_of_rate_one_over_mtbf() -> None:
    duration_s, mtbf_s = 1e6, 100.0
    at_s = np.array([f.at_s for f in stochastic(mtbf_s, seed=11).expand(duration_s)])
    expected = duration_s / mtbf_s
    assert abs(at_s.size - expected) <= K * np.sqrt(expected)
    assert np.all(np.diff(at_s) >= 0) and at_s[0] >= 0 and at_s[-1] < duration_s
    assert kstest(np.diff(at_s), expon(scale=mtbf_s).cdf).pvalue > 1e-4  # exponential gaps: memoryless onsets


def test_the_fault_count_over_seeds_is_poisson_with_mean_duration_over_mtbf() -> None:
    counts = np.array([len(stochastic(60.0, seed).expand(3600.0)) for seed in range(300)])
    check_poisson(counts, 3600.0 / 60.0)


def test_durations_are_uniform_in_their_range() -> None:
    lasting = np.array([f.duration_s for f in stochastic(10.0, seed=2, duration_s=20.0, max_duration_s=80.0)
                        .expand(50_000.0)])
    assert lasting.min() >= 20.0 and lasting.max() <= 80.0
    assert abs(lasting.mean() - 50.0) <= K * 60.0 / np.sqrt(12 * lasting.size)
    assert kstest(lasting, "uniform", args=(20.0, 60.0)).pvalue > 1e-4


STOCHASTIC_TEXT = edit("duration_s: 3600\n", "duration_s: 600\n", edit("acceptance:\n", (
    "faults:\n"
    "  - {at_s: 300, kind: phase_jump, node: alice, delta_rad: 1.0}\n"
    "stochastic_faults:\n"
    "  - {kind: polarization_scramble, node: bob, mtbf_s: 60, seed: 4}\n"
    "  - {kind: clock_unlock, node: alice, duration_s: 5, mtbf_s: 100, seed: 9}\n"
    "acceptance:\n")))


def test_the_timeline_merges_explicit_and_stochastic_faults_in_time_order() -> None:
    scenario = parse_scenario(STOCHASTIC_TEXT, FILE)
    timeline = scenario.fault_timeline()
    assert [f.at_s for f in timeline] == sorted(f.at_s for f in timeline)
    assert scenario.faults[0] in timeline
    expanded = [entry.expand(600.0) for entry in scenario.stochastic_faults]
    assert sorted(timeline, key=lambda f: (f.at_s, f.kind)) == sorted(
        (*scenario.faults, *expanded[0], *expanded[1]), key=lambda f: (f.at_s, f.kind))
    assert all(expanded) and timeline == parse_scenario(STOCHASTIC_TEXT, FILE).fault_timeline()


def test_the_rig_injects_the_timeline_whatever_the_runs_seed() -> None:
    scenario = parse_scenario(STOCHASTIC_TEXT, FILE)
    injected = []
    for seed in (1, 2):
        rig = build_emulated_rig(scenario, seed=seed)
        rig.env.run(until=round(scenario.duration_s * PS_PER_S))
        injected.append([t for t, _ in rig.faults.log])
    assert injected[0] == injected[1] == pytest.approx([f.at_s for f in scenario.fault_timeline()], abs=1e-9)


@pytest.mark.parametrize(("path", "problem"), [
    pytest.param(("link",), "Input should be a mapping (field: value, …) (got 'oops')", id="section"),
    pytest.param(("acceptance",), "Input should be a mapping (key: value, …) (got 'oops')", id="mapping"),
    pytest.param(("faults",), "Input should be a list (- item, …) (got 'oops')", id="list"),
])
def test_a_scalar_where_a_section_or_list_goes_is_named_in_yaml_terms(path: tuple[str, ...], problem: str) -> None:
    text = mutated(path, "oops")
    assert_names(error_of(text), FILE, written_at(text, path), dotted(path), problem)


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "scenarios").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_scenario_is_valid_and_quotes_its_sources(path: Path) -> None:
    scenario = load_scenario(path)
    assert path.read_text(encoding="utf-8").startswith("#")  # a header saying what the scenario mirrors
    assert scenario.name == path.stem
    assert all(r.source for r in scenario.reference.values())
