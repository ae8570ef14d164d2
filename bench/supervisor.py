"""Supervisor of one link: the link's mode, fault episodes, the event log, availability and interventions.

Modes (seed 000: "Fault recovery: Automatic detection and recovery from system failures"):

    boot → acquire → align → key ⇄ degraded / recovering → (acquire | align) → key

- **boot**: every instrument is asked for its constraints and status; one that does not answer is retried.
- **acquire**: photon-only sync acquisition (:mod:`bench.acquisition`).
- **align**: sync is tracked and the control loops run, but no key is counted until ``align_s`` of
  acquisitions show both QBERs under their limits.
- **key**: key blocks are tallied.
- **degraded**: a fault is diagnosed and its recovery is waiting on the link (counts to come back, a
  clock to relock, an instrument to answer).
- **recovering**: the stack is acting on a fault (a fringe scan, a sync reacquisition).

The supervisor only books: the stack (:mod:`bench.stack`) reads the signals, calls :meth:`Supervisor.fault`
with a diagnosis and the action it takes, and calls :meth:`Supervisor.clear` when the signal is healthy
again. A fault is an *episode*: opened once, however many acquisitions show it, and closed with its time
to recover. An episode still open after ``recovery_budget_s`` counts one manual intervention — the run
keeps trying, and the report shows it; it is never hidden. Link-level episodes (the link left key
generation) that close count as automatic restarts (seed 000: "Automatic restarts: 9 times"), one per
outage: a link-level fault that opens within ``restart_settle_s`` of the previous one's recovery (the sync
peak or the fringe settling after 20 min without photons) is a *follow-on*, booked as its own episode but
part of the same restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from bench.monitor import Monitor


class Mode(enum.StrEnum):
    BOOT = "boot"
    ACQUIRE = "acquire"
    ALIGN = "align"
    KEY = "key"
    DEGRADED = "degraded"
    RECOVERING = "recovering"


class SupervisorSettings(BaseModel):
    """Fault detection and recovery thresholds; also the ``stack.supervisor`` section of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    counts_lost_fraction: float = Field(0.2, gt=0, lt=1, description=(
        "a node's count rate below this fraction of its running reference means its counts vanished"))
    counts_back_fraction: float = Field(0.5, gt=0, le=1, description="counts are back above this fraction")
    reference_tau_s: float = Field(60.0, gt=0, description="time constant of the count-rate reference, s")
    efficiency_drop_fraction: float = Field(0.03, gt=0, lt=1, description=(
        "a node's count rate relative to the other's this far below its reference: its detection efficiency"
        " (polarization) or transmission dropped"))
    efficiency_back_fraction: float = Field(0.01, gt=0, lt=1, description="recovered within this of the reference")
    efficiency_settle_s: float = Field(600.0, gt=0, description=(
        "an efficiency drop that lasts this long is taken as the new level (e.g. a lasting loss step), s"))
    qber_window_bits: int = Field(4000, ge=100, description="sifted bits per basis in the rolling QBER check")
    qber_z_max: float = Field(0.08, gt=0, lt=0.5, description="QBERz above this is a fault")
    qber_x_max: float = Field(0.08, gt=0, lt=0.5, description="QBERx above this is a fault")
    align_s: float = Field(2.0, ge=0, description="healthy time in align before key is counted, s")
    retry_s: float = Field(5.0, gt=0, description="wait before asking an instrument that failed again, s")
    status_poll_s: float = Field(10.0, gt=0, description="period of the clock-lock status poll, s")
    recovery_budget_s: float = Field(3600.0, gt=0, description=(
        "an episode open longer than this counts one manual intervention, s"))
    restart_settle_s: float = Field(60.0, ge=0, description=(
        "a link-level fault opening within this long of the previous one's recovery is part of the same"
        " restart, s"))


@dataclass
class Episode:
    """One fault, from its first sign to the healthy signal that closes it."""

    key: str  # what identifies it while open, e.g. "counts lost at bob"
    diagnosis: str
    start_s: float
    link_level: bool  # the link left key generation because of it
    actions: list[str] = field(default_factory=list)
    end_s: float | None = None
    manual: bool = False  # outlived the recovery budget
    follow_on: bool = False  # link-level, opened while another was open or within restart_settle_s of its end

    @property
    def recovery_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s

    def as_dict(self) -> dict[str, object]:
        return {"fault": self.diagnosis, "start_s": self.start_s, "end_s": self.end_s,
                "recovery_s": self.recovery_s, "actions": list(self.actions), "link_level": self.link_level,
                "follow_on": self.follow_on, "manual_intervention": self.manual}


class Supervisor:
    """Books the mode, the episodes and the time spent generating key."""

    def __init__(self, settings: SupervisorSettings, monitor: Monitor) -> None:
        self.settings = settings
        self.monitor = monitor
        self.mode = Mode.BOOT
        self.episodes: list[Episode] = []
        self._open: dict[str, Episode] = {}
        self.manual_interventions = 0
        self._link_recovered_s: float | None = None  # when the last link-level episode closed

    def enter(self, mode: Mode, t_s: float, why: str = "") -> None:
        if mode is self.mode:
            return
        self.monitor.event(t_s, f"{self.mode} → {mode}" + (f": {why}" if why else ""))
        self.mode = mode

    def fault(self, t_s: float, key: str, diagnosis: str, action: str, *, link_level: bool = True) -> Episode:
        """Open the episode ``key`` (or add ``action`` to it if already open)."""
        episode = self._open.get(key)
        if episode is None:
            episode = self._open[key] = Episode(key, diagnosis, t_s, link_level)
            episode.follow_on = link_level and (
                any(e.link_level for e in self._open.values() if e is not episode)
                or (self._link_recovered_s is not None
                    and t_s - self._link_recovered_s <= self.settings.restart_settle_s))
            self.episodes.append(episode)
            self.monitor.event(t_s, f"fault: {diagnosis} → {action}")
            episode.actions.append(action)
        elif action not in episode.actions:
            episode.actions.append(action)
            self.monitor.event(t_s, f"{diagnosis}: {action}")
        return episode

    def is_open(self, key: str) -> bool:
        return key in self._open

    def episode(self, key: str) -> Episode:
        """The open episode ``key``."""
        return self._open[key]

    @property
    def open_link_faults(self) -> list[Episode]:
        return [e for e in self._open.values() if e.link_level]

    def clear(self, t_s: float, key: str) -> None:
        """The signal behind ``key`` is healthy again: close its episode."""
        episode = self._open.pop(key, None)
        if episode is not None:
            episode.end_s = t_s
            if episode.link_level:
                self._link_recovered_s = t_s
            self.monitor.event(t_s, f"recovered: {episode.diagnosis} after {episode.recovery_s:.1f} s")

    def clear_link_faults(self, t_s: float) -> None:
        """Key generation resumed: every link-level episode is over."""
        for key in [k for k, e in self._open.items() if e.link_level]:
            self.clear(t_s, key)

    def check_budget(self, t_s: float) -> None:
        """Count a manual intervention for each open episode that has just outlived the recovery budget."""
        for episode in self._open.values():
            if not episode.manual and t_s - episode.start_s > self.settings.recovery_budget_s:
                episode.manual = True
                self.manual_interventions += 1
                self.monitor.event(t_s, f"manual intervention needed: {episode.diagnosis} not cleared in "
                                        f"{self.settings.recovery_budget_s:g} s")

    @property
    def automatic_restarts(self) -> int:
        """Outages the link came back from by itself: closed link-level episodes that are not follow-ons,
        none of whose episodes needed a manual intervention."""
        outages: list[list[Episode]] = []
        for e in self.episodes:
            if e.link_level:
                if e.follow_on and outages:
                    outages[-1].append(e)
                else:
                    outages.append([e])
        return sum(all(e.end_s is not None and not e.manual for e in outage) for outage in outages)

    def recovery_times_s(self) -> dict[str, list[float]]:
        """Closed episodes' recovery times by diagnosis."""
        times: dict[str, list[float]] = {}
        for e in self.episodes:
            if e.recovery_s is not None:
                times.setdefault(e.diagnosis, []).append(e.recovery_s)
        return times
