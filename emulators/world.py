"""The emulated world: one SimPy environment counting integer picoseconds and one seeded stream per device.

Every device draws from its own ``numpy.random.Generator``, derived from the scenario seed and the
device's name, so adding a device or reordering construction never changes another device's stream.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

import numpy as np
import simpy
from scipy.special import pdtr

PS_PER_S = 1_000_000_000_000
_FLAT_GRID = 8  # FlatPoisson tables at λ0 = multiples of 1/8
_FLAT_CELLS = 1 << 16  # cells of a FlatPoisson table
_CELL_SHIFT = np.uint64(64 - 16)  # raw bits → cell
_FLOAT_SHIFT = np.uint64(11)  # raw bits → 53-bit integer of a uniform
_FLOAT_UNIT = 2.0**-53
_FLAT_BATCH = 1 << 15  # FlatPoisson draws rows of up to this many entries ahead, this many at a time


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


class FlatPoisson:
    """Rows of independent Poisson(λ) counts with one λ (a flat background), sampled exactly but cheaply.

    λ = λ0 + δ with λ0 on a grid of 1/8. The Poisson(λ0) part inverts one uniform per entry through a
    cached table of 2¹⁶ cells of the uniform's range (its leading 16 bits): a cell lying within one step of
    the CDF gives its count at once, and the few cells that straddle a step are resolved by a binary
    search on the CDF itself, so the inversion is exact to the CDF's float precision (tails beyond 12 σ,
    < 1e-30, are folded into the last count kept). The Poisson(δ) part places a Poisson(n·δ) number of
    single counts uniformly over the row (Poisson counts in n bins are a Poisson total spread
    multinomially), and a sum of independent Poissons is Poisson(λ0 + δ). Rows of up to 2¹⁵ entries are
    inverted 2¹⁵ entries at a time and handed out one by one (independent draws, whenever they are used).
    A row of 1024 at λ ≈ 16 costs ~8 µs against ~50 µs for ``Generator.poisson``; a new λ0 builds its
    table once (~1 ms).
    """

    def __init__(self, rng: np.random.Generator, kept: int = 8) -> None:
        self._rng = rng
        self._kept = kept  # tables and batches of rows kept, least recently used dropped
        self._tables: dict[float, tuple[np.ndarray, np.ndarray, int]] = {}  # λ0 → (cells, CDF, first count)
        self._batches: dict[tuple[float, int], Iterator[np.ndarray]] = {}  # (λ0, n) → rows drawn ahead

    def __call__(self, mean: float, n: int) -> np.ndarray:
        """``n`` independent Poisson(``mean``) counts, int64."""
        rng = self._rng
        base = math.floor(mean * _FLAT_GRID) / _FLAT_GRID
        counts = self._base_row(base, n) if base > 0 else np.zeros(n, np.int64)
        extra = mean - base
        if extra > 0:  # uniform bins as ⌊u·n⌋: exact for n a power of two, else biased by < n·2⁻⁵³
            np.add.at(counts, (rng.random(rng.poisson(extra * n)) * n).astype(np.intp), 1)
        return counts

    def _base_row(self, base: float, n: int) -> np.ndarray:
        """A row of Poisson(λ0 = ``base``) counts; short rows come from a batch drawn ahead, sharing its fixed cost."""
        if n > _FLAT_BATCH:
            return self._invert(base, n)
        key = (base, n)
        rows = self._batches.pop(key, None)
        row = None if rows is None else next(rows, None)
        if row is None:
            rows = iter(self._invert(base, _FLAT_BATCH // n * n).reshape(-1, n))
            row = next(rows)
            if len(self._batches) >= self._kept:
                del self._batches[next(iter(self._batches))]
        self._batches[key] = rows
        return row.copy()

    def _invert(self, base: float, n: int) -> np.ndarray:
        cells, cdf, k_min = self._table(base)
        raw = self._rng.bit_generator.random_raw(n)  # the 64 random bits from which Generator.random takes 53
        counts = cells.take(raw >> _CELL_SHIFT)  # the cell is the uniform's leading 16 bits
        straddling = np.flatnonzero(counts < 0)
        if straddling.size:
            u = (raw[straddling] >> _FLOAT_SHIFT) * _FLOAT_UNIT  # the uniform, as Generator.random makes it
            counts[straddling] = np.searchsorted(cdf, u, side="right") + k_min
        return counts

    def _table(self, mean: float) -> tuple[np.ndarray, np.ndarray, int]:
        table = self._tables.pop(mean, None)
        if table is None:
            spread = 12.0 * math.sqrt(mean) + 12.0
            k_min = max(0, math.floor(mean - spread))
            cdf = pdtr(np.arange(k_min, math.ceil(mean + spread) + 1), mean)
            edges = np.arange(_FLAT_CELLS + 1) / _FLAT_CELLS
            lo = np.searchsorted(cdf, edges[:-1], side="right")  # count at a cell's lowest uniform
            hi = np.searchsorted(cdf, edges[1:], side="left")  # count just below its highest
            table = (np.where(lo == hi, lo + k_min, -1).astype(np.int64), cdf, k_min)
            if len(self._tables) >= self._kept:
                del self._tables[next(iter(self._tables))]
        self._tables[mean] = table
        return table
