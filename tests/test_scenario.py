"""Scenario loading: the shipped file validates, and every bad input names the file, the line and the field.

Bad scenarios are made by editing the text of the shipped scenario, so line numbers are those of a realistic file;
expected line numbers are computed from the edited text, never hard-coded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scenario_text import SMOKE, TEXT, edit, line_of

from bench.scenario import METRICS, Scenario, ScenarioError, load_scenario, parse_scenario

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
