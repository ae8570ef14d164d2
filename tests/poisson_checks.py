"""The Poisson-law check shared by the sampler tests: mean, variance and a χ² of the histogram, each within
k standard errors (k = ``K``) of the sample."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import chisquare, poisson

K = 5.0


def check_poisson(x: np.ndarray, mean: float) -> None:
    """Assert that the sample ``x`` follows Poisson(``mean``)."""
    assert abs(x.mean() - mean) <= K * math.sqrt(mean / x.size)
    assert abs(x.var() - mean) <= K * math.sqrt((mean + 2 * mean**2) / x.size)  # Var(s²) of a Poisson sample
    counts = np.arange(int(mean + 12 * math.sqrt(mean) + 12))
    expected = poisson.pmf(counts, mean) * x.size
    enough = expected >= 5
    observed = np.bincount(x, minlength=counts.size)[:counts.size][enough]
    assert chisquare(observed, expected[enough] * observed.sum() / expected[enough].sum()).pvalue > 1e-4
