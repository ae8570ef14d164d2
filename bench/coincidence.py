"""The stack's own coincidence finder: the measurements of an :class:`AcquisitionRequest` computed from raw
tags, for taggers that serve streams only (the emulator at ``tags`` fidelity, or a real tagger without
on-device measurements).

For each (start, click) channel pair every start tag within the measured range of each click tag is
found by binary search on the time-ordered start tags, so the cost is O(n log n) in the tags and linear in
the pairs found. A Z outcome is the parity of the ``time_bin_ps`` slot of a tag's own timestamp.
Only TIME_TAG rows count; overflow and missed-event rows are reported as the tagger flagged them.
"""

from __future__ import annotations

import numpy as np

from drivers.interfaces.tagger import (
    Acquisition,
    AcquisitionRequest,
    CoincidenceCounts,
    CorrelationHistogram,
    EventType,
    TagBlock,
)


def _differences(start: np.ndarray, click: np.ndarray, lo_ps: int, hi_ps: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (click − start) in [lo, hi): the differences and the index of the start tag of each."""
    first = np.searchsorted(start, click - hi_ps, side="right")  # start > click − hi
    last = np.searchsorted(start, click - lo_ps, side="right")  # start ≤ click − lo
    n = last - first
    click_of = np.repeat(np.arange(click.size), n)
    offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    start_idx = np.repeat(first, n) + offsets
    return click[click_of] - start[start_idx], start_idx


def measure(block: TagBlock, request: AcquisitionRequest) -> Acquisition:
    """The requested histograms, coincidences and count rates, from one block of tags."""
    tags = block.event_types == EventType.TIME_TAG
    stamps = block.timestamps_ps[tags]
    channels = block.channels[tags]
    by_channel = {int(ch): stamps[channels == ch] for ch in np.unique(channels)}
    empty = np.empty(0, np.int64)

    def of(ch: int) -> np.ndarray:
        return by_channel.get(ch, empty)

    histograms = []
    for h in request.histograms:
        first_edge = -(h.n_bins // 2) * h.binwidth_ps
        diffs, _ = _differences(of(h.start_channel), of(h.click_channel), first_edge,
                                first_edge + h.n_bins * h.binwidth_ps)
        idx = (diffs - first_edge) // h.binwidth_ps
        histograms.append(CorrelationHistogram(h, np.bincount(idx, minlength=h.n_bins).astype(np.int64)))
    coincidences = None
    cs = request.coincidences
    if cs is not None:
        counts = np.zeros((len(cs.pairs), 2, 2), np.int64)
        half = cs.window_ps // 2
        for i, (a, b) in enumerate(cs.pairs):
            start, click = of(a), of(b)
            diffs, start_idx = _differences(start, click, -half, half + 1)
            click_stamps = start[start_idx] + diffs
            parity_start = (start[start_idx] // cs.time_bin_ps) % 2
            parity_click = (click_stamps // cs.time_bin_ps) % 2
            counts[i] = np.bincount(2 * parity_start + parity_click, minlength=4).reshape(2, 2)
        coincidences = CoincidenceCounts(cs, counts)
    duration_s = request.duration_ps / 1e12
    rates = {c: of(c).size / duration_s for c in request.count_channels}
    overflow = bool(np.any(block.event_types == EventType.OVERFLOW_BEGIN))
    missed = int(block.missed_events[block.event_types == EventType.MISSED_EVENTS].sum())
    return Acquisition(request, tuple(histograms), coincidences, rates, overflow, missed)
