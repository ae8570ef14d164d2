"""``qkd-bench`` command line (contract in DESIGN.md).

Exit codes: 0 ok / acceptance met, 1 acceptance failed (each failed criterion named), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console

from bench.finitekey import EPS_COR_DEFAULT, EPS_SEC_DEFAULT, estimated_leak_bits, finite_key
from bench.human_report import render  # imports matplotlib only when it renders
from bench.keyrate import EC_EFFICIENCY_SEED, asymptotic_secret_bits
from bench.report import ReportError, print_summary
from bench.scenario import ScenarioError, load_scenario

EXIT_OK, EXIT_ACCEPTANCE_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its usage line
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="qkd-bench", description="Hardware-in-the-loop test bench and emulator for QKD links.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="replay a scenario and write DIR/report.json")
    run.add_argument("scenario", type=Path)
    run.add_argument("--out", type=Path, help="run directory (default: runs/NAME-seedN)")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--fidelity", choices=("tags", "pairs", "stats"), help="override the scenario's fidelity")
    run.add_argument("--until", type=float, metavar="SECONDS", help="stop after this many simulated seconds")
    run.add_argument("--hardware", type=Path, metavar="FILE", help="bench.yaml: run on real instruments")
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    val = sub.add_parser("validate", help="check a scenario against the schema only")
    val.add_argument("scenario", type=Path)
    rep = sub.add_parser("report", help="re-render DIR/report.md and the plots from DIR/report.json and series.npz")
    rep.add_argument("run_dir", type=Path, metavar="DIR")
    res = sub.add_parser("resume", help="continue a killed run from DIR/checkpoint to the same report")
    res.add_argument("run_dir", type=Path, metavar="DIR")
    res.add_argument("--no-progress", action="store_true", help="no live progress display")
    key = sub.add_parser("keyrate", help="secret key length of a block: asymptotic, and finite with --finite")
    key.add_argument("--sifted", type=int, required=True, metavar="N", help="sifted Z-basis key bits")
    key.add_argument("--qber-z", type=float, required=True, metavar="E", help="Z-basis error rate (fraction)")
    key.add_argument("--qber-x", type=float, required=True, metavar="E", help="X-basis error rate (fraction)")
    key.add_argument("--f", type=float, default=EC_EFFICIENCY_SEED,
                     help="error-correction inefficiency (seed 001: 1.09)")
    key.add_argument("--finite", action="store_true", help="also the finite-key length (Tomamichel et al. 2012)")
    key.add_argument("--test-bits", type=int, metavar="K",
                     help="X-basis bits that estimate the phase error (default: as many as --sifted)")
    key.add_argument("--eps-sec", type=float, default=EPS_SEC_DEFAULT, help="secrecy parameter")
    key.add_argument("--eps-cor", type=float, default=EPS_COR_DEFAULT, help="correctness parameter")
    key.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _error(err: Console, message: str) -> int:
    """One unwrapped ``error: …`` line, printed verbatim (paths may hold [brackets]); returns exit code 2."""
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_BAD_INPUT


def _run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.runner import run_scenario  # imports the emulators; keep `validate` light

    scenario = load_scenario(args.scenario)
    if args.fidelity:
        scenario = scenario.model_copy(update={"fidelity": args.fidelity})
    if args.hardware is not None:
        return _error(err, f"--hardware {args.hardware}: real-instrument runs are not available yet")
    if args.until is not None and args.until <= 0:
        return _error(err, f"--until must be > 0 simulated seconds, got {args.until:g}")
    if args.seed is not None and args.seed < 0:
        return _error(err, f"--seed must be >= 0, got {args.seed}")
    seed = scenario.seed if args.seed is None else args.seed
    out_dir = args.out if args.out is not None else Path("runs") / f"{scenario.name}-seed{seed}"
    try:  # before the run, so that a bad --out costs nothing
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _error(err, f"--out {out_dir}: cannot use as run directory: {exc.strerror or exc}")
    result = run_scenario(scenario, out_dir, seed=seed, until_s=args.until, console=err,
                          progress=not args.no_progress)
    print_summary(result.report, out)
    out.print(f"report: {result.report_path}", markup=False, highlight=False, soft_wrap=True)
    _paths(render(out_dir).markdown_and_plots, out)
    return EXIT_OK if result.accepted else EXIT_ACCEPTANCE_FAILED


def _resume(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Continue the run of DIR from its newest checkpoint; a finished run or no checkpoint is bad input."""
    from bench.checkpoint import CheckpointError
    from bench.runner import resume_run

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        return _error(err, f"{run_dir}: no such run directory")
    if (run_dir / "report.json").is_file():
        return _error(err, f"{run_dir}: the run has finished (report.json written); nothing to resume")
    try:
        result = resume_run(run_dir, console=err, progress=not args.no_progress)
    except CheckpointError as exc:
        return _error(err, str(exc))
    print_summary(result.report, out)
    out.print(f"report: {result.report_path}", markup=False, highlight=False, soft_wrap=True)
    _paths(render(run_dir).markdown_and_plots, out)
    return EXIT_OK if result.accepted else EXIT_ACCEPTANCE_FAILED


def _paths(paths: Iterable[Path], out: Console) -> None:
    for path in paths:
        out.print(f"report: {path}", markup=False, highlight=False, soft_wrap=True)


def _report(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Re-render report.md and the plots of a run directory; the exit code is the acceptance it records."""
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        return _error(err, f"{run_dir}: no such run directory")
    try:
        rendered = render(run_dir)
    except ReportError as exc:
        return _error(err, str(exc))
    print_summary(rendered.report, out)
    _paths(rendered.markdown_and_plots, out)
    return EXIT_OK if rendered.accepted else EXIT_ACCEPTANCE_FAILED


def _keyrate(args: argparse.Namespace, out: Console, err: Console) -> int:
    checks = [("--sifted", args.sifted >= 0, "must be >= 0"),
              ("--qber-z", 0 <= args.qber_z <= 0.5, "must be a fraction in [0, 0.5]"),
              ("--qber-x", 0 <= args.qber_x <= 0.5, "must be a fraction in [0, 0.5]"),
              ("--f", args.f >= 1, "must be >= 1"),
              ("--test-bits", args.test_bits is None or args.test_bits >= 0, "must be >= 0"),
              ("--eps-sec", 0 < args.eps_sec < 1, "must be in (0, 1)"),
              ("--eps-cor", 0 < args.eps_cor < 1, "must be in (0, 1)")]
    for flag, ok, rule in checks:
        if not ok:
            return _error(err, f"{flag} {rule}, got {getattr(args, flag[2:].replace('-', '_'))}")
    result: dict[str, float | int] = {
        "asymptotic_key_bits": asymptotic_secret_bits(args.sifted, args.qber_z, args.qber_x, args.f)}
    if args.finite:
        n_test = args.sifted if args.test_bits is None else args.test_bits
        result["finite_key_bits"] = finite_key(
            args.sifted, n_test, round(args.qber_x * n_test), estimated_leak_bits(args.sifted, args.qber_z, args.f),
            eps_sec=args.eps_sec, eps_cor=args.eps_cor).key_bits
    if args.json:
        out.print(json.dumps(result), markup=False, highlight=False, soft_wrap=True)
    else:
        for name, value in result.items():
            out.print(f"{name}: {value:,.0f}", markup=False, highlight=False)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, err = Console(), Console(stderr=True)
    try:
        if args.command == "validate":
            scenario = load_scenario(args.scenario)
            out.print(f"{args.scenario}: valid scenario {scenario.name!r} ({scenario.duration_s:g} s simulated, "
                      f"{scenario.fidelity}, {len(scenario.acceptance)} acceptance criteria)",
                      markup=False, highlight=False, soft_wrap=True)
            return EXIT_OK
        if args.command == "keyrate":
            return _keyrate(args, out, err)
        if args.command == "report":
            return _report(args, out, err)
        if args.command == "resume":
            return _resume(args, out, err)
        return _run(args, out, err)
    except ScenarioError as exc:
        return _error(err, str(exc))


if __name__ == "__main__":
    sys.exit(main())
