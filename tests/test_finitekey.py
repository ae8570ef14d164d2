"""Finite-key length: limits, monotonicity and the seed's working point."""

from __future__ import annotations

import math

import pytest

from bench.finitekey import estimated_leak_bits, finite_key, statistical_margin
from bench.keyrate import asymptotic_secret_bits

QZ, QX = 0.0424, 0.047  # seed 000: "Actual QBERz: 4.24%", "Average QBERx: 4.7%"


def _block(n_z: int, eps_sec: float = 1e-10) -> int:
    n_x = n_z // 2  # the X central peak holds half as many sifted bits as Z (decision 0003)
    return finite_key(n_z, n_x, round(QX * n_x), estimated_leak_bits(n_z, QZ), eps_sec=eps_sec).key_bits


def test_the_margin_is_the_published_formula() -> None:
    n, k, eps = 10**6, 5 * 10**5, 1e-10
    assert statistical_margin(n, k, eps) == pytest.approx(
        math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(2 / eps)))


def test_finite_key_approaches_the_asymptotic_rate_from_below() -> None:
    ratios = [_block(n) / asymptotic_secret_bits(n, QZ, QX) for n in (10**5, 10**6, 10**7, 10**8)]
    assert all(r < 1.0 for r in ratios)
    assert ratios == sorted(ratios)  # longer blocks lose less
    assert ratios[-1] > 0.98
    assert ratios[0] < 0.8  # 1e5 bits: the statistics cost a lot (Scarani, "a million signal task")


def test_short_blocks_give_no_key_and_never_a_negative_length() -> None:
    assert _block(2000) == 0
    assert finite_key(0, 0, 0, 0.0).key_bits == 0


def test_every_cost_is_paid() -> None:
    n_z = 10**6
    base = finite_key(n_z, n_z // 2, round(QX * n_z / 2), 0.0, eps_sec=1e-10, eps_cor=1e-15)
    # log2(1/ε_cor) for verification, 2·log2(1/ε_sec) + 1 for privacy amplification.
    assert base.verification_bits == pytest.approx(15 * math.log2(10))
    assert base.privacy_amplification_bits == pytest.approx(20 * math.log2(10) + 1)
    leaky = finite_key(n_z, n_z // 2, round(QX * n_z / 2), 1000.0, eps_sec=1e-10, eps_cor=1e-15)
    assert base.key_bits - leaky.key_bits == 1000
    stricter = finite_key(n_z, n_z // 2, round(QX * n_z / 2), 0.0, eps_sec=1e-20, eps_cor=1e-15)
    assert stricter.key_bits < base.key_bits
    assert stricter.margin > base.margin


def test_the_phase_error_bound_covers_the_test_rate() -> None:
    fk = finite_key(10**8, 10**5, 4700, 0.0)
    assert fk.phase_error_bound == pytest.approx(0.047 + fk.margin)
    more_tests = finite_key(10**8, 4 * 10**5, 4 * 4700, 0.0)
    assert fk.margin / more_tests.margin == pytest.approx(2.0, rel=0.02)  # μ ~ 1/√k when n >> k


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"n_key": 10, "n_test": 5, "test_errors": 6, "leak_ec_bits": 0.0}, "test_errors"),
    ({"n_key": -1, "n_test": 5, "test_errors": 0, "leak_ec_bits": 0.0}, "n_key"),
    ({"n_key": 10, "n_test": 5, "test_errors": 0, "leak_ec_bits": -1.0}, "leak_ec_bits"),
    ({"n_key": 10, "n_test": 5, "test_errors": 0, "leak_ec_bits": 0.0, "eps_sec": 0.0}, "eps_sec"),
    ({"n_key": 10, "n_test": 5, "test_errors": 0, "leak_ec_bits": 0.0, "eps_cor": 1.0}, "eps_cor"),
])
def test_bad_input_names_the_field(kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=field):
        finite_key(**kwargs)
