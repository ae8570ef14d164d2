"""Physics of one entanglement-based time-energy BBM92 link, from pair source to the two nodes' channels.

Each node has a passive beam splitter choosing the basis: a fraction ``z_fraction`` of photons goes to the
Z detector (arrival time), the rest to an unbalanced Mach–Zehnder (FSR 2.5 GHz, i.e. 400 ps imbalance;
seed 000) with two output detectors (X basis). For a pair detected at Alice's channel ``a`` and Bob's
channel ``b`` the (click − start) time difference is the Alice–Bob offset Δ(t), plus the interferometer
path difference where one applies, plus the pair's timing spread: both channels' jitter (detector ⊕
tagger) and the chromatic-dispersion broadening of the pair. Franson interference: in the central peak of
two X channels with outputs s_a, s_b = ±1 the probability of the output pair is
(1 + s_a·s_b·V·cos(φ_A + φ_B))/4. Accidental coincidences are the product of the measured singles rates
(multi-pair emission, partners lost, dark counts) and fall uniformly in time.

Dispersion: the photons of a CW-pumped pair are frequency-anticorrelated, so the arms' dispersions add in
the pair's time difference (nonlocal, Franson 1992); the pair's broadening is |D_A + D_B|·Δλ FWHM with
D the arms' accumulated dispersion (ps/nm) and Δλ the effective filter width. Seed 001, Table 2 checks it:
sqrt(60² + (D·1.0 nm)²) reproduces its "Timing uncertainty (analysis)" row for its 200 GHz channels.

A :class:`LinkState` freezes everything that varies slowly (pump power, polarization, detector state,
interferometer phases) over one acquisition; the three fidelities all sample from it. What does not vary
(pair spreads, peak shapes, the arrays of a request's measurements) is worked out once and cached, and all
expected counts of an acquisition are one compiled call (numba, :meth:`LinkState.acquisition_means`), so
that a ``stats`` acquisition costs ~20 µs.
Offsets are in ps; Δ(t) = (delay_B(t) + φ_B(t)) − (delay_A(t) + φ_A(t)) with φ a node clock's phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from numba import njit
from scipy.special import ndtr

from emulators.clock import EmulatedRbClock
from emulators.detectors import FWHM_PER_SIGMA, EmulatedDetectors
from emulators.fibre import FibreArm
from emulators.source import PairSource
from emulators.world import PS_PER_S, gaussian_bin_means, normal_mass

PEAK_SPAN_SIGMAS = 10.0  # a histogram peak's bins are those within this many σ of its centre
_LAYOUTS_KEPT = 64  # distinct pair sets whose layout is cached
_SQRT_HALF = math.sqrt(0.5)
_INCIDENT, _LIVE, _SINGLES, _GAIN = range(4)  # rows of ChannelRates.table


class PhaseTruth(Protocol):
    """What the link needs of an interferometer: its visibility, imbalance and true phase."""

    @property
    def visibility(self) -> float: ...

    @property
    def imbalance_ps(self) -> float: ...

    def phase_rad(self, t_ps: int) -> float: ...


class EfficiencyTruth(Protocol):
    """What the link needs of a polarization path: the detection-efficiency factor it causes."""

    def efficiency_factor(self, t_ps: int) -> float: ...


@dataclass(frozen=True)
class NodeChannels:
    z: int
    x_plus: int
    x_minus: int

    def all(self) -> tuple[int, int, int]:
        return (self.z, self.x_plus, self.x_minus)


@dataclass(frozen=True)
class Port:
    """What a tagger channel sees: which node, which basis, which interferometer output."""

    node: str  # "alice" or "bob"
    basis: str  # "Z" or "X"
    output: int  # +1 / −1 for X outputs, 0 for Z


@dataclass
class Node:
    name: str
    arm: FibreArm
    detectors: EmulatedDetectors
    z_fraction: float  # beam-splitter ratio to the Z (arrival-time) detector
    interferometer: PhaseTruth
    polarization: EfficiencyTruth
    clock: EmulatedRbClock
    channels: NodeChannels
    wavelength_nm: float  # centre of the DWDM channel this node receives


def window_fraction(centre_ps: np.ndarray, sigma_ps: float | np.ndarray, half_window_ps: float) -> np.ndarray:
    """Probability that a Gaussian peak (centre, sigma) falls within ±half_window of zero."""
    return ndtr((half_window_ps - centre_ps) / sigma_ps) - ndtr((-half_window_ps - centre_ps) / sigma_ps)


@dataclass(frozen=True)
class CoincidenceLayout:
    """Fixed arrays for the expected coincidences of some channel pairs under one window and Z slot.

    Every true-coincidence peak of every pair meets three windows: around the start (the same bit), and
    at +T and −T (the other bit for start bit 0 and 1). ``term_*`` run over (peak, window); a window's
    counts go half to each start bit's row of the pair's (start bit, click bit) cells: the same bit → (0,0)
    and (1,1), +T → (0,1), −T → (1,0). Peaks T apart share window edges, so edges are listed once.
    """

    pairs: tuple[tuple[int, int], ...]
    window_ps: int
    time_bin_ps: int
    pair_channels: np.ndarray  # (pairs, 2): index into LinkPhysics.channels of each pair's start and click
    pair_sign: np.ndarray  # how Δ enters each pair's (click − start), see LinkPhysics.offset_sign
    sigma2_ps2: np.ndarray  # static spread of each pair's time difference, squared (jitter, dispersion), ps²
    edge_pair: np.ndarray  # the pair of each distinct window edge ...
    edge_ps: np.ndarray  # ... and its place: window edge − peak shift, relative to the pair's ±Δ + residual (ps)
    term_index: np.ndarray  # (terms, 4): pair; window 0 same bit, 1 other bit at +T, 2 at −T; upper, lower edge
    term_values: np.ndarray  # (terms, 2): the peak's share of the pair's rate, plus this times V_A·V_B·cos(φ_A + φ_B)


@dataclass(frozen=True)
class AcquisitionLayout:
    """Fixed arrays for the expected measurements of one request (see :meth:`LinkState.acquisition_means`).

    The means come as one array, in this order: the fraction of tags the tagger keeps, the total singles rate
    (Hz), each histogram's flat accidental background per bin, each histogram peak's (centre ps, sigma ps,
    expected counts of the whole peak), each coincidence pair's four (start bit, click bit) cells and each
    counted channel's counts. A peak's bins within ±PEAK_SPAN_SIGMAS σ of its centre get counts·P(bin).
    What the compiled means need is packed in two arrays, one argument each instead of fourteen (see
    :func:`_unpacked` for the order).
    """

    coincidences: CoincidenceLayout
    histogram_peaks: tuple[tuple[int, int], ...]  # each histogram's peaks: their slice of the means, in threes
    coincidences_at: int  # where the coincidence cells start in the means
    channels_at: int  # where the channel counts start
    size: int  # of the means
    packed_ints: np.ndarray
    packed_floats: np.ndarray


@njit(cache=True)
def _unpacked(ints: np.ndarray, floats: np.ndarray) -> tuple[np.ndarray | float, ...]:
    """Views of the arrays :meth:`LinkPhysics.acquisition_layout` packs. ``ints``: the sizes (channels,
    histograms, peaks, coincidence pairs, window edges, window terms, counted channels), each histogram's
    (start, click) channel index, each peak's histogram, then of :class:`CoincidenceLayout` the pair channels,
    edge pairs and term index, and the counted channels' indices. ``floats``: the link's channel constants
    (LinkPhysics.channel_constants), each histogram's (offset sign, static spread² ps², bin width ps), each
    peak's (shift from ±Δ ps, share of the pair's rate, fringe share), then of the coincidence layout the pair
    signs, spreads², edge places and term values, and half the coincidence window in s."""
    n_channels, n_histograms, n_peaks, n_pairs, n_edges, n_terms, n_counted = ints[:7]
    i, f = 7, 0
    histogram_channels = ints[i:i + 2 * n_histograms].reshape(n_histograms, 2)
    i += 2 * n_histograms
    peak_histogram = ints[i:i + n_peaks]
    i += n_peaks
    pair_channels = ints[i:i + 2 * n_pairs].reshape(n_pairs, 2)
    i += 2 * n_pairs
    edge_pair = ints[i:i + n_edges]
    i += n_edges
    term_index = ints[i:i + 4 * n_terms].reshape(n_terms, 4)
    i += 4 * n_terms
    count_channels = ints[i:i + n_counted]
    constants = floats[f:f + 4 * n_channels].reshape(n_channels, 4)
    f += 4 * n_channels
    histogram_values = floats[f:f + 3 * n_histograms].reshape(n_histograms, 3)
    f += 3 * n_histograms
    peak_values = floats[f:f + 3 * n_peaks].reshape(n_peaks, 3)
    f += 3 * n_peaks
    pair_sign = floats[f:f + n_pairs]
    f += n_pairs
    sigma2_ps2 = floats[f:f + n_pairs]
    f += n_pairs
    edge_ps = floats[f:f + n_edges]
    f += n_edges
    term_values = floats[f:f + 2 * n_terms].reshape(n_terms, 2)
    f += 2 * n_terms
    return (constants, histogram_channels, histogram_values, peak_histogram, peak_values, pair_channels, pair_sign,
            sigma2_ps2, edge_pair, edge_ps, term_index, term_values, floats[f], count_channels)


@njit(cache=True)
def _acquisition_means(pair_rate_hz: float, eta_alice: float, eta_bob: float, cold_alice: float, cold_bob: float,
                       franson_cos: float, duration_s: float, buffer_hz: float, offset0_ps: float, offset1_ps: float,
                       delays_ps: np.ndarray, packed_ints: np.ndarray, packed_floats: np.ndarray,
                       means: np.ndarray) -> None:
    """The means of :class:`AcquisitionLayout`, into ``means``; a pair's residual offset moves from sign·Δ0 +
    delay(click) − delay(start) to sign·Δ1 + ..., and the drift is folded into its spread (as a uniform)."""
    (constants, histogram_channels, histogram_values, peak_histogram, peak_values, pair_channels, pair_sign,
     sigma2_ps2, edge_pair, edge_ps, term_index, term_values, half_window_s,
     count_channels) = _unpacked(packed_ints, packed_floats)
    n_channels, n_histograms, n_pairs = constants.shape[0], histogram_channels.shape[0], pair_sign.size
    work = np.empty(4 * n_channels + 2 * n_pairs + 2 * edge_ps.size)  # one allocation for all the scratch
    rates = work[:4 * n_channels].reshape(4, n_channels)
    centre_ps, sigma_ps = work[4 * n_channels:4 * n_channels + n_pairs], work[4 * n_channels + n_pairs:][:n_pairs]
    edge_z, edge_tail = work[4 * n_channels + 2 * n_pairs:][:edge_ps.size], work[work.size - edge_ps.size:]
    total_hz = _channel_rates(constants, pair_rate_hz, eta_alice, eta_bob, cold_alice, cold_bob, rates)
    kept = min(1.0, buffer_hz / total_hz) if total_hz > 0.0 else 1.0
    per_hz = kept * kept * duration_s  # a coincidence needs both of its tags kept
    singles_hz, gain = rates[_SINGLES], rates[_GAIN]
    means[0], means[1] = kept, total_hz
    for h in range(n_histograms):
        a, b = histogram_channels[h, 0], histogram_channels[h, 1]
        means[2 + h] = per_hz * singles_hz[a] * singles_hz[b] / PS_PER_S * histogram_values[h, 2]
    at = 2 + n_histograms
    for k in range(peak_histogram.size):
        h = peak_histogram[k]
        a, b = histogram_channels[h, 0], histogram_channels[h, 1]
        r0 = histogram_values[h, 0] * offset0_ps + delays_ps[b] - delays_ps[a]
        r1 = histogram_values[h, 0] * offset1_ps + delays_ps[b] - delays_ps[a]
        means[at] = (r0 + r1) / 2 + peak_values[k, 0]
        means[at + 1] = math.sqrt(histogram_values[h, 1] + (r1 - r0) * (r1 - r0) / 12.0)
        share, fringe = peak_values[k, 1], peak_values[k, 2]
        means[at + 2] = per_hz * pair_rate_hz * gain[a] * gain[b] * (share + fringe * franson_cos)
        at += 3
    for p in range(n_pairs):
        a, b = pair_channels[p, 0], pair_channels[p, 1]
        r0 = pair_sign[p] * offset0_ps + delays_ps[b] - delays_ps[a]
        r1 = pair_sign[p] * offset1_ps + delays_ps[b] - delays_ps[a]
        centre_ps[p] = (r0 + r1) / 2
        sigma_ps[p] = math.sqrt(sigma2_ps2[p] + (r1 - r0) * (r1 - r0) / 12.0)
        means[at + 4 * p:at + 4 * p + 4] = per_hz * singles_hz[a] * singles_hz[b] * half_window_s  # accidentals
    for e in range(edge_ps.size):
        edge_z[e] = (edge_ps[e] - centre_ps[edge_pair[e]]) / sigma_ps[edge_pair[e]]
        edge_tail[e] = 0.5 * math.erfc(abs(edge_z[e]) * _SQRT_HALF)
    for t in range(term_index.shape[0]):
        p, window, upper, lower = term_index[t, 0], term_index[t, 1], term_index[t, 2], term_index[t, 3]
        mass = normal_mass(edge_z[lower], edge_tail[lower], edge_z[upper], edge_tail[upper])
        true = 0.5 * mass * per_hz * pair_rate_hz * gain[pair_channels[p, 0]] * gain[pair_channels[p, 1]] * (
            term_values[t, 0] + term_values[t, 1] * franson_cos)
        if window == 0:
            means[at + 4 * p] += true
            means[at + 4 * p + 3] += true
        else:
            means[at + 4 * p + window] += true
    at += 4 * n_pairs
    for c in range(count_channels.size):
        means[at + c] = singles_hz[count_channels[c]] * kept * duration_s


@njit(cache=True)
def _channel_rates(constants: np.ndarray, pair_rate_hz: float, eta_alice: float, eta_bob: float, cold_alice: float,
                   cold_bob: float, rates: np.ndarray) -> float:
    """The table of :class:`ChannelRates` into ``rates`` from the per-channel ``constants`` (is Bob's, port
    fraction, dark counts Hz, dead time s); returns the total singles rate."""
    total_hz = 0.0
    for i in range(constants.shape[0]):
        is_bob, fraction, dark_hz, dead_time_s = constants[i, 0], constants[i, 1], constants[i, 2], constants[i, 3]
        eta, cold = (eta_bob, cold_bob) if is_bob else (eta_alice, cold_alice)
        incident_hz = pair_rate_hz * eta * fraction + dark_hz
        live = 1.0 / (1.0 + incident_hz * dead_time_s)  # non-paralysable: counts r/(1 + r·τ), ready 1/(1 + r·τ)
        rates[_INCIDENT, i] = incident_hz
        rates[_LIVE, i] = live
        rates[_SINGLES, i] = incident_hz * live * cold
        rates[_GAIN, i] = eta * fraction * live * cold
        total_hz += incident_hz * live * cold
    return total_hz


class LinkPhysics:
    def __init__(self, source: PairSource, alice: Node, bob: Node, tagger_rms_jitter_ps: float,
                 filter_fwhm_nm: float) -> None:
        self.source = source
        self.nodes = {"alice": alice, "bob": bob}
        self.tagger_rms_jitter_ps = tagger_rms_jitter_ps
        self.filter_fwhm_nm = filter_fwhm_nm
        # What state() reads of each node, bound once: (transmission(t), efficiency, polarization factor(t),
        # cold fraction(t0, t1), interferometer phase(t)); and V_A·V_B.
        self._slow = tuple((n.arm.transmission_at, n.detectors.params.efficiency, n.polarization.efficiency_factor,
                            n.detectors.cold_fraction, n.interferometer.phase_rad) for n in (alice, bob))
        self._visibilities = alice.interferometer.visibility * bob.interferometer.visibility
        # What offset_ps() reads, bound once: Bob's and Alice's arm delay(t) and clock phase(t); and its latest
        # answer, (t ps, Δ ps): an acquisition starts where the previous one ended.
        self._offset_reads = (bob.arm.delay_ps, bob.clock.phase_ps, alice.arm.delay_ps, alice.clock.phase_ps)
        self._latest_offset = (-1, 0.0)
        self.ports: dict[int, Port] = {}
        for node in (alice, bob):
            c = node.channels
            self.ports[c.z] = Port(node.name, "Z", 0)
            self.ports[c.x_plus] = Port(node.name, "X", +1)
            self.ports[c.x_minus] = Port(node.name, "X", -1)
        self.channels = tuple(sorted(self.ports))
        self.channel_index = {ch: i for i, ch in enumerate(self.channels)}
        # Per channel, in the order of ``channels``: (node is Bob, port fraction, dark counts Hz, dead time s).
        self.channel_constants = np.array([
            (float(self.ports[ch].node == "bob"), self.port_fraction(self.ports[ch]),
             self.nodes[self.ports[ch].node].detectors.params.dark_count_hz,
             self.nodes[self.ports[ch].node].detectors.params.dead_time_ns * 1e-9) for ch in self.channels])
        self._shapes: dict[tuple[int, int], tuple[tuple[float, float, float], ...]] = {}
        self._pair_sigma_ps: dict[tuple[int, int], float] = {}
        self._coincidence_layouts: dict[tuple[tuple[tuple[int, int], ...], int, int], CoincidenceLayout] = {}

    # -- static figures -------------------------------------------------------------------------
    def nominal_transmission(self, node: str) -> float:
        """Fibre, devices and detector efficiency at the best polarization."""
        n = self.nodes[node]
        return n.arm.transmission * n.detectors.params.efficiency

    def total_loss_db(self) -> float:
        """Two-photon loss from source to clicks, dB: what the seeds call 'total loss'."""
        return -10.0 * math.log10(self.nominal_transmission("alice") * self.nominal_transmission("bob"))

    def port_fraction(self, port: Port) -> float:
        z = self.nodes[port.node].z_fraction
        return z if port.basis == "Z" else (1.0 - z) / 2.0

    def channel_sigma_ps(self, channel: int) -> float:
        det = self.nodes[self.ports[channel].node].detectors.params
        return math.hypot(det.jitter_sigma_ps, self.tagger_rms_jitter_ps)

    def dispersion_sigma_ps(self) -> float:
        """RMS broadening of the pair's time difference by the two arms' residual dispersion."""
        total_ps_per_nm = sum(n.arm.dispersion_ps_per_nm(n.wavelength_nm) for n in self.nodes.values())
        return abs(total_ps_per_nm) * self.filter_fwhm_nm / FWHM_PER_SIGMA

    def pair_sigma_ps(self, a: int, b: int) -> float:
        """RMS spread of (click − start) for a true pair: both channels' jitter and the dispersion (cached)."""
        sigma_ps = self._pair_sigma_ps.get((a, b))
        if sigma_ps is None:
            sigma_ps = self._pair_sigma_ps[(a, b)] = math.sqrt(
                self.channel_sigma_ps(a) ** 2 + self.channel_sigma_ps(b) ** 2 + self.dispersion_sigma_ps() ** 2)
        return sigma_ps

    def peak_shapes(self, start: int, click: int) -> tuple[tuple[float, float, float], ...]:
        """True-coincidence peaks of (click − start) as (shift from ±Δ in ps, share, fringe share): a peak
        carries the pair's coincidence rate times share + fringe share·V_A·V_B·cos(φ_A + φ_B). Cached.

        The pair's rate already spreads X photons evenly over the two outputs (factor 1/2 per X side). Half
        of the photons through an interferometer take the long arm; in the central X–X peak the output
        pair is set by interference: (1 + s_a·s_b·V·cos φ)/4 instead of 1/4.
        """
        shapes = self._shapes.get((start, click))
        if shapes is None:
            shapes = self._shapes[(start, click)] = self._peak_shapes(start, click)
        return shapes

    def _peak_shapes(self, start: int, click: int) -> tuple[tuple[float, float, float], ...]:
        pa, pb = self.ports[start], self.ports[click]
        if pa.node == pb.node:
            return ()
        tau_a = self.nodes[pa.node].interferometer.imbalance_ps
        tau_b = self.nodes[pb.node].interferometer.imbalance_ps
        if pa.basis == "Z" and pb.basis == "Z":
            return ((0.0, 1.0, 0.0),)
        if pa.basis == "Z":
            return ((0.0, 0.5, 0.0), (tau_b, 0.5, 0.0))
        if pb.basis == "Z":
            return ((0.0, 0.5, 0.0), (-tau_a, 0.5, 0.0))
        return ((-tau_a, 0.25, 0.0), (0.0, 0.5, 0.5 * pa.output * pb.output), (tau_b, 0.25, 0.0))

    def coincidence_layout(self, pairs: tuple[tuple[int, int], ...], window_ps: int,
                           time_bin_ps: int) -> CoincidenceLayout:
        """The fixed arrays of ``pairs`` under this window and slot (cached: a stack asks the same every time)."""
        key = (pairs, window_ps, time_bin_ps)
        layout = self._coincidence_layouts.get(key)
        if layout is None:
            layout = self._coincidence_layout(*key)
            if len(self._coincidence_layouts) < _LAYOUTS_KEPT:
                self._coincidence_layouts[key] = layout
        return layout

    def _coincidence_layout(self, pairs: tuple[tuple[int, int], ...], window_ps: int,
                            time_bin_ps: int) -> CoincidenceLayout:
        if window_ps > time_bin_ps:
            raise ValueError(f"coincidence window {window_ps} ps wider than the Z slot of {time_bin_ps} ps")
        index = self.channel_index
        slots = (0.0, float(time_bin_ps), -float(time_bin_ps))  # same bit, other bit after/before
        half = window_ps / 2
        edges: dict[tuple[int, float], int] = {}  # (pair, place) → index
        term_index, term_values = [], []
        for p, (a, b) in enumerate(pairs):
            for shift, share, fringe in self.peak_shapes(a, b):
                for window, slot in enumerate(slots):
                    upper = edges.setdefault((p, half + slot - shift), len(edges))
                    lower = edges.setdefault((p, -half + slot - shift), len(edges))
                    term_index.append((p, window, upper, lower))
                    term_values.append((share, fringe))
        return CoincidenceLayout(
            pairs=pairs, window_ps=window_ps, time_bin_ps=time_bin_ps,
            pair_channels=np.array([(index[a], index[b]) for a, b in pairs], dtype=np.intp).reshape(-1, 2),
            pair_sign=np.array([self.offset_sign(a, b) for a, b in pairs]),
            sigma2_ps2=np.array([self.pair_sigma_ps(a, b) ** 2 for a, b in pairs]),
            edge_pair=np.array([p for p, _ in edges], dtype=np.intp), edge_ps=np.array([x for _, x in edges], float),
            term_index=np.array(term_index, dtype=np.intp).reshape(-1, 4),
            term_values=np.array(term_values, dtype=np.float64).reshape(-1, 2))

    def acquisition_layout(self, histograms: tuple[tuple[int, int, int], ...], coincidences: CoincidenceLayout | None,
                           count_channels: tuple[int, ...]) -> AcquisitionLayout:
        """The layout of a request's means: ``histograms`` as (start, click, bin width ps), the coincidence
        layout (or none), the counted channels."""
        index = self.channel_index
        peak_histogram, peak_values, histogram_peaks = [], [], []
        at = 2 + len(histograms)
        for h, (a, b, _) in enumerate(histograms):
            shapes = self.peak_shapes(a, b)
            peak_histogram += [h] * len(shapes)
            peak_values += shapes
            histogram_peaks.append((at, at + 3 * len(shapes)))
            at += 3 * len(shapes)
        c = coincidences if coincidences is not None else self.coincidence_layout((), 1, 1)
        sizes = (len(self.channels), len(histograms), len(peak_histogram), len(c.pairs), c.edge_ps.size,
                 c.term_index.shape[0], len(count_channels))
        ints = (sizes, [(index[a], index[b]) for a, b, _ in histograms], peak_histogram, c.pair_channels,
                c.edge_pair, c.term_index, [index[ch] for ch in count_channels])
        floats = (self.channel_constants,
                  [(self.offset_sign(a, b), self.pair_sigma_ps(a, b) ** 2, width) for a, b, width in histograms],
                  peak_values, c.pair_sign, c.sigma2_ps2, c.edge_ps, c.term_values, [c.window_ps / 2 / PS_PER_S])
        channels_at = at + 4 * len(c.pairs)
        return AcquisitionLayout(
            coincidences=c, histogram_peaks=tuple(histogram_peaks), coincidences_at=at, channels_at=channels_at,
            size=channels_at + len(count_channels),
            packed_ints=np.concatenate([np.ravel(np.asarray(x, dtype=np.int64)) for x in ints]),
            packed_floats=np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in floats]))

    # -- the offset ---------------------------------------------------------------------------
    def offset_ps(self, t_ps: int) -> float:
        """True Δ(t): Bob's minus Alice's (propagation + clock phase) for a pair emitted at t, ps. A function of t
        alone (the delays follow the temperature, the clock phases are continuous), so the latest is kept."""
        latest_ps, latest = self._latest_offset
        if t_ps == latest_ps:
            return latest
        delay_b, phase_b, delay_a, phase_a = self._offset_reads
        offset = (delay_b(t_ps) + phase_b(t_ps)) - (delay_a(t_ps) + phase_a(t_ps))
        self._latest_offset = (t_ps, offset)
        return offset

    def offset_sign(self, start: int, click: int) -> float:
        """How Δ enters (click − start): +1 Alice→Bob, −1 Bob→Alice, 0 within one node."""
        na, nb = self.ports[start].node, self.ports[click].node
        return 0.0 if na == nb else 1.0 if na == "alice" else -1.0

    def state(self, t0_ps: int, t1_ps: int) -> LinkState:
        """Freeze the link over [t0, t1] (t1 ≤ now): slow quantities at the midpoint, detector duty exact."""
        pair_rate_hz, eta_alice, eta_bob, cold_alice, cold_bob, franson_cos, duration_s = self._frozen(t0_ps, t1_ps)
        return LinkState(self, duration_s, pair_rate_hz, {"alice": eta_alice, "bob": eta_bob},
                         {"alice": cold_alice, "bob": cold_bob}, franson_cos)

    def acquisition_means(self, t0_ps: int, t1_ps: int, layout: AcquisitionLayout, offset0_ps: float,
                          offset1_ps: float, delays_ps: np.ndarray, buffer_hz: float, out: np.ndarray) -> np.ndarray:
        """``state(t0_ps, t1_ps).acquisition_means(...)`` into ``out``, without making the state (the ``stats``
        fidelity's hot path)."""
        _acquisition_means(*self._frozen(t0_ps, t1_ps), buffer_hz, offset0_ps, offset1_ps, delays_ps,
                           layout.packed_ints, layout.packed_floats, out)
        return out

    def _frozen(self, t0_ps: int, t1_ps: int) -> tuple[float, float, float, float, float, float, float]:
        """What :class:`LinkState` holds: (pair rate Hz, η Alice, η Bob, cold fraction Alice, cold fraction Bob,
        V_A·V_B·cos(φ_A + φ_B), duration s)."""
        mid = (t0_ps + t1_ps) // 2
        (transmission_a, efficiency_a, polarization_a, cold_a, phase_a), (
            transmission_b, efficiency_b, polarization_b, cold_b, phase_b) = self._slow
        return (self.source.pair_rate_hz(), transmission_a(mid) * efficiency_a * polarization_a(mid),
                transmission_b(mid) * efficiency_b * polarization_b(mid), cold_a(t0_ps, t1_ps), cold_b(t0_ps, t1_ps),
                self._visibilities * math.cos(phase_a(mid) + phase_b(mid)), (t1_ps - t0_ps) / PS_PER_S)


@dataclass(frozen=True)
class ChannelRates:
    """Per-channel rates of one :class:`LinkState`, in the order of ``LinkPhysics.channels``: rows of ``table``.

    Rows: the rate of photons and dark counts reaching the channel while its detector is cold (Hz); the
    fraction of time the channel is ready to click (non-paralysable dead time τ: 1/(1 + r·τ)); the measured
    count rate, dead time and the detectors' offline time included (Hz); the probability that a pair's
    photon is counted on the channel (η·port·live·cold).
    """

    table: np.ndarray  # (4, channels)
    total_singles_hz: float  # over all channels

    @property
    def incident_hz(self) -> np.ndarray:
        return self.table[_INCIDENT]

    @property
    def live(self) -> np.ndarray:
        return self.table[_LIVE]

    @property
    def singles_hz(self) -> np.ndarray:
        return self.table[_SINGLES]

    @property
    def pair_gain(self) -> np.ndarray:
        return self.table[_GAIN]


@dataclass(frozen=True, init=False)
class LinkState:
    """The link over one acquisition. Rates are per second of the interval."""

    link: LinkPhysics
    duration_s: float
    pair_rate_hz: float
    eta: dict[str, float]  # source → click probability of each node's photon (polarization included)
    cold: dict[str, float]  # fraction of the interval each node's detectors were cold
    franson_cos: float  # V_A·V_B·cos(φ_A + φ_B)

    def __init__(self, link: LinkPhysics, duration_s: float, pair_rate_hz: float, eta: dict[str, float],
                 cold: dict[str, float], franson_cos: float) -> None:
        # One is made per acquisition: filled in directly, at a third of the cost of the frozen __setattr__.
        fields = self.__dict__
        fields["link"] = link
        fields["duration_s"] = duration_s
        fields["pair_rate_hz"] = pair_rate_hz
        fields["eta"] = eta
        fields["cold"] = cold
        fields["franson_cos"] = franson_cos

    @cached_property
    def rates(self) -> ChannelRates:
        table = np.empty((4, len(self.link.channels)))
        total_hz = _channel_rates(self.link.channel_constants, self.pair_rate_hz, self.eta["alice"], self.eta["bob"],
                                  self.cold["alice"], self.cold["bob"], table)
        return ChannelRates(table, total_hz)

    def _channel_rate(self, row: int, channel: int) -> float:
        return float(self.rates.table[row, self.link.channel_index[channel]])

    def incident_hz(self, channel: int) -> float:
        """Rate of photons and dark counts reaching the channel while its detector is cold."""
        return self._channel_rate(_INCIDENT, channel)

    def live(self, channel: int) -> float:
        return self._channel_rate(_LIVE, channel)

    def singles_hz(self, channel: int) -> float:
        """Measured count rate: dead time and the detectors' offline time included."""
        return self._channel_rate(_SINGLES, channel)

    def peaks(self, start: int, click: int) -> list[tuple[float, float]]:
        """True-coincidence peaks of (click − start) as (shift from ±Δ in ps, rate in Hz)."""
        pair_hz = self.pair_rate_hz * self._channel_rate(_GAIN, start) * self._channel_rate(_GAIN, click)
        return [(shift, pair_hz * (share + fringe * self.franson_cos))
                for shift, share, fringe in self.link.peak_shapes(start, click)]

    def accidental_hz_per_ps(self, start: int, click: int) -> float:
        return self._channel_rate(_SINGLES, start) * self._channel_rate(_SINGLES, click) / PS_PER_S

    # -- expected measurements ------------------------------------------------------------------
    def acquisition_means(self, layout: AcquisitionLayout, offset0_ps: float, offset1_ps: float,
                          delays_ps: np.ndarray, buffer_hz: float = math.inf,
                          out: np.ndarray | None = None) -> np.ndarray:
        """Every expected count of a request (see :class:`AcquisitionLayout`), the true offset Δ moving from
        ``offset0_ps`` to ``offset1_ps`` and the tagger applying ``delays_ps`` (per channel, in the order of
        ``LinkPhysics.channels``). Over ``buffer_hz`` of tags the tagger keeps only that fraction of them.
        Written into ``out`` (``layout.size`` floats) if given."""
        means = np.empty(layout.size) if out is None else out
        eta, cold = self.eta, self.cold
        _acquisition_means(self.pair_rate_hz, eta["alice"], eta["bob"], cold["alice"], cold["bob"], self.franson_cos,
                           self.duration_s, buffer_hz, offset0_ps, offset1_ps, delays_ps, layout.packed_ints,
                           layout.packed_floats, means)
        return means

    def _single_pair_means(self, start: int, click: int, layout: AcquisitionLayout, r0_ps: float,
                           r1_ps: float) -> np.ndarray:
        """:meth:`acquisition_means` of one pair whose residual offset moves from r0 to r1 (no input delays)."""
        sign = self.link.offset_sign(start, click)  # ±1, or 0 within one node where nothing depends on Δ
        return self.acquisition_means(layout, sign * r0_ps, sign * r1_ps, np.zeros(len(self.link.channels)))

    def expected_histogram(self, start: int, click: int, binwidth_ps: int, n_bins: int,
                           r0_ps: float, r1_ps: float) -> np.ndarray:
        """Expected counts per bin, with the residual offset moving linearly from r0 to r1."""
        expected = np.full(n_bins, self.accidental_hz_per_ps(start, click) * binwidth_ps * self.duration_s)
        lo, peaks = self.histogram_peaks(start, click, binwidth_ps, n_bins, r0_ps, r1_ps)
        expected[lo:lo + peaks.size] += peaks
        return expected

    def histogram_peaks(self, start: int, click: int, binwidth_ps: int, n_bins: int,
                        r0_ps: float, r1_ps: float) -> tuple[int, np.ndarray]:
        """The true coincidences of :meth:`expected_histogram`, in the bins within ±10 σ of a peak:
        (first bin, expected counts per bin). The other part is the flat accidental background.
        """
        layout = self.link.acquisition_layout(((start, click, binwidth_ps),), None, ())
        means = self._single_pair_means(start, click, layout, r0_ps, r1_ps)
        first_edge = -(n_bins // 2) * binwidth_ps
        lo, hi = layout.histogram_peaks[0]
        spans = [gaussian_bin_means(first_edge, binwidth_ps, n_bins, *means[k:k + 3], PEAK_SPAN_SIGMAS)
                 for k in range(lo, hi, 3)]
        spans = [(first, bins) for first, bins in spans if bins.size]
        if not spans:
            return 0, np.empty(0)
        first = min(lo for lo, _ in spans)
        counts = np.zeros(max(lo + bins.size for lo, bins in spans) - first)
        for lo, bins in spans:
            counts[lo - first:lo - first + bins.size] += bins
        return first, counts

    def expected_coincidences(self, start: int, click: int, window_ps: int, time_bin_ps: int,
                              r0_ps: float, r1_ps: float) -> np.ndarray:
        """Expected 2×2 counts [start bit, click bit] under frame-announcement sifting (CoincidenceSpec), the
        pair's residual offset moving linearly from r0 to r1.

        The start bit is its slot parity, uniform for CW pairs; the click counts as the same bit within
        ±window/2 of the start and as the other bit within ±window/2 of the start's other-slot time,
        +T for start bit 0 and −T for start bit 1. Accidentals are flat: one window's worth in each cell.
        """
        layout = self.link.acquisition_layout(
            (), self.link.coincidence_layout(((start, click),), window_ps, time_bin_ps), ())
        means = self._single_pair_means(start, click, layout, r0_ps, r1_ps)
        return means[layout.coincidences_at:layout.channels_at].reshape(2, 2)
