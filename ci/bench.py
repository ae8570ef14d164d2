"""Benchmarks (never part of the test run): ``python ci/bench.py [--only NAME ...] --json FILE``.

Prints a table and writes one JSON object with the machine and the date. Figures so far:
- ``stats_step_us``: CPU time of the emulator alone per ``stats`` acquisition of the stack's usual request
  (the tracking histogram and the five coincidence pairs, 0.5 s) by ``EmulatedLinkTagger.acquire``, the
  virtual-time loop's own cost (the same loop sleeping instead) taken off (µs; median of ``--repeat`` runs
  of 400 acquisitions);
- ``stats_step_stack_us``: wall time per 0.5 s ``stats`` acquisition of one link, stack included (µs;
  median of ``--repeat`` replays of 600 simulated seconds);
- ``tags_per_s`` / ``tags_realtime_factor``: tags generated and delivered per CPU second by ``read_tags``
  on the smoke scenario at ``tags`` fidelity (median of 0.5 s blocks after a warm-up block), and that
  over the emulated tag rate (tags per emulated second): > 1 is faster than real time;
- ``smoke_replay_wall_s`` / ``smoke_replay_speedup``: the shipped 1 h smoke scenario, end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import vtime  # noqa: E402
from bench.rig import Rig, build_emulated_rig  # noqa: E402
from bench.runner import run_scenario  # noqa: E402
from bench.scenario import Scenario, load_scenario  # noqa: E402
from drivers.interfaces import AcquisitionRequest, HistogramSpec  # noqa: E402
from emulators.world import PS_PER_S  # noqa: E402

SMOKE = REPO / "scenarios" / "smoke-50km-1h.yaml"
STATS_BATCH = 50  # acquisitions timed together; the delays are re-centred on the truth between batches
STATS_BATCHES = 8
TAG_BLOCK_PS = 500_000_000_000


def _replay_wall_s(until_s: float | None) -> tuple[float, float]:
    scenario = load_scenario(SMOKE)
    with tempfile.TemporaryDirectory() as out:
        report = run_scenario(scenario, Path(out), until_s=until_s, progress=False).report
    return report["wall_s"], report["simulated_s"]


def _stack_request(scenario: Scenario, rig: Rig) -> AcquisitionRequest:
    """What the stack asks of the tagger every step while locked (bench/stack.py)."""
    s, c = scenario.stack, rig.channels
    return AcquisitionRequest(
        round(s.sync.acquisition_s * PS_PER_S),
        histograms=(HistogramSpec(c.alice_z, c.bob_z, s.sync.fine_binwidth_ps, s.sync.fine_n_bins),),
        coincidences=c.coincidence_spec(s.coincidence_window_ps, s.time_bin_ps))


def bench_stats_step(repeat: int) -> dict[str, float]:
    scenario = load_scenario(SMOKE)
    rig = build_emulated_rig(scenario, scenario.seed, fidelity="stats")
    tagger = rig.emulator  # the emulator itself, without the fault-injection wrapper the stack sees
    request = _stack_request(scenario, rig)
    step_s = request.duration_ps / PS_PER_S

    async def centre() -> None:  # as the stack keeps it: the peak in the middle of the histogram
        offset = tagger.link.offset_ps(tagger.world.now_ps)
        for ch in rig.channels.bob:
            await tagger.set_input_delay(ch, -round(offset))

    async def batch(acquire: bool) -> float:
        t = time.process_time()
        for _ in range(STATS_BATCH):
            if acquire:
                await tagger.acquire(request)
            else:
                await asyncio.sleep(step_s)
        return time.process_time() - t

    async def main() -> list[float]:
        await centre()
        await batch(True)  # warm-up
        per_step_us = []
        for _ in range(repeat):
            acquiring = idle = 0.0
            for _ in range(STATS_BATCHES):
                await centre()
                acquiring += await batch(True)
                idle += await batch(False)
            per_step_us.append((acquiring - idle) / (STATS_BATCH * STATS_BATCHES) * 1e6)
        return per_step_us

    return {"stats_step_us": statistics.median(vtime.run(main(), rig.env))}


def bench_stats_step_stack(repeat: int) -> dict[str, float]:
    walls = [_replay_wall_s(600.0)[0] for _ in range(repeat)]
    acquisitions = 600.0 / 0.5
    return {"stats_step_stack_us": statistics.median(walls) / acquisitions * 1e6}


def bench_tags(repeat: int) -> dict[str, float]:
    scenario = load_scenario(SMOKE)
    rig = build_emulated_rig(scenario, scenario.seed, fidelity="tags")
    blocks = max(5, 2 * repeat - 1)

    async def main() -> list[tuple[int, float]]:
        await rig.tagger.read_tags(TAG_BLOCK_PS)  # warm-up: first touch of the memory
        runs = []
        for _ in range(blocks):
            t = time.process_time()
            n = len(await rig.tagger.read_tags(TAG_BLOCK_PS))
            runs.append((n, time.process_time() - t))
        return runs

    runs = vtime.run(main(), rig.env)
    tags_per_s = statistics.median(n / cpu_s for n, cpu_s in runs)
    emulated_rate = statistics.median(n for n, _ in runs) / (TAG_BLOCK_PS / PS_PER_S)
    return {"tags_per_s": tags_per_s, "tags_realtime_factor": tags_per_s / emulated_rate}


def bench_smoke_replay(repeat: int) -> dict[str, float]:
    runs = [_replay_wall_s(None) for _ in range(repeat)]
    wall = statistics.median(w for w, _ in runs)
    return {"smoke_replay_wall_s": wall, "smoke_replay_speedup": runs[0][1] / wall}


BENCHMARKS: dict[str, Callable[[int], dict[str, float]]] = {
    "stats_step": bench_stats_step,
    "stats_step_stack": bench_stats_step_stack,
    "tags": bench_tags,
    "smoke_replay": bench_smoke_replay,
}
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--json", type=Path, required=True, help="write the figures here")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the median is reported")
    args = parser.parse_args()
    figures: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "repeat": args.repeat,
    }
    for name in args.only or BENCHMARKS:
        figures.update(BENCHMARKS[name](args.repeat))
    for key, value in figures.items():
        print(f"{key:24s} {value:.4g}" if isinstance(value, float) else f"{key:24s} {value}")
    args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
