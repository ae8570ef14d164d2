"""The stack's own coincidence finder: the measurements of an :class:`AcquisitionRequest` computed from raw
tags, for taggers that serve streams only (the emulator at ``tags`` fidelity, or a real tagger without
on-device measurements).

For each (start, click) channel pair every start tag within the measured range of each click tag is
found by binary search on the time-ordered start tags, so the cost is O(n log n) in the tags and linear in
the pairs found. Coincidences are resolved as :class:`CoincidenceSpec` defines: the start tag's slot
parity is its bit, and a click within ±window/2 of the start (same bit) or of the start's other-slot time
(other bit) counts.
Only TIME_TAG rows count; overflow and missed-event rows are reported as the tagger flagged them.
"""

from __future__ import annotations

import numpy as np

from drivers.interfaces.tagger import (
    Acquisition,
    AcquisitionRequest,
    CoincidenceCounts,
    CoincidenceEvents,
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


def _events(found: list[tuple[np.ndarray, np.ndarray]]) -> CoincidenceEvents:
    """Coincidences of every pair in the order of their start tags."""
    times = np.concatenate([t for t, _ in found])
    cells = np.concatenate([c for _, c in found]).astype(np.uint8)[np.argsort(times, kind="stable")]
    return CoincidenceEvents(cells >> 2, (cells >> 1) & 1, cells & 1)


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
        half, slot = cs.window_ps // 2, cs.time_bin_ps
        found: list[tuple[np.ndarray, np.ndarray]] = []  # per pair: start times and cells of its coincidences
        for i, (a, b) in enumerate(cs.pairs):
            start = of(a)
            diffs, start_idx = _differences(start, of(b), -slot - half, slot + half + 1)
            bits = (start[start_idx] // slot) % 2
            same = np.abs(diffs) <= half
            other = np.abs(diffs - (1 - 2 * bits) * slot) <= half
            kept = same | other
            click_bits = np.where(same[kept], bits[kept], 1 - bits[kept])
            cells = 2 * bits[kept] + click_bits
            counts[i] = np.bincount(cells, minlength=4).reshape(2, 2)
            if request.coincidence_events:
                found.append((start[start_idx[kept]], cells + 4 * i))
        coincidences = CoincidenceCounts(cs, counts, _events(found) if request.coincidence_events else None)
    duration_s = request.duration_ps / 1e12
    rates = {c: of(c).size / duration_s for c in request.count_channels}
    overflow = bool(np.any(block.event_types == EventType.OVERFLOW_BEGIN))
    missed = int(block.missed_events[block.event_types == EventType.MISSED_EVENTS].sum())
    return Acquisition(request, tuple(histograms), coincidences, rates, overflow, missed)
