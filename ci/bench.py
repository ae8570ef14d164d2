"""Benchmarks (never part of the test run): ``python ci/bench.py [--only NAME ...] --json FILE``.

Prints a table and writes one JSON object with the machine and the date. Figures so far:
- ``stats_step_us``: wall time per 0.5 s ``stats`` acquisition of one link, stack included (µs; median of
  ``--repeat`` replays of 600 simulated seconds);
- ``smoke_replay_wall_s`` / ``smoke_replay_speedup``: the shipped 1 h smoke scenario, end to end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.runner import run_scenario  # noqa: E402
from bench.scenario import load_scenario  # noqa: E402

SMOKE = REPO / "scenarios" / "smoke-50km-1h.yaml"


def _replay_wall_s(until_s: float | None) -> tuple[float, float]:
    scenario = load_scenario(SMOKE)
    with tempfile.TemporaryDirectory() as out:
        report = run_scenario(scenario, Path(out), until_s=until_s, progress=False).report
    return report["wall_s"], report["simulated_s"]


def bench_stats_step(repeat: int) -> dict[str, float]:
    walls = [_replay_wall_s(600.0)[0] for _ in range(repeat)]
    acquisitions = 600.0 / 0.5
    return {"stats_step_us": statistics.median(walls) / acquisitions * 1e6}


def bench_smoke_replay(repeat: int) -> dict[str, float]:
    runs = [_replay_wall_s(None) for _ in range(repeat)]
    wall = statistics.median(w for w, _ in runs)
    return {"smoke_replay_wall_s": wall, "smoke_replay_speedup": runs[0][1] / wall}


BENCHMARKS: dict[str, Callable[[int], dict[str, float]]] = {
    "stats_step": bench_stats_step,
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
