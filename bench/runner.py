"""Replay a scenario: wire the rig, run the stack on virtual time, score it, write the report.

The run directory gets ``series.npz`` (the series the plots need) and then ``report.json``; the human report
and the plots are rendered from those two files (:func:`bench.human_report.render`, as ``qkd-bench report``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import vtime
from bench.monitor import Monitor
from bench.progress import Progress
from bench.report import (
    compare_reference,
    compute_metrics,
    distillation_summary,
    evaluate,
    score_efficiency,
    score_sync,
    write_report,
    write_series,
)
from bench.rig import build_emulated_rig
from bench.scenario import Scenario
from bench.stack import LinkStack


@dataclass(frozen=True)
class RunResult:
    report: dict[str, Any]
    report_path: Path
    monitor: Monitor

    @property
    def accepted(self) -> bool:
        return all(c["passed"] for c in self.report["acceptance"].values())


def run_scenario(scenario: Scenario, out_dir: Path, *, seed: int | None = None, until_s: float | None = None,
                 console: Console | None = None, progress: bool = True, monitor: Monitor | None = None) -> RunResult:
    """Replay ``scenario`` and write ``out_dir/series.npz`` and ``out_dir/report.json``; ``monitor``: record into
    this one (to watch it)."""
    seed = scenario.seed if seed is None else seed
    duration_s = scenario.duration_s if until_s is None else min(until_s, scenario.duration_s)
    rig = build_emulated_rig(scenario, seed)
    monitor = Monitor() if monitor is None else monitor
    score_sync(monitor, rig.emulator.true_offset_ps)
    score_efficiency(monitor, rig.efficiency_truth)
    stack = LinkStack(rig.devices(), scenario.stack, monitor, seed=seed, key_dir=out_dir / "keys")
    display = Progress(console, monitor, duration_s) if (progress and console is not None) else None

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            shown = tg.create_task(display.run(), name="progress") if display else None
            await stack.run(until_s=duration_s)
            if shown is not None:
                shown.cancel()

    wall0 = vtime.wall_clock_s()
    try:
        vtime.run(main(), rig.env)
    finally:
        stack.close()
    wall_s = vtime.wall_clock_s() - wall0

    metrics = compute_metrics(stack, monitor, duration_s)
    report = {
        "scenario": scenario.name,
        "seed": seed,
        "fidelity": scenario.fidelity,
        "simulated_s": duration_s,
        "wall_s": wall_s,
        "speedup": duration_s / wall_s if wall_s > 0 else None,
        "metrics": metrics,
        "acceptance": evaluate(dict(scenario.acceptance), metrics),
        "reference": compare_reference(scenario.reference, metrics),
        "distillation": distillation_summary(stack),
        "link": {"total_loss_db": rig.total_loss_db},
        "events": [{"t_s": t, "event": text} for t, text in monitor.events],
        "fault_episodes": [e.as_dict() for e in stack.supervisor.episodes],
        "injected_faults": [{"t_s": t, "fault": text} for t, text in rig.faults.log],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_series(out_dir, monitor)  # first: a report.json marks a complete run directory
    return RunResult(report, write_report(out_dir, report), monitor)
