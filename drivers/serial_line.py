"""Async, line-oriented command/reply exchange over a serial port (RS-232 ASCII instruments).

A :class:`SerialLine` writes ``command + terminator`` and reads the reply up to ``reply_end`` (the same
terminator for most instruments, the ``>`` prompt for the MDT693B). One exchange at a time (an
:class:`asyncio.Lock`), one timeout per attempt, retries with exponential backoff only for exchanges the
caller marks idempotent (queries).

Two kinds of port, one code path:

- a blocking pyserial port (:func:`open_port`: ``serial.serial_for_url`` with a read timeout, so
  ``loop://`` and registered URL handlers work) is read and written in a worker thread
  (:func:`asyncio.to_thread`), so the event loop never waits on the wire;
- any other port-like object (a test's scripted wire, an emulated wire in virtual time, or a pyserial
  port opened with ``timeout=0``) must return at once; it is polled on the event loop, and the timeout
  is measured with the loop's clock, so it is virtual time under an emulation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVar

import serial

from drivers.errors import DeviceTimeout, GarbledReply

POLL_S = 0.002  # pause between reads of a non-blocking port while a reply is awaited, s

T = TypeVar("T")


class PortLike(Protocol):
    """The part of the pyserial port API a :class:`SerialLine` uses."""

    def write(self, data: bytes, /) -> int | None: ...

    def read_until(self, expected: bytes = ..., size: int | None = None) -> bytes: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


def open_port(url: str, *, baudrate: int, timeout_s: float, xonxoff: bool = False) -> serial.SerialBase:
    """Open ``url`` (``/dev/ttyUSB0``, ``COM3``, ``loop://``, ...) at ``baudrate``, 8N1, blocking up to
    ``timeout_s`` per read."""
    return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s, xonxoff=xonxoff)


class SerialLine:
    """Serialized command/reply exchanges with the instrument ``device`` over ``port``."""

    def __init__(
        self,
        port: PortLike,
        *,
        device: str,
        terminator: bytes = b"\r",
        reply_end: bytes | None = None,
        timeout_s: float = 1.0,
        retries: int = 2,
        backoff_s: float = 0.05,
    ) -> None:
        self.device = device
        self.terminator = terminator
        self.reply_end = terminator if reply_end is None else reply_end
        self.timeout_s = timeout_s
        self.retries = retries  # extra attempts of an idempotent exchange after a timeout or partial reply
        self.backoff_s = backoff_s  # wait before the first retry, doubled for each further one, s
        self._port = port
        self._blocking = isinstance(port, serial.SerialBase) and port.timeout != 0
        self._lock = asyncio.Lock()

    async def exchange(self, command: str, *, idempotent: bool = False) -> str:
        """Send ``command`` and return its reply, without ``reply_end``.

        Raises DeviceTimeout when nothing comes back within ``timeout_s``, GarbledReply when the reply is
        cut short or not ASCII; an ``idempotent`` exchange is first retried ``retries`` times.
        """
        async with self._lock:
            for attempt in range(self.retries if idempotent else 0):
                try:
                    return await self._exchange_once(command)
                except (DeviceTimeout, GarbledReply):
                    await asyncio.sleep(self.backoff_s * 2**attempt)
            return await self._exchange_once(command)

    async def send(self, command: str) -> None:
        """Send ``command``, which the instrument does not answer."""
        async with self._lock:
            await self._call(self._port.write, command.encode("ascii") + self.terminator)

    def close(self) -> None:
        self._port.close()

    async def _exchange_once(self, command: str) -> str:
        self._port.reset_input_buffer()  # stale prompts, late replies to a timed-out attempt
        await self._call(self._port.write, command.encode("ascii") + self.terminator)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        reply = b""
        while True:
            reply += await self._call(self._port.read_until, self.reply_end)
            if reply.endswith(self.reply_end):
                break
            if loop.time() >= deadline:
                if not reply:
                    raise DeviceTimeout(self.device, self.timeout_s, command)
                raise GarbledReply(self.device, command, reply)
            if not self._blocking:
                await asyncio.sleep(POLL_S)
        try:
            return reply[: -len(self.reply_end)].decode("ascii")
        except UnicodeDecodeError:
            raise GarbledReply(self.device, command, reply) from None

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._blocking:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)
