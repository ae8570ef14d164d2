"""Clock-sync acquisition from raw Z tags alone: the Alice–Bob offset with no prior, to a few picoseconds.

The offset Δ is Bob's minus Alice's timestamp of the two photons of a pair; it is unknown within ±1 ms
(issue 4). Folding both streams onto one FFT period, as qcrypto's pfind and fpfind do, adds every pair of
tags in the data to the background, so the peak's significance stops growing with the data and falls
with Bob's rate: c·sqrt(P/w)/sqrt(r_A·r_B) for period P, bin w, Z coincidence rate c, singles r_A, r_B
(at 56.6 dB, c ≈ 150/s against 7.5 MHz × 7 kHz: 2 σ with 2²³ bins). Here only pairs within the ±1 ms
range are counted, and only as many as the peak needs. The coincidence-to-accidental ratio per ps,
c/(r_A·r_B), does not depend on the loss, so neither does the work: ~10⁷ pair differences at any loss.

1. Scan. Take n tags of the sparser stream, each with every tag of the other within ±1 ms, and sort the
   n·m ≈ 10⁷ differences (16 ps units, as wrapping uint32). A true peak puts ~14 of them in an 80 ps
   window against ~0.5 background ones per window position; clusters (≥ k differences within the
   window) are found level by level on the sorted array, and the densest few hundred are kept.
2. Screen and verify on fresh tags of the sparse stream: each candidate scores its cluster size plus the
   screening tags with a partner within ±window of it (one binary search each); the best few are counted
   again on further tags. The best one's Poisson tail probability against the local singles rate, times
   the candidates verified, gives the significance (Gaussian σ). Too weak: a wider window (a peak
   broadened by dispersion), then a second scan on fresh tags, then :class:`SyncAcquisitionFailed`.
3. Refine on two blocks at the ends of the data: a background-subtracted centroid in each, sized for
   ~500 coincidences; their mean is the offset at the blocks' mid-time and their slope the clock drift
   (relative frequency offset of the two Rb clocks, ~7 ps/s: 14 ps over 2 s).

CPU per attempt on a 2-core VM, 2 s of tags: ~0.06–0.08 s at 33.5, 45 and 56.6 dB (ci/bench.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import ndtri_exp
from scipy.stats import poisson

PS_PER_S = 1_000_000_000_000


class SyncAcquisitionFailed(RuntimeError):
    """No significant coincidence peak within the acquisition range after every attempt."""


_UNIT_BITS = 4  # scan unit: 2⁴ = 16 ps
_CENTRE = np.uint32(1 << 31)  # a difference of 0 sorts to the middle of uint32
_MAX_LEFT_ENDS = 100_000  # background clusters the first level of the scan may leave


class AcquisitionSettings(BaseModel):
    """How hard to look for the offset; defaults fit ≤ 0.1 s of CPU per attempt at any loss."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_offset_ps: int = Field(1_000_000_000, gt=0, description="offsets searched: ±this, ps (issue 4: ±1 ms)")
    scan_differences: int = Field(10_000_000, gt=0, description="pair differences sorted by the scan")
    windows_ps: tuple[int, ...] = Field((80, 320), min_length=1, description=(
        "cluster windows tried in turn, ps: the first fits the ~60 ps FWHM peak, the next a broadened one"))
    candidates: int = Field(512, ge=1, description="densest clusters of the scan screened per window")
    screen_tags: int = Field(256, ge=1, description="fresh tags of the sparse stream that screen them")
    confirm: int = Field(4, ge=1, description="best screened candidates passed on to verification")
    verify_tags: int = Field(2000, ge=1, description="further fresh tags that verify those")
    rounds: int = Field(2, ge=1, description=(
        "scans on fresh tags before giving up (the first finds a 60 ps peak ~99 % of the time)"))
    min_significance: float = Field(6.0, gt=0, description="verified peak, Gaussian σ after look-elsewhere")
    fine_coincidences: int = Field(500, ge=10, description="coincidences aimed for in each refining block")
    fine_range_ps: int = Field(2000, gt=0, description="± range of the refining histogram around the peak, ps")
    peak_half_width_ps: int = Field(100, gt=0, description="centroid window around the peak, ± ps")


@dataclass(frozen=True)
class OffsetAcquisition:
    """Result of one acquisition; times on Bob's timebase."""

    offset_ps: float  # Δ = Bob − Alice at reference_ps
    reference_ps: int
    drift_ps_per_s: float  # dΔ/dt: Bob's clock rate minus Alice's, ps/s (= parts in 10¹²)
    significance: float  # verified peak, Gaussian σ after look-elsewhere
    coincidences: float  # background-subtracted, in the two refining blocks
    offset_sigma_ps: float  # standard error of offset_ps
    drift_sigma_ps_per_s: float  # standard error of drift_ps_per_s


def acquire_offset(alice_ps: np.ndarray, bob_ps: np.ndarray,
                   settings: AcquisitionSettings | None = None) -> OffsetAcquisition:
    """Find Δ from Alice's and Bob's Z-detector stamps (sorted int64 ps, each on its node's timebase).

    Both streams should cover the same stretch of time (up to 2 s; the scan needs the first ~0.2 s at
    56.6 dB, the blocks sit at the two ends). Raises SyncAcquisitionFailed if no significant peak.
    """
    s = settings or AcquisitionSettings()
    alice, bob = np.asarray(alice_ps, np.int64), np.asarray(bob_ps, np.int64)
    if min(alice.size, bob.size) < 2:
        raise SyncAcquisitionFailed("too few tags to look for a coincidence peak")
    if _rate_hz(bob) <= _rate_hz(alice):
        return _acquire(bob, alice, s)
    found = _acquire(alice, bob, s)  # Alice's stream is the sparser: Δ' = Alice − Bob = −Δ
    return OffsetAcquisition(-found.offset_ps, round(found.reference_ps - found.offset_ps), -found.drift_ps_per_s,
                             found.significance, found.coincidences, found.offset_sigma_ps,
                             found.drift_sigma_ps_per_s)


def _rate_hz(stamps_ps: np.ndarray) -> float:
    """Mean rate of sorted stamps, Hz."""
    return (stamps_ps.size - 1) / max(1, int(stamps_ps[-1]) - int(stamps_ps[0])) * PS_PER_S


def _acquire(rows: np.ndarray, cols: np.ndarray, s: AcquisitionSettings) -> OffsetAcquisition:
    """Δ = row − col stamp of a pair, ``rows`` the sparser stream; reference time on its timebase."""
    reach = s.max_offset_ps
    start, last = np.searchsorted(rows, [int(cols[0]) + reach, int(cols[-1]) - reach])
    tried = 0
    best_sigma = 0.0
    for round_ in range(s.rounds):
        spare = last - start - s.screen_tags - s.verify_tags
        if spare < 1:
            if round_ == 0:
                raise SyncAcquisitionFailed(f"too few tags beyond the ±{reach / 1e9:g} ms search range")
            break
        per_row = int(np.diff(np.searchsorted(cols, [int(rows[start]) - reach, int(rows[start]) + reach]))[0])
        n_scan = max(1, min(s.scan_differences // max(per_row, 1), spare))
        scan, screen, verify = np.split(rows[start:start + n_scan + s.screen_tags + s.verify_tags],
                                        [n_scan, n_scan + s.screen_tags])
        start += n_scan + s.screen_tags + s.verify_tags
        differences = _scan(scan, cols, reach, s.scan_differences)
        lo, hi = np.searchsorted(cols, [int(verify[0]) - reach, int(verify[-1]) + reach])
        col_rate_hz = (hi - lo) / (int(verify[-1]) - int(verify[0]) + 2 * reach) * PS_PER_S  # where verify looks
        for window_ps in s.windows_ps:
            centres, levels = _densest_clusters(differences, window_ps >> _UNIT_BITS, s.candidates)
            inside = np.abs(centres) <= reach
            centres, levels = centres[inside], levels[inside]
            if not centres.size:
                continue
            top = np.argsort(-(levels + _partners(screen, cols, centres, window_ps)), kind="stable")[:s.confirm]
            hits = _partners(verify, cols, centres[top], window_ps)
            tried += top.size
            j = int(np.argmax(hits))
            background = verify.size * col_rate_hz * 2 * window_ps / PS_PER_S
            log_p = float(poisson.logsf(int(hits[j]) - 1, background)) + math.log(tried)
            sigma = float(-ndtri_exp(min(log_p, math.log(0.5))))
            if sigma >= s.min_significance:
                return _refine(rows, cols, float(centres[top[j]]), sigma, (hits[j] - background) / verify.size, s)
            best_sigma = max(best_sigma, sigma)
    raise SyncAcquisitionFailed(
        f"no coincidence peak within ±{reach / 1e9:g} ms: best candidate {best_sigma:.1f} σ of {tried} verified, "
        f"{s.min_significance:g} σ needed")


def _scan(rows: np.ndarray, cols: np.ndarray, reach_ps: int, max_differences: int) -> np.ndarray:
    """Sorted (row − col) differences in scan units, plus 2³¹, of rows with the cols within ±reach.

    Every row takes as many consecutive cols as the fullest window holds, from its first one on, so a
    row may also see a few cols beyond +reach (differences beyond −reach: harmless). Rows are dropped from
    the end so that no more than ``max_differences`` are formed, however unevenly the rates vary (a pump
    coming back mid-block).
    """
    lo, hi = np.searchsorted(cols, rows - reach_ps), np.searchsorted(cols, rows + reach_ps)
    n_rows = max(1, max_differences // max(1, int((hi - lo).max())))
    lo, hi, rows = lo[:n_rows], hi[:n_rows], rows[:n_rows]
    m = int((hi - lo).max())
    keep = lo + m <= cols.size
    lo, rows = lo[keep], rows[keep]
    if not lo.size or m == 0:
        raise SyncAcquisitionFailed("too few tags of the denser stream to cover the search range")
    cols_units = (cols[lo[0]:lo[-1] + m] >> _UNIT_BITS).astype(np.uint32)  # wraps: differences stay exact
    diffs = sliding_window_view(cols_units, m)[lo - lo[0]]  # a copy: m cols for each row tag
    rows_units = (rows >> _UNIT_BITS).astype(np.uint32) + _CENTRE
    np.subtract(rows_units[:, None], diffs, out=diffs)
    flat = diffs.reshape(-1)
    flat.sort()
    return flat


def _densest_clusters(sorted_units: np.ndarray, window: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The densest clusters of sorted differences within ``window`` units: (centre ps as Δ, level), ≤ limit.

    Index i is a left end of level k when s[i + k − 1] − s[i] ≤ window. The first level is where the
    expected background left ends drop below _MAX_LEFT_ENDS; each further level keeps the left ends with
    one more difference in the window, until none is left. The candidates are the left ends of the lowest
    level that still has at most 16·limit of them; overlapping ones make one cluster, ranked by level.
    """
    d = sorted_units
    n = d.size
    density = n * (window + 1) / max(1, int(d[-1]) - int(d[0]))  # background differences per window
    more = np.arange(1, 64)
    level = 1 + int(more[np.argmax(n * poisson.sf(more - 1, density) < _MAX_LEFT_ENDS)])
    left = np.flatnonzero(d[level - 1:] - d[:n - level + 1] <= window)
    levels = []
    while left.size:
        levels.append(left)
        left = left[left + level < n]
        left = left[d[left + level] - d[left] <= window]
        level += 1
    if not levels:
        return np.empty(0), np.empty(0, np.int64)
    base = next(i for i, lt in enumerate(levels) if lt.size <= 16 * limit or i == len(levels) - 1)
    left = levels[base]
    k = np.full(left.size, level - len(levels) + base)
    for higher in levels[base + 1:]:
        k += np.isin(left, higher, assume_unique=True)
    centre = (d[left].astype(np.int64) + d[left + k - 1]) / 2
    group = np.concatenate(([0], np.cumsum(np.diff(centre) > window)))  # overlapping left ends: one cluster
    order = np.lexsort((-k, group))  # by cluster, densest left end first
    head = order[np.r_[True, group[order][1:] != group[order][:-1]]]
    head = head[np.argsort(-k[head], kind="stable")][:limit]
    return (centre[head] - float(_CENTRE)) * (1 << _UNIT_BITS), k[head]


def _partners(rows: np.ndarray, cols: np.ndarray, centres_ps: np.ndarray, window_ps: int) -> np.ndarray:
    """For each candidate Δ, how many ``rows`` have a col within ±window of row − Δ (one sorted search each)."""
    lows = (rows[None, :] - np.round(centres_ps).astype(np.int64)[:, None] - window_ps).ravel()
    order = np.argsort(lows)
    lows = lows[order]
    a, b = np.searchsorted(cols, [lows[0], lows[-1] + 2 * window_ps + 1])
    near = cols[a:b + 1]
    idx = np.searchsorted(near, lows)
    hit = near[np.minimum(idx, near.size - 1)] <= lows + 2 * window_ps
    hit &= idx < near.size
    return np.bincount(order[hit] // rows.size, minlength=centres_ps.size)


def _refine(rows: np.ndarray, cols: np.ndarray, centre_ps: float, significance: float, twin_fraction: float,
            s: AcquisitionSettings) -> OffsetAcquisition:
    """Offset at mid-time and drift from background-subtracted centroids of two blocks at the data's ends."""
    reach = s.fine_range_ps + abs(round(centre_ps))
    first, last = np.searchsorted(rows, [int(cols[0]) + reach, int(cols[-1]) - reach])
    n_block = max(1, min(math.ceil(s.fine_coincidences / max(twin_fraction, 1e-6)), (last - first) // 2))
    early, late = (_block_offset(rows[a:a + n_block], cols, centre_ps, s) for a in (first, last - n_block))
    gap_s = (late.time_ps - early.time_ps) / PS_PER_S
    spread_ps = math.hypot(early.sigma_ps, late.sigma_ps)
    return OffsetAcquisition((early.offset_ps + late.offset_ps) / 2, round((early.time_ps + late.time_ps) / 2),
                             (late.offset_ps - early.offset_ps) / gap_s, significance, early.signal + late.signal,
                             spread_ps / 2, spread_ps / gap_s)


@dataclass(frozen=True)
class _Block:
    time_ps: float  # mean stamp of the block's rows
    offset_ps: float
    sigma_ps: float  # standard error of offset_ps
    signal: float  # background-subtracted coincidences


def _block_offset(rows: np.ndarray, cols: np.ndarray, centre_ps: float, s: AcquisitionSettings) -> _Block:
    """One block's peak: histogram search within ±fine_range, then a background-subtracted centroid.

    The accidentals are flat; their density comes from the side bands. Standard error of the centroid:
    sqrt(S·σ² + B·h²/3)/S for S signal and B background counts within ±h, σ the peak's own spread.
    """
    span, half = s.fine_range_ps, s.peak_half_width_ps
    shift = round(centre_ps)
    near = cols[np.searchsorted(cols, rows[0] - shift - span):np.searchsorted(cols, rows[-1] - shift + span)]
    lo, hi = np.searchsorted(near, rows - shift - span), np.searchsorted(near, rows - shift + span)
    n = hi - lo
    pair_row = np.repeat(np.arange(rows.size), n)
    pair_col = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
    d = (rows[pair_row] - near[pair_col]).astype(np.float64)
    counts, edges = np.histogram(d, bins=np.arange(shift - span, shift + span + 1, 8))
    summed = np.convolve(counts, np.ones(2 * (half // 8) + 1), mode="same")
    estimate = float(edges[int(np.argmax(summed))] + 4)
    for _ in range(4):
        inside = d[np.abs(d - estimate) <= half]
        background = (d.size - inside.size) / (2 * span - 2 * half) * 2 * half  # within ±half
        signal = inside.size - background
        if signal <= 0:
            raise SyncAcquisitionFailed("the verified peak vanished while refining")
        estimate = float((inside.sum() - background * estimate) / signal)
    peak_var = max(0.0, (float(((inside - estimate) ** 2).sum()) - background * half**2 / 3) / signal)
    sigma = math.sqrt(signal * peak_var + background * half**2 / 3) / signal
    return _Block(float(rows.mean()), estimate, sigma, signal)
