"""Physics of one entanglement-based time-energy BBM92 link, from pair source to the two nodes' channels.

Each node has a passive beam splitter choosing the basis: a fraction ``z_fraction`` of photons goes to the
Z detector (arrival time), the rest to an unbalanced Mach–Zehnder (FSR 2.5 GHz, i.e. 400 ps imbalance;
seed 000) with two output detectors (X basis). For a pair detected at Alice's channel ``a`` and Bob's
channel ``b`` the (click − start) time difference is the Alice–Bob offset Δ(t), plus the interferometer
path difference where one applies, plus Gaussian jitter of both channels (detector ⊕ tagger). Franson
interference: in the central peak of two X channels with outputs s_a, s_b = ±1 the probability of the
output pair is (1 + s_a·s_b·V·cos(φ_A + φ_B))/4. Accidental coincidences are the product of the singles
rates (multi-pair emission, partners lost, dark counts) and fall uniformly in time.

The Z outcome is the parity of the ``time_bin_ps`` slot of each (delay-compensated) timestamp; a true
pair whose two timestamps differ by x lands in slots of different parity with probability tri(x), the
triangle wave |x|/T folded with period 2T. Accidentals are random in both bases.

Offsets are in ps; Δ(t) = (delay_B + φ_B(t)) − (delay_A + φ_A(t)) with φ a node clock's phase.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from emulators.clock import EmulatedRbClock
from emulators.detectors import DetectorParams
from emulators.fibre import FibreArm
from emulators.source import PairSource
from emulators.world import PS_PER_S

_SUB_POSITIONS = 5  # points across an acquisition at which the drifting offset is sampled
_WINDOW_GRID = 241  # integration points across a coincidence window
_PEAK_SPAN_SIGMAS = 10.0


@dataclass(frozen=True)
class AnalyserParams:
    z_fraction: float  # beam-splitter ratio to the Z (arrival-time) detector
    fsr_ghz: float  # interferometer free spectral range (seed 000: "FSR = 2.5 GHz")
    visibility: float  # seed 000: "Interferometer visibility: >99.7%"
    phase_rad: float  # interferometer phase

    @property
    def imbalance_ps(self) -> float:
        return 1e3 / self.fsr_ghz


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
    detectors: DetectorParams
    analyser: AnalyserParams
    clock: EmulatedRbClock
    channels: NodeChannels


@functools.lru_cache(maxsize=16)
def _window_grid(window_ps: int, time_bin_ps: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Integration points across ±window/2, their spacing, and tri() at each."""
    x = np.linspace(-window_ps / 2, window_ps / 2, _WINDOW_GRID)
    differ = tri(x, time_bin_ps)
    x.flags.writeable = differ.flags.writeable = False  # shared by every caller of the cache
    return x, float(x[1] - x[0]), differ


def tri(x_ps: np.ndarray, period_ps: float) -> np.ndarray:
    """P(two timestamps x apart fall in slots of different parity), slots of ``period_ps``."""
    u = np.mod(np.abs(x_ps), 2.0 * period_ps) / period_ps
    return np.where(u <= 1.0, u, 2.0 - u)


class LinkPhysics:
    def __init__(self, source: PairSource, alice: Node, bob: Node, tagger_rms_jitter_ps: float) -> None:
        self.source = source
        self.nodes = {"alice": alice, "bob": bob}
        self.tagger_rms_jitter_ps = tagger_rms_jitter_ps
        self.ports: dict[int, Port] = {}
        for node in (alice, bob):
            c = node.channels
            self.ports[c.z] = Port(node.name, "Z", 0)
            self.ports[c.x_plus] = Port(node.name, "X", +1)
            self.ports[c.x_minus] = Port(node.name, "X", -1)

    # -- static figures -------------------------------------------------------------------------
    def node_transmission(self, node: str) -> float:
        n = self.nodes[node]
        return n.arm.transmission * n.detectors.efficiency

    def total_loss_db(self) -> float:
        """Two-photon loss from source to clicks, dB: what the seeds call 'total loss'."""
        return -10.0 * math.log10(self.node_transmission("alice") * self.node_transmission("bob"))

    def _port_fraction(self, port: Port) -> float:
        z = self.nodes[port.node].analyser.z_fraction
        return z if port.basis == "Z" else (1.0 - z) / 2.0

    def singles_rate_hz(self, channel: int) -> float:
        port = self.ports[channel]
        node = self.nodes[port.node]
        signal = self.source.pair_rate_hz() * self.node_transmission(port.node) * self._port_fraction(port)
        return signal + node.detectors.dark_count_hz

    def channel_sigma_ps(self, channel: int) -> float:
        det = self.nodes[self.ports[channel].node].detectors
        return math.hypot(det.jitter_sigma_ps, self.tagger_rms_jitter_ps)

    def pair_sigma_ps(self, a: int, b: int) -> float:
        return math.hypot(self.channel_sigma_ps(a), self.channel_sigma_ps(b))

    # -- the offset ---------------------------------------------------------------------------
    def offset_ps(self, t_ps: int) -> float:
        """True Δ(t): Bob's minus Alice's (propagation + clock phase) for a pair emitted at t, ps."""
        a, b = self.nodes["alice"], self.nodes["bob"]
        return (b.arm.delay_ps + b.clock.phase_ps(t_ps)) - (a.arm.delay_ps + a.clock.phase_ps(t_ps))

    def peaks(self, start: int, click: int) -> list[tuple[float, float]]:
        """True-coincidence peaks of (click − start) as (shift from ±Δ in ps, rate in Hz)."""
        pa, pb = self.ports[start], self.ports[click]
        if pa.node == pb.node:
            return []
        rate = (self.source.pair_rate_hz() * self.node_transmission("alice")
                * self.node_transmission("bob") * self._port_fraction(pa) * self._port_fraction(pb))
        # ``rate`` already spreads X photons evenly over the two outputs (factor 1/2 per X side). Half of
        # the photons through an interferometer take the long arm; in the central X–X peak the output
        # pair is set by interference: (1 + s_a·s_b·V·cos φ)/4 instead of 1/4.
        tau_a = self.nodes[pa.node].analyser.imbalance_ps
        tau_b = self.nodes[pb.node].analyser.imbalance_ps
        if pa.basis == "Z" and pb.basis == "Z":
            return [(0.0, rate)]
        if pa.basis == "Z":
            return [(0.0, rate / 2), (tau_b, rate / 2)]
        if pb.basis == "Z":
            return [(0.0, rate / 2), (-tau_a, rate / 2)]
        va = self.nodes[pa.node].analyser
        vb = self.nodes[pb.node].analyser
        visibility = va.visibility * vb.visibility
        interference = 1.0 + pa.output * pb.output * visibility * math.cos(va.phase_rad + vb.phase_rad)
        return [(-tau_a, rate / 4), (0.0, rate / 2 * interference), (tau_b, rate / 4)]

    def signed_offset_ps(self, start: int, click: int, t_ps: int) -> float:
        """Δ(t) as seen by (click − start): +Δ for Alice→Bob, −Δ for Bob→Alice, 0 within one node."""
        na, nb = self.ports[start].node, self.ports[click].node
        if na == nb:
            return 0.0
        d = self.offset_ps(t_ps)
        return d if na == "alice" else -d

    # -- expected measurements ------------------------------------------------------------------
    def expected_histogram(self, start: int, click: int, binwidth_ps: int, n_bins: int,
                           r0_ps: float, r1_ps: float, duration_s: float) -> np.ndarray:
        """Expected counts per bin, with the residual offset moving linearly from r0 to r1."""
        accidental = (self.singles_rate_hz(start) * self.singles_rate_hz(click) * duration_s
                      * binwidth_ps / PS_PER_S)
        expected = np.full(n_bins, accidental)
        sigma = self.pair_sigma_ps(start, click)
        first_edge = -(n_bins // 2) * binwidth_ps
        subs = np.linspace(r0_ps, r1_ps, _SUB_POSITIONS)
        for shift, rate in self.peaks(start, click):
            centres = subs + shift
            lo = math.floor((centres.min() - _PEAK_SPAN_SIGMAS * sigma - first_edge) / binwidth_ps)
            hi = math.ceil((centres.max() + _PEAK_SPAN_SIGMAS * sigma - first_edge) / binwidth_ps)
            lo, hi = max(lo, 0), min(hi, n_bins)
            if lo >= hi:
                continue
            edges = first_edge + np.arange(lo, hi + 1) * binwidth_ps
            cdf = ndtr((edges[None, :] - centres[:, None]) / sigma).mean(axis=0)
            expected[lo:hi] += rate * duration_s * np.diff(cdf)
        return expected

    def expected_coincidences(self, start: int, click: int, window_ps: int, time_bin_ps: int,
                              r0_ps: float, r1_ps: float, duration_s: float) -> np.ndarray:
        """Expected 2×2 counts [start-slot parity, click-slot parity] within ±window/2."""
        accidental = (self.singles_rate_hz(start) * self.singles_rate_hz(click) * duration_s
                      * window_ps / PS_PER_S)
        peaks = self.peaks(start, click)
        same_n = diff_n = 0.0
        if peaks:
            x, dx, differ = _window_grid(window_ps, time_bin_ps)
            shifts, rates = np.array(peaks).T
            sigma = self.pair_sigma_ps(start, click)
            centres = np.linspace(r0_ps, r1_ps, _SUB_POSITIONS)[None, :] + shifts[:, None]  # (peak, sub)
            z = (x[None, None, :] - centres[:, :, None]) / sigma
            density = np.exp(-0.5 * z * z).mean(axis=1) * (dx / (sigma * math.sqrt(2 * math.pi)))  # (peak, x)
            in_window = rates @ density * duration_s  # expected true pairs per grid point
            diff_n = float(in_window @ differ)
            same_n = float(in_window.sum()) - diff_n
        return np.array([[same_n / 2 + accidental / 4, diff_n / 2 + accidental / 4],
                         [diff_n / 2 + accidental / 4, same_n / 2 + accidental / 4]])

    # -- raw detections -------------------------------------------------------------------------
    def sample_detections(self, t0_ps: int, duration_ps: int, phase0_ps: dict[str, float],
                          phase1_ps: dict[str, float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Every detection in [t0, t0 + duration): (node-timebase times in ps as float64, channel).

        Clock phases are interpolated linearly between the snapshots at the two ends.
        """
        duration_s = duration_ps / PS_PER_S
        n_pairs = rng.poisson(self.source.pair_rate_hz() * duration_s)
        emit = rng.uniform(0.0, duration_ps, n_pairs)
        times: list[np.ndarray] = []
        chans: list[np.ndarray] = []
        detected: dict[str, np.ndarray] = {}
        outcome: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name, node in self.nodes.items():
            detected[name] = rng.random(n_pairs) < self.node_transmission(name)
            is_z = rng.random(n_pairs) < node.analyser.z_fraction
            long_arm = rng.random(n_pairs) < 0.5
            output = np.where(rng.random(n_pairs) < 0.5, 1, -1)
            outcome[name] = (is_z, long_arm, output)
        # Franson interference: both in X, both through the same arm → outputs correlated.
        za, la, oa = outcome["alice"]
        zb, lb, ob = outcome["bob"]
        aa, ab = self.nodes["alice"].analyser, self.nodes["bob"].analyser
        p_same = (1.0 + aa.visibility * ab.visibility * math.cos(aa.phase_rad + ab.phase_rad)) / 2.0
        interfering = ~za & ~zb & (la == lb)
        same = rng.random(n_pairs) < p_same
        ob[interfering] = np.where(same[interfering], oa[interfering], -oa[interfering])
        for name, node in self.nodes.items():
            is_z, long_arm, output = outcome[name]
            keep = detected[name]
            c = node.channels
            ch = np.where(is_z, c.z, np.where(output > 0, c.x_plus, c.x_minus))[keep]
            phase = phase0_ps[name] + (phase1_ps[name] - phase0_ps[name]) * emit[keep] / duration_ps
            path = np.where(is_z | ~long_arm, 0.0, node.analyser.imbalance_ps)[keep]
            jitter = rng.standard_normal(ch.size) * self.channel_sigma_ps(c.z)  # same rack per node
            times.append(t0_ps + emit[keep] + node.arm.delay_ps + phase + path + jitter)
            chans.append(ch)
            for k in c.all():
                n_dark = rng.poisson(node.detectors.dark_count_hz * duration_s)
                times.append(t0_ps + phase0_ps[name] + rng.uniform(0.0, duration_ps, n_dark))
                chans.append(np.full(n_dark, k))
        return np.concatenate(times), np.concatenate(chans).astype(np.int32)
