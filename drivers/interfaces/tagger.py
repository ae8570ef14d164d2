"""Time-tagger role: tag streams and on-device measurements, shaped after the Swabian Time Tagger API.

Shapes borrowed from Swabian: int64 picosecond timestamps, integer channel numbers, per-channel input
delays (``setInputDelay``), ``Correlation`` histograms centred on zero delay, ``Coincidences`` within a
window, ``Countrate``, and a ``TimeTagStream`` whose blocks carry event types and missed-event counters.

One tagger object spans the channels of one link (Alice's and Bob's detectors), as Swabian's
``TimeTaggerNetwork``/Synchronizer present several units as one: each channel is timestamped on its own
node's timebase, so a correlation between the two nodes' channels peaks at the Alice–Bob clock offset
plus the propagation difference, minus whatever input delays the stack applied.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class EventType(enum.IntEnum):
    """Event kinds in a tag stream, numbered as Swabian's ``TagType``."""

    TIME_TAG = 0
    ERROR = 1
    OVERFLOW_BEGIN = 2
    OVERFLOW_END = 3
    MISSED_EVENTS = 4


@dataclass(frozen=True)
class TagBlock:
    """A block of raw tags, sorted by time.

    ``timestamps_ps`` are int64 picoseconds on each channel's node timebase (input delays applied);
    ``missed_events`` is non-zero only on ``MISSED_EVENTS`` rows and counts tags dropped there.
    """

    timestamps_ps: np.ndarray  # int64
    channels: np.ndarray  # int32
    event_types: np.ndarray  # uint8, EventType values
    missed_events: np.ndarray  # uint16

    def __len__(self) -> int:
        return int(self.timestamps_ps.size)


@dataclass(frozen=True)
class HistogramSpec:
    """A ``Correlation`` measurement: histogram of (click time − start time) for pairs of events.

    ``n_bins`` bins of ``binwidth_ps``; bin ``i`` covers ``[(i − n_bins//2)·binwidth_ps, +binwidth_ps)``.
    """

    start_channel: int
    click_channel: int
    binwidth_ps: int
    n_bins: int


@dataclass(frozen=True, init=False)
class CorrelationHistogram:
    spec: HistogramSpec
    counts: np.ndarray  # int64, shape (n_bins,)

    def __init__(self, spec: HistogramSpec, counts: np.ndarray) -> None:
        fields = self.__dict__  # made per acquisition: filled in directly, see Acquisition
        fields["spec"] = spec
        fields["counts"] = counts

    def bin_centres_ps(self) -> np.ndarray:
        """Centre of every bin in ps (float64)."""
        s = self.spec
        return (np.arange(s.n_bins) - s.n_bins // 2 + 0.5) * s.binwidth_ps


@dataclass(frozen=True)
class CoincidenceSpec:
    """Coincidences between channel pairs, resolved as the time-basis (Z) outcome of time-energy BBM92.

    A start tag at t (its node's timebase, input delay applied) lies in a frame of two ``time_bin_ps``
    slots T; its bit is the slot's parity s = ⌊t/T⌋ mod 2. Sifting announces only the frame and the position
    within the slot, so a click counts as bit s when within ±window_ps/2 of t and as bit 1 − s when within
    ±window_ps/2 of the other slot's matching time t + (1 − 2s)·T; anything else is no coincidence. A true
    pair lands in the first window, so Z errors come from accidentals, not from jitter across slot edges
    (docs/decisions/0003-z-basis-frame-sifting.md). For X pairs the diagonal cells are the central peak.
    """

    pairs: tuple[tuple[int, int], ...]
    window_ps: int
    time_bin_ps: int

    def __post_init__(self) -> None:
        if not 1 <= self.window_ps <= self.time_bin_ps:
            raise ValueError(f"coincidence window {self.window_ps} ps must be within 1 ps and the Z slot of "
                             f"{self.time_bin_ps} ps, or the two announced windows overlap")


@dataclass(frozen=True)
class CoincidenceEvents:
    """Every coincidence that :class:`CoincidenceCounts` counts, one row each, in the order they happened.

    As Swabian's ``Coincidences`` virtual channels stream one tag per coincidence: the channel pair (index
    into ``spec.pairs``), the start tag's bit and the click's bit, exactly as the cell it was counted in.
    """

    pair: np.ndarray  # uint8, index into spec.pairs
    start_bit: np.ndarray  # uint8
    click_bit: np.ndarray  # uint8

    def __len__(self) -> int:
        return int(self.pair.size)


@dataclass(frozen=True, init=False)
class CoincidenceCounts:
    spec: CoincidenceSpec
    counts: np.ndarray  # int64, shape (n_pairs, 2, 2): [pair, start bit, click bit]
    events: CoincidenceEvents | None = None  # only when the request asked for them

    def __init__(self, spec: CoincidenceSpec, counts: np.ndarray, events: CoincidenceEvents | None = None) -> None:
        fields = self.__dict__  # made per acquisition: filled in directly, see Acquisition
        fields["spec"] = spec
        fields["counts"] = counts
        fields["events"] = events


@dataclass(frozen=True)
class AcquisitionRequest:
    """Measurements run simultaneously on the same stream for ``duration_ps`` (``startFor``).

    ``coincidence_events`` asks for every coincidence one by one as well as counted (key distillation needs
    the bits; the control loops need only the counts).
    """

    duration_ps: int
    histograms: tuple[HistogramSpec, ...] = ()
    coincidences: CoincidenceSpec | None = None
    count_channels: tuple[int, ...] = ()
    coincidence_events: bool = False


@dataclass(frozen=True, init=False)
class Acquisition:
    request: AcquisitionRequest
    histograms: tuple[CorrelationHistogram, ...]
    coincidences: CoincidenceCounts | None
    count_rates_hz: dict[int, float] = field(default_factory=dict)
    overflow: bool = False  # the buffer overflowed at some point during the acquisition
    missed_events: int = 0  # tags dropped during the acquisition (all channels)

    def __init__(self, request: AcquisitionRequest, histograms: tuple[CorrelationHistogram, ...],
                 coincidences: CoincidenceCounts | None, count_rates_hz: dict[int, float] | None = None,
                 overflow: bool = False, missed_events: int = 0) -> None:
        # Made per acquisition: the fields go straight into __dict__, at half the cost of the frozen
        # __setattr__ the generated __init__ goes through.
        fields = self.__dict__
        fields["request"] = request
        fields["histograms"] = histograms
        fields["coincidences"] = coincidences
        fields["count_rates_hz"] = {} if count_rates_hz is None else count_rates_hz
        fields["overflow"] = overflow
        fields["missed_events"] = missed_events


@dataclass(frozen=True)
class TaggerConstraints:
    channels: tuple[int, ...]
    max_input_delay_ps: int
    max_histogram_bins: int
    max_tag_block_ps: int  # raw tags are served only for acquisitions up to this long
    measurements: bool = True  # acquire() offered; if not, the stack finds coincidences in read_tags()


@dataclass(frozen=True)
class TaggerStatus:
    input_delays_ps: dict[int, int]
    overflows: int  # overflow intervals since start
    missed_events: int  # tags dropped since start


@runtime_checkable
class TimeTagger(Protocol):
    name: str

    async def constraints(self) -> TaggerConstraints: ...

    async def status(self) -> TaggerStatus: ...

    async def set_input_delay(self, channel: int, delay_ps: int) -> None:
        """Delay every tag of ``channel`` by ``delay_ps`` (may be negative). Raises SetpointOutOfRange."""

    async def acquire(self, request: AcquisitionRequest) -> Acquisition:
        """Integrate the requested measurements for ``request.duration_ps`` and return them."""

    async def read_tags(self, duration_ps: int) -> TagBlock:
        """Record the raw stream of every channel for ``duration_ps`` (short acquisitions only)."""
