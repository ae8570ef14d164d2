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
interferometer phases) over one acquisition; the three fidelities all sample from it.
Offsets are in ps; Δ(t) = (delay_B(t) + φ_B(t)) − (delay_A(t) + φ_A(t)) with φ a node clock's phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.special import ndtr

from emulators.clock import EmulatedRbClock
from emulators.detectors import FWHM_PER_SIGMA, EmulatedDetectors, live_fraction
from emulators.fibre import FibreArm
from emulators.source import PairSource
from emulators.world import PS_PER_S

_PEAK_SPAN_SIGMAS = 10.0
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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


def window_fraction(centre_ps: np.ndarray, sigma_ps: float, half_window_ps: float) -> np.ndarray:
    """Probability that a Gaussian peak (centre, sigma) falls within ±half_window of zero."""
    return ndtr((half_window_ps - centre_ps) / sigma_ps) - ndtr((-half_window_ps - centre_ps) / sigma_ps)


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
        return math.sqrt(self.channel_sigma_ps(a) ** 2 + self.channel_sigma_ps(b) ** 2
                         + self.dispersion_sigma_ps() ** 2)

    # -- the offset ---------------------------------------------------------------------------
    def offset_ps(self, t_ps: int) -> float:
        """True Δ(t): Bob's minus Alice's (propagation + clock phase) for a pair emitted at t, ps."""
        a, b = self.nodes["alice"], self.nodes["bob"]
        return (b.arm.delay_ps(t_ps) + b.clock.phase_ps(t_ps)) - (a.arm.delay_ps(t_ps) + a.clock.phase_ps(t_ps))

    def signed_offset_ps(self, start: int, click: int, t_ps: int) -> float:
        """Δ(t) as seen by (click − start): +Δ for Alice→Bob, −Δ for Bob→Alice, 0 within one node."""
        na, nb = self.ports[start].node, self.ports[click].node
        if na == nb:
            return 0.0
        d = self.offset_ps(t_ps)
        return d if na == "alice" else -d

    def state(self, t0_ps: int, t1_ps: int) -> LinkState:
        """Freeze the link over [t0, t1] (t1 ≤ now): slow quantities at the midpoint, detector duty exact."""
        mid = (t0_ps + t1_ps) // 2
        eta = {}
        cold = {}
        for name, n in self.nodes.items():
            eta[name] = (n.arm.transmission_at(mid) * n.detectors.params.efficiency
                         * n.polarization.efficiency_factor(mid))
            cold[name] = n.detectors.cold_fraction(t0_ps, t1_ps)
        a, b = self.nodes["alice"].interferometer, self.nodes["bob"].interferometer
        return LinkState(
            link=self,
            duration_s=(t1_ps - t0_ps) / PS_PER_S,
            pair_rate_hz=self.source.pair_rate_hz(),
            eta=eta,
            cold=cold,
            franson_cos=a.visibility * b.visibility * math.cos(a.phase_rad(mid) + b.phase_rad(mid)),
        )


@dataclass(frozen=True)
class LinkState:
    """The link over one acquisition. Rates are per second of the interval."""

    link: LinkPhysics
    duration_s: float
    pair_rate_hz: float
    eta: dict[str, float]  # source → click probability of each node's photon (polarization included)
    cold: dict[str, float]  # fraction of the interval each node's detectors were cold
    franson_cos: float  # V_A·V_B·cos(φ_A + φ_B)

    def incident_hz(self, channel: int) -> float:
        """Rate of photons and dark counts reaching the channel while its detector is cold."""
        port = self.link.ports[channel]
        det = self.link.nodes[port.node].detectors.params
        return self.pair_rate_hz * self.eta[port.node] * self.link.port_fraction(port) + det.dark_count_hz

    def live(self, channel: int) -> float:
        det = self.link.nodes[self.link.ports[channel].node].detectors.params
        return live_fraction(self.incident_hz(channel), det.dead_time_ns)

    def singles_hz(self, channel: int) -> float:
        """Measured count rate: dead time and the detectors' offline time included."""
        node = self.link.ports[channel].node
        return self.incident_hz(channel) * self.live(channel) * self.cold[node]

    def peaks(self, start: int, click: int) -> list[tuple[float, float]]:
        """True-coincidence peaks of (click − start) as (shift from ±Δ in ps, rate in Hz)."""
        link = self.link
        pa, pb = link.ports[start], link.ports[click]
        if pa.node == pb.node:
            return []
        rate = (self.pair_rate_hz * self.eta[pa.node] * self.eta[pb.node] * link.port_fraction(pa)
                * link.port_fraction(pb) * self.live(start) * self.live(click) * self.cold[pa.node]
                * self.cold[pb.node])
        # ``rate`` already spreads X photons evenly over the two outputs (factor 1/2 per X side). Half of
        # the photons through an interferometer take the long arm; in the central X–X peak the output
        # pair is set by interference: (1 + s_a·s_b·V·cos φ)/4 instead of 1/4.
        tau_a = link.nodes[pa.node].interferometer.imbalance_ps
        tau_b = link.nodes[pb.node].interferometer.imbalance_ps
        if pa.basis == "Z" and pb.basis == "Z":
            return [(0.0, rate)]
        if pa.basis == "Z":
            return [(0.0, rate / 2), (tau_b, rate / 2)]
        if pb.basis == "Z":
            return [(0.0, rate / 2), (-tau_a, rate / 2)]
        interference = 1.0 + pa.output * pb.output * self.franson_cos
        return [(-tau_a, rate / 4), (0.0, rate / 2 * interference), (tau_b, rate / 4)]

    def accidental_hz_per_ps(self, start: int, click: int) -> float:
        return self.singles_hz(start) * self.singles_hz(click) / PS_PER_S

    def _smeared_sigma_ps(self, start: int, click: int, r0_ps: float, r1_ps: float) -> float:
        """Pair spread with the linear drift r0 → r1 across the acquisition folded in (as a uniform)."""
        return math.sqrt(self.link.pair_sigma_ps(start, click) ** 2 + (r1_ps - r0_ps) ** 2 / 12.0)

    # -- expected measurements ------------------------------------------------------------------
    def expected_histogram(self, start: int, click: int, binwidth_ps: int, n_bins: int,
                           r0_ps: float, r1_ps: float) -> np.ndarray:
        """Expected counts per bin, with the residual offset moving linearly from r0 to r1."""
        expected = np.full(n_bins, self.accidental_hz_per_ps(start, click) * binwidth_ps * self.duration_s)
        sigma = self._smeared_sigma_ps(start, click, r0_ps, r1_ps)
        first_edge = -(n_bins // 2) * binwidth_ps
        for shift, rate in self.peaks(start, click):
            centre = (r0_ps + r1_ps) / 2 + shift
            lo = max(math.floor((centre - _PEAK_SPAN_SIGMAS * sigma - first_edge) / binwidth_ps), 0)
            hi = min(math.ceil((centre + _PEAK_SPAN_SIGMAS * sigma - first_edge) / binwidth_ps), n_bins)
            if lo >= hi:
                continue
            edges = first_edge + np.arange(lo, hi + 1) * binwidth_ps
            expected[lo:hi] += rate * self.duration_s * np.diff(ndtr((edges - centre) / sigma))
        return expected

    def expected_coincidences(self, start: int, click: int, window_ps: int, time_bin_ps: int,
                              r0_ps: float, r1_ps: float) -> np.ndarray:
        """Expected 2×2 counts [start bit, click bit] under frame-announcement sifting (CoincidenceSpec).

        The start bit is its slot parity, uniform for CW pairs; the click counts as the same bit within
        ±window/2 of the start and as the other bit within ±window/2 of the start's other-slot time,
        +T for start bit 0 and −T for start bit 1. Accidentals are flat: one window's worth in each cell.
        """
        if window_ps > time_bin_ps:
            raise ValueError(f"coincidence window {window_ps} ps wider than the Z slot of {time_bin_ps} ps")
        accidental = self.accidental_hz_per_ps(start, click) * window_ps * self.duration_s
        same_n = other_plus = other_minus = accidental
        peaks = self.peaks(start, click)
        if peaks:
            shifts, rates = np.array(peaks).T
            centre = (r0_ps + r1_ps) / 2 + shifts
            sigma = self._smeared_sigma_ps(start, click, r0_ps, r1_ps)
            half = window_ps / 2
            same_n += float(rates @ window_fraction(centre, sigma, half)) * self.duration_s
            other_plus += float(rates @ window_fraction(centre - time_bin_ps, sigma, half)) * self.duration_s
            other_minus += float(rates @ window_fraction(centre + time_bin_ps, sigma, half)) * self.duration_s
        return np.array([[same_n / 2, other_plus / 2], [other_minus / 2, same_n / 2]])
