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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np

from drivers.errors import DriverError, check_range
from drivers.interfaces.tagger import (
    Acquisition,
    AcquisitionRequest,
    CoincidenceCounts,
    CoincidenceEvents,
    CorrelationHistogram,
    HistogramSpec,
    TagBlock,
    TaggerConstraints,
    TaggerStatus,
    TimeTagger,
)
from emulators.candidates import PairCandidates, candidate_range
from emulators.link import PEAK_SPAN_SIGMAS, AcquisitionLayout, LinkPhysics, LinkState
from emulators.tagstream import NodeTiming, generate
from emulators.world import PS_PER_S, FlatPoisson, World

T = TypeVar("T")
TRUTH_LOG_LENGTH = 4096  # latest acquisitions whose truth is kept: memory stays flat however long the run


@dataclass(frozen=True)
class TaggerParams:
    rms_jitter_ps: float
    max_input_delay_ps: int  # |delay| accepted (software delay)
    max_histogram_bins: int
    max_tag_block_ps: int  # raw tags only for acquisitions up to this long
    buffer_rate_hz: float  # sustained tag rate the stream can carry


class AcquisitionTruth(NamedTuple):
    """Hidden truth of one acquisition, for tests and reports: never reachable through the contract."""

    start_ps: int
    end_ps: int
    offset_start_ps: float  # true Alice–Bob offset Δ at the start
    offset_end_ps: float

    @property
    def mean_offset_ps(self) -> float:
        """Mean Δ over the acquisition (Δ is linear within it to well below a picosecond)."""
        return (self.offset_start_ps + self.offset_end_ps) / 2


@dataclass(frozen=True)
class _Plan:
    """What one (validated) request needs of the link, worked out once per request object."""

    layout: AcquisitionLayout
    # ``stats``: one FlatPoisson draw per histogram (an empty row if there is none): the histogram (None for
    # the empty row), the index of its flat mean, its first bin edge ps, its peaks' slice of the means (first,
    # last), and the slice [lo, hi) of the other counts drawn with it (the means from ``layout.coincidences_at``
    # on, in their order): the coincidence cells with the first row, the channel counts with the last.
    draws: tuple[tuple[HistogramSpec | None, int, int, int, int, int, int], ...]
    means: np.ndarray  # scratch for each acquisition's means, used up within the acquisition
    cells_shape: tuple[int, int, int]  # of the coincidence counts: (pairs, start bit, click bit)


FIDELITIES = ("tags", "pairs", "stats")
_PLANS_KEPT = 4


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
        self._sampler = FlatPoisson(self._rng)
        self._delays_ps = dict.fromkeys(link.channels, 0)
        self._delay_array_ps = np.zeros(len(link.channels))  # the same in the order of link.channels
        self._delays_latched = False  # an acquisition under way holds _delay_array_ps: copy before a change
        self._buffer_rate_hz = params.buffer_rate_hz
        self._choked_until_ps = -1
        self._overflows = 0
        self._missed_events = 0
        self.truth_log: deque[AcquisitionTruth] = deque(maxlen=TRUTH_LOG_LENGTH)
        self._plans: dict[int, tuple[AcquisitionRequest, _Plan]] = {}  # by request object: the stack reuses a few

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
        if not -m <= delay_ps <= m:
            check_range(self.name, f"input delay of channel {channel} (ps)", delay_ps, -m, m)
        self._delays_ps[channel] = int(delay_ps)
        if self._delays_latched:
            self._delay_array_ps = self._delay_array_ps.copy()
            self._delays_latched = False
        self._delay_array_ps[self.link.channel_index[channel]] = self._delays_ps[channel]

    async def acquire(self, request: AcquisitionRequest) -> Acquisition:
        if self.fidelity == "tags":
            raise DriverError(self.name, "at 'tags' fidelity this tagger serves raw streams only (read_tags)")
        plan = self._planned(request)
        t0 = self.world.now_ps
        offset0 = self.link.offset_ps(t0)
        delays = self._delay_array_ps  # latched at the start, as setInputDelay acts on new tags
        self._delays_latched = True

        def sample() -> Acquisition:
            t1 = self.world.now_ps
            truth = AcquisitionTruth(t0, t1, offset0, self.link.offset_ps(t1))
            self.truth_log.append(truth)
            return self._sample(request, plan, truth, delays)

        return await self._after(request.duration_ps, sample)

    async def read_tags(self, duration_ps: int) -> TagBlock:
        check_range(self.name, "tag block duration (ps)", duration_ps, 1, self.params.max_tag_block_ps)
        t0 = self.world.now_ps
        start = {name: self._node_offset_ps(name, t0) for name in self.link.nodes}
        delays = dict(self._delays_ps)
        offset0 = self.link.offset_ps(t0)

        def sample() -> TagBlock:
            t1 = self.world.now_ps
            timing = {name: NodeTiming(start[name], self._node_offset_ps(name, t1)) for name in self.link.nodes}
            block, overflows, missed = generate(self.link.state(t0, t1), t0, duration_ps, timing, delays,
                                                self._buffer_hz(), self._rng)
            self._overflows += overflows
            self._missed_events += missed
            self.truth_log.append(AcquisitionTruth(t0, t1, offset0, self.link.offset_ps(t1)))
            return block

        return await self._after(duration_ps, sample)

    def true_offset_ps(self, t_mid_s: float) -> float:
        """Truth: mean Δ over the recent acquisition centred at ``t_mid_s`` (within 1 µs), ps."""
        for truth in reversed(self.truth_log):
            if abs((truth.start_ps + truth.end_ps) / 2 / PS_PER_S - t_mid_s) <= 1e-6:
                return truth.mean_offset_ps
        raise LookupError(f"{self.name}: no acquisition centred at {t_mid_s} s among the last {len(self.truth_log)}")

    def choke(self, buffer_rate_hz: float, duration_s: float) -> None:
        """Fault: the stream carries at most ``buffer_rate_hz`` for ``duration_s`` (e.g. a congested link)."""
        self._buffer_rate_hz = buffer_rate_hz
        self._choked_until_ps = self.world.now_ps + round(duration_s * PS_PER_S)

    def _buffer_hz(self) -> float:
        return self._buffer_rate_hz if self.world.env.now < self._choked_until_ps else self.params.buffer_rate_hz

    # -- internals ------------------------------------------------------------------------------
    def _after(self, duration_ps: int, compute: Callable[[], T]) -> asyncio.Future[T]:
        """A future resolved with ``compute()`` once ``duration_ps`` of virtual time has passed."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def done(_event: object) -> None:
            if fut.cancelled():
                return
            try:
                fut.set_result(compute())
            except DriverError as exc:
                fut.set_exception(exc)

        self.world.env.timeout(duration_ps).callbacks.append(done)
        return fut

    def _node_offset_ps(self, name: str, t_ps: int) -> float:
        """Arm delay plus clock phase of node ``name`` for a photon emitted at ``t_ps``."""
        node = self.link.nodes[name]
        return node.arm.delay_ps(t_ps) + node.clock.phase_ps(t_ps)

    def _check_channel(self, channel: int) -> None:
        if channel not in self._delays_ps:
            raise DriverError(self.name, f"no channel {channel}; channels are {tuple(self._delays_ps)}")

    def _planned(self, request: AcquisitionRequest) -> _Plan:
        """Validate ``request`` and work out its plan, once per request object (the stack reuses a few)."""
        known = self._plans.get(id(request))
        if known is not None and known[0] is request:
            return known[1]
        self._validate(request)
        link = self.link
        cs = request.coincidences
        layout = link.acquisition_layout(
            tuple((h.start_channel, h.click_channel, h.binwidth_ps) for h in request.histograms),
            None if cs is None else link.coincidence_layout(cs.pairs, cs.window_ps, cs.time_bin_ps),
            request.count_channels)
        cells, counted = layout.channels_at - layout.coincidences_at, layout.size - layout.coincidences_at
        last = len(request.histograms) - 1
        draws = tuple((h, 2 + i, -(h.n_bins // 2) * h.binwidth_ps, *peaks, 0 if i == 0 else cells,
                       counted if i == last else cells)
                      for i, (h, peaks) in enumerate(zip(request.histograms, layout.histogram_peaks, strict=True)))
        plan = _Plan(layout, draws or ((None, 0, 0, 0, 0, 0, counted),), np.empty(layout.size),
                     (len(layout.coincidences.pairs), 2, 2))
        if len(self._plans) >= _PLANS_KEPT:
            self._plans.pop(next(iter(self._plans)))
        self._plans[id(request)] = (request, plan)
        return plan

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

    def _sample(self, request: AcquisitionRequest, plan: _Plan, truth: AcquisitionTruth,
                delays_ps: np.ndarray) -> Acquisition:
        """The acquisition's measurements; ``delays_ps`` per channel in the order of ``link.channels``.

        ``stats``: a histogram is its flat accidental background plus the Poisson counts of its peaks;
        coincidence and channel counts are Poisson counts of their expectations, the former drawn with the
        first histogram and the latter with the last (:meth:`FlatPoisson.draw`). Every draw is exact.
        """
        t0, t1 = truth.start_ps, truth.end_ps
        d0, d1 = truth.offset_start_ps, truth.offset_end_ps
        layout = plan.layout
        buffer_hz = self._buffer_hz()
        state = None
        if self.fidelity == "pairs":
            state = self.link.state(t0, t1)
            means = state.acquisition_means(layout, d0, d1, delays_ps, buffer_hz, plan.means)
        else:  # the means straight from the link, without a state object
            means = self.link.acquisition_means(t0, t1, layout, d0, d1, delays_ps, buffer_hz, plan.means)
        kept, total_rate = means.item(0), means.item(1)
        duration_s = (t1 - t0) / PS_PER_S
        overflow = kept < 1.0
        missed = 0
        if overflow:
            missed = round((1.0 - kept) * total_rate * duration_s)
            self._overflows += 1
            self._missed_events += missed
        if state is not None:  # pairs fidelity
            histograms, counts = self._count_candidates(request, state, d0, d1, delays_ps.tolist(), kept * kept)
            rates = self._rng.poisson(means[layout.channels_at:])
        else:
            draw = self._sampler.draw
            at = layout.coincidences_at
            drawn = np.empty(layout.size - at, np.int64)  # the coincidence cells, then the channel counts
            rows = []
            for h, mean_at, first_edge_ps, first, last, lo, hi in plan.draws:
                part = drawn[lo:hi]
                if h is None:  # no histogram: the counts alone
                    draw(0.0, 0, 0.0, 1.0, means, 0, 0, 0.0, at, part)
                else:
                    rows.append(CorrelationHistogram(h, draw(means.item(mean_at), h.n_bins, first_edge_ps,
                                                             h.binwidth_ps, means, first, last, PEAK_SPAN_SIGMAS,
                                                             at + lo, part)))
            histograms = tuple(rows)
            cells = layout.channels_at - at
            counts, rates = drawn[:cells].reshape(plan.cells_shape), drawn[cells:]
        coincidences = None
        if request.coincidences is not None:
            events = _events(counts, self._rng) if request.coincidence_events else None
            coincidences = CoincidenceCounts(request.coincidences, counts, events)
        count_rates = {ch: n / duration_s for ch, n in zip(request.count_channels, rates.tolist(), strict=True)}
        return Acquisition(request, histograms, coincidences, count_rates, overflow, missed)

    def _count_candidates(self, request: AcquisitionRequest, state: LinkState, d0: float, d1: float,
                          delays_ps: list[float],
                          scale: float) -> tuple[tuple[CorrelationHistogram, ...], np.ndarray | None]:
        """Histograms and coincidence counts from individually sampled candidates (``pairs`` fidelity); a pair's
        residual offset is sign·Δ + delay(click) − delay(start), with Δ from ``d0`` to ``d1``."""
        cs = request.coincidences
        index = self.link.channel_index
        residual = {}
        pairs = [(h.start_channel, h.click_channel) for h in request.histograms] + list(cs.pairs if cs else ())
        for a, b in pairs:
            sign, delay = self.link.offset_sign(a, b), delays_ps[index[b]] - delays_ps[index[a]]
            residual[(a, b)] = (sign * d0 + delay, sign * d1 + delay)
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


def _events(counts: np.ndarray, rng: np.random.Generator) -> CoincidenceEvents:
    """The coincidences ``counts`` (pairs, 2, 2) holds, one by one in a uniformly random order.

    Coincidences of a CW source are independent and identically distributed within an acquisition, so the
    order carries no information: the cells' multiset in random order is the event list (at ``pairs``
    fidelity the cells were counted from the individual candidates; at ``stats`` they are the sampled
    counts)."""
    cells = rng.permutation(np.repeat(np.arange(counts.size, dtype=np.uint8), counts.ravel()))
    return CoincidenceEvents(cells >> 2, (cells >> 1) & 1, cells & 1)
