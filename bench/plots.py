"""PNG plots of a run directory, drawn from ``report.json`` and ``series.npz`` alone (so ``qkd-bench report``
redraws them): the link's figures over time, and its fault/recovery timeline.

- ``timeseries.png``: QBERz and QBERx per key block (%), secret and sifted key rate, sync offset error (truth −
  estimate and truth − applied compensation, ps, with the seed's ±12 ps), polarization efficiency of each node
  relative to its best alignment (%, with the seed's 3 % band) and pump power (mW). Link-level fault episodes
  are shaded in every panel.
- ``timeline.png``: the supervisor's mode, every fault episode by kind (link-level red, others orange,
  still open at the end hatched) and the injected faults.

The series are the monitor's decimated copies (at most ``Monitor.max_points`` points each, every k-th record).
matplotlib's object API on the Agg canvas: no pyplot state, no display needed. Imported only when rendering.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bench.human_report import fault_kind
from bench.report import EFFICIENCY_SERIES, NODES, SYNC_ERROR_SERIES, SYNC_RESIDUAL_SERIES, write_atomic
from bench.supervisor import Mode

TIMESERIES_PNG, TIMELINE_PNG = "timeseries.png", "timeline.png"
SYNC_BOUND_PS = 12.0  # seed 000: "drift within 12 ps"
EFFICIENCY_BOUND = 0.03  # seed 000: "Detection efficiency variation <3%"
GAP_FACTOR = 5.0  # a step this many times the median one breaks a line (the link was down)
MAX_TIMELINE_ROWS = 12
DPI = 100
LINK_FAULT_COLOUR, OTHER_FAULT_COLOUR = "tab:red", "tab:orange"
MODE_COLOURS = {Mode.KEY: "tab:green", Mode.ALIGN: "gold", Mode.ACQUIRE: "tab:olive", Mode.BOOT: "tab:gray",
                Mode.DEGRADED: "tab:red", Mode.RECOVERING: "tab:purple"}
_TRANSITION = re.compile(r"^(\w+) → (\w+)")

Series = dict[str, tuple[np.ndarray, np.ndarray]]


def time_unit(simulated_s: float) -> tuple[str, float]:
    """Axis unit for a run of ``simulated_s``: (label, seconds per unit) — hours beyond 3 h, minutes beyond 10."""
    if simulated_s > 3 * 3600:
        return "h", 3600.0
    if simulated_s > 600:
        return "min", 60.0
    return "s", 1.0


def _with_gaps(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN after each step longer than ``GAP_FACTOR`` median steps, so outages are not bridged."""
    if t.size < 3:
        return t, v
    steps = np.diff(t)
    breaks = np.flatnonzero(steps > GAP_FACTOR * np.median(steps)) + 1
    return np.insert(t, breaks, np.nan), np.insert(v, breaks, np.nan)


def _get(series: Series, name: str) -> tuple[np.ndarray, np.ndarray]:
    return series.get(name, (np.empty(0), np.empty(0)))


def _png(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp: same input, same file
    write_atomic(path, buffer.getvalue())
    return path


def _episodes(report: dict[str, Any]) -> list[tuple[float, float, bool, dict[str, Any]]]:
    """(start s, end s, still open, episode) of every fault episode; an open one ends at the end of the run."""
    end_of_run = float(report["simulated_s"])
    return [(float(e["start_s"]), end_of_run if e["end_s"] is None else float(e["end_s"]), e["end_s"] is None, e)
            for e in report.get("fault_episodes", [])]


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def timeseries_figure(report: dict[str, Any], series: Series) -> Figure:
    """The five-panel figure of the link's figures over time (see the module docstring)."""
    unit, per = time_unit(report["simulated_s"])
    m = report["metrics"]
    fig = Figure(figsize=(11, 14), layout="constrained")
    axes = fig.subplots(5, 1, sharex=True)
    ax_q, ax_k, ax_s, ax_p, ax_w = axes

    def line(ax: Axes, name: str, scale: float = 1.0, offset: float = 0.0, **style: Any) -> bool:
        t, v = _get(series, name)
        if t.size < 50:  # a few key blocks: show each one
            style.setdefault("marker", ".")
        if t.size:
            ax.plot(*_with_gaps(t / per, offset + scale * v), **style)
        return bool(t.size)

    drawn = [line(ax_q, "qber_z", 100, label="QBERz", color="tab:blue"),
             line(ax_q, "qber_x", 100, label="QBERx", color="tab:orange")]
    for name, colour in (("qber_z_mean", "tab:blue"), ("qber_x_mean", "tab:orange")):
        if m.get(name) is not None:
            ax_q.axhline(100 * m[name], color=colour, ls=":", lw=1)
    ax_q.set_ylabel("QBER per key block (%)")
    ax_q.set_title("QBER (dotted: run mean)", loc="left", fontsize=10)

    kbps = max(float(m.get("sifted_key_rate_bps_mean") or 0.0), 0.0) >= 1e3
    rate_scale, rate_unit = (1e-3, "kbps") if kbps else (1.0, "bps")
    drawn += [line(ax_k, "sifted_key_rate_bps", rate_scale, label="sifted (Z)", color="0.6", lw=0.8),
              line(ax_k, "secret_key_rate_bps_asymptotic", rate_scale, label="secret, asymptotic",
                   color="tab:green", lw=0.8, ls="--"),
              line(ax_k, "secret_key_rate_bps", rate_scale, label="secret, at the distilled fraction",
                   color="tab:green")]
    ax_k.set_ylabel(f"key rate ({rate_unit})")
    ax_k.set_ylim(bottom=0)
    ax_k.set_title("key rate per key block", loc="left", fontsize=10)

    dots = {"ls": "none", "marker": ".", "ms": 1.5}
    drawn += [line(ax_s, SYNC_RESIDUAL_SERIES, label="truth − applied compensation", color="tab:purple", **dots),
              line(ax_s, SYNC_ERROR_SERIES, label="truth − estimate", color="tab:blue", **dots)]
    for sign in (-1, 1):
        ax_s.axhline(sign * SYNC_BOUND_PS, color="k", ls="--", lw=0.8)
    ax_s.set_ylabel("sync offset error (ps)")
    ax_s.set_title(f"sync offset error per acquisition (dashed: ±{SYNC_BOUND_PS:g} ps)", loc="left", fontsize=10)

    for node, colour in zip(NODES, ("tab:blue", "tab:red"), strict=True):
        drawn.append(line(ax_p, f"{EFFICIENCY_SERIES}.{node}", -100, 100, label=node, color=colour, lw=0.8))
    ax_p.axhline(100 * (1 - EFFICIENCY_BOUND), color="k", ls="--", lw=0.8)
    ax_p.set_ylabel("polarization efficiency (%)")
    ax_p.set_title(f"detection efficiency relative to the best polarization, 1 s samples "
                   f"(dashed: −{100 * EFFICIENCY_BOUND:g} %)", loc="left", fontsize=10)

    t, power = _get(series, "pump.power_mw")
    if t.size:  # recorded at each change: hold the last setpoint to the end
        ax_w.step(np.append(t, report["simulated_s"]) / per, np.append(power, power[-1]), where="post",
                  color="tab:brown", label="setpoint")
    else:
        _empty(ax_w, "no pump setpoint change recorded")
    ax_w.set_ylabel("pump power (mW)")
    ax_w.set_title("pump power (setpoint changes of the QBERz optimiser)", loc="left", fontsize=10)

    link_faults = [(start, end) for start, end, _open, e in _episodes(report) if e["link_level"]]
    for ax in axes:
        for start, end in link_faults:
            ax.axvspan(start / per, end / per, color=LINK_FAULT_COLOUR, alpha=0.15, lw=0)
    for ax, has in ((ax_q, any(drawn[:2])), (ax_k, any(drawn[2:5])), (ax_s, any(drawn[5:7])),
                    (ax_p, any(drawn[7:9]))):
        if has:
            ax.legend(loc="upper right", fontsize=8, markerscale=6)
        else:
            _empty(ax, "not recorded")
    for ax in axes:
        ax.grid(alpha=0.3)
    ax_w.set_xlim(0, report["simulated_s"] / per)
    ax_w.set_xlabel(f"simulated time ({unit})")
    fig.suptitle(f"{report['scenario']} · seed {report['seed']} · {report['fidelity']} "
                 f"(red: link-level fault episodes)", fontsize=11)
    return fig


def mode_spans(report: dict[str, Any]) -> list[tuple[float, float, Mode]]:
    """(start s, end s, mode) of the supervisor's modes, from the "old → new" transitions in the event log."""
    spans: list[tuple[float, float, Mode]] = []
    t0, mode = 0.0, Mode.BOOT
    for event in report.get("events", []):
        hit = _TRANSITION.match(event["event"])
        if hit is None or hit[2] not in Mode.__members__.values():
            continue
        t = float(event["t_s"])
        spans.append((t0, t, mode))
        t0, mode = t, Mode(hit[2])
    spans.append((t0, float(report["simulated_s"]), mode))
    return [s for s in spans if s[1] > s[0]]


def timeline_figure(report: dict[str, Any]) -> Figure:
    """The fault/recovery timeline (see the module docstring)."""
    unit, per = time_unit(report["simulated_s"])
    span = report["simulated_s"] / per
    min_width = span / 500  # a 1 s episode in a 325 h run stays visible
    episodes = _episodes(report)
    kinds: dict[str, list[tuple[float, float, bool, dict[str, Any]]]] = {}
    for ep in sorted(episodes, key=lambda ep: not ep[3]["link_level"]):
        kinds.setdefault(fault_kind(ep[3]["fault"]), []).append(ep)
    rows: list[str] = list(kinds)
    if len(rows) > MAX_TIMELINE_ROWS:
        rows = rows[:MAX_TIMELINE_ROWS - 1]
        kinds["other faults"] = [ep for k, eps in kinds.items() if k not in rows for ep in eps]
        rows.append("other faults")
    injected = report.get("injected_faults", [])
    labels = ["link mode", *rows, *(["injected faults"] if injected else [])]
    fig = Figure(figsize=(11, 1.6 + 0.4 * len(labels)), layout="constrained")
    ax = fig.subplots()
    y = {label: len(labels) - 1 - i for i, label in enumerate(labels)}

    for start, end, mode in mode_spans(report):
        ax.broken_barh([(start / per, max((end - start) / per, min_width))], (y["link mode"] - 0.35, 0.7),
                       color=MODE_COLOURS[mode], lw=0)
    for row in rows:
        for start, end, still_open, e in kinds[row]:
            ax.broken_barh([(start / per, max((end - start) / per, min_width))], (y[row] - 0.3, 0.6),
                           facecolor=LINK_FAULT_COLOUR if e["link_level"] else OTHER_FAULT_COLOUR,
                           hatch="//" if still_open else None, edgecolor="k" if e["manual_intervention"] else "none",
                           lw=1.0)
    if injected:
        ax.plot([f["t_s"] / per for f in injected], [y["injected faults"]] * len(injected), "kv", ms=7)
    ax.set_yticks(list(y.values()), [_short(label) for label in y])
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlim(0, span)
    ax.set_xlabel(f"simulated time ({unit})")
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=MODE_COLOURS[mode], label=str(mode)) for mode in Mode]
    handles += [Patch(color=LINK_FAULT_COLOUR, label="link-level fault"),
                Patch(color=OTHER_FAULT_COLOUR, label="other fault"),
                Patch(facecolor="white", edgecolor="k", hatch="//", label="open at the end / black edge: manual")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(labels) < 4 else -0.12),
              ncol=5, fontsize=8, frameon=False)
    m = report["metrics"]
    ax.set_title(f"faults and recovery · {m.get('automatic_restarts')} automatic restarts · "
                 f"{m.get('manual_interventions')} manual interventions · availability "
                 f"{_percent(m.get('availability'))}", fontsize=11)
    return fig


def _short(label: str, width: int = 56) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def render_plots(run_dir: Path, report: dict[str, Any], series: Series) -> Sequence[Path]:
    """Write ``timeseries.png`` and ``timeline.png`` into ``run_dir``; returns their paths."""
    return (_png(timeseries_figure(report, series), run_dir / TIMESERIES_PNG),
            _png(timeline_figure(report), run_dir / TIMELINE_PNG))
