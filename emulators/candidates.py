"""Coincidence candidates of one channel pair (``pairs`` fidelity): every true pair and accidental event
whose time difference falls inside the measured range, sampled one by one.

A true pair emitted at a uniform fraction u of the acquisition has (click − start) = r0 + (r1 − r0)·u +
peak shift + Gaussian spread; the start photon's position within the two-slot Z frame is uniform and the
click's follows from the difference, so slot parities come from actual timestamps rather than from the
closed-form integral the ``stats`` fidelity uses. Accidentals are uniform in the difference, with the same
slot geometry: two tags x apart straddle a boundary with probability |x|/T however they were born.
Histograms and time-bin-resolved coincidences are then counted from the events.
"""

from __future__ import annotations

import numpy as np

from drivers.interfaces.tagger import CoincidenceSpec, HistogramSpec
from emulators.link import LinkState


class PairCandidates:
    """Sampled (click − start) differences and Z slot parities of one channel pair over an acquisition."""

    def __init__(self, state: LinkState, start: int, click: int, r0_ps: float, r1_ps: float,
                 lo_ps: float, hi_ps: float, slot_ps: int, rng: np.random.Generator) -> None:
        sigma = state.link.pair_sigma_ps(start, click)
        diffs = []
        parity_start = []
        parity_click = []
        for shift, rate in state.peaks(start, click):
            n = rng.poisson(rate * state.duration_s)
            u = rng.random(n)
            x = r0_ps + (r1_ps - r0_ps) * u + shift + sigma * rng.standard_normal(n)
            inside = (x >= lo_ps) & (x < hi_ps)
            x = x[inside]
            phase = rng.uniform(0.0, 2 * slot_ps, x.size)  # start stamp within its two-slot frame
            diffs.append(x)
            parity_start.append(phase >= slot_ps)
            parity_click.append(np.floor((phase + x) / slot_ps).astype(np.int64) % 2 == 1)
        n_acc = rng.poisson(state.accidental_hz_per_ps(start, click) * (hi_ps - lo_ps) * state.duration_s)
        x = rng.uniform(lo_ps, hi_ps, n_acc)
        phase = rng.uniform(0.0, 2 * slot_ps, n_acc)  # uncorrelated tags, but x apart all the same
        diffs.append(x)
        parity_start.append(phase >= slot_ps)
        parity_click.append(np.floor((phase + x) / slot_ps).astype(np.int64) % 2 == 1)
        self.diff_ps = np.concatenate(diffs)
        self.parity_start = np.concatenate(parity_start)
        self.parity_click = np.concatenate(parity_click)

    def histogram(self, spec: HistogramSpec) -> np.ndarray:
        first_edge = -(spec.n_bins // 2) * spec.binwidth_ps
        idx = np.floor((self.diff_ps - first_edge) / spec.binwidth_ps).astype(np.int64)
        idx = idx[(idx >= 0) & (idx < spec.n_bins)]
        return np.bincount(idx, minlength=spec.n_bins).astype(np.int64)

    def coincidences(self, spec: CoincidenceSpec) -> np.ndarray:
        inside = np.abs(self.diff_ps) <= spec.window_ps / 2
        cell = 2 * self.parity_start[inside] + self.parity_click[inside]
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
        lo, hi = min(lo, -coincidences.window_ps / 2), max(hi, coincidences.window_ps / 2 + 1e-9)
    return float(lo), float(hi)
