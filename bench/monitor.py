"""Time series of every metric the stack produces, on the event loop's clock."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class Monitor:
    """Append-only named series of (time in s, value); cheap to record, converted to arrays on read."""

    def __init__(self) -> None:
        self._t: dict[str, list[float]] = defaultdict(list)
        self._v: dict[str, list[float]] = defaultdict(list)
        self.events: list[tuple[float, str]] = []

    def record(self, name: str, t_s: float, value: float) -> None:
        self._t[name].append(t_s)
        self._v[name].append(value)

    def event(self, t_s: float, text: str) -> None:
        """A discrete occurrence (sync acquired, sync lost, …) for the timeline."""
        self.events.append((t_s, text))

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self._t.get(name, ()), float), np.asarray(self._v.get(name, ()), float)

    def last(self, name: str, default: float = float("nan")) -> float:
        values = self._v.get(name)
        return values[-1] if values else default
