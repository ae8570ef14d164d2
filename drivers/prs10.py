"""SRS PRS10 rubidium frequency standard over RS-232, and the FS725 bench standard built around it.

Wire protocol: 9600 baud, 8N1, XON/XOFF; two-letter ASCII commands terminated by CR. A query (``XX?``) is
answered by one CR-terminated line; a set command (``XX n``) is not answered (none of the drivers cited
below reads a reply after one) — a refused command only raises a flag in status byte ST6 (bit 5 bad
syntax, bit 6 bad parameter).

Sources:

- Replies recorded from two PRS10 units, LBNL (glacier.lbl.gov/gtp/MC/prs-10_Settings1.html):
  ``ID`` → ``PRS10_3.24_SN_19957``, ``LO`` → ``1`` (frequency lock loop locked), ``SF`` → ``-245``,
  ``ST`` → ``0,0,0,0,4,0``, ``AD10`` → ``0.728`` (volts).
- Query forms ``ID?``, ``LO?``, ``ST?``, ``ADn?`` and the six ST? status-byte tables, transcribed from the
  PRS10 manual by github.com/taishi-hashimoto/prs10 (``src/prs10/__init__.py``) and
  github.com/brokebit/PRS10-Status-Mon, both at 9600 baud, 8N1, XON/XOFF (an older driver,
  imrehg/labhardware ``drivers/rbclock.py``, uses 2 stop bits); ``SF?`` and ``SF n`` (with a space) as
  sent by timotee-y/PRS10-Steering ``tools/controlcmd.py``; AD0..AD19 as listed by an FS725 exporter
  (``commands.py``, ``fs725_commands``).
- ``SF n``: frequency offset in parts in 1e12, integers, range ±2000 — from the PRS10 manual's command
  list; the ±2000 range was NOT re-checked against a retrievable copy of the manual (see MAX_STEER_PPT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from drivers.errors import GarbledReply, check_range
from drivers.interfaces.clock import ClockConstraints, ClockStatus
from drivers.serial_line import PortLike, SerialLine, open_port

BAUDRATE = 9600
MAX_STEER_PPT = 2000  # |SF n| accepted, parts in 1e12 (PRS10 manual, unverified here)
ANALOG_CHANNELS = range(20)  # AD0..AD19


@dataclass(frozen=True)
class PRS10StatusBytes:
    """The six ST? bytes; bit k set = condition k of that byte's table in the manual, 0 = all clear."""

    power_lamp: int  # ST1: +24 V supplies, discharge lamp
    rf_synthesizer: int  # ST2
    temperatures: int  # ST3: lamp, crystal, cell and case temperature controllers
    frequency_lock: int  # ST4: frequency lock-loop control
    pps_lock: int  # ST5: phase lock to an external 1 pps
    system: int  # ST6: system events (bit 5 bad command syntax, bit 6 bad command parameter)


class PRS10:
    """A PRS10 behind the FrequencyReference contract, plus its identification and diagnostics."""

    def __init__(self, wire: PortLike, *, name: str, timeout_s: float = 1.0, retries: int = 2) -> None:
        self.name = name
        self._line = SerialLine(wire, device=name, terminator=b"\r", timeout_s=timeout_s, retries=retries)

    @classmethod
    def open(cls, url: str, *, name: str, timeout_s: float = 1.0) -> Self:
        """Open the instrument on serial port ``url`` (``/dev/ttyUSB0``, ``COM3``, a pyserial URL)."""
        return cls(open_port(url, baudrate=BAUDRATE, timeout_s=timeout_s, xonxoff=True), name=name,
                   timeout_s=timeout_s)

    def close(self) -> None:
        self._line.close()

    async def identify(self) -> str:
        """``ID?``: model, firmware and serial number, e.g. ``PRS10_3.24_SN_19957``."""
        reply = await self._query("ID?")
        if not reply or not reply.isprintable():
            raise GarbledReply(self.name, "ID?", reply)
        return reply

    async def constraints(self) -> ClockConstraints:
        return ClockConstraints(max_steer_ppt=float(MAX_STEER_PPT))

    async def status(self) -> ClockStatus:
        """Lock from ``LO?`` (1 = frequency lock loop locked), steering from ``SF?`` (parts in 1e12)."""
        locked = await self._query_int("LO?")
        if locked not in (0, 1):
            raise GarbledReply(self.name, "LO?", str(locked))
        return ClockStatus(locked=bool(locked), frequency_offset_ppt=float(await self._query_int("SF?")))

    async def steer(self, offset_ppt: float) -> None:
        """``SF n``: set the frequency offset, parts in 1e12.

        The PRS10 takes integer steps of 1e-12: ``offset_ppt`` is rounded to the nearest integer (halves to
        even) after the range check, so 12.4 sends ``SF 12``. Raises SetpointOutOfRange beyond ±2000,
        sending nothing.
        """
        check_range(self.name, "offset_ppt", offset_ppt, -MAX_STEER_PPT, MAX_STEER_PPT)
        await self._line.send(f"SF {round(offset_ppt)}")

    async def status_bytes(self) -> PRS10StatusBytes:
        """``ST?``: the six status bytes (reading them clears latched conditions)."""
        reply = await self._query("ST?")
        try:
            values = [int(v) for v in reply.split(",")]
        except ValueError:
            raise GarbledReply(self.name, "ST?", reply) from None
        if len(values) != 6 or not all(0 <= v <= 255 for v in values):
            raise GarbledReply(self.name, "ST?", reply)
        return PRS10StatusBytes(*values)

    async def analog_v(self, channel: int) -> float:
        """``ADn?``: voltage at analog test point n (0..19), V; e.g. AD10 is the case temperature / 100 °C."""
        if channel not in ANALOG_CHANNELS:
            raise ValueError(f"{self.name}: no analog channel {channel}, expected 0..19")
        command = f"AD{channel}?"
        reply = await self._query(command)
        try:
            return float(reply)
        except ValueError:
            raise GarbledReply(self.name, command, reply) from None

    async def _query(self, command: str) -> str:
        return (await self._line.exchange(command, idempotent=True)).strip()

    async def _query_int(self, command: str) -> int:
        reply = await self._query(command)
        try:
            return int(reply)
        except ValueError:
            raise GarbledReply(self.name, command, reply) from None


class FS725(PRS10):
    """SRS FS725 benchtop rubidium standard: its rear RS-232 port reaches the PRS10 inside.

    Same wire protocol as the PRS10: two independent FS725 codebases use the PRS10 mnemonics unchanged
    (``LO?``, ``SF?``, ``ST?``, ``ADn?``, ``SN?``) at 9600 baud, 8N1, CR-terminated, and read bare replies
    with no prompt (an FS725 Prometheus exporter, ``fs725.py``/``commands.py``; a lab's ``RbClock`` VISA
    driver with ``read_termination='\\r'``). No difference in baud, pass-through syntax or prompt was found.
    """
