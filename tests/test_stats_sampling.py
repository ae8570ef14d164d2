"""The compiled exact samplers of the ``stats`` fidelity (emulators/world.py): Poisson counts by inversion and by
PTRS, and histogram rows with Gaussian peaks whose tails are drawn as single points. Tolerances are k standard
errors of the sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
from poisson_checks import K, check_poisson
from scipy.stats import chi2

from bench import vtime
from bench.rig import build_emulated_rig
from bench.scenario import Scenario
from drivers.interfaces import AcquisitionRequest, HistogramSpec
from emulators.world import FlatPoisson, gaussian_bin_means

NONE = np.empty(0, np.int64)  # no counts besides a histogram row


def _counts(rng: np.random.Generator, means: np.ndarray) -> np.ndarray:
    """Poisson(``means``) counts as the ``stats`` tagger draws its coincidence counts."""
    counts = np.empty(means.size, np.int64)
    FlatPoisson(rng).draw(0.0, 0, 0.0, 1.0, means, 0, 0, 0.0, 0, counts)
    return counts


@pytest.mark.parametrize("mean", [0.03, 2.5, 9.99, 10.0, 37.3, 612.0, 8900.0])  # inversion below 10, PTRS above
def test_poisson_counts_follow_the_poisson_law(mean: float) -> None:
    x = _counts(np.random.default_rng(3), np.full(200_000, mean))
    assert x.dtype == np.int64
    check_poisson(x, mean)


@pytest.mark.parametrize(("centre_ps", "total"), [
    (100.3, 2000.0),  # core and both tails inside the row
    (100.3, 0.7),  # a weak peak: the core is ±1 σ, the rest single points
    (7.6, 2000.0),  # cut by the row's start
    (-15.0, 2.0e5),  # centred off the row: only its tail beyond 5 σ is in it
])
def test_histogram_rows_are_poisson_in_every_bin(centre_ps: float, total: float) -> None:
    flat, n_bins, sigma_ps, rows = 0.2, 200, 3.0, 20_000
    expected = np.full(n_bins, flat)
    lo, peak = gaussian_bin_means(0.0, 1.0, n_bins, centre_ps, sigma_ps, total, 10.0)
    expected[lo:lo + peak.size] += peak
    sampler = FlatPoisson(np.random.default_rng(5))
    peaks = np.array([centre_ps, sigma_ps, total])
    x = np.array([sampler.draw(flat, n_bins, 0.0, 1.0, peaks, 0, 3, 10.0, 0, NONE) for _ in range(rows)])
    mean, var = x.mean(axis=0), x.var(axis=0)
    assert np.all(np.abs(mean - expected) <= K * np.sqrt(expected / rows))
    assert np.all(np.abs(var - expected) <= K * np.sqrt((expected + 2 * expected**2) / rows))
    peaked = expected - flat > 0.01  # bins the peak adds to: their totals over all rows are Poisson
    observed, mu = x.sum(axis=0)[peaked], expected[peaked] * rows
    assert chi2.sf(((observed - mu) ** 2 / mu).sum(), peaked.sum()) > 1e-4
    correlation = np.corrcoef(x[:, lo + peak.argmax()], x[:, lo + peak.argmax() + 1])[0, 1]
    assert abs(correlation) <= K / math.sqrt(rows)


def test_a_peaks_tails_hold_their_share() -> None:
    """Beyond ±3.6 σ the counts are single points placed in the tails: their totals must match the closed form."""
    n_bins, centre_ps, sigma_ps, total, rows = 300, 150.3, 10.0, 2.0e4, 100_000
    lo, peak = gaussian_bin_means(0.0, 1.0, n_bins, centre_ps, sigma_ps, total, 10.0)
    sampler = FlatPoisson(np.random.default_rng(6))
    peaks = np.array([centre_ps, sigma_ps, total])
    x = sum(sampler.draw(0.0, n_bins, 0.0, 1.0, peaks, 0, 3, 10.0, 0, NONE) for _ in range(rows))[lo:lo + peak.size]
    edges = lo + np.arange(peak.size + 1)
    for side in (edges[1:] <= centre_ps - 3.6 * sigma_ps, edges[:-1] >= centre_ps + 3.6 * sigma_ps):
        expected = peak[side].sum() * rows
        assert abs(x[side].sum() - expected) <= K * math.sqrt(expected)


@pytest.mark.parametrize("mean", [10.0, 37.3, 612.0, 8900.0, 1.0e6])
def test_ptrs_draws_what_numpy_draws_from_the_same_stream(mean: float) -> None:
    means = np.full(20_000, mean)
    assert (_counts(np.random.default_rng(2), means) == np.random.default_rng(2).poisson(means)).all()


def test_the_same_seed_draws_the_same_counts_from_the_generators_own_stream() -> None:
    means = np.array([0.5, 12.0, 700.0])
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    assert (_counts(a, means) == _counts(b, means)).all()
    assert a.random() == b.random() != np.random.default_rng(9).random()  # both streams moved on alike


def test_a_stats_run_is_reproducible(smoke: Scenario) -> None:
    def run() -> list[np.ndarray]:
        rig = build_emulated_rig(smoke, seed=4, fidelity="stats")
        c = rig.channels
        request = AcquisitionRequest(500_000_000_000, histograms=(HistogramSpec(c.alice_z, c.bob_z, 2, 1024),),
                                     coincidences=c.coincidence_spec(120, 400), count_channels=(c.alice_z,))

        async def main() -> list[np.ndarray]:
            out = []
            for _ in range(3):
                acquisition = await rig.tagger.acquire(request)
                out += [acquisition.histograms[0].counts, acquisition.coincidences.counts,
                        np.array(list(acquisition.count_rates_hz.values()))]
            return out

        return vtime.run(main(), rig.env)

    assert all((x == y).all() for x, y in zip(run(), run(), strict=True))
