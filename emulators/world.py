"""The emulated world: one SimPy environment counting integer picoseconds and one seeded stream per device.

Every device draws from its own ``numpy.random.Generator``, derived from the scenario seed and the
device's name, so adding a device or reordering construction never changes another device's stream.
"""

from __future__ import annotations

import zlib

import numpy as np
import simpy

PS_PER_S = 1_000_000_000_000


class World:
    def __init__(self, seed: int, env: simpy.Environment | None = None) -> None:
        self.seed = seed
        self.env = env if env is not None else simpy.Environment(initial_time=0)

    def rng(self, device_name: str) -> np.random.Generator:
        """The generator of ``device_name``: the same name and seed always give the same stream."""
        key = zlib.crc32(device_name.encode())
        return np.random.default_rng(np.random.SeedSequence(entropy=self.seed, spawn_key=(key,)))

    @property
    def now_ps(self) -> int:
        return int(self.env.now)


class NormalStream:
    """Standard normal scalars from a generator, drawn in chunks so a scalar costs a list index."""

    def __init__(self, rng: np.random.Generator, chunk: int = 4096) -> None:
        self._rng = rng
        self._chunk = chunk
        self._values: list[float] = []
        self._next = 0

    def __call__(self) -> float:
        if self._next == len(self._values):
            self._values = self._rng.standard_normal(self._chunk).tolist()
            self._next = 0
        z = self._values[self._next]
        self._next += 1
        return z
