"""Helpers shared by the tests that drive the emulated link directly: scenario variants, and the sync loop's
job done from the hidden truth when sync is not what a test is about."""

from __future__ import annotations

from typing import Any

from bench.distill import DistillationSettings
from bench.rig import Rig
from bench.scenario import Scenario
from bench.stack import StackSettings


def with_node(scenario: Scenario, node: str, section: str, **values: Any) -> Scenario:
    """``scenario`` with fields of ``link.<node>.<section>`` replaced."""
    node_cfg = getattr(scenario.link, node)
    updated = node_cfg.model_copy(update={section: getattr(node_cfg, section).model_copy(update=values)})
    return scenario.model_copy(update={"link": scenario.link.model_copy(update={node: updated})})


def with_environment(scenario: Scenario, **values: Any) -> Scenario:
    """``scenario`` with fields of ``link.environment`` replaced."""
    environment = scenario.link.environment.model_copy(update=values)
    return scenario.model_copy(update={"link": scenario.link.model_copy(update={"environment": environment})})


async def centre_on_truth(rig: Rig, extra_ps: int = 0) -> None:
    """Compensate the true Alice–Bob offset now through Bob's input delays (the stack's job, from the truth)."""
    offset_ps = rig.emulator.link.offset_ps(rig.emulator.world.now_ps)
    for ch in rig.channels.bob:
        await rig.tagger.set_input_delay(ch, -round(offset_ps) + extra_ps)


def without_distillation(settings: StackSettings) -> StackSettings:
    """``settings`` with key distillation off, for tests of the control stack alone (faster)."""
    return settings.model_copy(update={"distillation": DistillationSettings(enabled=False)})
