"""The human report of a run directory: report.md and the PNGs after ``qkd-bench run``, re-rendered byte for byte
by ``qkd-bench report DIR`` from report.json and series.npz, clear errors for a damaged directory, and the
comparison with the published figures."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from scenario_text import REPO, edit

from bench.cli import main
from bench.human_report import REPORT_MD, fault_kind
from bench.plots import TIMELINE_PNG, TIMESERIES_PNG
from bench.report import REPORT_FILE, REPORT_SERIES, SERIES_FILE, compare_reference
from bench.scenario import Reference

UNTIL = "20"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RENDERED = (REPORT_MD, TIMESERIES_PNG, TIMELINE_PNG)
# the smoke scenario with a fibre cut (an episode, an injected fault) and two published figures: one the run
# meets (QBERz 4.3 % against 4.24 % ± 20 %), one far off (QBERx against 10 % ± 10 %)
SCENARIO = edit("acceptance:\n", """faults:
  - {at_s: 8, kind: fibre_cut, node: bob, duration_s: 4}
reference:
  qber_z_mean: {value: 0.0424, tolerance: 0.2, source: 'seed 000: "QBERz 4.24%"'}
  qber_x_mean: {value: 0.10, tolerance: 0.1, source: "made up, far from the run"}
acceptance:
""")


def cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20 s run of the scenario above, by ``qkd-bench run`` (~3 s with the rendering); read-only for tests."""
    base = tmp_path_factory.mktemp("render")
    scenario = base / "fault.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "1000")
        code, out, err = cli("run", scenario, "--until", UNTIL, "--no-progress", "--out", base / "run")
    assert code == 0, out + err
    for name in RENDERED:
        assert f"report: {base / 'run' / name}" in out
    return base / "run"


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the run directory that a test may damage."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / REPORT_FILE).read_text(encoding="utf-8"))


def _rows(markdown: str, first_cell: str) -> list[list[str]]:
    """The cells of every table row of ``markdown`` whose first cell is ``first_cell``."""
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in markdown.splitlines()
            if line.startswith(f"| {first_cell} |")]


def test_run_writes_valid_pngs(run_dir: Path) -> None:
    for name in (TIMESERIES_PNG, TIMELINE_PNG):
        data = (run_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, name
        image = imread(run_dir / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 500, (name, image.shape)
        assert np.ptp(image[..., :3]) > 0.5, f"{name} is blank"


def test_run_saves_every_series_the_plots_need(run_dir: Path) -> None:
    with np.load(run_dir / SERIES_FILE) as npz:
        assert set(npz.files) == set(REPORT_SERIES)
        t, qber_z = npz["qber_z"]
        assert t.size >= 1 and np.all((qber_z > 0) & (qber_z < 0.5))
        t, error_ps = npz["sync.offset_error_ps"]
        assert np.all(np.abs(error_ps) < 12.0)
        assert t.size > 20 and np.all(np.diff(t) > 0) and np.all(t <= float(UNTIL))


def test_markdown_gives_the_verdict_and_every_criterion(run_dir: Path) -> None:
    markdown = (run_dir / REPORT_MD).read_text(encoding="utf-8")
    acceptance = _report(run_dir)["acceptance"]
    assert len(acceptance) == 3
    assert f"## Verdict: acceptance met — all {len(acceptance)} criteria pass" in markdown
    for name, crit in acceptance.items():
        (row,) = _rows(markdown.split("## Verdict")[1].split("##")[0], name)
        assert row[1].startswith(f"{crit['value']:.4g}"), (row, crit["value"])
        assert row[2] == {"qber_z_mean": "[0.03, 0.06]", "secret_key_rate_bps_mean": ">= 1",
                          "sync_offset_error_ps_rms": "<= 12"}[name]
        assert row[3] == "pass"
    for png in (TIMESERIES_PNG, TIMELINE_PNG):
        assert f"]({png})" in markdown


def test_markdown_shows_faults_distillation_and_all_metrics(run_dir: Path) -> None:
    markdown = (run_dir / REPORT_MD).read_text(encoding="utf-8")
    report = _report(run_dir)
    (episode,) = report["fault_episodes"]
    assert episode["fault"].startswith("counts lost at bob") and 8 <= episode["start_s"] <= 9
    (row,) = _rows(markdown, "1")
    assert row[1] == "0:00:08" and row[4] == episode["fault"] and row[6] == "yes"
    assert _rows(markdown, "0:00:08")[0][1] == "bob fibre cut for 4 s"  # the injected fault
    assert "no block was distilled for real" in markdown  # 20 s: no sampled block yet
    for name, value in report["metrics"].items():
        (row,) = _rows(markdown.split("## All metrics")[1], name)
        assert row[1].startswith("—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))


def test_reference_table_marks_a_figure_outside_its_tolerance(run_dir: Path) -> None:
    report = _report(run_dir)
    ref, metrics = report["reference"], report["metrics"]
    assert ref["qber_z_mean"] == {"value": 0.0424, "tolerance": 0.2, "source": 'seed 000: "QBERz 4.24%"',
                                  "measured": metrics["qber_z_mean"], "within": True}
    assert ref["qber_x_mean"]["within"] is False and ref["qber_x_mean"]["measured"] == metrics["qber_x_mean"]
    markdown = (run_dir / REPORT_MD).read_text(encoding="utf-8")
    assert "1 of 2 figures within their tolerance" in markdown
    (row,) = _rows(markdown, "qber_x_mean")[:1]  # the comparison table comes before the metrics table
    assert row[1:3] == ["0.1 (10.00 %)", "±10 %"] and row[4] == "**no**"
    assert _rows(markdown, "qber_z_mean")[1][4] == "yes"  # [0]: the verdict's row


@pytest.mark.parametrize(("measured", "tolerance", "within"), [
    (7069.0 * 1.149, 0.15, True), (7069.0 * 0.851, 0.15, True), (7069.0 * 1.151, 0.15, False),
    (7069.0 * 0.849, 0.15, False), (None, 0.15, False), (7069.0, None, None)])
def test_compare_reference_band_is_relative(measured: float | None, tolerance: float | None,
                                            within: bool | None) -> None:
    ref = {"secret_key_rate_bps_mean": Reference(value=7069.0, tolerance=tolerance, source="seed 000")}
    (entry,) = compare_reference(ref, {"secret_key_rate_bps_mean": measured}).values()
    assert entry["within"] is within and entry["measured"] == measured


def test_report_command_rerenders_byte_identically(copy: Path, run_dir: Path) -> None:
    for name in RENDERED:
        (copy / name).unlink()
    code, out, err = cli("report", copy)
    assert code == 0, out + err
    assert "acceptance met" in out and f"report: {copy / REPORT_MD}" in out
    for name in RENDERED:  # the PNGs carry no version or date stamp either
        assert (copy / name).read_bytes() == (run_dir / name).read_bytes(), name


def test_report_command_exits_1_when_the_run_failed_acceptance(copy: Path) -> None:
    report = _report(copy)
    report["acceptance"]["qber_z_mean"]["passed"] = False
    (copy / REPORT_FILE).write_text(json.dumps(report), encoding="utf-8")
    code, out, _ = cli("report", copy)
    assert code == 1
    assert "acceptance failed: qber_z_mean" in out
    markdown = (copy / REPORT_MD).read_text(encoding="utf-8")
    assert "## Verdict: ACCEPTANCE FAILED — 1 of 3 criteria: qber_z_mean" in markdown
    assert _rows(markdown, "qber_z_mean")[0][3] == "**FAIL**"


DAMAGE = {
    "report-missing": (REPORT_FILE, None, "no such file"),
    "report-truncated": (REPORT_FILE, lambda b: b[: len(b) // 2], "cannot read the report"),
    "report-not-an-object": (REPORT_FILE, lambda _b: b"[1, 2]\n", "not a qkd-bench report"),
    "report-without-metrics": (REPORT_FILE, lambda b: json.dumps(
        {k: v for k, v in json.loads(b).items() if k != "metrics"}).encode(), "missing metrics"),
    "report-bad-acceptance": (REPORT_FILE, lambda b: json.dumps(
        {**json.loads(b), "acceptance": {"qber_z_mean": 1}}).encode(), "malformed metrics or acceptance"),
    "series-missing": (SERIES_FILE, None, "no such file"),
    "series-truncated": (SERIES_FILE, lambda b: b[: len(b) // 2], "cannot read the series"),
    "series-garbage": (SERIES_FILE, lambda _b: b"not an archive at all\n", "cannot read the series"),
    "series-wrong-shape": (SERIES_FILE, lambda _b: _npz(qber_z=np.zeros(3)), "not a 2×n float array"),
}


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("case", DAMAGE)
def test_report_command_names_a_missing_or_corrupt_file(case: str, copy: Path) -> None:
    name, damage, problem = DAMAGE[case]
    path = copy / name
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    (copy / REPORT_MD).unlink()
    code, out, err = cli("report", copy)
    assert code == 2
    assert out == "" and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and problem in lines[0], err
    assert not (copy / REPORT_MD).exists()


def test_report_command_on_a_missing_directory(tmp_path: Path) -> None:
    code, out, err = cli("report", tmp_path / "nope")
    assert code == 2 and out == ""
    assert err.strip() == f"error: {tmp_path / 'nope'}: no such run directory"


def test_fault_kind_drops_the_figures() -> None:
    assert fault_kind("QBERx 9.1% above 8%") == "QBERx above"
    assert fault_kind("detection efficiency or transmission at bob down 12%") == \
        "detection efficiency or transmission at bob down"
    cause = "counts lost at bob: fibre, source or detectors"
    assert fault_kind(cause) == cause


def test_the_cli_imports_matplotlib_only_to_render() -> None:
    code = "import sys, bench.cli; assert 'matplotlib' not in sys.modules, 'validate would import matplotlib'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
