"""The flat-background sampler of the ``stats`` fidelity: its rows must be independent Poisson counts, whatever
the mean and the row length (tolerances are k standard errors of the sample)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from poisson_checks import K, check_poisson

from emulators.world import FlatPoisson


@pytest.mark.parametrize(("mean", "n"), [(0.03, 1024), (0.9, 1000), (16.06, 1024), (250.3, 1024), (40.2, 70_000)])
def test_rows_are_independent_poisson(mean: float, n: int) -> None:
    flat = FlatPoisson(np.random.default_rng(7))
    rows = np.array([flat(mean, n) for _ in range(max(4, 300_000 // n))])
    assert rows.dtype == np.int64
    check_poisson(rows.ravel(), mean)
    correlation = np.corrcoef(rows[:-1].ravel(), rows[1:].ravel())[0, 1]  # rows handed out of one batch
    assert abs(correlation) <= K / math.sqrt(rows[1:].size)


def test_a_wandering_mean_stays_poisson() -> None:
    flat = FlatPoisson(np.random.default_rng(8), kept=2)  # more grid points than tables kept: rebuilt on return
    means = 16.0 + 0.3 * np.sin(np.arange(600) / 10)
    rows = [flat(mean, 1024) for mean in means]
    standardised = np.concatenate([(row - mean) / math.sqrt(mean) for row, mean in zip(rows, means, strict=True)])
    assert abs(standardised.mean()) <= K / math.sqrt(standardised.size)
    assert abs(standardised.var() - 1) <= K * math.sqrt((2 + 1 / 16) / standardised.size)
