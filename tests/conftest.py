"""Shared fixtures: the shipped smoke scenario and an emulated rig built from it."""

from __future__ import annotations

import pytest
from scenario_text import SMOKE

from bench.rig import Rig, build_emulated_rig
from bench.scenario import Scenario, load_scenario


@pytest.fixture(scope="session")
def smoke() -> Scenario:
    return load_scenario(SMOKE)


@pytest.fixture
def rig(smoke: Scenario) -> Rig:
    return build_emulated_rig(smoke, seed=smoke.seed)
