"""The first control and key-estimation stack of one link: sync, sifting, QBER and asymptotic key.

Every ``acquisition_s`` the tagger integrates one fine correlation histogram (for sync) and the
time-bin-resolved coincidences (for key) over the same interval (or, on a tagger without on-device
measurements, the stack counts both from the interval's raw tags: :class:`bench.sync.Readout`). While
sync is locked the coincidences are sifted and tallied, unless that acquisition's own peak was too weak
to confirm the window; every ``key_block_s`` of tallied time closes a key block whose secret length is
the asymptotic R = N_z[1 − f·h(E_z) − h(E_x)]. While sync is not locked no key is counted and the stack
reacquires. Knows only the driver contracts and the event loop's clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.keyrate import asymptotic_secret_bits
from bench.monitor import Monitor
from bench.sifting import LinkChannels, SiftedTally, sift
from bench.sync import PS_PER_S, SyncAcquisitionFailed, SyncSettings, SyncTracker
from drivers.interfaces.tagger import AcquisitionRequest, TimeTagger


class StackSettings(BaseModel):
    """Stack settings; also the ``stack`` section of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coincidence_window_ps: int = Field(120, ge=1, description='seed 000: "Coincidence window: 120 ps"')
    time_bin_ps: int = Field(400, ge=1, description=(
        "Z slot width, ps: 1/FSR of the 2.5 GHz interferometer (the short/long time bins). The coincidence"
        " window must fit in one slot (frame-announcement sifting, docs/decisions/0003)"))
    ec_efficiency: float = Field(1.09, ge=1.0, description="error-correction inefficiency f (seed 001, S12)")
    key_block_s: float = Field(10.0, gt=0, description="locked time per key block, s")
    reacquire_backoff_s: float = Field(1.0, ge=0, description="pause after a failed sync acquisition, s")
    sync: SyncSettings = Field(default_factory=SyncSettings)

    @model_validator(mode="after")
    def _window_fits_in_a_slot(self) -> StackSettings:
        if self.coincidence_window_ps > self.time_bin_ps:
            raise ValueError(f"coincidence_window_ps ({self.coincidence_window_ps}) must not exceed time_bin_ps "
                             f"({self.time_bin_ps}): the two announced Z windows would overlap")
        return self


@dataclass
class KeyTotals:
    tally: SiftedTally = field(default_factory=SiftedTally)
    secret_bits: float = 0.0
    key_time_s: float = 0.0  # time spent generating key (sync locked)
    blocks: int = 0


class LinkStack:
    def __init__(self, tagger: TimeTagger, channels: LinkChannels, settings: StackSettings,
                 monitor: Monitor) -> None:
        self.tagger = tagger
        self.channels = channels
        self.settings = settings
        self.monitor = monitor
        self.sync = SyncTracker(tagger, channels, settings.sync)
        self.totals = KeyTotals()
        self._block = SiftedTally()
        self._block_time_s = 0.0

    async def run(self, until_s: float) -> None:
        """Run until loop time ``until_s`` (no acquisition is started that would end after it)."""
        loop = asyncio.get_running_loop()
        s = self.settings
        acq_s = s.sync.acquisition_s
        spec = self.channels.coincidence_spec(s.coincidence_window_ps, s.time_bin_ps)
        request = AcquisitionRequest(round(acq_s * PS_PER_S), histograms=(self.sync.fine_spec,),
                                     coincidences=spec)
        while loop.time() + acq_s <= until_s:
            if not self.sync.locked:
                await self._acquire_sync(loop)
                continue
            await self.sync.compensate(self.sync.predict_ps(loop.time() + acq_s / 2))
            acq = await self.sync.readout.acquire(request)
            t_mid = loop.time() - acq_s / 2
            offset_ps = self.sync.update(acq.histograms[0], t_mid)
            assert self.sync.last_fit is not None
            self.monitor.record("sync.significance", t_mid, self.sync.last_fit.significance)
            if not self.sync.locked:
                self.monitor.event(loop.time(), "sync lost")
                continue
            if offset_ps is None:  # peak too weak to vouch for the window: no key from this acquisition
                continue
            self.monitor.record("sync.offset_ps", t_mid, offset_ps)
            assert acq.coincidences is not None
            self._block = self._block + sift(acq.coincidences)
            self._block_time_s += acq_s
            if self._block_time_s >= s.key_block_s - 1e-9:
                self._close_block(loop.time())
        self._close_block(loop.time())

    async def _acquire_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            fit = await self.sync.acquire()
        except SyncAcquisitionFailed as exc:
            self.monitor.event(loop.time(), f"sync acquisition failed: {exc}")
            await asyncio.sleep(self.settings.reacquire_backoff_s)
            return
        self.monitor.event(loop.time(), f"sync acquired: offset {self.sync.estimate_ps:.1f} ps, "
                                        f"{fit.significance:.0f} σ")

    def _close_block(self, t_s: float) -> None:
        block, duration_s = self._block, self._block_time_s
        if duration_s <= 0 or block.n_z == 0:
            return
        qz = block.qber_z
        qx = block.qber_x if block.n_x else 0.5
        secret = asymptotic_secret_bits(block.n_z, qz, qx, self.settings.ec_efficiency)
        t = self.totals
        t.tally = t.tally + block
        t.secret_bits += secret
        t.key_time_s += duration_s
        t.blocks += 1
        m = self.monitor
        m.record("qber_z", t_s, qz)
        m.record("qber_x", t_s, qx)
        m.record("sifted_key_rate_bps", t_s, block.n_z / duration_s)
        m.record("secret_key_rate_bps", t_s, secret / duration_s)
        self._block = SiftedTally()
        self._block_time_s = 0.0
