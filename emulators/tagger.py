"""Emulated Swabian-like time tagger spanning one link's channels, at one of three fidelities.

``stats``: ``acquire`` returns Correlation histograms and time-bin-resolved Coincidences sampled (Poisson,
per bin) from the closed-form expectations of :class:`LinkState`. ``pairs``: the same measurements counted
from individually sampled coincidence candidates (:mod:`emulators.candidates`). ``tags``: only raw streams
(:mod:`emulators.tagstream`) are served, and the stack finds coincidences itself. Raw tags are available
at every fidelity for short blocks. Input delays act as Swabian's ``setInputDelay`` and are latched at the
start of an acquisition. Tagger jitter: 8 ps RMS per channel (seed 001, S6: Time Tagger Ultra
performance edition). At the measurement level, when the summed tag rate exceeds ``buffer_rate_hz`` the
tagger flags an overflow and drops the excess (counted in ``missed_events``), scaling every count by the
fraction it kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from drivers.errors import DriverError, check_range
from drivers.interfaces.tagger import (
    Acquisition,
    AcquisitionRequest,
    CoincidenceCounts,
    CorrelationHistogram,
    TagBlock,
    TaggerConstraints,
    TaggerStatus,
    TimeTagger,
)
from emulators.candidates import PairCandidates, candidate_range
from emulators.link import LinkPhysics, LinkState
from emulators.tagstream import NodeTiming, generate
from emulators.world import PS_PER_S, World

T = TypeVar("T")


@dataclass(frozen=True)
class TaggerParams:
    rms_jitter_ps: float
    max_input_delay_ps: int  # |delay| accepted (software delay)
    max_histogram_bins: int
    max_tag_block_ps: int  # raw tags only for acquisitions up to this long
    buffer_rate_hz: float  # sustained tag rate the stream can carry


@dataclass(frozen=True)
class AcquisitionTruth:
    """Hidden truth of one acquisition, for tests and reports: never reachable through the contract."""

    start_ps: int
    end_ps: int
    offset_start_ps: float  # true Alice–Bob offset Δ at the start
    offset_end_ps: float

    @property
    def mean_offset_ps(self) -> float:
        """Mean Δ over the acquisition (Δ is linear within it to well below a picosecond)."""
        return (self.offset_start_ps + self.offset_end_ps) / 2


FIDELITIES = ("tags", "pairs", "stats")


class EmulatedLinkTagger(TimeTagger):
    def __init__(self, world: World, link: LinkPhysics, params: TaggerParams, fidelity: str,
                 name: str = "tagger") -> None:
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
        self.fidelity = fidelity
        self.name = name
        self.world = world
        self.link = link
        self.params = params
        self._rng = world.rng(name)
        self._delays_ps = dict.fromkeys(sorted(link.ports), 0)
        self._buffer_rate_hz = params.buffer_rate_hz
        self._choked_until_ps = -1
        self._overflows = 0
        self._missed_events = 0
        self.truth_log: list[AcquisitionTruth] = []

    # -- contract -------------------------------------------------------------------------------
    async def constraints(self) -> TaggerConstraints:
        p = self.params
        return TaggerConstraints(tuple(self._delays_ps), p.max_input_delay_ps, p.max_histogram_bins,
                                 p.max_tag_block_ps, measurements=self.fidelity != "tags")

    async def status(self) -> TaggerStatus:
        return TaggerStatus(dict(self._delays_ps), self._overflows, self._missed_events)

    async def set_input_delay(self, channel: int, delay_ps: int) -> None:
        self._check_channel(channel)
        m = self.params.max_input_delay_ps
        check_range(self.name, f"input delay of channel {channel} (ps)", delay_ps, -m, m)
        self._delays_ps[channel] = int(delay_ps)

    async def acquire(self, request: AcquisitionRequest) -> Acquisition:
        if self.fidelity == "tags":
            raise DriverError(self.name, "at 'tags' fidelity this tagger serves raw streams only (read_tags)")
        self._validate(request)
        delays = dict(self._delays_ps)
        pairs = [(h.start_channel, h.click_channel) for h in request.histograms]
        if request.coincidences is not None:
            pairs += list(request.coincidences.pairs)
        t0 = self.world.now_ps
        offset0 = self.link.offset_ps(t0)
        start_offsets = {p: self._residual_ps(p, t0, delays) for p in pairs}

        def sample() -> Acquisition:
            t1 = self.world.now_ps
            self.truth_log.append(AcquisitionTruth(t0, t1, offset0, self.link.offset_ps(t1)))
            return self._sample(request, delays, start_offsets)

        return await self._after(request.duration_ps, sample)

    async def read_tags(self, duration_ps: int) -> TagBlock:
        check_range(self.name, "tag block duration (ps)", duration_ps, 1, self.params.max_tag_block_ps)
        t0 = self.world.now_ps
        start = {name: self._node_offset_ps(name, t0) for name in self.link.nodes}
        delays = dict(self._delays_ps)

        def sample() -> TagBlock:
            t1 = self.world.now_ps
            timing = {name: NodeTiming(start[name], self._node_offset_ps(name, t1)) for name in self.link.nodes}
            block, overflows, missed = generate(self.link.state(t0, t1), t0, duration_ps, timing, delays,
                                                self._buffer_hz(), self._rng)
            self._overflows += overflows
            self._missed_events += missed
            self.truth_log.append(AcquisitionTruth(t0, t1, self.link.offset_ps(t0), self.link.offset_ps(t1)))
            return block

        return await self._after(duration_ps, sample)

    def choke(self, buffer_rate_hz: float, duration_s: float) -> None:
        """Fault: the stream carries at most ``buffer_rate_hz`` for ``duration_s`` (e.g. a congested link)."""
        self._buffer_rate_hz = buffer_rate_hz
        self._choked_until_ps = self.world.now_ps + round(duration_s * PS_PER_S)

    def _buffer_hz(self) -> float:
        if self.world.now_ps >= self._choked_until_ps:
            self._buffer_rate_hz = self.params.buffer_rate_hz
        return self._buffer_rate_hz

    # -- internals ------------------------------------------------------------------------------
    async def _after(self, duration_ps: int, compute: Callable[[], T]) -> T:
        """Resolve with ``compute()`` once ``duration_ps`` of virtual time has passed."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def done(_event: object) -> None:
            if fut.cancelled():
                return
            try:
                fut.set_result(compute())
            except DriverError as exc:
                fut.set_exception(exc)

        self.world.env.timeout(duration_ps).callbacks.append(done)
        return await fut

    def _node_offset_ps(self, name: str, t_ps: int) -> float:
        """Arm delay plus clock phase of node ``name`` for a photon emitted at ``t_ps``."""
        node = self.link.nodes[name]
        return node.arm.delay_ps(t_ps) + node.clock.phase_ps(t_ps)

    def _residual_ps(self, pair: tuple[int, int], t_ps: int, delays: dict[int, int]) -> float:
        start, click = pair
        return self.link.signed_offset_ps(start, click, t_ps) + delays[click] - delays[start]

    def _check_channel(self, channel: int) -> None:
        if channel not in self._delays_ps:
            raise DriverError(self.name, f"no channel {channel}; channels are {tuple(self._delays_ps)}")

    def _validate(self, request: AcquisitionRequest) -> None:
        if request.duration_ps <= 0:
            raise DriverError(self.name, f"acquisition duration must be > 0 ps, got {request.duration_ps}")
        for h in request.histograms:
            self._check_channel(h.start_channel)
            self._check_channel(h.click_channel)
            check_range(self.name, "histogram bins", h.n_bins, 1, self.params.max_histogram_bins)
            check_range(self.name, "histogram binwidth (ps)", h.binwidth_ps, 1, 10**9)
        if request.coincidences is not None:
            for a, b in request.coincidences.pairs:
                self._check_channel(a)
                self._check_channel(b)
        for c in request.count_channels:
            self._check_channel(c)

    def _sample(self, request: AcquisitionRequest, delays: dict[int, int],
                 start_offsets: dict[tuple[int, int], float]) -> Acquisition:
        t1 = self.world.now_ps
        t0 = t1 - request.duration_ps
        state = self.link.state(t0, t1)
        total_rate = sum(state.singles_hz(c) for c in self._delays_ps)
        kept = min(1.0, self._buffer_hz() / total_rate) if total_rate > 0 else 1.0
        overflow = kept < 1.0
        missed = round((1.0 - kept) * total_rate * state.duration_s)
        if overflow:
            self._overflows += 1
            self._missed_events += missed
        scale = kept * kept  # a coincidence needs both of its tags kept
        residual = {p: (r0, self._residual_ps(p, t1, delays)) for p, r0 in start_offsets.items()}
        cs = request.coincidences
        if self.fidelity == "pairs":
            histograms, counts = self._count_candidates(request, state, residual, scale)
        else:
            histograms = tuple(
                CorrelationHistogram(h, self._rng.poisson(scale * state.expected_histogram(
                    h.start_channel, h.click_channel, h.binwidth_ps, h.n_bins,
                    *residual[(h.start_channel, h.click_channel)])))
                for h in request.histograms)
            counts = None if cs is None else self._rng.poisson(scale * np.array(
                [state.expected_coincidences(*pair, cs.window_ps, cs.time_bin_ps, *residual[pair])
                 for pair in cs.pairs]))
        coincidences = None if cs is None else CoincidenceCounts(cs, counts)
        rates = {c: float(self._rng.poisson(state.singles_hz(c) * kept * state.duration_s)) / state.duration_s
                 for c in request.count_channels}
        return Acquisition(request, histograms, coincidences, rates, overflow, missed)

    def _count_candidates(self, request: AcquisitionRequest, state: LinkState,
                          residual: dict[tuple[int, int], tuple[float, float]],
                          scale: float) -> tuple[tuple[CorrelationHistogram, ...], np.ndarray | None]:
        """Histograms and coincidence counts from individually sampled candidates (``pairs`` fidelity)."""
        cs = request.coincidences
        candidates = {}
        for pair in residual:
            lo, hi = candidate_range(pair, request.histograms, cs)
            candidates[pair] = PairCandidates(state, *pair, *residual[pair], lo, hi, self._rng)
        histograms = tuple(
            CorrelationHistogram(h, self._thin(candidates[(h.start_channel, h.click_channel)].histogram(h), scale))
            for h in request.histograms)
        counts = None if cs is None else np.array([self._thin(candidates[p].coincidences(cs), scale)
                                                   for p in cs.pairs])
        return histograms, counts

    def _thin(self, counts: np.ndarray, keep: float) -> np.ndarray:
        return counts if keep >= 1.0 else self._rng.binomial(counts, keep)
