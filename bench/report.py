"""Run metrics, acceptance and ``report.json`` (contract in DESIGN.md), and the terminal summary."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.keyrate import qber_interval
from bench.monitor import Monitor
from bench.scenario import Bound, Reference
from bench.stack import LinkStack

SYNC_ERROR_SERIES = "sync.offset_error_ps"  # truth − estimate of every tracked acquisition, ps
SYNC_RESIDUAL_SERIES = "sync.residual_ps"  # truth − compensation applied, every acquisition, ps
EFFICIENCY_SERIES = "polarization.efficiency_loss"  # + ".<node>": 1 − efficiency / best-polarization efficiency
QUANTILE_BIN_PS = 0.05
NODES = ("alice", "bob")
REPORT_FILE, SERIES_FILE = "report.json", "series.npz"
# the monitor's series the human report plots (bench/plots.py), saved to DIR/series.npz by the runner
REPORT_SERIES = (
    "qber_z", "qber_x", "sifted_key_rate_bps", "secret_key_rate_bps", "secret_key_rate_bps_asymptotic",
    SYNC_ERROR_SERIES, SYNC_RESIDUAL_SERIES, "pump.power_mw", *(f"{EFFICIENCY_SERIES}.{node}" for node in NODES),
)
# top-level keys of report.json that the contract fixes (DESIGN.md), and what ``qkd-bench report`` needs
CONTRACT_KEYS = ("scenario", "seed", "fidelity", "simulated_s", "wall_s", "speedup", "metrics", "acceptance")


class ReportError(Exception):
    """A run directory whose report.json or series.npz is missing or unreadable; the message names the file."""


@dataclass(frozen=True)
class _TruthMinus:
    """A watcher recording ``truth(t_s) − value`` into ``series`` (a class, not a closure: it pickles)."""

    monitor: Monitor
    series: str
    truth: Callable[[float], float]

    def __call__(self, t_s: float, value: float) -> None:
        self.monitor.record(self.series, t_s, self.truth(t_s) - value)


@dataclass(frozen=True)
class _EfficiencyLoss:
    """A watcher recording ``1 − factor(t_s)`` into ``series`` whenever the watched series is recorded."""

    monitor: Monitor
    series: str
    factor: Callable[[float], float]

    def __call__(self, t_s: float, _value: float) -> None:
        self.monitor.record(self.series, t_s, 1.0 - self.factor(t_s))


def score_sync(monitor: Monitor, true_offset_ps: Callable[[float], float]) -> None:
    """Record, as the stack records its own figures (nothing is held):

    - truth − estimate into ``SYNC_ERROR_SERIES`` for each offset estimate (the tracker's precision);
    - truth − applied compensation into ``SYNC_RESIDUAL_SERIES`` for each acquisition (what the coincidence
      window sees: the estimate's error plus the drift since, as predicted).

    ``true_offset_ps(t_mid_s)``: the true mean offset of the acquisition centred at ``t_mid_s``.
    """
    monitor.watch("sync.offset_ps", _TruthMinus(monitor, SYNC_ERROR_SERIES, true_offset_ps))
    monitor.watch("sync.applied_ps", _TruthMinus(monitor, SYNC_RESIDUAL_SERIES, true_offset_ps))
    for name in (SYNC_ERROR_SERIES, SYNC_RESIDUAL_SERIES):
        monitor.track_quantiles(name, QUANTILE_BIN_PS, 1000.0)


def score_efficiency(monitor: Monitor, efficiency: Mapping[str, Callable[[float], float]]) -> None:
    """Record 1 − each node's true polarization efficiency factor (``efficiency[node](t_s)``, 1 at the best
    alignment) whenever the stack records that node's count rate (1 Hz), with its quantiles."""
    for node, factor in efficiency.items():
        name = f"{EFFICIENCY_SERIES}.{node}"
        monitor.track_quantiles(name, 1e-4, 1.0)
        monitor.watch(f"polarization.counts_hz.{node}", _EfficiencyLoss(monitor, name, factor))


def sync_errors_ps(monitor: Monitor, truth_t_s: np.ndarray, truth_offset_ps: np.ndarray) -> np.ndarray:
    """Truth minus estimate for every recorded estimate of a short run, matched on mid-acquisition time.

    Needs the whole run in the monitor's series (fewer points than its ``max_points``) and in the truth;
    long runs use :func:`score_sync`.
    """
    t, estimate = monitor.series("sync.offset_ps")
    if not t.size:
        return np.empty(0)
    order = np.argsort(truth_t_s)
    ts, offsets = truth_t_s[order], truth_offset_ps[order]
    idx = np.clip(np.searchsorted(ts, t), 1, ts.size - 1)
    nearest = np.where(np.abs(ts[idx - 1] - t) <= np.abs(ts[idx] - t), idx - 1, idx)
    mismatch = np.abs(ts[nearest] - t).max()
    if mismatch > 1e-6:
        raise RuntimeError(f"sync estimate and truth timestamps disagree by {mismatch:g} s")
    return offsets[nearest] - estimate


def compute_metrics(stack: LinkStack, monitor: Monitor, simulated_s: float) -> dict[str, float | int | None]:
    """The run's metrics; the sync error from ``SYNC_ERROR_SERIES`` (see :func:`score_sync`).

    The secret key is every sifted Z bit of the run at the secret fraction the distilled blocks reached
    (all of them with ``fraction`` 1; sampled otherwise), or the asymptotic estimate when no block was
    distilled (see :func:`distillation_summary`)."""
    totals, supervisor = stack.totals, stack.supervisor
    distilled = stack.distillery.totals if stack.distillery is not None else None
    tally = totals.tally
    sync_error = monitor.stats(SYNC_ERROR_SERIES)
    residual = monitor.stats(SYNC_RESIDUAL_SERIES)
    error_q, residual_q = monitor.quantiles(SYNC_ERROR_SERIES), monitor.quantiles(SYNC_RESIDUAL_SERIES)
    efficiency = [monitor.quantiles(f"{EFFICIENCY_SERIES}.{node}") for node in NODES]
    efficiency = [e for e in efficiency if e is not None and e.count]
    recoveries = [e.recovery_s for e in supervisor.episodes if e.link_level and e.recovery_s is not None]
    qz_low, qz_high = qber_interval(tally.errors_z, tally.n_z)  # 95 % Clopper–Pearson, pooled over the run
    qx_low, qx_high = qber_interval(tally.errors_x, tally.n_x)
    return {
        "qber_z_mean": tally.qber_z if tally.n_z else None,
        "qber_x_mean": tally.qber_x if tally.n_x else None,
        "sifted_key_rate_bps_mean": tally.n_z / simulated_s,
        "secret_key_rate_bps_mean": stack.secret_fraction() * tally.n_z / simulated_s,
        "secret_key_rate_bps_asymptotic_mean": totals.secret_bits_asymptotic / simulated_s,
        "sync_offset_error_ps_rms": sync_error.rms if sync_error.count else None,
        "sync_offset_error_ps_max": sync_error.max_abs if sync_error.count else None,
        "sync_offset_error_ps_p999": error_q.quantile(0.999) if error_q and error_q.count else None,
        "sync_residual_ps_rms": residual.rms if residual.count else None,
        "sync_residual_ps_max": residual.max_abs if residual.count else None,
        "sync_residual_ps_p999": residual_q.quantile(0.999) if residual_q and residual_q.count else None,
        "sync_residual_fraction_above_12ps": residual_q.fraction_above(12.0) if residual_q and residual_q.count
        else None,
        # polarization efficiency below its best, worse node, 1 Hz samples (seed 000: "variation <3%"): the
        # 99th percentile (the stabilisation precision) and the worst second (actuator resets, faults)
        "efficiency_variation_p99": max(e.quantile(0.99) for e in efficiency) if efficiency else None,
        "efficiency_variation_max": max(e.quantile(1.0) for e in efficiency) if efficiency else None,
        "availability": totals.key_time_s / simulated_s,
        "automatic_restarts": supervisor.automatic_restarts,
        "manual_interventions": supervisor.manual_interventions,
        "worst_recovery_s": max(recoveries, default=None),
        "key_bits_distilled": distilled.key_bits if distilled else 0,  # confirmed in both key stores
        "key_bits_lost": distilled.sifted_bits_abandoned if distilled else 0,  # sifted bits of abandoned blocks
        "ec_efficiency": distilled.ec_efficiency if distilled else None,
        "qber_z_ci95_low": qz_low,
        "qber_z_ci95_high": qz_high,
        "qber_x_ci95_low": qx_low,
        "qber_x_ci95_high": qx_high,
        "sifted_bits_z": tally.n_z,
        "sifted_bits_x": tally.n_x,
        "key_blocks": totals.blocks,
    }


def distillation_summary(stack: LinkStack) -> dict[str, Any]:
    """What was distilled for real and how (``report["distillation"]``)."""
    if stack.distillery is None:
        return {"mode": "asymptotic-estimate", "fraction_distilled": 0.0,
                "note": "distillation disabled: secret key is R = N_z[1 - f h(E_z) - h(E_x)] per key block"}
    s, t = stack.settings.distillation, stack.distillery.totals
    sifted = stack.totals.tally.n_z
    per_block = t.blocks or None
    return {
        "mode": "full" if s.fraction >= 1 else "sampled",
        "fraction_requested": s.fraction,
        "fraction_distilled": t.sifted_bits_distilled / sifted if sifted else 0.0,
        "secret_length": "finite-key" if s.finite_key else "asymptotic",
        "eps_sec": s.eps_sec,
        "eps_cor": s.eps_cor,
        "cascade_variant": s.variant,
        "frame_bits": s.frame_bits,
        "blocks": t.blocks,
        "sifted_bits_distilled": t.sifted_bits_distilled,
        "key_bits": t.key_bits,
        "secret_fraction": t.secret_fraction,
        "ec_efficiency": t.ec_efficiency,
        "round_trips_per_block": t.round_trips / per_block if per_block else None,
        "frames_discarded": t.frames_discarded,
        "frames": t.frames,
        "note": None if t.blocks else "no block distilled: the secret key rate is the asymptotic estimate",
    }


def evaluate(acceptance: dict[str, Bound], metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = {}
    for name, bound in acceptance.items():
        value = metrics.get(name)
        passed = value is not None and not (isinstance(value, float) and math.isnan(value)) and bound.holds(value)
        result[name] = {"value": value, "bound": bound.model_dump(exclude_none=True), "passed": bool(passed)}
    return result


def compare_reference(reference: Mapping[str, Reference], metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``report["reference"]``: each published figure with the run's value of its metric; ``within`` is
    |measured − value| <= tolerance·|value|, False when the run has no value, None when no tolerance is given."""
    result = {}
    for name, ref in reference.items():
        measured = metrics.get(name)
        if ref.tolerance is None:
            within = None
        else:
            within = measured is not None and abs(measured - ref.value) <= ref.tolerance * abs(ref.value)
        result[name] = {"value": ref.value, "tolerance": ref.tolerance, "source": ref.source,
                        "measured": measured, "within": within}
    return result


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    write_atomic(path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return path


def write_series(out_dir: Path, monitor: Monitor) -> Path:
    """Save the decimated :data:`REPORT_SERIES` to ``out_dir/series.npz``: one 2×n array per name, row 0 the
    time in s, row 1 the value (empty if never recorded)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: np.vstack(monitor.series(name)) for name in REPORT_SERIES})
    path = out_dir / SERIES_FILE
    write_atomic(path, buffer.getvalue())
    return path


def load_report(run_dir: Path) -> dict[str, Any]:
    """``run_dir/report.json``, checked for the contract keys; raises :class:`ReportError` naming the file."""
    path = run_dir / REPORT_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (not a run directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read the report: {exc}") from None
    if not isinstance(report, dict):
        raise ReportError(f"{path}: not a qkd-bench report (a JSON object is expected)")
    if missing := [k for k in CONTRACT_KEYS if k not in report]:
        raise ReportError(f"{path}: not a qkd-bench report: missing {', '.join(missing)}")
    numbers = {k: report[k] for k in ("simulated_s", "wall_s", "speedup")}
    if not all((isinstance(v, int | float) and not isinstance(v, bool)) or (k == "speedup" and v is None)
               for k, v in numbers.items()):
        raise ReportError(f"{path}: malformed report: simulated_s, wall_s and speedup must be numbers, got {numbers}")
    acceptance = report["acceptance"]
    if not isinstance(report["metrics"], dict) or not isinstance(acceptance, dict) or not all(
            isinstance(c, dict) and {"value", "bound", "passed"} <= set(c) for c in acceptance.values()):
        raise ReportError(f"{path}: malformed metrics or acceptance")
    return report


def load_series(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``run_dir/series.npz`` as name → (time in s, value); raises :class:`ReportError` naming the file."""
    path = run_dir / SERIES_FILE
    try:
        with path.open("rb") as file:  # ours to close: np.load leaks its own handle on a damaged archive
            loaded = np.load(file, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with loaded as npz:
                arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (not a run directory?)") from None
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ReportError(f"{path}: cannot read the series: {exc}") from None
    series = {}
    for name, a in arrays.items():
        if a.ndim != 2 or a.shape[0] != 2 or a.dtype.kind != "f":
            raise ReportError(f"{path}: series {name!r} is not a 2×n float array (got {a.dtype} {a.shape})")
        series[name] = (a[0], a[1])
    return series


def fmt(value: Any) -> str:
    """A value as the tables show it: 4 significant digits, integers whole, — for none."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_summary(report: dict[str, Any], console: Console) -> None:
    m = report["metrics"]
    console.print(f"[bold]{escape(report['scenario'])}[/bold]  seed {report['seed']}  {report['fidelity']}  "
                  f"{report['simulated_s']:.0f} s simulated in {report['wall_s']:.1f} s"
                  + (f" (×{report['speedup']:.0f})" if report["speedup"] is not None else ""))
    table = Table(show_header=True, header_style="bold")
    for col in ("metric", "value", "bound", "result"):
        table.add_column(col)
    shown = ("qber_z_mean", "qber_x_mean", "sifted_key_rate_bps_mean", "secret_key_rate_bps_mean",
             "sync_offset_error_ps_rms", "sync_offset_error_ps_max", "availability", "automatic_restarts")
    acceptance = report["acceptance"]
    for name in dict.fromkeys((*shown, *acceptance)):
        crit = acceptance.get(name)
        bound = " ".join(f"{k} {v:g}" for k, v in crit["bound"].items()) if crit else ""
        verdict = ("[green]pass[/green]" if crit["passed"] else "[red]FAIL[/red]") if crit else ""
        table.add_row(name, fmt(m.get(name)), bound, verdict)
    console.print(table)
    failed = [n for n, c in acceptance.items() if not c["passed"]]
    if failed:
        for name in failed:
            c = acceptance[name]
            console.print(f"[red]acceptance failed:[/red] {name} = {fmt(c['value'])}, bound {c['bound']}")
    elif acceptance:
        console.print("[green]acceptance met[/green]")
