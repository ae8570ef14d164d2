"""Emulated Swabian-like time tagger spanning one link's channels, at ``stats`` fidelity.

``acquire`` integrates for the requested duration in virtual time and returns Correlation histograms and
time-bin-resolved Coincidences sampled (Poisson, per bin) from :class:`LinkPhysics` with the offset
drifting across the acquisition; ``read_tags`` returns raw int64-ps tags for short acquisitions. Input
delays act as Swabian's ``setInputDelay`` (added to every tag of the channel) and are latched at the start
of an acquisition. Tagger jitter: 8 ps RMS per channel (seed 001, S6: Time Tagger Ultra performance
edition). When the summed tag rate exceeds ``buffer_rate_hz`` the tagger flags an overflow and drops the
excess (counted in ``missed_events``), scaling every count by the fraction it kept.
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
    EventType,
    TagBlock,
    TaggerConstraints,
    TaggerStatus,
    TimeTagger,
)
from emulators.link import LinkPhysics
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


class EmulatedLinkTagger(TimeTagger):
    def __init__(self, world: World, link: LinkPhysics, params: TaggerParams, name: str = "tagger") -> None:
        self.name = name
        self.world = world
        self.link = link
        self.params = params
        self._rng = world.rng(name)
        self._delays_ps = dict.fromkeys(sorted(link.ports), 0)
        self._overflows = 0
        self._missed_events = 0
        self.truth_log: list[AcquisitionTruth] = []

    # -- contract -------------------------------------------------------------------------------
    async def constraints(self) -> TaggerConstraints:
        p = self.params
        return TaggerConstraints(tuple(self._delays_ps), p.max_input_delay_ps, p.max_histogram_bins,
                                 p.max_tag_block_ps)

    async def status(self) -> TaggerStatus:
        return TaggerStatus(dict(self._delays_ps), self._overflows, self._missed_events)

    async def set_input_delay(self, channel: int, delay_ps: int) -> None:
        self._check_channel(channel)
        m = self.params.max_input_delay_ps
        check_range(self.name, f"input delay of channel {channel} (ps)", delay_ps, -m, m)
        self._delays_ps[channel] = int(delay_ps)

    async def acquire(self, request: AcquisitionRequest) -> Acquisition:
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
        phase0 = self._phases(t0)
        delays = dict(self._delays_ps)

        def sample() -> TagBlock:
            phase1 = self._phases(self.world.now_ps)
            times, chans = self.link.sample_detections(t0, duration_ps, phase0, phase1, self._rng)
            times += _lookup(delays, chans)
            order = np.argsort(times, kind="stable")
            stamps = np.rint(times[order]).astype(np.int64)
            n = stamps.size
            return TagBlock(stamps, chans[order], np.full(n, EventType.TIME_TAG, np.uint8),
                            np.zeros(n, np.uint16))

        return await self._after(duration_ps, sample)

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

    def _phases(self, t_ps: int) -> dict[str, float]:
        return {name: node.clock.phase_ps(t_ps) for name, node in self.link.nodes.items()}

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
        duration_s = request.duration_ps / PS_PER_S
        link = self.link
        total_rate = sum(link.singles_rate_hz(c) for c in self._delays_ps)
        kept = min(1.0, self.params.buffer_rate_hz / total_rate) if total_rate > 0 else 1.0
        overflow = kept < 1.0
        missed = round((1.0 - kept) * total_rate * duration_s)
        if overflow:
            self._overflows += 1
            self._missed_events += missed
        # Coincidences need both tags kept.
        scale = kept * kept
        histograms = []
        for spec in request.histograms:
            pair = (spec.start_channel, spec.click_channel)
            expected = link.expected_histogram(*pair, spec.binwidth_ps, spec.n_bins, start_offsets[pair],
                                               self._residual_ps(pair, t1, delays), duration_s)
            histograms.append(CorrelationHistogram(spec, self._rng.poisson(expected * scale)))
        coincidences = None
        if request.coincidences is not None:
            cs = request.coincidences
            counts = np.empty((len(cs.pairs), 2, 2), np.int64)
            for i, pair in enumerate(cs.pairs):
                expected = link.expected_coincidences(*pair, cs.window_ps, cs.time_bin_ps, start_offsets[pair],
                                                      self._residual_ps(pair, t1, delays), duration_s)
                counts[i] = self._rng.poisson(expected * scale)
            coincidences = CoincidenceCounts(cs, counts)
        rates = {c: float(self._rng.poisson(link.singles_rate_hz(c) * kept * duration_s)) / duration_s
                 for c in request.count_channels}
        return Acquisition(request, tuple(histograms), coincidences, rates, overflow, missed)


def _lookup(delays: dict[int, int], channels: np.ndarray) -> np.ndarray:
    """Per-tag input delay in ps for an array of channel numbers."""
    table = np.zeros(max(delays) + 1, np.int64)
    for ch, d in delays.items():
        table[ch] = d
    return table[channels]
