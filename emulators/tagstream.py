"""Raw tags of one link (``tags`` fidelity): every detection of both nodes, timestamped on its node's clock.

A node's detected photons form a Poisson process and each photon picks its channel (basis, interferometer
output) and arm independently, so each channel's photons are an independent Poisson process of their own
rate: they are generated channel by channel, from exponential gaps and a cumulative sum. Among Alice's
photons, those whose twin Bob detects too are picked one by one with his click probability (geometric
gaps between them), and the twins join Bob's channels with Franson interference setting their output when
both photons are in X through the same arm. Bob's photons whose twin Alice lost are a second, independent
process. Jitter comes from a 2¹⁶-point table of Gaussian quantiles (resolution far below a picosecond)
that also carries the node's clock offset, the channel's input delay and, for an X photon, its arm (the
17th index bit). Times are kept as integer multiples of 2⁻¹² ps (far finer than the picosecond
timestamps), so the cumulative sums are exact and cheap.

A channel's stamps are then nearly sorted, so a stable (run-detecting) sort restores their order in
linear time, and dead time (non-paralysable) is applied on each channel's own stream; input delays are
constant per channel, so they move a stream without touching its gaps. The channels are finally merged in
short time segments that stay in cache. The tagger's buffer carries at most ``buffer_rate_hz`` tags per
second: within every ``OVERFLOW_WINDOW_PS`` the excess tags are dropped and replaced by
OVERFLOW_BEGIN/END and per-channel MISSED_EVENTS rows, as Swabian's TimeTagStream reports.
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
_SUB_PS_BITS = 12  # internal time unit: 2⁻¹² ps
_CHUNK = 1 << 18  # elements per pass of the bulk loops: temporaries stay small and in cache
_SEGMENT_TAGS = 1 << 15  # tags per merge segment
_LOST = np.iinfo(np.int64).max  # merge key of a click lost to dead time: sorts after every real one


@dataclass(frozen=True)
class NodeTiming:
    """How a node timestamps a photon entering the fibre at the start and the end of the block."""

    offset0_ps: float  # arm delay + clock phase at the start of the block
    offset1_ps: float  # ... at its end (linear in between)


def _draws(mean: float) -> int:
    """Draws that cover a Poisson count of this mean but for a ~1e-9 chance (then drawn again)."""
    return int(mean + 6 * math.sqrt(mean) + 16)


def _poisson_units(rng: np.random.Generator, rate_hz: float, duration_ps: int, units_per_ps: float,
                   spare: int) -> tuple[np.ndarray, int]:
    """Arrival times of a Poisson process on [0, duration) ps, as int64 counts of 1/units_per_ps ps.

    Returns (buffer, n): the n sorted times lead a buffer with room for ``spare`` more entries.
    """
    mean = rate_hz * duration_ps / 1e12
    if mean <= 0:
        return np.empty(spare, np.int64), 0
    # Gaps floor(g·(s + ½)) for unit exponentials g: the mean of the rounded gaps, in one pass.
    scale = 1e12 / rate_hz * units_per_ps + 0.5
    limit = duration_ps * units_per_ps
    # A gap past the block end ends the process anyway; clipping it keeps a nearly silent channel (pump
    # off: ~1e-4 Hz, gaps ~1e16 ps) inside int64. Exponential draws beyond 64 never happen in practice.
    clip = scale * 64 > limit
    parts = []
    start = 0
    while True:
        n = _draws(mean)
        times = np.empty(n + spare, np.int64)
        for a in range(0, n, _CHUNK):
            b = min(a + _CHUNK, n)
            gaps = np.multiply(rng.standard_exponential(b - a), scale, out=None if clip else times[a:b],
                               casting="unsafe")
            if clip:
                np.minimum(gaps, limit + 1, out=times[a:b], casting="unsafe")
        times[0] += start
        np.cumsum(times[:n], out=times[:n])
        end = int(np.searchsorted(times[:n], limit))
        if end < n and not parts:
            return times, end
        parts.append(times[:end])
        if end < n:
            break
        start = int(times[n - 1])
    times = np.concatenate([*parts, np.empty(spare, np.int64)])
    return times, times.size - spare


def _bernoulli_indices(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Sorted indices of the successes among n independent trials of probability p (geometric gaps)."""
    if n == 0 or p <= 0.0:
        return np.empty(0, np.int64)
    if p >= 1.0:
        return np.arange(n)
    parts = []
    start = -1
    while True:
        m = _draws(n * p)
        idx = np.cumsum(rng.geometric(p, m))
        idx += start
        end = int(np.searchsorted(idx, n))
        parts.append(idx[:end])
        if end < m:
            break
        start = int(idx[-1])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _jitter_index(rng: np.random.Generator, n: int, with_arm: bool) -> np.ndarray:
    """Uniform indices into a jitter table: 16 bits (four per raw 64-bit draw), or 17 with the arm bit."""
    if not with_arm:
        return rng.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n]
    idx = rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]
    idx &= 0x1FFFF
    return idx


def _dead_time_lost(t: np.ndarray, dead: int) -> np.ndarray:
    """Sorted indices of the clicks a non-paralysable detector misses, ``t`` one channel's sorted times.

    A click registers iff it comes at least ``dead`` after the last registered click. Only a click within
    ``dead`` of its predecessor (a hit) can be lost, and the first hit of a run of consecutive hits is lost
    for sure (its predecessor registered). The rest of the runs of two or more hits are resolved candidate
    by candidate, all runs together, each leaving the rounds as soon as it is resolved.
    """
    n = t.size
    if n < 2 or dead <= 0:
        return np.empty(0, np.int64)
    close = np.empty(n - 1, bool)  # close[i]: click i + 1 within a dead time of click i
    for a in range(0, n - 1, _CHUNK):
        b = min(a + _CHUNK, n - 1)
        np.less(t[a + 1:b + 1] - t[a:b], dead, out=close[a:b])
    hits = np.flatnonzero(close)
    if not hits.size:
        return hits
    hits += 1
    follows = np.empty(hits.size, bool)  # follows[i]: hits[i] comes right after hits[i - 1]
    follows[0] = False
    np.equal(np.diff(hits), 1, out=follows[1:])
    pos = np.flatnonzero(follows)
    if not pos.size:
        return hits
    pos = pos[~follows[pos - 1]]  # (positions in hits of) the second hit of each run of two or more
    t_last = t[hits[pos - 1] - 1]  # the registered click that opened the run
    registered = []
    last = hits.size - 1
    while pos.size:
        t_j = t[hits[pos]]
        ok = (t_j - t_last) >= dead
        if ok.any():
            registered.append(pos[ok])
            t_last = np.where(ok, t_j, t_last)
        go_on = pos < last  # the next candidate is the next hit if it follows; else the run is over
        go_on[go_on] = follows[pos[go_on] + 1]
        pos, t_last = pos[go_on] + 1, t_last[go_on]
    if not registered:
        return hits
    lost = np.ones(hits.size, bool)
    lost[np.concatenate(registered)] = False
    return hits[lost]


class _Node:
    """One node's clicks in the internal unit: stamp = emission·stretch + table[jitter index]."""

    def __init__(self, state: LinkState, name: str, timing: NodeTiming, duration_ps: int,
                 delays_ps: dict[int, int], extra_sigma_ps: float, unit: float) -> None:
        link = state.link
        self.node = link.nodes[name]
        self.channels = self.node.channels
        self.cold = state.cold[name]
        self.unit = unit
        self.offset0_ps = timing.offset0_ps
        self.stretch = 1.0 + (timing.offset1_ps - timing.offset0_ps) / duration_ps  # clock drift
        self.delays = delays_ps
        self.dead_units = round(self.node.detectors.params.dead_time_ns * 1e3 * unit)
        sigma_ps = math.hypot(link.channel_sigma_ps(self.channels.z), extra_sigma_ps)
        self.jitter_units = _GAUSS_TABLE.astype(np.float64) * (sigma_ps * unit)
        self.imbalance_units = self.node.interferometer.imbalance_ps * unit

    def by_channel(self, rate_hz: float) -> list[tuple[int, int | None, float]]:
        """(channel, X output code bit or None for Z, rate) of ``rate_hz`` detected photons."""
        z = self.node.z_fraction
        c = self.channels
        return [(c.z, None, rate_hz * z), (c.x_plus, 4, rate_hz * (1 - z) / 2),
                (c.x_minus, 0, rate_hz * (1 - z) / 2)]

    def shift_units(self, channel: int) -> float:
        """Clock offset and input delay, plus ½ ps so that the final floor rounds to the nearest ps."""
        return (self.offset0_ps + self.delays.get(channel, 0) + 0.5) * self.unit

    def table(self, channel: int, with_arm: bool) -> np.ndarray:
        """Jitter plus fixed shift, in units; with_arm: 2¹⁷ entries, the top bit adding the long arm."""
        base = self.jitter_units + self.shift_units(channel)
        if with_arm:
            base = np.concatenate((base, base + self.imbalance_units))
        return np.floor(base).astype(np.int64)


def generate(state: LinkState, t0_ps: int, duration_ps: int, timing: dict[str, NodeTiming],
             delays_ps: dict[int, int], buffer_rate_hz: float,
             rng: np.random.Generator) -> tuple[TagBlock, int, int]:
    """Tags of both nodes for [t0, t0 + duration): (block, overflow windows, missed tags)."""
    link = state.link
    ch_bits = max(max(link.channels), 1).bit_length()
    extent = (2 * duration_ps + max(abs(x) for tm in timing.values() for x in (tm.offset0_ps, tm.offset1_ps))
              + max((abs(d) for d in delays_ps.values()), default=0) + 1_000_000)
    k = min(_SUB_PS_BITS, 61 - ch_bits - int(extent).bit_length())  # merge keys stay below 2⁶¹
    if k < 1:
        raise ValueError(f"tag block of {duration_ps} ps too long")
    unit = float(1 << k)
    alice = _Node(state, "alice", timing["alice"], duration_ps, delays_ps, 0.0, unit)
    bob = _Node(state, "bob", timing["bob"], duration_ps, delays_ps, link.dispersion_sigma_ps(), unit)
    node_of = {ch: alice if link.ports[ch].node == "alice" else bob for ch in link.channels}
    r = state.pair_rate_hz
    eta_a = state.eta["alice"] * state.cold["alice"]
    eta_b = state.eta["bob"] * state.cold["bob"]
    extras: dict[int, list[np.ndarray]] = {ch: [] for ch in link.channels}  # darks, Bob's twins
    for ch, node in node_of.items():
        n_dark = rng.poisson(node.node.detectors.params.dark_count_hz * duration_ps / 1e12 * node.cold)
        if n_dark:
            extras[ch].append(np.floor(rng.uniform(0.0, duration_ps * unit, n_dark)
                                       + node.shift_units(ch)).astype(np.int64))

    def channel_clicks(node: _Node, ch: int, out: int | None, rate_hz: float,
                       twins: list[tuple[np.ndarray, np.ndarray]] | None) -> np.ndarray:
        spare = sum(e.size for e in extras[ch])
        buf, n = _poisson_units(rng, rate_hz, duration_ps, unit * node.stretch, spare)
        emitted = buf[:n]
        idx = _jitter_index(rng, n, out is not None)
        if twins is not None:  # the photons whose twin Bob detects too, with their code (see _twins)
            tw = _bernoulli_indices(rng, n, eta_b)
            code = (np.zeros(tw.size, np.uint8) if out is None
                    else (1 | out | (idx[tw] >> 15) & 2).astype(np.uint8))
            twins.append((emitted[tw], code))
        table = node.table(ch, out is not None)
        jitter = np.empty(min(n, _CHUNK), np.int64)
        for a in range(0, n, _CHUNK):
            b = min(a + _CHUNK, n)
            # (indices as intp first, and no bounds check: much faster than fancy indexing by uint16)
            np.take(table, idx[a:b].astype(np.intp), out=jitter[:b - a], mode="wrap")
            emitted[a:b] += jitter[:b - a]
        for e in extras[ch]:
            buf[n:n + e.size] = e
            n += e.size
        return buf[:n]

    streams: dict[int, np.ndarray] = {}
    twins: list[tuple[np.ndarray, np.ndarray]] = []
    for ch, out, rate in alice.by_channel(r * eta_a):
        streams[ch] = channel_clicks(alice, ch, out, rate, twins)
    for ch, stamps in _twins(state, alice, bob, twins, rng).items():
        extras[ch].append(stamps)
    for ch, out, rate in bob.by_channel(r * eta_b * (1.0 - eta_a)):
        streams[ch] = channel_clicks(bob, ch, out, rate, None)
    lost = {}
    for ch, t in streams.items():
        t.sort(kind="stable")
        lost[ch] = _dead_time_lost(t, node_of[ch].dead_units)
    stamps_ps, channels = _merge(streams, lost, ch_bits, k, t0_ps)
    return _buffer(stamps_ps, channels, t0_ps, duration_ps, buffer_rate_hz)


def _twins(state: LinkState, alice: _Node, bob: _Node, twins: list[tuple[np.ndarray, np.ndarray]],
           rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Bob's clicks from the twins of Alice's photons: {channel: stamps in units, unsorted}.

    ``twins`` holds (Alice's emission times in her units, her code) with code bits 1 = X basis, 2 = long
    arm, 4 = output +. Both in X through the same arm: the outputs agree with probability (1 + V·cos φ)/2.
    """
    partner = np.concatenate([code for _, code in twins])
    e = np.concatenate([q for q, _ in twins]) * (bob.stretch / alice.stretch)
    n = partner.size
    bits = rng.integers(0, 256, n, dtype=np.uint8)
    code = (rng.random(n, dtype=np.float32) >= bob.node.z_fraction).astype(np.uint8) | (bits & 6)
    interfering = ((code & 3) == 3) & ((partner & 3) == 3) | ((code & 3) == 1) & ((partner & 3) == 1)
    same = rng.random(n, dtype=np.float32) < (1.0 + state.franson_cos) / 2.0
    forced = np.where(same, partner & 4, (partner & 4) ^ 4)
    code = np.where(interfering, (code & 3) | forced, code)
    e += bob.jitter_units[_jitter_index(rng, n, False)]
    e += np.where((code & 3) == 3, bob.imbalance_units, 0.0)
    c = bob.channels
    return {ch: np.floor(e[sel] + bob.shift_units(ch)).astype(np.int64)
            for ch, sel in ((c.z, (code & 1) == 0), (c.x_plus, (code & 5) == 5), (c.x_minus, (code & 5) == 1))}


def _merge(streams: dict[int, np.ndarray], lost: dict[int, np.ndarray], ch_bits: int, k: int,
           t0_ps: int) -> tuple[np.ndarray, np.ndarray]:
    """The registered clicks of every channel in time order: (int64 ps stamps, int32 channels).

    ``streams`` are each channel's sorted times in units of 2⁻ᵏ ps (½ ps added), ``lost`` the indices
    dead time took out. Keys (time << ch_bits | channel) are sorted one time segment at a time: each
    segment gathers every channel's slice; lost clicks get the largest key and fall off its end.
    """
    live = [ch for ch, t in streams.items() if t.size]
    total = sum(streams[ch].size - lost[ch].size for ch in live)
    stamps = np.empty(total, np.int64)
    channels = np.empty(total, np.int32)
    if not total:
        return stamps, channels
    lo = min(int(streams[ch][0]) for ch in live)
    hi = max(int(streams[ch][-1]) for ch in live) + 1
    n_seg = max(1, total // _SEGMENT_TAGS)
    edges = np.array([lo + (hi - lo) * i // n_seg for i in range(n_seg + 1)], np.int64)
    bounds, lost_in = [], []
    for ch in live:
        t = streams[ch]
        bounds.append(np.searchsorted(t, edges))
        lost_in.append(np.diff(np.searchsorted(lost[ch], bounds[-1])))
        t[lost[ch]] = _LOST >> ch_bits
    bounds = np.array(bounds)
    seg_sizes = np.diff(bounds, axis=1).sum(axis=0)
    kept = seg_sizes - np.array(lost_in).sum(axis=0)
    scratch = np.empty(int(seg_sizes.max()), np.int64)
    arrays = [(ch, streams[ch]) for ch in live]
    o = 0
    for s in range(n_seg):
        p = 0
        for (ch, t), (b0, b1) in zip(arrays, bounds[:, s:s + 2], strict=True):
            dst = scratch[p:p + b1 - b0]
            np.left_shift(t[b0:b1], ch_bits, out=dst)
            dst |= ch
            p += b1 - b0
        seg = scratch[:p]
        seg.sort()  # keys are unique but for lost ones: no need for a stable sort
        m = int(kept[s])
        seg = seg[:m]
        np.bitwise_and(seg, (1 << ch_bits) - 1, out=channels[o:o + m], casting="unsafe")
        dst = stamps[o:o + m]
        np.right_shift(seg, k + ch_bits, out=dst)  # floor(time + ½ ps): the nearest ps
        dst += t0_ps
        o += m
    return stamps, channels


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
