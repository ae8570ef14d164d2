"""The shipped smoke scenario end to end: the issue's acceptance figures, measured on a full run."""

from __future__ import annotations

from pathlib import Path

from bench.runner import run_scenario
from bench.scenario import Scenario


def test_smoke_scenario_meets_its_acceptance(smoke: Scenario, tmp_path: Path) -> None:
    result = run_scenario(smoke, tmp_path, progress=False)
    m = result.report["metrics"]
    assert result.report["simulated_s"] == 3600
    assert 0.03 <= m["qber_z_mean"] <= 0.06
    assert m["secret_key_rate_bps_mean"] > 0
    assert m["sync_offset_error_ps_rms"] <= 12.0
    assert m["availability"] > 0.99
    assert result.accepted, result.report["acceptance"]
    assert (tmp_path / "report.json").is_file()
