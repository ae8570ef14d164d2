"""The human report of a run directory: ``report.md`` and the plots, rendered from ``report.json`` and
``series.npz`` alone, so ``qkd-bench report DIR`` reproduces them byte for byte.

``report.md`` holds the verdict (acceptance met or not, each criterion with its value and bound), the
comparison with the published figures the scenario mirrors (``reference:``), what was distilled for real,
the fault episodes and their recovery, every metric, and links to the PNGs (:mod:`bench.plots`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from bench.report import fmt, load_report, load_series, write_atomic

REPORT_MD = "report.md"
MAX_ROWS = 100  # longer tables are cut; report.json keeps everything
FRACTIONS = ("qber_", "availability", "efficiency_variation", "fraction")  # metric names shown also in %
_NUMBER = re.compile(r"\s*[-+]?\d+(?:\.\d+)?\s*%?")


@dataclass(frozen=True)
class Rendered:
    """What :func:`render` read and wrote."""

    report: dict[str, Any]
    markdown: Path
    plots: Sequence[Path]

    @property
    def accepted(self) -> bool:
        return all(c["passed"] for c in self.report["acceptance"].values())

    @property
    def markdown_and_plots(self) -> tuple[Path, ...]:
        return (self.markdown, *self.plots)


def render(run_dir: Path) -> Rendered:
    """Write ``report.md`` and the PNGs into ``run_dir`` from its report.json and series.npz.

    Raises :class:`bench.report.ReportError` (naming the file) when either is missing or unreadable."""
    report, series = load_report(run_dir), load_series(run_dir)
    from bench.plots import TIMELINE_PNG, TIMESERIES_PNG, render_plots  # matplotlib: only when rendering

    plots = render_plots(run_dir, report, series)
    path = run_dir / REPORT_MD
    write_atomic(path, markdown(report, TIMESERIES_PNG, TIMELINE_PNG).encode("utf-8"))
    return Rendered(report, path, plots)


def fault_kind(diagnosis: str) -> str:
    """A diagnosis without its figures ("QBERx 9.1% above 8%" → "QBERx above"): the tables' and the timeline's
    kinds of fault."""
    return " ".join(_NUMBER.sub(" ", diagnosis).split())


def fmt_metric(name: str, value: Any) -> str:
    """:func:`fmt`, with fractions also in per cent: ``0.04301 (4.30 %)``."""
    if isinstance(value, float) and any(part in name for part in FRACTIONS):
        return f"{fmt(value)} ({100 * value:.2f} %)"
    return fmt(value)


def fmt_bound(bound: dict[str, float]) -> str:
    low, high = bound.get("min"), bound.get("max")
    if low is not None and high is not None:
        return f"[{low:g}, {high:g}]"
    return f">= {low:g}" if low is not None else f"<= {high:g}"


def clock(t_s: float) -> str:
    """Simulated time as h:mm:ss (hours beyond 24 kept)."""
    t = round(t_s)
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], total: int | None = None) -> list[str]:
    """A Markdown table (| in cells escaped); cut at ``MAX_ROWS`` rows, saying how many of ``total`` it shows."""
    rows = list(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[:MAX_ROWS]]
    total = len(rows) if total is None else total
    if total > MAX_ROWS:
        lines.append(f"\n{MAX_ROWS} of {total} shown; report.json holds them all.")
    return lines


def _verdict(report: dict[str, Any]) -> list[str]:
    acceptance = report["acceptance"]
    failed = [name for name, c in acceptance.items() if not c["passed"]]
    if not acceptance:
        head = "## Verdict: no acceptance criteria (nothing to judge)"
    elif failed:
        head = f"## Verdict: ACCEPTANCE FAILED — {len(failed)} of {len(acceptance)} criteria: {', '.join(failed)}"
    else:
        head = f"## Verdict: acceptance met — all {len(acceptance)} criteria pass"
    rows = [(name, fmt_metric(name, c["value"]), fmt_bound(c["bound"]), "pass" if c["passed"] else "**FAIL**")
            for name, c in acceptance.items()]
    return [head, "", *(_table(("criterion", "value", "bound", "result"), rows) if rows else [])]


def _reference(report: dict[str, Any]) -> list[str]:
    reference = report.get("reference") or {}
    lines = ["## Compared with the published figures", ""]
    if not reference:
        return [*lines, "The scenario quotes no published figures (its `reference:` section is empty)."]
    rows = []
    for name, r in reference.items():
        within = {True: "yes", False: "**no**", None: "not judged (no tolerance)"}[r["within"]]
        tolerance = "—" if r["tolerance"] is None else f"±{100 * r['tolerance']:g} %"
        rows.append((name, fmt_metric(name, r["value"]), tolerance, fmt_metric(name, r["measured"]), within,
                     r["source"]))
    outside = sum(1 for r in reference.values() if r["within"] is False)
    return [*lines, f"{len(reference) - outside} of {len(reference)} figures within their tolerance "
                    f"(a relative band around the figure).", "",
            *_table(("metric", "published figure", "tolerance", "measured", "within?", "source"), rows)]


def _distillation(report: dict[str, Any]) -> list[str]:
    d = report.get("distillation")
    lines = ["## Key distillation", ""]
    if not d:
        return [*lines, "Not recorded in report.json."]
    m = report["metrics"]
    if d["mode"] == "asymptotic-estimate":
        return [*lines, f"Mode **{d['mode']}**: nothing was distilled for real (fraction 0). {d.get('note') or ''}"]
    if not d["blocks"]:
        return [*lines, f"Mode **{d['mode']}** ({100 * d['fraction_requested']:g} % requested): no block was "
                        f"distilled for real (fraction 0); the secret key rate is the asymptotic estimate."]
    text = (f"Mode **{d['mode']}**: {100 * d['fraction_distilled']:.2f} % of the sifted Z key "
            f"({fmt(d['sifted_bits_distilled'])} of {fmt(m.get('sifted_bits_z'))} bits; requested "
            f"{100 * d['fraction_requested']:g} %) went through Cascade ({d['cascade_variant']}), verification and "
            f"{d['secret_length']} privacy amplification for real (ε_sec {d['eps_sec']:g}, ε_cor {d['eps_cor']:g}): "
            f"{fmt(d['blocks'])} blocks, {fmt(d['key_bits'])} secret bits in both key stores, secret fraction "
            f"{fmt(d['secret_fraction'])}, error-correction efficiency f = {fmt(d['ec_efficiency'])}, "
            f"{fmt(d['round_trips_per_block'])} round trips per block, {fmt(d['frames_discarded'])} of "
            f"{fmt(d['frames'])} frames discarded, {fmt(m.get('key_bits_lost'))} sifted bits lost.")
    if d["mode"] == "sampled":
        text += " The rest of the sifted key is booked at the secret fraction the distilled blocks reached."
    return [*lines, text]


def _faults(report: dict[str, Any]) -> list[str]:
    m = report["metrics"]
    episodes = report.get("fault_episodes", [])
    injected = report.get("injected_faults", [])
    lines = ["## Faults and recovery", "",
             f"Automatic restarts: {fmt(m.get('automatic_restarts'))}. Manual interventions: "
             f"{fmt(m.get('manual_interventions'))}. Availability: {fmt_metric('availability', m.get('availability'))}."
             f" Worst link recovery: {duration(m.get('worst_recovery_s'))}. Fault episodes: {len(episodes)}; injected "
             f"faults: {len(injected)}; events in report.json: {len(report.get('events', []))}.", ""]
    if episodes:
        kinds: dict[str, list[dict[str, Any]]] = {}
        for e in episodes:
            kinds.setdefault(fault_kind(e["fault"]), []).append(e)
        rows = []
        for kind, eps in kinds.items():
            times = [e["recovery_s"] for e in eps if e["recovery_s"] is not None]
            rows.append((kind, str(len(eps)), str(sum(e["link_level"] for e in eps)),
                         duration(median(times)) if times else "—", duration(max(times, default=None)),
                         str(len(eps) - len(times)), str(sum(e["manual_intervention"] for e in eps))))
        lines += ["### By kind", "", *_table(("fault", "episodes", "link-level", "median recovery", "worst recovery",
                                               "still open", "manual"), rows), ""]
        rows = [(str(i), clock(e["start_s"]), "open" if e["end_s"] is None else clock(e["end_s"]),
                 duration(e["recovery_s"]), e["fault"], "; ".join(e["actions"]), "yes" if e["link_level"] else "no",
                 "**yes**" if e["manual_intervention"] else "no") for i, e in enumerate(episodes, start=1)]
        lines += ["### Episodes", "", *_table(("#", "start", "end", "recovery", "fault", "actions", "link-level",
                                               "manual"), rows), ""]
    if injected:
        lines += ["### Injected faults", "",
                  *_table(("time", "fault"), ((clock(f["t_s"]), f["fault"]) for f in injected)), ""]
    return lines[:-1] if lines[-1] == "" else lines


def markdown(report: dict[str, Any], timeseries_png: str, timeline_png: str) -> str:
    """The whole ``report.md`` of ``report`` (a loaded report.json), linking the two PNGs."""
    speedup = report["speedup"]
    link = report.get("link") or {}
    lines = [
        f"# qkd-bench run report: {report['scenario']}", "",
        *_table(("run", ""), [
            ("scenario", str(report["scenario"])), ("seed", str(report["seed"])), ("fidelity", report["fidelity"]),
            ("simulated", f"{fmt(report['simulated_s'])} s ({duration(report['simulated_s'])})"),
            ("wall", f"{report['wall_s']:.1f} s" + (f" (×{speedup:,.0f} real time)" if speedup else "")),
            ("total link loss", f"{fmt(link.get('total_loss_db'))} dB")]), "",
        *_verdict(report), "",
        *_reference(report), "",
        *_distillation(report), "",
        *_faults(report), "",
        "## Plots", "",
        f"![QBER, key rate, sync offset error, polarization efficiency and pump power over time]({timeseries_png})",
        "",
        "QBERz and QBERx and the key rates per key block, the sync offset error of every acquisition (truth − "
        "estimate, and truth − the compensation the coincidence window saw), each node's detection efficiency "
        "relative to its best polarization, and the pump setpoint; link-level fault episodes shaded red. "
        "Decimated series: every k-th record, at most a few thousand points each.", "",
        f"![Fault and recovery timeline]({timeline_png})", "",
        "The supervisor's mode over time, every fault episode by kind, and the injected faults.", "",
        "## All metrics", "",
        *_table(("metric", "value"), ((name, fmt_metric(name, v)) for name, v in report["metrics"].items())),
    ]
    return "\n".join(lines) + "\n"
