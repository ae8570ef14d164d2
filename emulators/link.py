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
(pair spreads, peak shapes, the arrays of a set of coincidence pairs) is worked out once and cached, and a
state computes its channel rates once, so that a ``stats`` acquisition costs tens of microseconds.
Offsets are in ps; Δ(t) = (delay_B(t) + φ_B(t)) − (delay_A(t) + φ_A(t)) with φ a node clock's phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from scipy.special import ndtr

from emulators.clock import EmulatedRbClock
from emulators.detectors import FWHM_PER_SIGMA, EmulatedDetectors, live_fraction
from emulators.fibre import FibreArm
from emulators.source import PairSource
from emulators.world import PS_PER_S

_PEAK_SPAN_SIGMAS = 10.0
_LAYOUTS_KEPT = 64  # distinct pair sets whose layout is cached


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
    at +T and −T (the other bit for start bit 0 and 1); each window has two edges. ``edge_*`` run over
    (peak, window, edge), ``term_*`` over (peak, window), and ``cells`` sums the terms into the flat
    (pair, start bit, click bit) cells, half of each window to each start bit's row.
    """

    pairs: tuple[tuple[int, int], ...]
    window_ps: int
    time_bin_ps: int
    sigma2_ps2: np.ndarray  # static spread of each pair's time difference, squared (jitter, dispersion)
    edge_pair: np.ndarray  # pair index of each window edge
    edge_offset_ps: np.ndarray  # ±window/2 + (0, +T, −T) − peak shift: the edge relative to ±Δ + residual
    term_gain_index: np.ndarray  # flat index into the outer product of channel pair gains (start, click)
    term_share: np.ndarray  # the peak's share of the pair's rate ...
    term_fringe: np.ndarray  # ... plus this times V_A·V_B·cos(φ_A + φ_B)
    cells: np.ndarray  # (4·pairs, 3·peaks): ½ where a term lands in a cell
    cell_singles_index: np.ndarray  # flat index into the outer product of channel singles, per cell


class LinkPhysics:
    def __init__(self, source: PairSource, alice: Node, bob: Node, tagger_rms_jitter_ps: float,
                 filter_fwhm_nm: float) -> None:
        self.source = source
        self.nodes = {"alice": alice, "bob": bob}
        self.tagger_rms_jitter_ps = tagger_rms_jitter_ps
        self.filter_fwhm_nm = filter_fwhm_nm
        self.ports: dict[int, Port] = {}
        for node in (alice, bob):
            c = node.channels
            self.ports[c.z] = Port(node.name, "Z", 0)
            self.ports[c.x_plus] = Port(node.name, "X", +1)
            self.ports[c.x_minus] = Port(node.name, "X", -1)
        self.channels = tuple(sorted(self.ports))
        self.channel_index = {ch: i for i, ch in enumerate(self.channels)}
        # Per channel, in the order of ``channels``: (node is Bob, port fraction, dark counts Hz, dead time ns).
        self._channel_constants = tuple(
            (int(self.ports[ch].node == "bob"), self.port_fraction(self.ports[ch]),
             self.nodes[self.ports[ch].node].detectors.params.dark_count_hz,
             self.nodes[self.ports[ch].node].detectors.params.dead_time_ns) for ch in self.channels)
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
        n_channels = len(self.channels)
        index = self.channel_index
        slots = (0.0, float(time_bin_ps), -float(time_bin_ps))  # same bit, other bit after/before
        half = window_ps / 2
        edge_pair, edge_offset, gain_index, share, fringe, cell_rows = [], [], [], [], [], []
        for p, (a, b) in enumerate(pairs):
            for shift, peak_share, peak_fringe in self.peak_shapes(a, b):
                for window, slot in enumerate(slots):
                    edge_pair += [p, p]
                    edge_offset += [half + slot - shift, -half + slot - shift]
                    gain_index.append(index[a] * n_channels + index[b])
                    share.append(peak_share)
                    fringe.append(peak_fringe)
                    # cells of pair p, flat [start bit, click bit]: same → (0,0) and (1,1); +T → (0,1); −T → (1,0)
                    cell_rows.append([4 * p, 4 * p + 3] if window == 0 else [4 * p + 1] if window == 1 else [4 * p + 2])
        cells = np.zeros((4 * len(pairs), len(cell_rows)))
        for term, rows in enumerate(cell_rows):
            cells[rows, term] = 0.5
        return CoincidenceLayout(
            pairs=pairs, window_ps=window_ps, time_bin_ps=time_bin_ps,
            sigma2_ps2=np.array([self.pair_sigma_ps(a, b) ** 2 for a, b in pairs]),
            edge_pair=np.array(edge_pair, dtype=np.intp), edge_offset_ps=np.array(edge_offset),
            term_gain_index=np.array(gain_index, dtype=np.intp), term_share=np.array(share),
            term_fringe=np.array(fringe), cells=cells,
            cell_singles_index=np.repeat([index[a] * n_channels + index[b] for a, b in pairs], 4))

    # -- the offset ---------------------------------------------------------------------------
    def offset_ps(self, t_ps: int) -> float:
        """True Δ(t): Bob's minus Alice's (propagation + clock phase) for a pair emitted at t, ps."""
        a, b = self.nodes["alice"], self.nodes["bob"]
        return (b.arm.delay_ps(t_ps) + b.clock.phase_ps(t_ps)) - (a.arm.delay_ps(t_ps) + a.clock.phase_ps(t_ps))

    def offset_sign(self, start: int, click: int) -> float:
        """How Δ enters (click − start): +1 Alice→Bob, −1 Bob→Alice, 0 within one node."""
        na, nb = self.ports[start].node, self.ports[click].node
        return 0.0 if na == nb else 1.0 if na == "alice" else -1.0

    def state(self, t0_ps: int, t1_ps: int) -> LinkState:
        """Freeze the link over [t0, t1] (t1 ≤ now): slow quantities at the midpoint, detector duty exact."""
        mid = (t0_ps + t1_ps) // 2
        a, b = self.nodes["alice"], self.nodes["bob"]
        ia, ib = a.interferometer, b.interferometer
        return LinkState(
            link=self,
            duration_s=(t1_ps - t0_ps) / PS_PER_S,
            pair_rate_hz=self.source.pair_rate_hz(),
            eta={"alice": a.arm.transmission_at(mid) * a.detectors.params.efficiency
                 * a.polarization.efficiency_factor(mid),
                 "bob": b.arm.transmission_at(mid) * b.detectors.params.efficiency
                 * b.polarization.efficiency_factor(mid)},
            cold={"alice": a.detectors.cold_fraction(t0_ps, t1_ps), "bob": b.detectors.cold_fraction(t0_ps, t1_ps)},
            franson_cos=ia.visibility * ib.visibility * math.cos(ia.phase_rad(mid) + ib.phase_rad(mid)),
        )


@dataclass(frozen=True)
class ChannelRates:
    """Per-channel rates of one :class:`LinkState`, in the order of ``LinkPhysics.channels``."""

    incident_hz: tuple[float, ...]  # photons and dark counts reaching the channel while its detector is cold
    live: tuple[float, ...]  # fraction of time the channel is ready to click (dead time)
    singles_hz: np.ndarray  # measured count rate: dead time and the detectors' offline time included
    pair_gain: np.ndarray  # probability that a pair's photon is counted on the channel (η·port·live·cold)
    total_singles_hz: float  # over all channels


@dataclass(frozen=True)
class LinkState:
    """The link over one acquisition. Rates are per second of the interval."""

    link: LinkPhysics
    duration_s: float
    pair_rate_hz: float
    eta: dict[str, float]  # source → click probability of each node's photon (polarization included)
    cold: dict[str, float]  # fraction of the interval each node's detectors were cold
    franson_cos: float  # V_A·V_B·cos(φ_A + φ_B)

    @cached_property
    def rates(self) -> ChannelRates:
        eta = (self.eta["alice"], self.eta["bob"])
        cold = (self.cold["alice"], self.cold["bob"])
        incident, live, singles, gain = [], [], [], []
        for is_bob, fraction, dark_hz, dead_time_ns in self.link._channel_constants:
            rate_hz = self.pair_rate_hz * eta[is_bob] * fraction + dark_hz
            ready = live_fraction(rate_hz, dead_time_ns)
            incident.append(rate_hz)
            live.append(ready)
            singles.append(rate_hz * ready * cold[is_bob])
            gain.append(eta[is_bob] * fraction * ready * cold[is_bob])
        return ChannelRates(tuple(incident), tuple(live), np.array(singles), np.array(gain), sum(singles))

    def incident_hz(self, channel: int) -> float:
        """Rate of photons and dark counts reaching the channel while its detector is cold."""
        return self.rates.incident_hz[self.link.channel_index[channel]]

    def live(self, channel: int) -> float:
        return self.rates.live[self.link.channel_index[channel]]

    def singles_hz(self, channel: int) -> float:
        """Measured count rate: dead time and the detectors' offline time included."""
        return float(self.rates.singles_hz[self.link.channel_index[channel]])

    def peaks(self, start: int, click: int) -> list[tuple[float, float]]:
        """True-coincidence peaks of (click − start) as (shift from ±Δ in ps, rate in Hz)."""
        index = self.link.channel_index
        gain = self.rates.pair_gain
        pair_hz = self.pair_rate_hz * float(gain[index[start]] * gain[index[click]])
        return [(shift, pair_hz * (share + fringe * self.franson_cos))
                for shift, share, fringe in self.link.peak_shapes(start, click)]

    def accidental_hz_per_ps(self, start: int, click: int) -> float:
        singles = self.rates.singles_hz
        index = self.link.channel_index
        return float(singles[index[start]] * singles[index[click]]) / PS_PER_S

    # -- expected measurements ------------------------------------------------------------------
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
        # The pair spread with the linear drift r0 → r1 across the acquisition folded in (as a uniform).
        sigma = math.sqrt(self.link.pair_sigma_ps(start, click) ** 2 + (r1_ps - r0_ps) ** 2 / 12.0)
        first_edge = -(n_bins // 2) * binwidth_ps
        spans = []
        for shift, rate in self.peaks(start, click):
            centre = (r0_ps + r1_ps) / 2 + shift
            lo = max(math.floor((centre - _PEAK_SPAN_SIGMAS * sigma - first_edge) / binwidth_ps), 0)
            hi = min(math.ceil((centre + _PEAK_SPAN_SIGMAS * sigma - first_edge) / binwidth_ps), n_bins)
            if lo < hi:
                spans.append((lo, hi, centre, rate))
        if not spans:
            return 0, np.empty(0)
        if len(spans) == 1:
            lo, hi, centre, rate = spans[0]
            cdf = ndtr((first_edge + np.arange(lo, hi + 1) * binwidth_ps - centre) / sigma)
            return lo, rate * self.duration_s * (cdf[1:] - cdf[:-1])
        first = min(span[0] for span in spans)
        counts = np.zeros(max(span[1] for span in spans) - first)
        for lo, hi, centre, rate in spans:
            cdf = ndtr((first_edge + np.arange(lo, hi + 1) * binwidth_ps - centre) / sigma)
            counts[lo - first:hi - first] += rate * self.duration_s * (cdf[1:] - cdf[:-1])
        return first, counts

    def expected_coincidences(self, start: int, click: int, window_ps: int, time_bin_ps: int,
                              r0_ps: float, r1_ps: float) -> np.ndarray:
        """Expected 2×2 counts [start bit, click bit] under frame-announcement sifting (CoincidenceSpec).

        The start bit is its slot parity, uniform for CW pairs; the click counts as the same bit within
        ±window/2 of the start and as the other bit within ±window/2 of the start's other-slot time,
        +T for start bit 0 and −T for start bit 1. Accidentals are flat: one window's worth in each cell.
        """
        layout = self.link.coincidence_layout(((start, click),), window_ps, time_bin_ps)
        return self.expected_coincidence_counts(layout, np.array([r0_ps]), np.array([r1_ps]))[0]

    def expected_coincidence_counts(self, layout: CoincidenceLayout, r0_ps: np.ndarray,
                                    r1_ps: np.ndarray) -> np.ndarray:
        """:meth:`expected_coincidences` of every pair of ``layout`` at once, shape (pairs, 2, 2).

        ``r0_ps``/``r1_ps``: each pair's residual offset at the start and the end of the acquisition.
        """
        drift_ps = r1_ps - r0_ps
        sigma_ps = np.sqrt(layout.sigma2_ps2 + drift_ps * drift_ps / 12.0)
        centre_ps = (r0_ps + r1_ps) / 2
        cdf = ndtr((layout.edge_offset_ps - centre_ps[layout.edge_pair]) / sigma_ps[layout.edge_pair])
        rates = self.rates
        pair_hz = np.multiply.outer(rates.pair_gain, rates.pair_gain).ravel()[layout.term_gain_index]
        peak_hz = self.pair_rate_hz * pair_hz * (layout.term_share + layout.term_fringe * self.franson_cos)
        true = layout.cells @ ((cdf[0::2] - cdf[1::2]) * peak_hz)
        accidental_hz = np.multiply.outer(rates.singles_hz, rates.singles_hz).ravel()[layout.cell_singles_index]
        counts = (true + accidental_hz * (layout.window_ps / 2 / PS_PER_S)) * self.duration_s
        return counts.reshape(-1, 2, 2)
