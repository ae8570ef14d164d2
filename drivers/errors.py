"""One error hierarchy for every driver, real or emulated.

Every error carries the name of the device that raised it, so a message in a log or a report always says
*which* instrument misbehaved (``rb-alice``, ``tagger-link``), not only what went wrong.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base class: something went wrong talking to, or inside, the device named ``device``."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.detail = message


class DeviceTimeout(DriverError):
    """The device did not answer within its timeout."""

    def __init__(self, device: str, timeout_s: float, request: str = "") -> None:
        what = f" to {request!r}" if request else ""
        super().__init__(device, f"no reply{what} within {timeout_s:g} s")
        self.timeout_s = timeout_s


class GarbledReply(DriverError):
    """The device answered, but the reply cannot be parsed."""

    def __init__(self, device: str, request: str, reply: bytes | str) -> None:
        super().__init__(device, f"garbled reply to {request!r}: {reply!r}")
        self.request = request
        self.reply = reply


class SetpointOutOfRange(DriverError):
    """A setpoint outside the device's constraints was refused before anything was sent."""

    def __init__(self, device: str, quantity: str, value: float, low: float, high: float) -> None:
        super().__init__(device, f"{quantity}={value:g} outside [{low:g}, {high:g}]")
        self.quantity = quantity
        self.value = value
        self.low = low
        self.high = high


class DeviceOffline(DriverError):
    """The device is known to be unavailable (e.g. a detector recycling its cryocooler)."""


def check_range(device: str, quantity: str, value: float, low: float, high: float) -> None:
    """Raise :class:`SetpointOutOfRange` unless ``low <= value <= high``."""
    if not (low <= value <= high):
        raise SetpointOutOfRange(device, quantity, value, low, high)
