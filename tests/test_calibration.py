"""The emulated Nice link against the seeds' figures, one test per calibration line (source cited in each)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.keyrate import secret_fraction
from bench.rig import build_emulated_rig
from bench.scenario import Scenario
from emulators.detectors import FWHM_PER_SIGMA
from emulators.link import LinkState, window_integrals

T_BIN = 400
WINDOW = 120


def _with(smoke: Scenario, node: str, section: str, **values: float) -> Scenario:
    node_cfg = getattr(smoke.link, node)
    updated = node_cfg.model_copy(update={section: getattr(node_cfg, section).model_copy(update=values)})
    return smoke.model_copy(update={"link": smoke.link.model_copy(update={node: updated})})


def _figures(state: LinkState, rig_channels) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """(QBERz, QBERx, sifted Z rate) expected from the model, offset compensated exactly."""
    spec = rig_channels.coincidence_spec(WINDOW, T_BIN)
    c = np.array([state.expected_coincidences(a, b, WINDOW, T_BIN, 0.0, 0.0) for a, b in spec.pairs])
    n_z = c[0].sum()
    return (c[0, 0, 1] + c[0, 1, 0]) / n_z, (c[2].sum() + c[3].sum()) / c[1:].sum(), n_z / state.duration_s


def test_combined_jitter_is_60_ps_and_the_window_keeps_98_percent(smoke: Scenario) -> None:
    # seed 001, S6: "The final time jitter for the SNSPDs, clock boards and TDCs combined is 60 ps";
    # seed 000: "Coincidence window: 120 ps".
    rig = build_emulated_rig(smoke, smoke.seed)
    c = rig.channels
    sigma = rig.emulator.link.pair_sigma_ps(c.alice_z, c.bob_z)
    assert sigma * FWHM_PER_SIGMA == pytest.approx(60.0, abs=1.5)
    inside, _ = window_integrals(np.array([0.0]), np.array([sigma]), WINDOW / 2, T_BIN)
    assert inside[0] == pytest.approx(0.98, abs=0.005)


@pytest.mark.parametrize(("residual_ps_per_nm", "analysis_ps"), [
    (-90.7, 109), (-65.2, 89), (-39.7, 72), (-14.1, 62), (11.5, 61), (37.0, 70), (62.6, 87), (88.2, 107), (113.6, 128),
])
def test_dispersion_broadening_reproduces_seed_001_table_2(smoke: Scenario, residual_ps_per_nm: float,
                                                           analysis_ps: float) -> None:
    # seed 001, Table 2: "Residual chromatic dispersion" and "Timing uncertainty (analysis)" of its 200 GHz
    # channels, on the 60 ps baseline; the effective channel width there is 1.0 nm.
    scenario = smoke.model_copy(update={"link": smoke.link.model_copy(update={"filter_fwhm_nm": 1.0})})
    rig = build_emulated_rig(scenario, scenario.seed)
    link = rig.emulator.link
    now = sum(n.arm.dispersion_ps_per_nm(n.wavelength_nm) for n in link.nodes.values())
    scenario = _with(scenario, "alice", "fibre",
                     compensation_ps_per_nm=smoke.link.alice.fibre.compensation_ps_per_nm + residual_ps_per_nm - now)
    link = build_emulated_rig(scenario, scenario.seed).emulator.link
    c = rig.channels
    baseline_fwhm = math.hypot(link.channel_sigma_ps(c.alice_z), link.channel_sigma_ps(c.bob_z)) * FWHM_PER_SIGMA
    total_fwhm = link.pair_sigma_ps(c.alice_z, c.bob_z) * FWHM_PER_SIGMA
    assert math.hypot(60.0, total_fwhm) - math.hypot(60.0, baseline_fwhm) == pytest.approx(
        math.hypot(60.0, analysis_ps) - math.hypot(60.0, 60.0), abs=2.0)
    assert total_fwhm == pytest.approx(analysis_ps, abs=2.5)


def test_qber_x_stays_within_5_percent_at_99_7_percent_visibility(smoke: Scenario) -> None:
    # seed 000: "Interferometer visibility: >99.7%", "Average QBERx: 4.7%".
    rig = build_emulated_rig(smoke, smoke.seed)
    state = rig.emulator.link.state(0, 10**12)
    _, qber_x, _ = _figures(state, rig.channels)
    assert qber_x <= 0.05
    assert qber_x > (1 - 0.997**2) / 2  # the visibility floor is in it


def test_key_rate_falls_1_db_per_db_of_loss_between_30_and_45_db(smoke: Scenario) -> None:
    # Fixed pump, low dark counts: every coincidence term scales with the two-photon transmission.
    rates = []
    losses = np.arange(30.0, 45.1, 3.0)
    base = smoke.link.bob.fibre.device_loss_db
    rig = build_emulated_rig(smoke, smoke.seed)
    for loss in losses:
        scenario = _with(smoke, "bob", "fibre", device_loss_db=base + loss - rig.total_loss_db)
        r = build_emulated_rig(scenario, scenario.seed)
        q_z, q_x, n_z = _figures(r.emulator.link.state(0, 10**12), r.channels)
        rates.append(n_z * secret_fraction(q_z, q_x))
    slope_db_per_db = np.polyfit(losses, 10 * np.log10(rates), 1)[0]
    assert slope_db_per_db == pytest.approx(-1.0, abs=0.05)


def test_cryocooler_recycles_seven_times_in_325_hours(smoke: Scenario) -> None:
    # seed 000: "Automatic restarts: 9 times (including 7 detector cooling cycles)" over 325 h.
    scenario = _with(_with(smoke, "alice", "clock", update_s=3600.0), "bob", "clock", update_s=3600.0)
    rig = build_emulated_rig(scenario, scenario.seed)  # clocks ticking hourly: only the cryocooler matters here
    rig.env.run(until=325 * 3600 * 10**12)
    detectors = rig.emulator.link.nodes["alice"].detectors
    assert detectors.recycles in (6, 7)  # the first recycle falls anywhere in the first period
    offline_s = detectors.recycles * (detectors.params.recycling_s + detectors.params.cooldown_s)
    assert offline_s / (325 * 3600) < 0.01  # seed 000: "System availability: >99%"
