"""CW-pumped SPDC pair source (PPLN, 780 nm → 1560 nm; seed 000: "Pump laser: 780 nm continuous-wave").

The pair rate is proportional to pump power (seed 001: "Theoretically, [the generation rate] is
proportional to the pump power"). Pairs are emitted as a Poisson process, so multi-pair events and the
accidental coincidences they cause follow from the rate alone. ``brightness_pairs_per_s_per_mw`` is the
rate into a DWDM channel pair at the centre of the spectrum; off-centre channel pairs get less, following
a Gaussian spectrum of the seed's width (seed 000: "Center wavelength 1560.20 nm, 80 nm FWHM").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emulators.pump import EmulatedPump


@dataclass(frozen=True)
class SourceParams:
    brightness_pairs_per_s_per_mw: float  # into the centre channel pair, per mW of pump
    centre_wavelength_nm: float  # degenerate wavelength (twice the pump's)
    bandwidth_nm: float  # FWHM of the SPDC spectrum


class PairSource:
    def __init__(self, params: SourceParams, pump: EmulatedPump, channel_wavelength_nm: float) -> None:
        self.params = params
        self.pump = pump
        self.channel_weight = self.relative_density(channel_wavelength_nm)

    def relative_density(self, wavelength_nm: float) -> float:
        """Spectral pair density at ``wavelength_nm`` relative to the centre (1 at the centre)."""
        p = self.params
        return math.exp(-4.0 * math.log(2.0) * ((wavelength_nm - p.centre_wavelength_nm) / p.bandwidth_nm) ** 2)

    def pair_rate_hz(self) -> float:
        return self.params.brightness_pairs_per_s_per_mw * self.pump.power_mw() * self.channel_weight
