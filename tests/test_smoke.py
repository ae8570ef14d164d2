"""The shipped smoke scenario end to end: the issue's acceptance figures, measured on a full run."""

from __future__ import annotations

from pathlib import Path

from bench.keystore import KeyStore
from bench.runner import run_scenario
from bench.scenario import METRICS, Scenario


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
    assert set(METRICS) <= set(m)  # every metric a scenario may bound is reported
    assert m["sync_residual_ps_p999"] < 12.0 and m["efficiency_variation_p99"] < 0.03

    # sampled distillation: ~5 % of the sifted key went through Cascade, verification and PA for real
    d = result.report["distillation"]
    assert d["mode"] == "sampled" and 0.04 < d["fraction_distilled"] < 0.06
    assert m["key_bits_distilled"] == d["key_bits"] > 10**6 and m["key_bits_lost"] == 0
    assert 1.0 < m["ec_efficiency"] < 1.10 and d["frames_discarded"] == 0
    # the distilled secret fraction sits just under the asymptotic one (finite key, measured leakage)
    ratio = m["secret_key_rate_bps_mean"] / m["secret_key_rate_bps_asymptotic_mean"]
    assert 0.85 < ratio < 1.0
    with KeyStore(tmp_path / "keys" / "alice.keys.sqlite") as alice, \
            KeyStore(tmp_path / "keys" / "bob.keys.sqlite") as bob:
        assert alice.available_bits() == bob.available_bits() == d["key_bits"]
        assert alice.digest() == bob.digest()
