"""The control and key-estimation stack of one link, run by its supervisor.

Every ``acquisition_s`` the tagger integrates one fine correlation histogram (for sync), the
time-bin-resolved coincidences (for key) and every channel's count rate over the same interval (or, on a
tagger without on-device measurements, the stack counts them from the interval's raw tags:
:class:`bench.sync.Readout`). From each acquisition the stack

- tracks the offset (:mod:`bench.sync`) and sifts the coincidences;
- feeds the control loops: pump optimisation (:mod:`bench.pump_control`), the phase lock
  (:mod:`bench.phase_lock`) and one polarization loop per node (:mod:`bench.polarization_control`);
- reads the fault signals — a node's counts vanish, the sync peak fades, a QBER climbs, the tagger
  overflows, an instrument stops answering — and lets the :class:`bench.supervisor.Supervisor` book the
  episode while it takes the recovery action;
- in key mode, tallies the sifted bits into 10 s key blocks (QBERs, sifted rate and the asymptotic
  estimate R = N_z[1 − f·h(E_z) − h(E_x)] for comparison), and hands the coincidences of the acquisitions
  chosen for distillation (``distillation.fraction`` of them) one by one to Alice and Bob
  (:mod:`bench.distill`), whose blocks run Cascade, verification and privacy amplification over their
  classical channel into their key stores.

Every ``supervisor.status_poll_s`` it also asks each instrument for its status: a clock that reports loss
of lock, or an instrument that does not answer, is an episode of its own. Knows only the driver contracts
and the event loop's clock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.distill import DistillationSettings, Distillery
from bench.keyrate import asymptotic_secret_bits
from bench.monitor import Monitor
from bench.phase_lock import FringeScan, PhaseLock, PhaseLockSettings
from bench.polarization_control import PolarizationControlSettings, PolarizationLoop
from bench.pump_control import PumpControlSettings, PumpOptimiser
from bench.sifting import LinkChannels, SiftedTally, sift, sift_events
from bench.supervisor import Mode, Supervisor, SupervisorSettings
from bench.sync import PS_PER_S, SyncAcquisitionFailed, SyncSettings, SyncTracker
from drivers.errors import DeviceTimeout, DriverError
from drivers.interfaces import (
    AcquisitionRequest,
    CoolingState,
    DetectorSystem,
    FrequencyReference,
    PhaseActuator,
    PolarizationController,
    PumpLaser,
    TimeTagger,
)

T = TypeVar("T")
DISTILLATION_STREAM = 0x4B4559  # "KEY": the distillation's random stream, beside the scenario seed
MAX_RETRY_S = 60.0  # longest back-off between two calls to an instrument that keeps failing
EFFICIENCY_SMOOTHING_S = 4.0  # count-rate ratios are smoothed over this before a drop is called (an
# actuator wrapping by a turn dips the rate for ~2 s: the polarization loop's business, not an episode)


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
    pump: PumpControlSettings = Field(default_factory=PumpControlSettings)
    phase_lock: PhaseLockSettings = Field(default_factory=PhaseLockSettings)
    polarization: PolarizationControlSettings = Field(default_factory=PolarizationControlSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    distillation: DistillationSettings = Field(default_factory=DistillationSettings)

    @model_validator(mode="after")
    def _window_fits_in_a_slot(self) -> StackSettings:
        if self.coincidence_window_ps > self.time_bin_ps:
            raise ValueError(f"coincidence_window_ps ({self.coincidence_window_ps}) must not exceed time_bin_ps "
                             f"({self.time_bin_ps}): the two announced Z windows would overlap")
        return self


@dataclass(frozen=True)
class LinkDevices:
    """The driver contracts of one link, by node where a device belongs to one (the wiring fills it)."""

    tagger: TimeTagger
    channels: LinkChannels
    pump: PumpLaser | None = None
    phase_actuators: Mapping[str, PhaseActuator] = field(default_factory=dict)
    polarization: Mapping[str, PolarizationController] = field(default_factory=dict)
    clocks: Mapping[str, FrequencyReference] = field(default_factory=dict)
    detectors: Mapping[str, DetectorSystem] = field(default_factory=dict)

    def node_channels(self) -> dict[str, tuple[int, int, int]]:
        c = self.channels
        return {"alice": (c.alice_z, c.alice_x_plus, c.alice_x_minus), "bob": c.bob}


@dataclass
class KeyTotals:
    tally: SiftedTally = field(default_factory=SiftedTally)
    secret_bits_asymptotic: float = 0.0  # Σ over key blocks of N_z[1 − f·h(E_z) − h(E_x)]
    key_time_s: float = 0.0  # time spent generating key
    blocks: int = 0


class RollingTally:
    """The latest sifted bits: at least ``bits`` per basis once that many arrived, and not many more."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self._parts: deque[SiftedTally] = deque()
        self.total = SiftedTally()

    def add(self, tally: SiftedTally) -> None:
        parts = self._parts
        parts.append(tally)
        total = self.total + tally
        while len(parts) > 1:
            first = parts[0]
            if total.n_z - first.n_z < self.bits or total.n_x - first.n_x < self.bits:
                break
            total = total - first
            parts.popleft()
        self.total = total

    @property
    def full(self) -> bool:
        return self.total.n_z >= self.bits and self.total.n_x >= self.bits

    def clear(self) -> None:
        self._parts.clear()
        self.total = SiftedTally()


class LinkStack:
    """``seed`` seeds the distillation's random draws; ``key_dir`` holds the parties' key stores (None: a
    temporary directory). :meth:`close` closes the stores."""

    def __init__(self, devices: LinkDevices, settings: StackSettings, monitor: Monitor, *, seed: int = 0,
                 key_dir: Path | None = None) -> None:
        self.devices = devices
        self.tagger = devices.tagger
        self.channels = devices.channels
        self.settings = settings
        self.monitor = monitor
        self.supervisor = Supervisor(settings.supervisor, monitor)
        self.sync = SyncTracker(devices.tagger, devices.channels, settings.sync)
        self.totals = KeyTotals()
        self._block = SiftedTally()
        self._block_time_s = 0.0
        self._node_channels = devices.node_channels()
        # node → its count rate per mW of pump, reference: singles follow the pump (pairs ∝ power; dark counts
        # are ~10^-5 of them), so a deliberate pump step is never taken for counts lost or back
        self._reference_hz_per_mw: dict[str, float] = {}
        self._pump_mw = 1.0  # the pump's setpoint, mW (1: no pump on this link, rates as they are)
        self._rolling = RollingTally(settings.supervisor.qber_window_bits)
        self._healthy_s = 0.0
        self._backoff: dict[str, tuple[float, float]] = {}  # device → (next try at, current back-off), s
        self._next_poll_s = 0.0
        self._ratio_ref: dict[str, float] = {}  # node → its count rate over the other node's, reference
        self._ratio_now: dict[str, float] = {}  # ... and smoothed over a few seconds
        self._offline: dict[str, bool] = {}  # node → its detector rack reported not cold at the last poll
        s = settings
        self.pump = PumpOptimiser(devices.pump, s.pump) if devices.pump is not None and s.pump.enabled else None
        actuator = devices.phase_actuators.get(s.phase_lock.node)
        self.phase_lock = PhaseLock(actuator, s.phase_lock) if actuator is not None and s.phase_lock.enabled else None
        self.scan: FringeScan | None = None
        self.polarization = ({n: PolarizationLoop(c, s.polarization) for n, c in devices.polarization.items()}
                             if s.polarization.enabled else {})
        self._pol_counts = dict.fromkeys(self.polarization, 0.0)
        self._pol_s = 0.0
        # Per node, made once: the keys of its episodes and the name of its count-rate series.
        self._counts_lost_key = {node: f"counts lost at {node}" for node in self._node_channels}
        self._efficiency_key = {node: f"efficiency drop at {node}" for node in self._node_channels}
        self._pol_series = {node: f"polarization.counts_hz.{node}" for node in self.polarization}
        acq_s = s.sync.acquisition_s  # and the weights of one acquisition in the running references
        self._reference_weight = min(1.0, acq_s / s.supervisor.reference_tau_s)
        self._ratio_smoothing = min(1.0, acq_s / EFFICIENCY_SMOOTHING_S)
        self._pump_quiet_s = 0.0  # time since the pump last moved, s
        spec = devices.channels.coincidence_spec(s.coincidence_window_ps, s.time_bin_ps)
        self._request = AcquisitionRequest(
            round(s.sync.acquisition_s * PS_PER_S), histograms=(self.sync.fine_spec,), coincidences=spec,
            count_channels=tuple(ch for chs in self._node_channels.values() for ch in chs))
        self._key_request = replace(self._request, coincidence_events=True)
        self.distillery = (Distillery(s.distillation, np.random.default_rng([seed, DISTILLATION_STREAM]), key_dir)
                           if s.distillation.enabled else None)
        self._distil_credit = 0.0  # key acquisitions owed to distillation (``fraction`` per key acquisition)

    @property
    def mode(self) -> Mode:
        return self.supervisor.mode

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self, until_s: float, *, final: bool = True) -> None:
        """Run until loop time ``until_s`` (no acquisition is started that would end after it).

        ``final``: the run ends here, so the open monitor block is closed and every whole frame still
        buffered is distilled. Otherwise (a checkpoint boundary) only the block in flight is awaited and the
        channel closed: the buffered bits and the open block carry over, so segmenting a run does not cut
        its distillation blocks short."""
        acq_s = self.settings.sync.acquisition_s
        while (now := self._now()) + acq_s <= until_s:
            self.supervisor.check_budget(now)
            try:
                if self.mode is Mode.BOOT:
                    await self._boot()
                    continue
                if now >= self._next_poll_s:
                    await self._poll()
                if not self.sync.locked:
                    await self._acquire_sync()
                else:
                    await self._cycle()
            except DriverError as exc:  # the tagger: without it there is no link
                self._device_failed(exc, link_level=True)
                self.supervisor.enter(Mode.DEGRADED, self._now(), str(exc))
                await asyncio.sleep(self.settings.supervisor.retry_s)
        if final:
            self._close_block(self._now())
        if self.distillery is not None:
            if final:
                await self.distillery.flush(self._qber_z_estimate())
            else:
                await self.distillery.settle()
            await self.distillery.pause()

    def close(self) -> None:
        """Close the key stores (after the last :meth:`run`)."""
        if self.distillery is not None:
            self.distillery.close()

    # -- instruments --------------------------------------------------------------------------
    def _device_failed(self, exc: DriverError, link_level: bool) -> None:
        now = self._now()
        _, backoff = self._backoff.get(exc.device, (0.0, self.settings.supervisor.retry_s / 2))
        backoff = min(2 * backoff, MAX_RETRY_S)
        self._backoff[exc.device] = (now + backoff, backoff)
        what = "not answering" if isinstance(exc, DeviceTimeout) else f"error: {exc.detail}"
        self.supervisor.fault(now, f"{exc.device} failing", f"{exc.device} {what}",
                              "retry with back-off", link_level=link_level)

    def _device_ok(self, device: str) -> None:
        if self._backoff.pop(device, None) is not None:
            self.supervisor.clear(self._now(), f"{device} failing")

    async def _call(self, device: str, call: Callable[[], Awaitable[T]], *, probe: bool = False) -> T | None:
        """``call()`` unless ``device`` is backing off; a driver error opens its episode and returns None.
        Only a ``probe`` (a call that surely reaches the device, e.g. its status) closes the episode."""
        backoff = self._backoff.get(device)
        if backoff is not None and self._now() < backoff[0]:
            return None
        try:
            result = await call()
        except DriverError as exc:
            self._device_failed(exc, link_level=False)
            return None
        if probe:
            self._device_ok(device)
        return result

    async def _boot(self) -> None:
        """Ask every instrument who it is; start the loops that keep their own state."""
        await self.tagger.constraints()
        self._device_ok(self.tagger.name)
        await self._poll()
        if self.devices.pump is not None:
            status = await self._call(self.devices.pump.name, self.devices.pump.status, probe=True)
            if status is not None and status.setpoint_mw > 0:
                self._pump_mw = status.setpoint_mw
        if self.phase_lock is not None:
            await self._call(self.phase_lock.actuator.name, self.phase_lock.start)
        for loop in self.polarization.values():
            await self._call(loop.controller.name, loop.start)
        self.supervisor.enter(Mode.ACQUIRE, self._now(), "instruments answered")

    async def _poll(self) -> None:
        """Heartbeat of every instrument but the tagger; clock lock and detector state from their status."""
        now = self._now()
        self._next_poll_s = now + self.settings.supervisor.status_poll_s
        d = self.devices
        for node, clock in d.clocks.items():
            status = await self._call(clock.name, clock.status, probe=True)
            if status is None:
                continue
            key = f"{clock.name} unlocked"
            if not status.locked:
                self.supervisor.fault(now, key, f"{node} clock unlocked", "track in software until it relocks",
                                      link_level=False)
            else:
                self.supervisor.clear(now, key)
        for node, rack in d.detectors.items():
            detectors = await self._call(rack.name, rack.status, probe=True)
            if detectors is not None:
                self._offline[node] = detectors.state is not CoolingState.COLD
        others = [d.pump] if d.pump is not None else []
        others += [*d.phase_actuators.values(), *d.polarization.values()]
        for device in others:
            await self._call(device.name, device.status, probe=True)

    # -- sync ---------------------------------------------------------------------------------
    async def _acquire_sync(self) -> None:
        self.supervisor.enter(Mode.ACQUIRE, self._now())
        try:
            fit = await self.sync.acquire()
        except SyncAcquisitionFailed as exc:
            self.monitor.event(self._now(), f"sync acquisition failed: {exc}")
            await asyncio.sleep(self.settings.reacquire_backoff_s)
            return
        self.monitor.event(self._now(), f"sync acquired: offset {self.sync.estimate_ps:.1f} ps, "
                                        f"{fit.significance:.0f} σ")
        self._rolling.clear()
        self._healthy_s = 0.0
        self.supervisor.enter(Mode.ALIGN, self._now(), "sync acquired")

    # -- one acquisition ----------------------------------------------------------------------
    async def _cycle(self) -> None:
        s = self.settings
        acq_s = s.sync.acquisition_s
        await self.sync.compensate(self.sync.predict_ps(self._now() + acq_s / 2))
        fraction = s.distillation.fraction
        distil = (self.distillery is not None and self.mode is Mode.KEY
                  and self._distil_credit + fraction >= 1.0 - 1e-9)
        acq = await self.sync.readout.acquire(self._key_request if distil else self._request)
        self._backoff.pop(self.tagger.name, None)
        t = self._now()
        t_mid = t - acq_s / 2
        rate = acq.count_rates_hz.get
        rates = {node: rate(a, 0.0) + rate(b, 0.0) + rate(c, 0.0) for node, (a, b, c) in self._node_channels.items()}
        if not await self._counts_present(t, rates):
            self.supervisor.enter(Mode.DEGRADED, t, "counts lost")
            return
        self._check_efficiency(t, rates)
        offset_ps = self.sync.update(acq.histograms[0], t_mid)
        assert self.sync.last_fit is not None
        self.monitor.record("sync.significance", t_mid, self.sync.last_fit.significance)
        if not self.sync.locked:
            self.supervisor.fault(t, "sync", "sync lost (peak faded with counts present)", "reacquire")
            return
        if acq.overflow:
            self.supervisor.fault(t, "overflow", "tagger overflow", "discard acquisitions until it clears")
            self.supervisor.enter(Mode.DEGRADED, t, "tagger overflow")
            return
        if offset_ps is None:  # this peak too weak to vouch for the window: no key, no loop input
            return
        self.monitor.record("sync.offset_ps", t_mid, offset_ps)
        self.monitor.record("sync.applied_ps", t_mid, self.sync.applied_ps)  # what this acquisition's window saw
        assert acq.coincidences is not None
        tally = sift(acq.coincidences)
        self._rolling.add(tally)
        await self._run_loops(tally, rates, acq_s)
        if self.scan is not None or not await self._qber_healthy(t):
            return
        if self.mode is not Mode.KEY:
            self._healthy_s += acq_s
            if self._healthy_s < s.supervisor.align_s - 1e-9:
                self.supervisor.enter(Mode.ALIGN, t)
                return
            self.supervisor.enter(Mode.KEY, t, "QBERs within limits")
            self.supervisor.clear_link_faults(t)
        self._block = self._block + tally
        self._block_time_s += acq_s
        if self.distillery is not None:  # only key acquisitions earn credit: a discarded one owes nothing
            self._distil_credit += fraction
            events = acq.coincidences.events
            if events is not None:
                self._distil_credit -= 1.0
                self.distillery.add(*sift_events(events), self._qber_z_estimate())
        if self._block_time_s >= s.key_block_s - 1e-9:
            self._close_block(t)

    async def _counts_present(self, t: float, rates: dict[str, float]) -> bool:
        """Open or clear each node's 'counts lost' episode; keep the reference rates (updated in key mode)."""
        sup = self.settings.supervisor
        present = True
        per_mw = 1.0 / self._pump_mw
        for node, rate in rates.items():
            rate *= per_mw
            reference = self._reference_hz_per_mw.get(node)
            if reference is None:
                continue
            key = self._counts_lost_key[node]
            if self.supervisor.is_open(key):
                lost = rate < sup.counts_back_fraction * reference
            else:
                lost = rate < sup.counts_lost_fraction * reference
            if lost:
                rack = self.devices.detectors.get(node)
                if rack is not None and not self.supervisor.is_open(key):  # ask the rack why, once
                    status = await self._call(rack.name, rack.status, probe=True)
                    self._offline[node] = status is not None and status.state is not CoolingState.COLD
                cause = "detectors offline (cryocooler cycle or warm-up)" if self._offline.get(node) else \
                    "fibre, source or detectors"
                self.supervisor.fault(t, key, f"counts lost at {node}: {cause}", "wait for counts; hold sync")
                present = False
        if present and self.mode is Mode.KEY:
            weight = self._reference_weight
            for node, rate in rates.items():
                self._reference_hz_per_mw[node] += weight * (rate * per_mw - self._reference_hz_per_mw[node])
        elif present and not self._reference_hz_per_mw:
            self._reference_hz_per_mw = {node: rate * per_mw for node, rate in rates.items()}
        return present

    def _check_efficiency(self, t: float, rates: dict[str, float]) -> None:
        """Each node's count rate relative to the other's (the pump cancels out): a drop is its detection
        efficiency (polarization) or its arm's transmission, an episode of its own while the link keeps going."""
        sup = self.settings.supervisor
        if min(rates.values()) <= 0:
            return
        smooth = self._ratio_smoothing
        for node, other in (("alice", "bob"), ("bob", "alice")):
            if node not in rates or other not in rates:
                continue
            ratio = rates[node] / rates[other]
            before = self._ratio_now.get(node, ratio)
            now = self._ratio_now[node] = before + smooth * (ratio - before)
            reference = self._ratio_ref.setdefault(node, now)
            drop = 1.0 - now / reference
            key = self._efficiency_key[node]
            if self.supervisor.is_open(key):
                started = self.supervisor.episode(key).start_s
                if drop <= sup.efficiency_back_fraction:
                    self.supervisor.clear(t, key)
                elif t - started >= sup.efficiency_settle_s:
                    self.monitor.event(t, f"{node}: count rate settled {drop:.1%} below its old reference; "
                                          "taken as the new level")
                    self._ratio_ref[node] = now
                    self.supervisor.clear(t, key)
            elif drop > sup.efficiency_drop_fraction:
                self.supervisor.fault(t, key, f"detection efficiency or transmission at {node} down {drop:.0%}",
                                      "polarization loop re-aligns", link_level=False)
            elif self.mode is Mode.KEY:
                self._ratio_ref[node] = reference + self._reference_weight * (now - reference)

    async def _qber_healthy(self, t: float) -> bool:
        """Check the rolling QBERs; start the recovery a climbing one calls for."""
        sup = self.settings.supervisor
        if not self._rolling.full:
            return self.mode is Mode.KEY  # not enough bits to judge: key mode goes on, align waits
        q = self._rolling.total
        if q.qber_z > sup.qber_z_max:  # accidentals or timing: both bases suffer, the phase is not to blame
            self.supervisor.fault(t, "qber_z", f"QBERz {q.qber_z:.1%} above {sup.qber_z_max:.0%}",
                                  "pump optimiser lowers the pump" if self.pump is not None else "wait")
            self.supervisor.enter(Mode.DEGRADED, t, "QBERz high")
            return False
        if q.qber_x > sup.qber_x_max:
            diagnosis = f"QBERx {q.qber_x:.1%} above {sup.qber_x_max:.0%}"
            if self.phase_lock is None:
                self.supervisor.fault(t, "qber_x", diagnosis, "wait (no phase lock)")
                self.supervisor.enter(Mode.DEGRADED, t, "QBERx high")
                return False
            scan = FringeScan(self.phase_lock.actuator, self.settings.phase_lock)
            await self._call(scan.actuator.name, scan.start)
            if scan.voltages_v:  # started (else the piezo is failing and its episode is open)
                self.scan = scan
                self._rolling.clear()
                self.supervisor.fault(t, "qber_x", diagnosis, "scan the fringe, then relock")
                self.supervisor.enter(Mode.RECOVERING, t, "fringe scan")
            return False
        return True

    # -- control loops ------------------------------------------------------------------------
    async def _run_loops(self, tally: SiftedTally, rates: dict[str, float], acq_s: float) -> None:
        t = self._now()
        if self.pump is not None:
            self.pump.observe(tally, acq_s)
            power = await self._call(self.pump.pump.name, self.pump.step)
            self._pump_quiet_s += acq_s
            if power is not None:
                self._pump_quiet_s = 0.0
                if power > 0:
                    self._pump_mw = power
                self.monitor.record("pump.power_mw", t, power)
        if self.scan is not None:
            await self._scan_step(tally)
        elif self.phase_lock is not None and self.phase_lock.centre_v is not None:
            self.phase_lock.observe(tally)
            await self._call(self.phase_lock.actuator.name, self.phase_lock.step)
        if self.polarization:
            await self._polarization_step(rates, acq_s)

    async def _scan_step(self, tally: SiftedTally) -> None:
        assert self.scan is not None and self.phase_lock is not None
        name = self.scan.actuator.name
        self.scan.observe(tally)
        best_v = await self._call(name, self.scan.step)
        if best_v is not None:
            self.monitor.event(self._now(), f"fringe scan done: piezo at {best_v:.1f} V, QBERx "
                                            f"{min(self.scan.qber_x):.1%}")
            self.scan = None
            await self._call(name, self.phase_lock.start)
            self._rolling.clear()
            self._healthy_s = 0.0

    async def _polarization_step(self, rates: dict[str, float], acq_s: float) -> None:
        """Pool each node's counts for ``update_s``, then step its loop (skipped while the pump settles)."""
        for node in self.polarization:
            self._pol_counts[node] += rates[node] * acq_s
        self._pol_s += acq_s
        if self._pol_s < self.settings.polarization.update_s - 1e-9:
            return
        pump_settled = self._pump_quiet_s >= 2 * self._pol_s  # its counts not moved by a pump change
        for node, loop in self.polarization.items():
            if pump_settled:
                await self._call(loop.controller.name, lambda loop=loop, n=node: loop.update(self._pol_counts[n]))
            else:  # a base taken before the pump moved would make any trial after it look like a gain
                await self._call(loop.controller.name, loop.discard)
            self.monitor.record(self._pol_series[node], self._now(), self._pol_counts[node] / self._pol_s)
        self._pol_counts = dict.fromkeys(self.polarization, 0.0)
        self._pol_s = 0.0

    # -- key ----------------------------------------------------------------------------------
    def _qber_z_estimate(self) -> float:
        """Public QBERz estimate for Cascade's block sizes: the rolling one, else the run's."""
        for tally in (self._rolling.total, self.totals.tally):
            if tally.n_z:
                return tally.qber_z
        return self.settings.pump.target_qber_z

    def secret_fraction(self, tally: SiftedTally | None = None) -> float:
        """Secret bits per sifted Z bit: what the distilled blocks reached so far; before any block (or with
        distillation off) the asymptotic estimate for ``tally`` (default: the run's)."""
        distilled = self._distilled_fraction()
        if distilled is not None:
            return distilled
        tally = self.totals.tally if tally is None else tally
        if not tally.n_z:
            return 0.0
        qx = tally.qber_x if tally.n_x else 0.5
        return asymptotic_secret_bits(tally.n_z, tally.qber_z, qx, self.settings.ec_efficiency) / tally.n_z

    def _distilled_fraction(self) -> float | None:
        """Secret bits per sifted Z bit the distilled blocks reached so far (None before any, or undistilled)."""
        return self.distillery.totals.secret_fraction if self.distillery is not None else None

    def _close_block(self, t_s: float) -> None:
        block, duration_s = self._block, self._block_time_s
        if duration_s <= 0 or block.n_z == 0:
            return
        qz = block.qber_z
        qx = block.qber_x if block.n_x else 0.5
        secret = asymptotic_secret_bits(block.n_z, qz, qx, self.settings.ec_efficiency)
        t = self.totals
        t.tally = t.tally + block
        t.secret_bits_asymptotic += secret
        t.key_time_s += duration_s
        t.blocks += 1
        m = self.monitor
        m.record("qber_z", t_s, qz)
        m.record("qber_x", t_s, qx)
        m.record("sifted_key_rate_bps", t_s, block.n_z / duration_s)
        m.record("secret_key_rate_bps_asymptotic", t_s, secret / duration_s)
        distilled = self._distilled_fraction()  # else the block's own estimate, as secret_fraction(block) gives it
        fraction = distilled if distilled is not None else secret / block.n_z
        m.record("secret_key_rate_bps", t_s, fraction * block.n_z / duration_s)
        self._block = SiftedTally()
        self._block_time_s = 0.0
