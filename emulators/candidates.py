"""Coincidence candidates of one channel pair (``pairs`` fidelity): every true pair and accidental event
whose time difference falls inside the measured range, sampled one by one.

A true pair emitted at a uniform fraction u of the acquisition has (click − start) = r0 + (r1 − r0)·u +
peak shift + Gaussian spread; accidentals are uniform in the difference. The start tag's Z slot parity is
uniform and independent of the difference (CW pump), so it is drawn per event; the click's bit follows
from which announced window it falls in (see :class:`drivers.interfaces.tagger.CoincidenceSpec`) rather
than from the closed-form integrals the ``stats`` fidelity uses. Histograms and Z-resolved coincidences
are then counted from the events.
"""

from __future__ import annotations

import numpy as np

from drivers.interfaces.tagger import CoincidenceSpec, HistogramSpec
from emulators.link import LinkState


class PairCandidates:
    """Sampled (click − start) differences and start-slot parities of one channel pair over an acquisition."""

    def __init__(self, state: LinkState, start: int, click: int, r0_ps: float, r1_ps: float,
                 lo_ps: float, hi_ps: float, rng: np.random.Generator) -> None:
        sigma = state.link.pair_sigma_ps(start, click)
        diffs = []
        for shift, rate in state.peaks(start, click):
            n = rng.poisson(rate * state.duration_s)
            u = rng.random(n)
            x = r0_ps + (r1_ps - r0_ps) * u + shift + sigma * rng.standard_normal(n)
            diffs.append(x[(x >= lo_ps) & (x < hi_ps)])
        n_acc = rng.poisson(state.accidental_hz_per_ps(start, click) * (hi_ps - lo_ps) * state.duration_s)
        diffs.append(rng.uniform(lo_ps, hi_ps, n_acc))
        self.diff_ps = np.concatenate(diffs)
        self.start_bit = rng.integers(0, 2, self.diff_ps.size)

    def histogram(self, spec: HistogramSpec) -> np.ndarray:
        first_edge = -(spec.n_bins // 2) * spec.binwidth_ps
        idx = np.floor((self.diff_ps - first_edge) / spec.binwidth_ps).astype(np.int64)
        idx = idx[(idx >= 0) & (idx < spec.n_bins)]
        return np.bincount(idx, minlength=spec.n_bins).astype(np.int64)

    def coincidences(self, spec: CoincidenceSpec) -> np.ndarray:
        half = spec.window_ps / 2
        same = np.abs(self.diff_ps) <= half
        other = np.abs(self.diff_ps - (1 - 2 * self.start_bit) * spec.time_bin_ps) <= half
        bits = self.start_bit[same | other]
        cell = 2 * bits + np.where(same[same | other], bits, 1 - bits)
        return np.bincount(cell, minlength=4).reshape(2, 2).astype(np.int64)


def candidate_range(pair: tuple[int, int], histograms: tuple[HistogramSpec, ...],
                    coincidences: CoincidenceSpec | None) -> tuple[float, float]:
    """The (click − start) range the requested measurements of ``pair`` look at, ps."""
    lo, hi = np.inf, -np.inf
    for h in histograms:
        if (h.start_channel, h.click_channel) == pair:
            first = -(h.n_bins // 2) * h.binwidth_ps
            lo, hi = min(lo, first), max(hi, first + h.n_bins * h.binwidth_ps)
    if coincidences is not None and pair in coincidences.pairs:
        reach = coincidences.time_bin_ps + coincidences.window_ps / 2
        lo, hi = min(lo, -reach), max(hi, reach + 1e-9)
    return float(lo), float(hi)
