"""A fibre arm from the source to one node: loss in dB and propagation delay.

SMF-28: 0.35 dB/km (seed 000: "Fiber loss: 0.35 dB/km"); group index 1.4682 at 1550 nm (Corning SMF-28
datasheet), i.e. 4.897 µs of delay per km. ``device_loss_db`` lumps connectors, DWDM filters and the
analyser (seed 000: "Device loss: See Table I").
"""

from __future__ import annotations

from dataclasses import dataclass

SPEED_OF_LIGHT_M_PER_S = 299_792_458.0
GROUP_INDEX_SMF28 = 1.4682


@dataclass(frozen=True)
class FibreParams:
    length_km: float
    loss_db_per_km: float
    device_loss_db: float


class FibreArm:
    def __init__(self, params: FibreParams) -> None:
        self.params = params

    @property
    def loss_db(self) -> float:
        p = self.params
        return p.length_km * p.loss_db_per_km + p.device_loss_db

    @property
    def transmission(self) -> float:
        return 10.0 ** (-self.loss_db / 10.0)

    @property
    def delay_ps(self) -> float:
        return self.params.length_km * 1e3 * GROUP_INDEX_SMF28 / SPEED_OF_LIGHT_M_PER_S * 1e12
