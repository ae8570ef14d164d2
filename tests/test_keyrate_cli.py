"""``qkd-bench keyrate`` per the DESIGN.md contract: asymptotic and, with --finite, finite-key lengths."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.finitekey import estimated_leak_bits, finite_key
from bench.keyrate import asymptotic_secret_bits

N, QZ, QX = 1_000_000, 0.0424, 0.047  # seed 000: "Actual QBERz: 4.24%", "Average QBERx: 4.7%"


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main(["keyrate", "--sifted", str(N), "--qber-z", str(QZ), "--qber-x", str(QX), *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_asymptotic_only_without_finite(capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys)
    assert set(result) == {"asymptotic_key_bits"}
    assert result["asymptotic_key_bits"] == pytest.approx(asymptotic_secret_bits(N, QZ, QX))


def test_finite_is_below_asymptotic_and_follows_the_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys, "--finite", "--eps-sec", "1e-10", "--eps-cor", "1e-15", "--test-bits", "500000")
    expected = finite_key(N, 500_000, round(QX * 500_000), estimated_leak_bits(N, QZ), 1e-10, 1e-15).key_bits
    assert result["finite_key_bits"] == expected
    assert 0 < result["finite_key_bits"] < result["asymptotic_key_bits"]
    stricter = _json(capsys, "--finite", "--eps-sec", "1e-20", "--test-bits", "500000")
    assert stricter["finite_key_bits"] < result["finite_key_bits"]
    assert _json(capsys, "--f", "1.2")["asymptotic_key_bits"] < result["asymptotic_key_bits"]


@pytest.mark.parametrize(("argv", "flag"), [
    (["--qber-x", "0.7"], "--qber-x"),
    (["--f", "0.9"], "--f"),
    (["--eps-sec", "0"], "--eps-sec"),
    (["--test-bits", "-1"], "--test-bits"),
])
def test_bad_values_exit_2_naming_the_flag(capsys: pytest.CaptureFixture[str], argv: list[str], flag: str) -> None:
    base = ["keyrate", "--sifted", str(N), "--qber-z", str(QZ), "--qber-x", str(QX)]
    assert main(base + argv) == 2
    assert f"error: {flag} " in capsys.readouterr().err
