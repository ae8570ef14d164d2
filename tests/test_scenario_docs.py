"""docs/scenarios.md is what bench/scenario_docs.py renders from the schema now, and it documents every field."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.scenario
from bench.scenario import parse_scenario
from bench.scenario_docs import EXAMPLE, REGENERATE, render, sections, unit

DOCS = Path(__file__).resolve().parents[1] / "docs" / "scenarios.md"


def test_docs_match_the_schema() -> None:
    rendered = render()
    committed = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
    assert committed == rendered, f"docs/scenarios.md is stale; regenerate it with: {REGENERATE}"


def test_every_section_of_the_schema_has_a_table_with_every_field() -> None:
    tables = {chunk.split("\n", 1)[0]: chunk for chunk in render().split("\n## ")}  # by heading
    paths = [p for model_paths in sections().values() for p in model_paths]
    for expected in ("link.alice.fibre", "link.bob.clock", "link.environment.excursions[*]", "stack.distillation",
                     "faults[*]", "stochastic_faults[*]", "acceptance.<metric>", "reference.<metric>"):
        assert expected in paths
    for model, model_paths in sections().items():
        heading = ", ".join(f"`{p}`" for p in model_paths) if model_paths != [""] else "Top level"
        for name in model.model_fields:
            assert f"| `{name}` |" in tables[heading], f"{name} of {heading} is not in its table"


def test_every_field_of_the_scenario_models_says_what_it_is() -> None:
    """The models of bench/scenario.py (the stack's own sections are documented where they live)."""
    for model in sections():
        if model.__module__ == bench.scenario.__name__:
            for name, field in model.model_fields.items():
                assert field.description, f"{model.__name__}.{name} has no description"


def test_the_example_is_a_valid_scenario_and_is_in_the_docs() -> None:
    scenario = parse_scenario(EXAMPLE, "example")
    assert scenario.faults and scenario.stochastic_faults and scenario.acceptance and scenario.reference
    assert EXAMPLE in render()


@pytest.mark.parametrize(("name", "expected"), [
    ("at_s", "s"), ("delay_ps_per_km_k", "ps/(km·K)"), ("dispersion_slope_ps_per_nm2_km", "ps/(nm²·km)"),
    ("loss_db_per_km", "dB/km"), ("phase_per_kelvin_rad", "rad/K"), ("rad_per_kelvin", "rad/K"),
    ("drift_rad_per_sqrt_s", "rad/√s"), ("brightness_pairs_per_s_per_mw", "pairs/(s·mW)"),
    ("mean_temperature_c", "°C"), ("temperature_k", "K"), ("bias_ua", "µA"), ("fsr_ghz", "GHz"),
    ("dark_count_hz", "Hz"), ("range_margin_v", "V"), ("aging_per_day", "1/day"),
    ("white_fm_adev_1s", ""), ("target_qber_z", ""), ("x_minus", ""), ("efficiency", ""), ("seed", ""),
])
def test_units_come_from_name_suffixes(name: str, expected: str) -> None:
    assert unit(name) == expected
