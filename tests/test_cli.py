"""``qkd-bench`` command line: exit codes, one clear error on stderr, and the report.json contract.

Exit codes: 0 ok / acceptance met, 1 acceptance failed, 2 bad input. Runs use ``--until 20`` to stay fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scenario_text import REPO, SMOKE, TEXT, edit, line_of

from bench.cli import main
from bench.scenario import METRICS

UNTIL = "20"
CONTRACT_KEYS = {"scenario", "seed", "fidelity", "simulated_s", "wall_s", "speedup", "metrics", "acceptance"}
WIDE = "1000"  # wide terminal for rich; test_error_line_is_not_wrapped_at_80_columns checks the narrow case


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", WIDE)
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)






def cli(*argv: str | Path) -> tuple[int, str, str]:
    """Run ``main`` in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def cli_subprocess(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": WIDE}
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def assert_one_error(stderr: str, where: str, field: str | None, problem: str) -> None:
    """stderr holds exactly one ``error: WHERE: FIELD: ...`` line mentioning ``problem``, and no traceback."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    prefix = f"error: {where}: " + (f"{field}: " if field else "")
    assert lines[0].startswith(prefix), f"{lines[0]!r} does not start with {prefix!r}"
    assert problem in lines[0], f"{problem!r} not in {lines[0]!r}"


# --- validate -----------------------------------------------------------------------------------------------------


def test_validate_shipped_scenario_exits_0() -> None:
    code, out, err = cli("validate", SMOKE)
    assert code == 0
    assert err == ""
    assert f"{SMOKE}: valid scenario 'smoke-50km-1h'" in out
    assert "3 acceptance criteria" in out


# (text, needle giving the expected line, field, problem)
BAD_CASES = {
    "unknown-field": (edit("fibre: {length_km: 0.1, device_loss_db: 12.0, compensation_ps_per_nm: -880.0}",
                           "fibre: {length_km: 0.1, lenght: 0.1, device_loss_db: 12.0, "
                           "compensation_ps_per_nm: -880.0}"),
                      "lenght", "link.alice.fibre.lenght", "unknown field (allowed: length_km,"),
    "wrong-type-seed": (edit("seed: 20251105", 'seed: "abc"'), 'seed: "abc"', "seed", "valid integer"),
    "wrong-type-duration": (edit("duration_s: 3600", "duration_s: [1]"), "duration_s", "duration_s", "valid number"),
    "negative-device-loss": (edit("fibre: {length_km: 0.1, device_loss_db: 12.0, compensation_ps_per_nm: -880.0}",
                                  "fibre: {length_km: 0.1, device_loss_db: -1}"),
                             "device_loss_db: -1", "link.alice.fibre.device_loss_db", "(got -1)"),
    "negative-length": (edit("fibre: {length_km: 50.0,", "fibre: {length_km: -2,"), "length_km: -2",
                        "link.bob.fibre.length_km", "greater than or equal to 0 (got -2)"),
    "missing-duration": (edit("duration_s: 3600\n", ""), "name: smoke-50km-1h", "duration_s",
                         "required field is missing"),
    "yaml-syntax": (edit("fidelity: stats", "fidelity: stats: pairs"), "fidelity: stats: pairs", None,
                    "not valid YAML: mapping values are not allowed"),
    "duplicate-key": (edit("fidelity: stats\n", "fidelity: stats\nseed: 1\n"), "seed: 1", "seed", "duplicate key"),
    "not-a-mapping": ("- name: smoke\n- seed: 1\n", "- name: smoke", None, "must be a YAML mapping"),
    "unknown-metric": (edit("  qber_z_mean: {min", "  qber_y_mean: {max: 0.1}\n  qber_z_mean: {min"),
                       "qber_y_mean", "acceptance.qber_y_mean", "(got 'qber_y_mean')"),
    "pump-out-of-range": (edit("  pump:\n    power_mw: 19.2\n", "  pump: {power_mw: 60.0}\n"), "pump:", "link.pump",
                          "power_mw=60.0 outside [0.0, 50.0]"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_validate_bad_scenario_exits_2_with_one_clear_error(case: str, tmp_path: Path) -> None:
    text, needle, field, problem = BAD_CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = cli("validate", path)
    assert code == 2
    assert out == ""
    assert_one_error(err, f"{path}:{line_of(text, needle)}", field, problem)


def test_validate_missing_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    code, out, err = cli("validate", path)
    assert code == 2
    assert out == ""
    assert_one_error(err, str(path), None, "no such scenario file")


def test_validate_non_utf8_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(edit("name: smoke-50km-1h", "name: smoke-50km-1h  # café").encode("latin-1"))
    code, out, err = cli("validate", path)
    assert code == 2
    assert out == ""
    assert_one_error(err, str(path), None, "utf-8")


def test_validate_bad_scenario_via_python_m_has_no_traceback(tmp_path: Path) -> None:
    text, needle, field, problem = BAD_CASES["unknown-field"]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    proc = cli_subprocess("validate", path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_error(proc.stderr, f"{path}:{line_of(text, needle)}", field, problem)


def test_run_missing_file_via_python_m_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    proc = cli_subprocess("run", path, "--until", UNTIL, "--no-progress", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert_one_error(proc.stderr, str(path), None, "no such scenario file")
    assert not (tmp_path / "out").exists()


def test_no_arguments_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        cli()
    assert info.value.code == 2


def test_error_line_is_not_wrapped_at_80_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text, needle, field, problem = BAD_CASES["unknown-field"]
    path = tmp_path / "a-scenario-directory-with-a-rather-long-name" / "bad.yaml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    code, _, err = cli("validate", path)
    assert code == 2
    assert_one_error(err, f"{path}:{line_of(text, needle)}", field, problem)


@pytest.mark.parametrize("command", ["validate", "run-bad-scenario"])
def test_paths_with_brackets_are_printed_verbatim(command: str, tmp_path: Path) -> None:
    path = tmp_path / "t[seed]0" / "smoke.yaml"
    path.parent.mkdir()
    if command == "validate":
        path.write_text(TEXT, encoding="utf-8")
        code, shown, _ = cli("validate", path)
        assert code == 0
    else:
        path.write_text(BAD_CASES["negative-length"][0], encoding="utf-8")
        code, _, shown = cli("run", path, "--no-progress", "--out", tmp_path / "out")
        assert code == 2
    assert str(path) in shown


# --- run: bad input -----------------------------------------------------------------------------------------------


def test_run_missing_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    code, _, err = cli("run", path, "--until", UNTIL, "--no-progress", "--out", tmp_path / "out")
    assert code == 2
    assert_one_error(err, str(path), None, "no such scenario file")
    assert not (tmp_path / "out").exists()


def test_run_invalid_scenario_exits_2(tmp_path: Path) -> None:
    text, needle, field, problem = BAD_CASES["negative-length"]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    code, _, err = cli("run", path, "--until", UNTIL, "--no-progress", "--out", tmp_path / "out")
    assert code == 2
    assert_one_error(err, f"{path}:{line_of(text, needle)}", field, problem)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "problem"), [
    pytest.param(("--until", "-5"), "--until must be > 0", id="until-negative"),
    pytest.param(("--until", "0"), "--until must be > 0", id="until-zero"),
    pytest.param(("--seed", "-1"), "--seed must be >= 0", id="seed-negative"),
    pytest.param(("--hardware", "bench.yaml"), "real-instrument runs are not available", id="hardware"),
])
def test_run_bad_option_exits_2(args: tuple[str, ...], problem: str, tmp_path: Path) -> None:
    code, _, err = cli("run", SMOKE, "--no-progress", "--out", tmp_path / "out", *args)
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], err
    assert not (tmp_path / "out").exists()


def test_run_out_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    out_file = tmp_path / "taken"
    out_file.write_text("not a directory\n", encoding="utf-8")
    code, _, err = cli("run", SMOKE, "--until", "1", "--no-progress", "--out", out_file)
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err


# --- run: report.json ---------------------------------------------------------------------------------------------


class Run:
    def __init__(self, out_dir: Path, code: int, stdout: str, stderr: str) -> None:
        self.out_dir, self.code, self.stdout, self.stderr = out_dir, code, stdout, stderr
        self.report_path = out_dir / "report.json"

    @property
    def report(self) -> dict[str, Any]:
        return json.loads(self.report_path.read_text(encoding="utf-8"))


def _run(out_dir: Path, scenario: Path = SMOKE, *extra: str) -> Run:
    code, out, err = cli("run", scenario, "--until", UNTIL, "--no-progress", "--out", out_dir, *extra)
    return Run(out_dir, code, out, err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The runs shared by the report tests (each ~0.5 s): twice the same seed, once another seed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", WIDE)
        base = tmp_path_factory.mktemp("runs")
        return {
            "a": _run(base / "a"),
            "b": _run(base / "b"),
            "other-seed": _run(base / "other-seed", SMOKE, "--seed", "7"),
        }


def test_run_exits_0_and_writes_report(runs: dict[str, Run]) -> None:
    run = runs["a"]
    assert run.code == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert run.report_path.is_file()
    assert f"report: {run.report_path}" in run.stdout
    assert "acceptance met" in run.stdout


def test_report_has_the_contract_keys(runs: dict[str, Run]) -> None:
    report = runs["a"].report
    assert set(report) >= CONTRACT_KEYS
    assert report["scenario"] == "smoke-50km-1h"
    assert report["seed"] == 20251105
    assert report["fidelity"] == "stats"
    assert report["simulated_s"] == pytest.approx(float(UNTIL))
    assert report["wall_s"] > 0
    assert report["speedup"] == pytest.approx(report["simulated_s"] / report["wall_s"])


def test_report_metrics(runs: dict[str, Run]) -> None:
    m = runs["a"].report["metrics"]
    assert set(METRICS) <= set(m)
    for name in ("qber_z_mean", "qber_x_mean"):  # fractions, not per cent
        assert 0 < m[name] < 1, (name, m[name])
    assert 0.03 <= m["qber_z_mean"] <= 0.06  # the shipped calibration
    assert m["sifted_key_rate_bps_mean"] > 0
    assert 0 < m["secret_key_rate_bps_mean"] < m["sifted_key_rate_bps_mean"]
    assert 0 <= m["sync_offset_error_ps_rms"] <= m["sync_offset_error_ps_max"]
    assert 0 < m["availability"] <= 1
    for name in ("automatic_restarts", "manual_interventions", "key_bits_distilled", "key_bits_lost"):
        assert isinstance(m[name], int) and m[name] >= 0, (name, m[name])
    for name, value in m.items():
        assert value is None or (isinstance(value, int | float) and math.isfinite(value)), (name, value)


def test_report_acceptance(runs: dict[str, Run]) -> None:
    report = runs["a"].report
    acceptance = report["acceptance"]
    assert set(acceptance) == {"qber_z_mean", "secret_key_rate_bps_mean", "sync_offset_error_ps_rms"}
    for name, crit in acceptance.items():
        assert set(crit) == {"value", "bound", "passed"}
        assert crit["value"] == report["metrics"][name]
        assert crit["passed"] is True
    assert acceptance["qber_z_mean"]["bound"] == {"min": 0.03, "max": 0.06}
    assert acceptance["sync_offset_error_ps_rms"]["bound"] == {"max": 12.0}


def _without_timing(path: Path) -> list[str]:
    """The report's lines, minus the two that depend on the wall clock."""
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not line.lstrip().startswith(('"wall_s":', '"speedup":'))]
    assert len(lines) - len(kept) == 2
    return kept


def test_same_seed_gives_identical_report(runs: dict[str, Run]) -> None:
    a, b = runs["a"], runs["b"]
    assert a.code == b.code == 0
    assert _without_timing(a.report_path) == _without_timing(b.report_path)
    ra, rb = a.report, b.report
    for r in (ra, rb):
        del r["wall_s"], r["speedup"]
    assert json.dumps(ra, sort_keys=True) == json.dumps(rb, sort_keys=True)


def test_other_seed_gives_other_metrics(runs: dict[str, Run]) -> None:
    a, other = runs["a"].report, runs["other-seed"].report
    assert runs["other-seed"].code in (0, 1)
    assert other["seed"] == 7
    assert other["metrics"] != a["metrics"]
    assert other["metrics"]["sifted_key_rate_bps_mean"] != a["metrics"]["sifted_key_rate_bps_mean"]


def test_failed_acceptance_exits_1_and_names_the_criterion(tmp_path: Path) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(edit("qber_z_mean: {min: 0.03, max: 0.06}", "qber_z_mean: {max: 0.001}"), encoding="utf-8")
    run = _run(tmp_path / "out", path)
    assert run.code == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    crit = run.report["acceptance"]["qber_z_mean"]
    assert crit["passed"] is False and crit["bound"] == {"max": 0.001}
    assert all(c["passed"] for n, c in run.report["acceptance"].items() if n != "qber_z_mean")

    failed = [line for line in run.stdout.splitlines() if "acceptance failed" in line]
    assert len(failed) == 1, run.stdout  # only the criterion that failed is named
    assert "qber_z_mean" in failed[0]
    numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", failed[0])]
    assert any(x == pytest.approx(crit["value"], rel=1e-3) for x in numbers), (failed[0], crit["value"])
    assert 0.001 in numbers, failed[0]
    assert "acceptance met" not in run.stdout


@pytest.mark.parametrize(("fidelity", "until"), [("pairs", UNTIL), ("tags", "4")])  # tags: ~1.7 s wall per sim. s
def test_run_at_pairs_and_tags_fidelity(fidelity: str, until: str, tmp_path: Path) -> None:
    code, out, err = cli("run", SMOKE, "--fidelity", fidelity, "--until", until, "--no-progress",
                         "--out", tmp_path / "out")
    assert code == 0, out + err
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["fidelity"] == fidelity
    assert report["simulated_s"] == pytest.approx(float(until))
    assert 0.03 <= report["metrics"]["qber_z_mean"] <= 0.06  # the shipped calibration, whatever the fidelity
    assert any(e["event"].startswith("sync acquired") for e in report["events"])
