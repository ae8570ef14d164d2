"""Thorlabs MDT693B 3-axis open-loop piezo controller over its serial port (USB virtual COM or RS-232).

Wire protocol: 115200 baud, 8N1, no flow control; ASCII commands terminated by CR; every command, set or
query, ends with the ``>`` prompt. A query answers before the prompt, numbers in brackets:
``xvoltage?`` → ``[  24.8]\\r>``, ``vlimit?`` → ``[ 100]\\r>`` (the front-panel limit switch, volts);
``id?`` answers several lines; an unknown command answers ``CMD_NOT_DEFINED>``. With echo on
(``echo=1``) the controller first repeats the command line (``xvoltage=24.680\\r``); this driver strips
an echo when it sees one and can turn echo off (``echo=0``). Input is flushed before each command, so a
stale prompt cannot shift replies.

Sources: Thorlabs MDT693B/MDT694B manual command table as transcribed in a ``Thorpezo`` driver
(``PCbase``/``MDT693B`` classes: ``xvoltage=``, ``xvoltage?``, ``vlimit?``, ``id?``, ``echo=``, ``>`` line
dropped); InstrumentKit ``instruments/thorlabs/mdt693B.py`` (115200 baud, prompt ``>``); the ``mdt69x``
package (reads to ``>``, brackets stripped, ``CMD_NOT_DEFINED>``); a hardware capture of an MDT693B,
firmware 1.05 (``vlimit?`` → ``[ 100]``, ``xvoltage?`` → ``[  24.8]``, echo of each command line). The
manual table describes ``vlimit?`` as a switch code (75 V = 0, 100 V = 1, 150 V = 2), while the capture
shows volts; this driver accepts only 75, 100 or 150 and calls anything else garbled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import Literal, Self, cast

from drivers.errors import GarbledReply, check_range
from drivers.interfaces.interferometer import PhaseActuatorConstraints, PhaseActuatorStatus
from drivers.serial_line import PortLike, SerialLine, open_port

BAUDRATE = 115200
VOLTAGE_LIMITS_V = (75.0, 100.0, 150.0)  # positions of the front-panel limit switch
Axis = Literal["x", "y", "z"]

_BRACKETED = re.compile(r"\[\s*([-+]?\d+(?:\.\d*)?)\s*\]")


class MDT693B:
    """The instrument: per-axis output voltage, the voltage limit, identification and echo."""

    def __init__(self, wire: PortLike, *, name: str, timeout_s: float = 1.0, retries: int = 2) -> None:
        self.name = name
        self._line = SerialLine(wire, device=name, terminator=b"\r", reply_end=b">", timeout_s=timeout_s,
                                retries=retries)

    @classmethod
    def open(cls, url: str, *, name: str, timeout_s: float = 1.0) -> Self:
        """Open the controller on serial port ``url`` (``/dev/ttyUSB0``, ``COM4``, a pyserial URL)."""
        return cls(open_port(url, baudrate=BAUDRATE, timeout_s=timeout_s), name=name, timeout_s=timeout_s)

    def close(self) -> None:
        self._line.close()

    async def identify(self) -> str:
        """``id?``: the non-empty lines of the answer joined by ``; `` (model, firmware, ...)."""
        lines = [line.strip() for line in (await self._exchange("id?", idempotent=True)).splitlines()]
        reply = "; ".join(line for line in lines if line)
        if not reply.startswith("Model"):
            raise GarbledReply(self.name, "id?", reply)
        return reply

    async def set_echo(self, on: bool) -> None:
        """``echo=1`` / ``echo=0``: whether the controller repeats each command line."""
        await self._command(f"echo={int(on)}")

    async def voltage_limit_v(self) -> float:
        """``vlimit?``: the output voltage limit set by the front-panel switch, V."""
        limit_v = await self._query_number("vlimit?")
        if limit_v not in VOLTAGE_LIMITS_V:
            raise GarbledReply(self.name, "vlimit?", f"[{limit_v:g}]")
        return limit_v

    async def axis_voltage_v(self, axis: Axis) -> float:
        """``xvoltage?``: output voltage of ``axis``, V (displayed to 0.1 V)."""
        return await self._query_number(f"{_checked(axis)}voltage?")

    async def set_axis_voltage(self, axis: Axis, voltage_v: float) -> None:
        """``xvoltage=24.680``: set the output voltage of ``axis``, V (the controller clamps to its limit)."""
        await self._command(f"{_checked(axis)}voltage={voltage_v:.3f}")

    async def _command(self, command: str) -> None:
        reply = await self._exchange(command, idempotent=False)
        if reply.strip():
            raise GarbledReply(self.name, command, reply)

    async def _query_number(self, command: str) -> float:
        reply = await self._exchange(command, idempotent=True)
        match = _BRACKETED.fullmatch(reply.strip())
        if match is None:
            raise GarbledReply(self.name, command, reply)
        return float(match[1])

    async def _exchange(self, command: str, *, idempotent: bool) -> str:
        reply = await self._line.exchange(command, idempotent=idempotent)
        echo = command + "\r"
        return reply.removeprefix(echo)


class MDT693BPhaseActuator:
    """One MDT693B axis driving the interferometer piezo, behind the PhaseActuator contract.

    Range [0 V, vlimit], read once and cached (the limit is a front-panel switch). The MDT693B measures no
    temperature: ``temperature_source`` (an async callable returning °C, e.g. a housing sensor's driver)
    supplies ``status().temperature_c``; without one it is NaN.
    """

    def __init__(
        self,
        controller: MDT693B,
        *,
        axis: Axis = "x",
        temperature_source: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        self.name = controller.name
        self._controller = controller
        self._axis = _checked(axis)
        self._temperature_source = temperature_source
        self._constraints: PhaseActuatorConstraints | None = None

    async def constraints(self) -> PhaseActuatorConstraints:
        if self._constraints is None:
            self._constraints = PhaseActuatorConstraints(0.0, await self._controller.voltage_limit_v())
        return self._constraints

    async def status(self) -> PhaseActuatorStatus:
        voltage_v = await self._controller.axis_voltage_v(self._axis)
        temperature_c = math.nan if self._temperature_source is None else await self._temperature_source()
        return PhaseActuatorStatus(voltage_v=voltage_v, temperature_c=temperature_c)

    async def set_voltage(self, voltage_v: float) -> None:
        """Drive the piezo. Raises SetpointOutOfRange outside [0, vlimit], sending no setpoint."""
        c = await self.constraints()
        check_range(self.name, "voltage_v", voltage_v, c.min_voltage_v, c.max_voltage_v)
        await self._controller.set_axis_voltage(self._axis, voltage_v)


def _checked(axis: str) -> Axis:
    if axis not in ("x", "y", "z"):
        raise ValueError(f"no axis {axis!r}, expected 'x', 'y' or 'z'")
    return cast(Axis, axis)
