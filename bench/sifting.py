"""BBM92 sifting for time-energy entanglement: Z = arrival-time slot, X = interferometer outputs.

A Z-basis sifted bit is a coincidence between the two nodes' Z detectors, found in one of the two windows
Alice's frame announcement defines (:class:`CoincidenceSpec`); it is in error when Bob's click sits in the
other slot's window. An X-basis sifted bit is a central-peak coincidence between the two nodes'
interferometer outputs (the diagonal cells; the off-diagonal ones hold the ±T side peaks); it is in error
when the outputs differ (the phase lock holds the correlated state). Counts arrive per acquisition as the
tagger's Z-resolved coincidence matrix; for key distillation also one by one (:func:`sift_events`), which
gives each party its own bits: Alice's Z bit is her start tag's slot, Bob's the window his click fell in;
an X bit is which interferometer output clicked (+ → 0, − → 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivers.interfaces.tagger import CoincidenceCounts, CoincidenceEvents, CoincidenceSpec


@dataclass(frozen=True)
class LinkChannels:
    """Tagger channel of every detector of a link."""

    alice_z: int
    alice_x_plus: int
    alice_x_minus: int
    bob_z: int
    bob_x_plus: int
    bob_x_minus: int

    @property
    def bob(self) -> tuple[int, int, int]:
        return (self.bob_z, self.bob_x_plus, self.bob_x_minus)

    def coincidence_spec(self, window_ps: int, time_bin_ps: int) -> CoincidenceSpec:
        """Z pair first, then the four X output pairs (++, +−, −+, −−)."""
        return CoincidenceSpec(
            pairs=(
                (self.alice_z, self.bob_z),
                (self.alice_x_plus, self.bob_x_plus),
                (self.alice_x_plus, self.bob_x_minus),
                (self.alice_x_minus, self.bob_x_plus),
                (self.alice_x_minus, self.bob_x_minus),
            ),
            window_ps=window_ps,
            time_bin_ps=time_bin_ps,
        )


@dataclass(frozen=True, init=False)
class SiftedTally:
    """Sifted bits and errors per basis."""

    n_z: int = 0
    errors_z: int = 0
    n_x: int = 0
    errors_x: int = 0

    def __init__(self, n_z: int = 0, errors_z: int = 0, n_x: int = 0, errors_x: int = 0) -> None:
        # Several are made per acquisition: filled in directly, at a third of the frozen __setattr__'s cost.
        fields = self.__dict__
        fields["n_z"] = n_z
        fields["errors_z"] = errors_z
        fields["n_x"] = n_x
        fields["errors_x"] = errors_x

    def __add__(self, other: SiftedTally) -> SiftedTally:
        return SiftedTally(self.n_z + other.n_z, self.errors_z + other.errors_z,
                           self.n_x + other.n_x, self.errors_x + other.errors_x)

    def __sub__(self, other: SiftedTally) -> SiftedTally:
        return SiftedTally(self.n_z - other.n_z, self.errors_z - other.errors_z,
                           self.n_x - other.n_x, self.errors_x - other.errors_x)

    @property
    def qber_z(self) -> float:
        return self.errors_z / self.n_z if self.n_z else float("nan")

    @property
    def qber_x(self) -> float:
        return self.errors_x / self.n_x if self.n_x else float("nan")


def sift(counts: CoincidenceCounts) -> SiftedTally:
    """Tally a coincidence matrix laid out by :meth:`LinkChannels.coincidence_spec`."""
    c = counts.counts
    if c.shape != (5, 2, 2):
        raise ValueError(f"expected 5 channel pairs (Z, X++, X+−, X−+, X−−), got shape {c.shape}")
    (z00, z01, z10, z11, pp00, _, _, pp11, pm00, _, _, pm11, mp00, _, _, mp11, mm00, _, _, mm11) = c.ravel().tolist()
    errors_z = z01 + z10
    differ = pm00 + pm11 + mp00 + mp11
    return SiftedTally(z00 + z11 + errors_z, errors_z, pp00 + pp11 + mm00 + mm11 + differ, differ)


@dataclass(frozen=True)
class PartyBits:
    """One party's sifted bits of an acquisition, in time order (uint8 0/1)."""

    z: np.ndarray
    x: np.ndarray


def sift_events(events: CoincidenceEvents) -> tuple[PartyBits, PartyBits]:
    """Alice's and Bob's sifted bits from coincidences laid out by :meth:`LinkChannels.coincidence_spec`:
    pair 0 is Z, pairs 1–4 are the X outputs ++, +−, −+, −− and count only in their central peak (the
    diagonal cells), as :func:`sift` counts them."""
    pair = events.pair
    z = pair == 0
    x = (pair > 0) & (events.start_bit == events.click_bit)
    x_pair = pair[x]
    alice_x = (x_pair >= 3).astype(np.uint8)
    bob_x = ((x_pair == 2) | (x_pair == 4)).astype(np.uint8)
    return (PartyBits(events.start_bit[z].astype(np.uint8), alice_x),
            PartyBits(events.click_bit[z].astype(np.uint8), bob_x))
