"""A fibre arm from the source to one node: loss, delay and its temperature dependence, chromatic dispersion.

SMF-28: 0.35 dB/km (seed 000: "Fiber loss: 0.35 dB/km"); group index 1.4682 at 1550 nm (Corning SMF-28
datasheet), i.e. 4.897 µs of delay per km. ``device_loss_db`` lumps connectors, DWDM filters and the
analyser (seed 000: "Device loss: See Table I"). The delay grows with temperature by
``delay_ps_per_km_k`` (the thermal coefficient of delay of silica fibre, ~37 ps/(km·K), from the
thermo-optic coefficient and expansion of SMF-28; not in the seeds). Chromatic dispersion at wavelength λ
is L·[D0 + S0·(λ − λ0)] plus any lumped compensation (DCM/DCF) in ps/nm (seed 001, eq. 1: "D0 is 17
ps/nm/km, S0 is 0.06 ps/nm²/km").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SPEED_OF_LIGHT_M_PER_S = 299_792_458.0
GROUP_INDEX_SMF28 = 1.4682


@dataclass(frozen=True)
class FibreParams:
    length_km: float
    loss_db_per_km: float
    device_loss_db: float
    delay_ps_per_km_k: float  # thermal coefficient of the propagation delay
    dispersion_ps_per_nm_km: float  # D0 at the reference wavelength
    dispersion_slope_ps_per_nm2_km: float  # S0
    reference_wavelength_nm: float  # λ0
    compensation_ps_per_nm: float  # lumped DCM/DCF dispersion on this arm (negative compensates)


class FibreArm:
    def __init__(self, params: FibreParams, temperature_offset_k: Callable[[int], float]) -> None:
        """``temperature_offset_k(t_ps)``: the fibre's temperature minus the one its delay was measured at."""
        self.params = params
        self._temperature_offset_k = temperature_offset_k
        p = params
        self.loss_db = p.length_km * p.loss_db_per_km + p.device_loss_db
        self.transmission = 10.0 ** (-self.loss_db / 10.0)
        self.nominal_delay_ps = p.length_km * 1e3 * GROUP_INDEX_SMF28 / SPEED_OF_LIGHT_M_PER_S * 1e12
        self._cut_ps = (0, 0)  # [start, end) of a fibre cut

    def cut(self, start_ps: int, duration_ps: int) -> None:
        """Fault: no light gets through during [start, start + duration)."""
        self._cut_ps = (start_ps, start_ps + duration_ps)

    def add_loss(self, loss_db: float) -> None:
        """Fault: a lasting extra loss from now on (a bent cable, a dirty connector), dB; negative undoes it."""
        self.loss_db += loss_db
        self.transmission = 10.0 ** (-self.loss_db / 10.0)

    def transmission_at(self, t_ps: int) -> float:
        start, end = self._cut_ps
        return 0.0 if start <= t_ps < end else self.transmission

    def delay_ps(self, t_ps: int) -> float:
        """Propagation delay of a photon entering the arm at ``t_ps``."""
        p = self.params
        return self.nominal_delay_ps + p.length_km * p.delay_ps_per_km_k * self._temperature_offset_k(t_ps)

    def dispersion_ps_per_nm(self, wavelength_nm: float) -> float:
        """Accumulated chromatic dispersion of the arm, compensation included, at ``wavelength_nm``."""
        p = self.params
        per_km = p.dispersion_ps_per_nm_km + p.dispersion_slope_ps_per_nm2_km * (wavelength_nm
                                                                                 - p.reference_wavelength_nm)
        return p.length_km * per_km + p.compensation_ps_per_nm
