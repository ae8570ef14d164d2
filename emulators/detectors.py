"""Emulated SNSPD rack (ID281 class): efficiency, dark counts, Gaussian timing jitter, bias setpoints.

Figures (seed 001, S6 and S10): single-channel SNSPD jitter 30 ps FWHM; dark counts ~30 counts/s.
Dead time and the cryocooler cycle come with the emulator-fidelity work; here the rack stays COLD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.errors import DriverError, check_range
from drivers.interfaces.detectors import (
    CoolingState,
    DetectorConstraints,
    DetectorStatus,
    DetectorSystem,
)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class DetectorParams:
    efficiency: float
    dark_count_hz: float
    jitter_fwhm_ps: float
    max_bias_ua: float
    bias_ua: float
    temperature_k: float

    @property
    def jitter_sigma_ps(self) -> float:
        return self.jitter_fwhm_ps / FWHM_PER_SIGMA


class EmulatedDetectors(DetectorSystem):
    def __init__(self, params: DetectorParams, channels: tuple[int, ...], name: str) -> None:
        self.name = name
        self.params = params
        self.channels = channels
        self._bias_ua = dict.fromkeys(channels, params.bias_ua)

    async def constraints(self) -> DetectorConstraints:
        return DetectorConstraints(self.channels, self.params.max_bias_ua)

    async def status(self) -> DetectorStatus:
        return DetectorStatus(CoolingState.COLD, self.params.temperature_k, dict(self._bias_ua))

    async def set_bias(self, channel: int, bias_ua: float) -> None:
        if channel not in self._bias_ua:
            raise DriverError(self.name, f"no channel {channel}; channels are {self.channels}")
        check_range(self.name, "bias_ua", bias_ua, 0.0, self.params.max_bias_ua)
        self._bias_ua[channel] = bias_ua
