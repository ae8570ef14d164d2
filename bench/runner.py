"""Replay a scenario: wire the rig, run the stack on virtual time, score it, write the report.

The run directory gets ``series.npz`` (the series the plots need) and then ``report.json``; the human report
and the plots are rendered from those two files (:func:`bench.human_report.render`, as ``qkd-bench report``)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import checkpoint, vtime
from bench.checkpoint import RunState
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
    """Replay ``scenario`` and write ``out_dir/series.npz`` and ``out_dir/report.json``, with a checkpoint in
    ``out_dir/checkpoint`` at every ``checkpoint_interval_s``. ``monitor``: record into this one (to watch it);
    its watchers are then the caller's, not the run's, and no checkpoint is written."""
    seed = scenario.seed if seed is None else seed
    duration_s = scenario.duration_s if until_s is None else min(until_s, scenario.duration_s)
    rig = build_emulated_rig(scenario, seed)
    watched = monitor
    monitor = Monitor() if monitor is None else monitor
    score_sync(monitor, rig.emulator.true_offset_ps)
    score_efficiency(monitor, rig.efficiency_truth)
    stack = LinkStack(rig.devices(), scenario.stack, monitor, seed=seed, key_dir=out_dir / "keys")
    state = RunState(scenario, seed, duration_s, rig, stack, monitor)
    checkpoint.clear(out_dir)
    return _continue(state, out_dir, console, progress, checkpoints=watched is None)


def resume_run(run_dir: Path, *, console: Console | None = None, progress: bool = True) -> RunResult:
    """Continue the run of ``run_dir`` from its newest checkpoint to the same report an uninterrupted run
    writes. Raises :class:`bench.checkpoint.CheckpointError` without a usable one."""
    return _continue(checkpoint.load(run_dir), run_dir, console, progress, checkpoints=True)


def _boundaries(boundary_s: float, duration_s: float, interval_s: float) -> list[float]:
    """The segment ends after the boundary ``boundary_s``: every multiple of ``interval_s`` before
    ``duration_s``, then it."""
    first = round(boundary_s / interval_s) + 1
    last = math.ceil(duration_s / interval_s - 1e-9)
    return [k * interval_s for k in range(first, last)] + [duration_s]


def _continue(state: RunState, out_dir: Path, console: Console | None, progress: bool, *,
              checkpoints: bool) -> RunResult:
    """Run ``state`` segment by segment to its end (a checkpoint at each boundary), then score and report."""
    scenario, rig, stack, monitor, duration_s = state.scenario, state.rig, state.stack, state.monitor, state.duration_s
    display = Progress(console, monitor, duration_s, state.boundary_s) if (progress and console is not None) else None
    segment_ends = _boundaries(state.boundary_s, duration_s, scenario.checkpoint_interval_s)
    out_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            shown = tg.create_task(display.run(), name="progress") if display else None
            for end_s in segment_ends:
                await stack.run(until_s=end_s, final=end_s >= duration_s)
                state.boundary_s = end_s
                if checkpoints and end_s < duration_s:
                    state.wall_s = wall_before_s + vtime.wall_clock_s() - wall0
                    checkpoint.write(out_dir, state)
            if shown is not None:
                shown.cancel()

    wall_before_s = state.wall_s  # spent before the checkpoint this run resumed from
    wall0 = vtime.wall_clock_s()
    try:
        vtime.run(main(), rig.env)
    finally:
        stack.close()
    wall_s = wall_before_s + vtime.wall_clock_s() - wall0

    metrics = compute_metrics(stack, monitor, duration_s)
    report = {
        "scenario": scenario.name,
        "seed": state.seed,
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
    write_series(out_dir, monitor)  # first: a report.json marks a complete run directory
    return RunResult(report, write_report(out_dir, report), monitor)
