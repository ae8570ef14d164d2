"""CW-pumped SPDC pair source (PPLN, 780 nm → 1560 nm; seed 000: "Pump laser: 780 nm continuous-wave").

The pair rate is proportional to pump power (seed 001: "Theoretically, [the generation rate] is
proportional to the pump power"). Pairs are emitted as a Poisson process, so multi-pair events and the
accidental coincidences they cause follow from the rate alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulators.pump import EmulatedPump


@dataclass(frozen=True)
class SourceParams:
    brightness_pairs_per_s_per_mw: float  # pairs leaving the source per second per mW of pump


class PairSource:
    def __init__(self, params: SourceParams, pump: EmulatedPump) -> None:
        self.params = params
        self.pump = pump

    def pair_rate_hz(self) -> float:
        return self.params.brightness_pairs_per_s_per_mw * self.pump.power_mw()
