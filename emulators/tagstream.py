"""Raw tags of one link (``tags`` fidelity): every detection of both nodes, timestamped on its node's clock.

Generated in time order without sorting the bulk: each node's detected photons form a Poisson process
(exponential gaps, cumulative sum), its partner is detected at the other node with that node's click
probability, and the other node's unpartnered photons are a second, independent process. Jitter comes
from a 2¹⁶-point table of Gaussian quantiles (resolution far below a picosecond); the timestamps are then
nearly sorted, so a stable (run-detecting) sort restores the order in linear time. Dead time is applied
per channel on the time-ordered clicks (non-paralysable). The tagger's buffer carries at most
``buffer_rate_hz`` tags per second: within every ``OVERFLOW_WINDOW_PS`` the excess tags are dropped and
replaced by OVERFLOW_BEGIN/END and per-channel MISSED_EVENTS rows, as Swabian's TimeTagStream reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from drivers.interfaces.tagger import EventType, TagBlock
from emulators.link import LinkState

OVERFLOW_WINDOW_PS = 1_000_000_000  # 1 ms: the scale on which the tagger's buffer fills
_GAUSS_TABLE = ndtri((np.arange(1 << 16) + 0.5) / (1 << 16)).astype(np.float32)
_GAUSS_TABLE.flags.writeable = False


@dataclass(frozen=True)
class NodeTiming:
    """How a node timestamps a photon entering the fibre at the start and the end of the block."""

    offset0_ps: float  # arm delay + clock phase at the start of the block
    offset1_ps: float  # ... at its end (linear in between)


def _poisson_times(rng: np.random.Generator, rate_hz: float, duration_ps: int) -> np.ndarray:
    """Sorted arrival times (float64 ps in [0, duration)) of a Poisson process."""
    mean = rate_hz * duration_ps / 1e12
    if mean <= 0:
        return np.empty(0)
    scale_ps = 1e12 / rate_hz
    out = []
    t_end = 0.0
    while t_end < duration_ps:
        n = int(mean + 6 * math.sqrt(mean) + 16)
        times = np.cumsum(rng.standard_exponential(n, dtype=np.float32), dtype=np.float64)
        times *= scale_ps
        times += t_end
        out.append(times)
        t_end = float(times[-1])
    times = np.concatenate(out) if len(out) > 1 else out[0]
    return times[: np.searchsorted(times, duration_ps)]


def _gauss(rng: np.random.Generator, n: int) -> np.ndarray:
    return _GAUSS_TABLE[rng.integers(0, 1 << 16, n, dtype=np.uint16)]


def _dead_time_keep(times: np.ndarray, segment_start: np.ndarray, dead_ps: np.ndarray) -> np.ndarray:
    """Mask of the clicks non-paralysable detectors register.

    ``times`` holds each channel's incident clicks in time order, channel after channel; ``segment_start``
    marks the first click of each channel and ``dead_ps`` is each click's channel dead time. Only clusters
    (clicks within a dead time of the previous incident click, and the click that opened the cluster) can
    be lost, so the exact rule is resolved on those alone.
    """
    keep = np.ones(times.size, bool)
    if times.size < 2:
        return keep
    hit = np.flatnonzero((np.diff(times) < dead_ps[1:]) & ~segment_start[1:]) + 1
    if not hit.size:
        return keep
    in_cluster = np.zeros(times.size, bool)
    in_cluster[hit] = True
    opens = hit - 1
    opens = opens[~in_cluster[opens]]  # registered for sure: its predecessor is a dead time away or more
    members = np.sort(np.concatenate((opens, hit)))
    t, dead, head = times[members], dead_ps[members], ~in_cluster[members]
    kept = np.ones(members.size, bool)
    idx = np.arange(members.size)
    while True:
        too_soon = np.flatnonzero((np.diff(t[idx]) < dead[idx[1:]]) & ~head[idx[1:]]) + 1
        if not too_soon.size:
            break
        # Only the first of a run is certainly lost; later ones may follow a click that is itself lost.
        first = too_soon[np.concatenate(([True], np.diff(too_soon) > 1))]
        kept[idx[first]] = False
        idx = np.flatnonzero(kept)
    keep[members] = kept
    return keep


def _node_clicks(state: LinkState, node: str, emit_ps: np.ndarray, partner: np.ndarray | None,
                 rng: np.random.Generator, timing: NodeTiming, duration_ps: int,
                 extra_sigma_ps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stamps, channels, outcome code) of one node's photons emitted at ``emit_ps``.

    Outcome code bits: 1 = X basis, 2 = long arm, 4 = output +. ``partner`` (for photons whose twin the
    other node detected) is the twin's code, so that Franson interference sets this node's output.
    """
    link = state.link
    n_node = link.nodes[node]
    n = emit_ps.size
    bits = rng.integers(0, 256, n, dtype=np.uint8)
    code = (rng.random(n, dtype=np.float32) >= n_node.z_fraction).astype(np.uint8) | (bits & 6)
    if partner is not None:
        # Both in X through the same arm: outputs agree with probability (1 + V·cos φ)/2.
        interfering = ((code & 3) == 3) & ((partner & 3) == 3) | ((code & 3) == 1) & ((partner & 3) == 1)
        same = rng.random(n, dtype=np.float32) < (1.0 + state.franson_cos) / 2.0
        forced = np.where(same, partner & 4, (partner & 4) ^ 4)
        code = np.where(interfering, (code & 3) | forced, code)
    c = n_node.channels
    channel_of = np.array([c.z if not k & 1 else (c.x_plus if k & 4 else c.x_minus) for k in range(8)], np.int32)
    path_of = np.array([n_node.interferometer.imbalance_ps if k & 3 == 3 else 0.0 for k in range(8)])
    sigma = math.hypot(link.channel_sigma_ps(c.z), extra_sigma_ps)
    drift = (timing.offset1_ps - timing.offset0_ps) / duration_ps
    stamps = emit_ps * (1.0 + drift)
    stamps += timing.offset0_ps
    stamps += _gauss(rng, n) * sigma
    stamps += path_of[code]
    return stamps, channel_of[code], code


def generate(state: LinkState, t0_ps: int, duration_ps: int, timing: dict[str, NodeTiming],
             delays_ps: dict[int, int], buffer_rate_hz: float,
             rng: np.random.Generator) -> tuple[TagBlock, int, int]:
    """Tags of both nodes for [t0, t0 + duration): (block, overflow windows, missed tags)."""
    link = state.link
    r = state.pair_rate_hz
    eta_a = state.eta["alice"] * state.cold["alice"]
    eta_b = state.eta["bob"] * state.cold["bob"]
    # Alice's detected photons, and among them the pairs Bob detects too; Bob's photons whose twin Alice
    # lost are independent of them.
    emit_a = _poisson_times(rng, r * eta_a, duration_ps)
    twin = np.flatnonzero(rng.random(emit_a.size, dtype=np.float32) < eta_b)
    emit_b_only = _poisson_times(rng, r * eta_b * (1.0 - eta_a), duration_ps)
    sa, ca, code_a = _node_clicks(state, "alice", emit_a, None, rng, timing["alice"], duration_ps, 0.0)
    disp = link.dispersion_sigma_ps()
    sb1, cb1, _ = _node_clicks(state, "bob", emit_a[twin], code_a[twin], rng, timing["bob"], duration_ps, disp)
    sb2, cb2, _ = _node_clicks(state, "bob", emit_b_only, None, rng, timing["bob"], duration_ps, disp)
    stamps = [sa, sb1, sb2]
    chans = [ca, cb1, cb2]
    for ch in link.channels:  # dark counts
        node = link.nodes[link.ports[ch].node]
        n_dark = rng.poisson(node.detectors.params.dark_count_hz * duration_ps / 1e12 * state.cold[node.name])
        stamps.append(rng.uniform(0.0, duration_ps, n_dark) + timing[node.name].offset0_ps)
        chans.append(np.full(n_dark, ch, np.int32))
    times = np.concatenate(stamps)
    channels = np.concatenate(chans)
    # Input delays are constant per channel: apply them first, so one sort orders the stream and each
    # channel's gaps (for dead time) are still its detector's own.
    n_ch = max(link.channels) + 1
    delay_of = np.zeros(n_ch)
    dead_of = np.zeros(n_ch)
    for ch in link.channels:
        delay_of[ch] = delays_ps.get(ch, 0)
        dead_of[ch] = link.nodes[link.ports[ch].node].detectors.params.dead_time_ns * 1e3
    times += delay_of[channels]
    order = np.argsort(times, kind="stable")
    times, channels = times[order], channels[order]
    by_channel = np.argsort(channels.astype(np.uint8), kind="stable")  # time order kept within a channel
    ch_sorted = channels[by_channel]
    segment_start = np.empty(ch_sorted.size, bool)
    segment_start[:1] = True
    segment_start[1:] = ch_sorted[1:] != ch_sorted[:-1]
    keep = np.empty(times.size, bool)
    keep[by_channel] = _dead_time_keep(times[by_channel], segment_start, dead_of[ch_sorted])
    stamps_ps = np.rint(times[keep]).astype(np.int64)
    stamps_ps += t0_ps
    return _buffer(stamps_ps, channels[keep], t0_ps, duration_ps, buffer_rate_hz)


def _buffer(stamps_ps: np.ndarray, channels: np.ndarray, t0_ps: int, duration_ps: int,
            buffer_rate_hz: float) -> tuple[TagBlock, int, int]:
    """Drop what the buffer cannot carry; mark each overflow window and count missed tags per channel."""
    n = stamps_ps.size
    capacity = int(buffer_rate_hz * OVERFLOW_WINDOW_PS / 1e12)
    lo = min(t0_ps, int(stamps_ps[0])) if n else t0_ps
    hi = max(t0_ps + duration_ps, int(stamps_ps[-1]) + 1) if n else t0_ps + duration_ps
    edges = np.arange(lo, hi + OVERFLOW_WINDOW_PS, OVERFLOW_WINDOW_PS)
    first = np.searchsorted(stamps_ps, edges[:-1])
    counts = np.diff(np.searchsorted(stamps_ps, edges))
    if counts.max(initial=0) <= capacity:
        return TagBlock(stamps_ps, channels, np.zeros(n, np.uint8), np.zeros(n, np.uint16)), 0, 0
    rank = np.arange(n) - np.repeat(first, counts)
    dropped = rank >= capacity
    rows_t = [stamps_ps[~dropped]]
    rows_c = [channels[~dropped]]
    rows_e = [np.full(rows_t[0].size, EventType.TIME_TAG, np.uint8)]
    rows_m = [np.zeros(rows_t[0].size, np.uint16)]
    full = np.flatnonzero(counts > capacity)
    begin = stamps_ps[first[full] + capacity]
    end = stamps_ps[first[full] + counts[full] - 1]
    for t, kind in ((begin, EventType.OVERFLOW_BEGIN), (end, EventType.OVERFLOW_END)):
        rows_t.append(t)
        rows_c.append(np.zeros(t.size, np.int32))
        rows_e.append(np.full(t.size, kind, np.uint8))
        rows_m.append(np.zeros(t.size, np.uint16))
    lost_ch, lost_n = np.unique(channels[dropped], return_counts=True)
    for ch, k in zip(lost_ch, lost_n, strict=True):  # one MISSED_EVENTS row per channel, at the last window
        rows_t.append(end[-1:])
        rows_c.append(np.array([ch], np.int32))
        rows_e.append(np.array([EventType.MISSED_EVENTS], np.uint8))
        rows_m.append(np.array([min(int(k), 65535)], np.uint16))
    t = np.concatenate(rows_t)
    order = np.argsort(t, kind="stable")
    block = TagBlock(t[order], np.concatenate(rows_c)[order], np.concatenate(rows_e)[order],
                     np.concatenate(rows_m)[order])
    return block, int(full.size), int(dropped.sum())
