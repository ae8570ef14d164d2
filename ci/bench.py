"""Benchmarks (never part of the test run): ``python ci/bench.py [--only NAME ...] --json FILE``.

Prints a table and writes one JSON object with the machine and the date. Figures so far:
- ``stats_step_us``: CPU time of the emulator alone per ``stats`` acquisition of the stack's usual request
  (the tracking histogram and the five coincidence pairs, 0.5 s) by ``EmulatedLinkTagger.acquire``, the
  virtual-time loop's own cost (the same loop sleeping instead) taken off (µs; median of ``--repeat`` runs
  of 400 acquisitions, after a warm-up batch that also loads the compiled samplers from numba's cache; on
  a shared 2-core VM pin it, e.g. ``taskset -c 0``: unpinned runs now and then read up to ~50 % high);
- ``stats_step_stack_us``: wall time per 0.5 s ``stats`` acquisition of one link, stack included (µs;
  median of ``--repeat`` replays of 600 simulated seconds);
- ``tags_per_s`` / ``tags_realtime_factor``: tags generated and delivered per CPU second by ``read_tags``
  on the smoke scenario at ``tags`` fidelity (median of 0.5 s blocks after a warm-up block), and that
  over the emulated tag rate (tags per emulated second): > 1 is faster than real time;
- ``smoke_replay_wall_s`` / ``smoke_replay_speedup``: the shipped 1 h smoke scenario, end to end.
- ``memory_mb_per_sim_hour``: growth of the resident memory of a fresh process replaying the smoke scenario
  stretched to 4 h, from the first simulated hour to the end, per simulated hour (median of ``--repeat``
  processes; ~0 when nothing is held for the whole run), and ``memory_rss_mb`` at the end.
- ``pa_mbit_s``: privacy amplification (bench/privacy.py) of 10^6 key bits to 450 000, key bits per CPU second
  on one core (Mbit/s; median of ``--repeat`` batches of 10 hashes, at least 5, after a warm-up call that
  also loads the compiled kernels from numba's cache), with the block kernel used (``pa_kernel``) and the
  figures of the slower kernels this CPU has (``pa_mbit_s_<kernel>``); with the ``bench`` extra, the same hash
  by cryptomite (``pa_cryptomite_mbit_s``, median of 3) and whether its bits equal ours (``pa_matches_cryptomite``).
- ``replay_325h_wall_s`` / ``replay_325h_speedup`` / ``replay_325h_memory_growth_mb`` / ``replay_325h_accepted``:
  scenarios/nice-50km-325h.yaml end to end in a fresh process (see :func:`bench_replay_325h`; minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import vtime  # noqa: E402
from bench.monitor import Monitor  # noqa: E402
from bench.rig import Rig, build_emulated_rig  # noqa: E402
from bench.runner import run_scenario  # noqa: E402
from bench.scenario import Scenario, load_scenario  # noqa: E402
from drivers.interfaces import AcquisitionRequest, HistogramSpec  # noqa: E402
from emulators.world import PS_PER_S  # noqa: E402

SMOKE = REPO / "scenarios" / "smoke-50km-1h.yaml"
NICE_325H = REPO / "scenarios" / "nice-50km-325h.yaml"
STATS_BATCH = 50  # acquisitions timed together; the delays are re-centred on the truth between batches
STATS_BATCHES = 8
TAG_BLOCK_PS = 500_000_000_000
MEMORY_REPLAY_H = 4.0  # simulated hours of the memory replay; growth is taken after the first hour


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


def _rss_mb() -> float:
    """Resident memory of this process, MB (Linux: resident pages are the 2nd field of /proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _replay_rss_mb(hours: float) -> list[tuple[float, float]]:
    """(simulated s, resident MB of this process) at every key block of a smoke replay stretched to ``hours``."""
    scenario = load_scenario(SMOKE).model_copy(update={"duration_s": hours * 3600.0})
    samples: list[tuple[float, float]] = []
    monitor = Monitor()

    def sample(t_s: float, _qber: float) -> None:
        samples.append((t_s, _rss_mb()))

    monitor.watch("qber_z", sample)
    with tempfile.TemporaryDirectory() as out:
        run_scenario(scenario, Path(out), progress=False, monitor=monitor)
    return samples


def bench_memory(repeat: int) -> dict[str, float]:
    slopes, final = [], []
    spawn = multiprocessing.get_context("spawn")  # a fresh process: no memory freed by earlier benchmarks
    for _ in range(repeat):
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            samples = pool.submit(_replay_rss_mb, MEMORY_REPLAY_H).result()
        t1, rss1 = max((s for s in samples if s[0] <= 3600.0), default=samples[0])
        t_end, rss_end = samples[-1]
        slopes.append((rss_end - rss1) / ((t_end - t1) / 3600.0))
        final.append(rss_end)
    return {"memory_mb_per_sim_hour": statistics.median(slopes), "memory_rss_mb": statistics.median(final)}


def _replay_325h(until_s: float | None) -> dict[str, float | bool]:
    """Replay nice-50km-325h (or its first ``until_s``) in this process as ``qkd-bench run`` does, checkpoints
    included: wall, speed-up, resident memory (sampled by a thread every 0.2 s of wall time) a tenth of the
    way through and nine tenths of the way (before the report and plots), and whether its acceptance held."""
    scenario = load_scenario(NICE_325H)
    samples: list[tuple[float, float]] = []  # (wall s since start, RSS MB)
    done = threading.Event()
    start = time.perf_counter()

    def sample() -> None:
        while not done.wait(0.2):
            samples.append((time.perf_counter() - start, _rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as out:
        result = run_scenario(scenario, Path(out), until_s=until_s, progress=False)
    done.set()
    sampler.join()
    wall_s = result.report["wall_s"]

    def rss_at(fraction: float) -> float:
        return min(samples, key=lambda s: abs(s[0] - fraction * wall_s))[1]

    return {"wall_s": wall_s, "simulated_s": result.report["simulated_s"],
            "rss_tenth_mb": rss_at(0.1), "rss_end_mb": rss_at(0.9), "accepted": result.accepted}


def bench_replay_325h(repeat: int) -> dict[str, float | bool]:
    """``replay_325h_wall_s`` / ``replay_325h_speedup``: scenarios/nice-50km-325h.yaml end to end at stats
    fidelity (full control stack, sampled distillation, report written), each run in a fresh process (median
    wall of ``repeat`` runs, at most 3: one run is minutes); ``replay_325h_memory_growth_mb``: resident memory
    nine tenths of the way through minus a tenth (flat memory: ~0); ``replay_325h_accepted``: its acceptance held.
    ``QKD_BENCH_325H_UNTIL=SECONDS`` replays only the first SECONDS (a quick look; says so in the figures)."""
    until = os.environ.get("QKD_BENCH_325H_UNTIL")
    spawn = multiprocessing.get_context("spawn")
    runs = []
    for _ in range(min(repeat, 3)):
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            runs.append(pool.submit(_replay_325h, float(until) if until else None).result())
    wall = statistics.median(r["wall_s"] for r in runs)
    figures: dict[str, float | bool] = {
        "replay_325h_wall_s": wall, "replay_325h_speedup": runs[0]["simulated_s"] / wall,
        "replay_325h_memory_growth_mb": statistics.median(r["rss_end_mb"] - r["rss_tenth_mb"] for r in runs),
        "replay_325h_accepted": all(r["accepted"] for r in runs)}
    if until:
        figures["replay_325h_simulated_s"] = runs[0]["simulated_s"]
    return figures


def bench_cascade(repeat: int) -> dict[str, float]:
    """Cascade (bench/cascade.py) on 64 frames of 2^17 bits at QBER 4.3 %, Alice and Bob in one process:
    ``cascade_mbit_s`` sifted key corrected per CPU second, both parties' work (Alice packing her key and
    answering, Bob bisecting and cascading; compiled, one core), and ``cascade_f`` = leaked / (n·h(E)), for the
    improved variant opt7, the one that beats both of cascade-cpp's figures at once (original: 9.0 Mbit/s at
    f = 1.18; Yan et al.: 5.4 Mbit/s at f = 1.07) with the fewest round trips of the efficient variants
    (medians of ``repeat`` runs). Per variant also: ``round_trips`` of the batch (each frame goes through its
    passes at its own pace, so this is the slowest frame's own count), ``round_trips_per_frame`` (the batch's
    over its frames: every round trip serves all of them) and the frame error rate. The public permutation
    tables of a plan (cached for the next batch with the same seed) and the loading of the compiled code are
    left out of the time."""
    import numpy as np

    from bench.cascade import VARIANTS, CascadeAlice, cascade_plan, reconcile, reconciliation_efficiency

    frames, n, qber = 64, 2**17, 0.043
    warm = cascade_plan("opt7", qber, 2, 4096, 0)
    keys = np.zeros((2, 4096), dtype=np.uint8)
    reconcile(keys ^ np.eye(2, 4096, dtype=np.uint8), warm, CascadeAlice(keys, warm))  # loads the kernels
    figures: dict[str, float] = {}
    for variant in VARIANTS:
        runs = []
        for seed in range(repeat):
            rng = np.random.default_rng(seed)
            alice = rng.integers(0, 2, (frames, n), dtype=np.uint8)
            bob = alice ^ (rng.random((frames, n)) < qber).astype(np.uint8)
            plan = cascade_plan(variant, qber, frames, n, seed)
            CascadeAlice(alice, plan)  # builds the plan's public permutation tables, untimed
            t = time.process_time()
            result = reconcile(bob, plan, CascadeAlice(alice, plan))
            cpu_s = time.process_time() - t
            f = reconciliation_efficiency(result.leaked_bits_per_frame, (alice != bob).sum(axis=1), n)
            fer = float((result.corrected != alice).any(axis=1).mean())
            runs.append((frames * n / cpu_s / 1e6, f, result.round_trips, fer))
        for i, name in enumerate(("mbit_s", "f", "round_trips", "fer")):
            figures[f"cascade_{variant}_{name}"] = statistics.median(r[i] for r in runs)
        figures[f"cascade_{variant}_round_trips_per_frame"] = figures[f"cascade_{variant}_round_trips"] / frames
    figures["cascade_mbit_s"] = figures["cascade_opt7_mbit_s"]
    figures["cascade_f"] = figures["cascade_opt7_f"]
    return figures


def bench_sync_acquire(repeat: int) -> dict[str, float | str]:
    """Sync acquisition (bench/acquisition.py) against fpfind 3.3.6 on the same 2 s of emulated Z tags at
    33.5, 45 and 56.6 dB, an unknown offset within ±1 ms injected through Bob's input delays:
    ``sync_acquire_s`` CPU s per attempt (median of ``repeat``; the key itself: the worst loss point),
    ``sync_acquire_error_ps`` against the emulator's truth, and fpfind's CPU and error, or why it failed.
    fpfind (Python API, ns floats) runs as its CLI would on ≤ 2 s: 2^23 bins of 64 ns (0.54 s windows),
    early and late windows 1.07 s apart, peak threshold 6, 1 ns target resolution."""
    import numpy as np

    from bench.acquisition import acquire_offset
    from drivers.interfaces import EventType

    try:
        from fpfind.fpfind import fpfind
        from fpfind.lib.constants import MAX_FCORR
        from fpfind.lib.utils import normalize_timestamps
    except ImportError:
        fpfind = None
    figures: dict[str, float | str] = {}
    smoke = load_scenario(SMOKE)
    nominal_db = build_emulated_rig(smoke, smoke.seed).total_loss_db

    async def read(rig: Rig, target_ps: int, truth: list[tuple[int, float]]) -> tuple[list, int]:
        """Two 1 s blocks with Δ moved to ``target_ps``; Δ sampled as time passes (the clocks are causal)."""
        link, world = rig.emulator.link, rig.emulator.world
        delay_ps = target_ps - round(link.offset_ps(world.now_ps))
        for ch in rig.channels.bob:
            await rig.tagger.set_input_delay(ch, delay_ps)
        blocks = []
        for _ in range(2):
            truth.append((world.now_ps, link.offset_ps(world.now_ps)))
            blocks.append(await rig.tagger.read_tags(PS_PER_S))
        truth.append((world.now_ps, link.offset_ps(world.now_ps)))
        return blocks, delay_ps

    for loss_db in (33.5, 45.0, 56.6):
        bob = smoke.link.bob
        fibre = bob.fibre.model_copy(update={"device_loss_db": bob.fibre.device_loss_db + loss_db - nominal_db})
        link_cfg = smoke.link.model_copy(update={"bob": bob.model_copy(update={"fibre": fibre})})
        rig = build_emulated_rig(smoke.model_copy(update={"link": link_cfg}), smoke.seed, fidelity="tags")
        c = rig.channels
        truth: list[tuple[int, float]] = []
        target_ps = int(np.random.default_rng(round(loss_db * 10)).integers(-10**9, 10**9))
        blocks, delay_ps = vtime.run(read(rig, target_ps, truth), rig.env)
        alice, bob_z = (np.concatenate([b.timestamps_ps[(b.channels == ch) & (b.event_types == EventType.TIME_TAG)]
                                        for b in blocks]) for ch in (c.alice_z, c.bob_z))
        t_ps, offset_ps = np.array(truth).T
        t_ps, offset_ps = t_ps + delay_ps, offset_ps + delay_ps  # on Bob's timebase (to < 1 ms: < 0.01 ps)
        cpu = []
        for _ in range(repeat):
            t = time.process_time()
            found = acquire_offset(alice, bob_z)
            cpu.append(time.process_time() - t)
        key = f"{loss_db:g}dB"
        figures[f"sync_acquire_s_{key}"] = statistics.median(cpu)
        true_ps = float(np.interp(found.reference_ps, t_ps, offset_ps))
        figures[f"sync_acquire_error_ps_{key}"] = found.offset_ps - true_ps
        if fpfind is None:
            figures[f"fpfind_{key}"] = "not installed (pip install -e '.[bench]')"
            continue
        ref_ns, target_ns = normalize_timestamps(bob_z / 1e3, alice / 1e3)  # reference: the low-count side
        start_ps = max(int(alice[0]), int(bob_z[0]))
        n_bins, bin_ns = 1 << 23, 64.0
        t = time.process_time()
        try:  # (target − dt)/(1 + df) matches the reference: Δ at the common start is −dt
            dt_ns, _df = fpfind(ref_ns, target_ns, num_wraps=1, num_bins=n_bins, resolution=bin_ns,
                                target_resolution=1, threshold=6, max_dt=1e6, max_df=MAX_FCORR, df_target=1e-10,
                                separation_duration=2 * n_bins * bin_ns, convergence_rate=np.e,
                                precompensations=[0.0])
            figures[f"fpfind_error_ps_{key}"] = -dt_ns * 1e3 - float(np.interp(start_ps, t_ps, offset_ps))
        except ValueError as exc:  # fpfind's PeakFindingFailed is a ValueError
            figures[f"fpfind_error_ps_{key}"] = f"failed: {exc}"
        figures[f"fpfind_acquire_s_{key}"] = time.process_time() - t
    figures["sync_acquire_s"] = max(v for k, v in figures.items() if k.startswith("sync_acquire_s_"))
    return figures


def bench_pa(repeat: int) -> dict[str, float | str]:
    """Toeplitz hashing of n = 10^6 key bits to m = 450 000 on every block kernel this CPU has (the fastest, the
    default, gives ``pa_mbit_s``); key and seed uniform from a fixed generator."""
    import numpy as np

    from bench.privacy import KERNEL_NAMES, KERNELS, seed_length, toeplitz_hash

    n, out_bits, calls = 10**6, 450_000, 10
    rng = np.random.default_rng(0)
    key = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, seed_length(n, out_bits), dtype=np.uint8)
    figures: dict[str, float | str] = {"pa_kernel": KERNEL_NAMES[KERNELS[0]]}
    for kernel in KERNELS:
        toeplitz_hash(key, seed, out_bits, kernel=kernel)  # warm-up
        runs = []
        for _ in range(max(5, repeat)):
            t = time.process_time()
            for _ in range(calls):
                toeplitz_hash(key, seed, out_bits, kernel=kernel)
            runs.append(calls * n / (time.process_time() - t) / 1e6)
        figures[f"pa_mbit_s_{KERNEL_NAMES[kernel]}"] = statistics.median(runs)
    figures["pa_mbit_s"] = figures.pop(f"pa_mbit_s_{KERNEL_NAMES[KERNELS[0]]}")
    try:
        import cryptomite
    except ImportError:
        figures["pa_cryptomite"] = "not installed (pip install -e '.[bench]')"
        return figures
    # cryptomite's seed is our seed rotated: its first m bits are the matrix's first column (our s[n-1:]),
    # then our s[:n-1]. Same matrix, so the bits must agree: an independent implementation as a cross-check.
    theirs_seed = np.concatenate([seed[n - 1:], seed[:n - 1]]).tolist()
    extractor, key_list = cryptomite.Toeplitz(n, out_bits), key.tolist()
    runs, theirs = [], []
    for _ in range(3):
        t = time.process_time()
        theirs = extractor.extract(key_list, theirs_seed)
        runs.append(n / (time.process_time() - t) / 1e6)
    figures["pa_cryptomite_mbit_s"] = statistics.median(runs)
    figures["pa_matches_cryptomite"] = bool(np.array_equal(np.asarray(theirs, dtype=np.uint8),
                                                           toeplitz_hash(key, seed, out_bits)))
    return figures


BENCHMARKS: dict[str, Callable[[int], dict[str, float]]] = {
    "stats_step": bench_stats_step,
    "stats_step_stack": bench_stats_step_stack,
    "tags": bench_tags,
    "smoke_replay": bench_smoke_replay,
    "memory": bench_memory,
    "cascade": bench_cascade,
    "sync_acquire": bench_sync_acquire,
    "pa": bench_pa,
    "replay_325h": bench_replay_325h,
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
