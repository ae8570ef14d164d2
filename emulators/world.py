"""The emulated world: one SimPy environment counting integer picoseconds and one seeded stream per device.

Every device draws from its own ``numpy.random.Generator``, derived from the scenario seed and the
device's name, so adding a device or reordering construction never changes another device's stream.

The ``stats`` fidelity's exact Poisson samplers are compiled (numba, cached on disk): a 0.5 s acquisition
draws ~1300 Poisson counts, and numpy's per-call overhead alone (~8 µs for ``Generator.poisson`` on an
array) exceeds the time budget of the whole acquisition. They draw straight from the device generator's
own bit generator (numpy's C ``bitgen_t``), so the stream stays the device's and the run stays
reproducible; Poisson counts are drawn exactly, by inversion below a mean of 10 and by Hörmann's PTRS
transformed rejection (as numpy does) above.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from functools import partial

import numpy as np
import simpy
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic
from scipy.special import pdtr

PS_PER_S = 1_000_000_000_000
_FLAT_GRID = 8  # FlatPoisson tables at λ0 = multiples of 1/8
_CELL_BITS = 16  # a FlatPoisson table has 2¹⁶ cells of the uniform's range ...
_CELLS_PER_WORD = 64 // _CELL_BITS  # ... and a 64-bit word picks four of them
_FLOAT_SHIFT = np.uint64(11)  # raw bits → 53-bit integer of a uniform
_FLOAT_UNIT = 2.0**-53
_PTRS_MIN_MEAN = 10.0  # Poisson means from here on are drawn by PTRS, below by inversion
_CORE_MIN_COUNT = 2.0  # peak bins expecting fewer counts than about this are drawn as single points
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_NO_MEANS = np.empty(0)
_NO_COUNTS = np.empty(0, np.int64)
_NO_TABLE = (np.empty(0, np.int32), np.empty(0), 0)  # a FlatPoisson table for λ0 = 0
_RECIPROCALS = 1.0 / np.maximum(np.arange(64), 1)  # 1/k, for the inversion's pmf recurrence


class Unresumable(RuntimeError):
    """The SimPy environment holds an event that a checkpoint could not carry (a process, a bare timeout)."""


class World:
    """The SimPy environment and the devices' random streams. Emulators schedule their future actions with
    :meth:`at`, never with SimPy processes: a pending call is a picklable callable, so the world pickles
    without its environment and :meth:`resume` re-schedules the calls on a fresh one (docs/decisions/0004)."""

    def __init__(self, seed: int, env: simpy.Environment | None = None) -> None:
        self.seed = seed
        self.env = env if env is not None else simpy.Environment(initial_time=0)
        self._pending: dict[int, tuple[int, Callable[[], object]]] = {}  # call number → (due at, ps; action)
        self._calls = 0

    def at(self, t_ps: int, action: Callable[[], object]) -> None:
        """Call ``action()`` at virtual time ``t_ps`` (now, if that has passed). ``action`` must pickle (a bound
        method, a ``functools.partial`` of one): pending calls are part of a checkpoint."""
        number = self._calls
        self._calls += 1
        t_ps = max(t_ps, self.now_ps)
        self._pending[number] = (t_ps, action)
        self.env.timeout(t_ps - self.now_ps).callbacks.append(partial(self._fire, number))

    def _fire(self, number: int, _event: object) -> None:
        _, action = self._pending.pop(number)
        action()

    def check_resumable(self) -> None:
        """Raise :class:`Unresumable` if the environment holds an event other than a pending :meth:`at` call:
        a checkpoint would drop it silently."""
        for t_ps, _priority, _eid, event in self.env._queue:
            callbacks = event.callbacks or []
            if not (len(callbacks) == 1 and isinstance(callbacks[0], partial) and callbacks[0].func == self._fire):
                raise Unresumable(f"SimPy event at t={t_ps / PS_PER_S:.6f} s with callbacks {callbacks!r} is not a "
                                  "World.at call: a live process or timeout cannot be checkpointed")

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        del state["env"]  # rebuilt by resume()
        return state

    def resume(self, env: simpy.Environment) -> None:
        """Continue on ``env`` (a fresh environment at the checkpoint's time): the pending calls are scheduled
        again in their original order, so calls due at the same instant keep theirs."""
        self.env = env
        for number, (t_ps, _action) in sorted(self._pending.items()):
            env.timeout(t_ps - self.now_ps).callbacks.append(partial(self._fire, number))

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


@intrinsic
def _next_word(typingctx, bitgen_address):  # type: ignore[no-untyped-def]
    """The next 64-bit word of the numpy C ``bitgen_t`` at ``bitgen_address``: its ``next_uint64(state)``."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        void_p = ir.IntType(8).as_pointer()
        next_uint64 = ir.FunctionType(ir.IntType(64), [void_p]).as_pointer()
        bitgen = builder.inttoptr(args[0], ir.LiteralStructType([void_p, next_uint64]).as_pointer())
        zero, one = ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 1)
        state = builder.load(builder.gep(bitgen, [zero, zero]))
        return builder.call(builder.load(builder.gep(bitgen, [zero, one])), [state])

    return types.uint64(types.uintp), codegen


def bit_generator_address(rng: np.random.Generator) -> int:
    """Address of ``rng``'s C ``bitgen_t`` for the compiled samplers; valid while ``rng`` lives (keep it). The
    samplers bypass the bit generator's lock: a device's generator is only ever used by its own thread."""
    return rng.bit_generator.ctypes.bit_generator.value


@njit(cache=True)
def _uniform(bitgen: int) -> float:
    """A uniform in [0, 1) made as ``Generator.random`` makes it: the word's leading 53 bits."""
    return (_next_word(bitgen) >> _FLOAT_SHIFT) * _FLOAT_UNIT


@njit(cache=True)
def _poisson(bitgen: int, mean: float) -> int:
    """One Poisson(``mean``) count: inversion by chop-down search below 10, else PTRS (Hörmann 1993, as numpy)."""
    if mean < _PTRS_MIN_MEAN:
        u = _uniform(bitgen)
        p = math.exp(-mean)
        cdf = p
        k = 0
        while u >= cdf and p > 0.0:
            k += 1
            p *= mean * _RECIPROCALS[k] if k < _RECIPROCALS.size else mean / k
            cdf += p
        return k
    b = 0.931 + 2.53 * math.sqrt(mean)
    a = -0.059 + 0.02483 * b
    v_r = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        u = _uniform(bitgen) - 0.5
        v = _uniform(bitgen)
        us = 0.5 - abs(u)
        if us <= 0.0:
            continue
        k = math.floor((2.0 * a / us + b) * u + mean + 0.43)
        if us >= 0.07 and v <= v_r:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
        if (math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b)
                <= -mean + k * math.log(mean) - math.lgamma(k + 1.0)):
            return k


@njit(cache=True)
def _flat_row(bitgen: int, cells: np.ndarray, cdf: np.ndarray, k_min: int, extra: float, n: int) -> np.ndarray:
    """``n`` Poisson counts: table part (``cells`` empty: none) plus a Poisson(``extra``) total spread uniformly."""
    counts = np.empty(n, np.int64)
    if cells.size == 0:
        counts[:] = 0
    else:
        word = np.uint64(0)
        for i in range(n):
            part = i % _CELLS_PER_WORD
            if part == 0:
                word = _next_word(bitgen)
            cell = (word >> np.uint64(64 - _CELL_BITS * (part + 1))) & np.uint64((1 << _CELL_BITS) - 1)
            k = cells[cell]
            if k < 0:  # the cell straddles a step of the CDF: the uniform within the cell decides
                u = (cell + _uniform(bitgen)) * (1.0 / (1 << _CELL_BITS))
                k = np.searchsorted(cdf, u, side="right") + k_min
            counts[i] = k
    for _ in range(_poisson(bitgen, extra) if extra > 0.0 else 0):  # bins ⌊u·n⌋: exact for n = 2^j, else bias < n·2⁻⁵³
        counts[int(_uniform(bitgen) * n)] += 1
    return counts


@njit(cache=True)
def _table_cells(cdf: np.ndarray, k_min: int) -> np.ndarray:
    """A FlatPoisson table's cells: cell c covers the uniforms [c, c + 1)·2⁻¹⁶; its count (k_min + the number
    of CDF values ≤ its lowest uniform) if the CDF has no step inside it (the same number of CDF values lies
    below its highest uniform), else −1. One merge-like pass over the cells and the CDF."""
    n_cells = 1 << _CELL_BITS
    cells = np.empty(n_cells, np.int32)
    below_lo = 0  # CDF values ≤ the cell's lowest uniform
    below_hi = 0  # CDF values < its highest
    for c in range(n_cells):
        lowest, highest = c / n_cells, (c + 1) / n_cells
        while below_lo < cdf.size and cdf[below_lo] <= lowest:
            below_lo += 1
        while below_hi < cdf.size and cdf[below_hi] < highest:
            below_hi += 1
        cells[c] = below_lo + k_min if below_lo == below_hi else -1
    return cells


@njit(cache=True)
def _tail(z: float) -> float:
    """P(Z > |z|) for a standard normal Z, precise however far out."""
    return 0.5 * math.erfc(abs(z) * _SQRT_HALF)


@njit(cache=True)
def normal_mass(z0: float, tail0: float, z1: float, tail1: float) -> float:
    """P(z0 < Z < z1) from the two edges and their tails ``_tail(z)``, without cancellation in either tail."""
    if z1 <= 0.0:
        return tail1 - tail0
    if z0 >= 0.0:
        return tail0 - tail1
    return 1.0 - tail0 - tail1


@njit(cache=True)
def _span(first_edge_ps: float, binwidth_ps: float, n_bins: int, centre_ps: float, sigma_ps: float,
          span_sigmas: float) -> tuple[int, int]:
    """The bins [lo, hi) of a row within ±``span_sigmas`` σ of a peak."""
    lo = max(math.floor((centre_ps - span_sigmas * sigma_ps - first_edge_ps) / binwidth_ps), 0)
    hi = min(math.ceil((centre_ps + span_sigmas * sigma_ps - first_edge_ps) / binwidth_ps), n_bins)
    return lo, max(hi, lo)


@njit(cache=True)
def _gaussian_bin_means(first_edge_ps: float, binwidth_ps: float, n_bins: int, centre_ps: float, sigma_ps: float,
                        total: float, span_sigmas: float) -> tuple[int, np.ndarray]:
    lo, hi = _span(first_edge_ps, binwidth_ps, n_bins, centre_ps, sigma_ps, span_sigmas)
    means = np.empty(hi - lo)
    inv_sigma = 1.0 / sigma_ps
    z0 = (first_edge_ps + lo * binwidth_ps - centre_ps) * inv_sigma
    tail0 = _tail(z0)
    for i in range(lo, hi):
        z1 = (first_edge_ps + (i + 1) * binwidth_ps - centre_ps) * inv_sigma  # as _add_gaussian_peak has it
        tail1 = _tail(z1)
        means[i - lo] = total * normal_mass(z0, tail0, z1, tail1)
        z0, tail0 = z1, tail1
    return lo, means


@njit(cache=True)
def _normal_between(bitgen: int, a: float, b: float) -> float:
    """A standard normal conditioned on [a, b), 0 < a < b: Marsaglia's tail method, rejecting beyond b."""
    while True:
        x = math.sqrt(a * a - 2.0 * math.log(1.0 - _uniform(bitgen)))
        if _uniform(bitgen) * x < a and x < b:
            return x


@njit(cache=True)
def _add_gaussian_peak(bitgen: int, counts: np.ndarray, first_edge_ps: float, binwidth_ps: float,
                       centre_ps: float, sigma_ps: float, total: float, span_sigmas: float) -> None:
    """Add to ``counts`` Poisson counts of the means :func:`gaussian_bin_means` gives (see :class:`FlatPoisson`)."""
    lo, hi = _span(first_edge_ps, binwidth_ps, counts.size, centre_ps, sigma_ps, span_sigmas)
    if total <= 0.0 or lo == hi:
        return
    # The core: bins within ±k σ, k where a bin expects about _CORE_MIN_COUNT counts (k ≥ 1).
    h = binwidth_ps / sigma_ps
    k = max(math.sqrt(2.0 * math.log(max(total * h / (_SQRT_2PI * _CORE_MIN_COUNT), 1.0))), 1.0)
    core_lo = min(max(math.floor((centre_ps - k * sigma_ps - first_edge_ps) / binwidth_ps), lo), hi)
    core_hi = min(max(math.ceil((centre_ps + k * sigma_ps - first_edge_ps) / binwidth_ps), core_lo), hi)
    inv_sigma = 1.0 / sigma_ps
    z_core_lo = (first_edge_ps + core_lo * binwidth_ps - centre_ps) * inv_sigma
    z0, tail0 = z_core_lo, _tail(z_core_lo)
    tail_core_lo = tail0
    for i in range(core_lo, core_hi):
        z1 = (first_edge_ps + (i + 1) * binwidth_ps - centre_ps) * inv_sigma
        tail1 = _tail(z1)
        counts[i] += _poisson(bitgen, total * normal_mass(z0, tail0, z1, tail1))
        z0, tail0 = z1, tail1
    # The tails [lo, core_lo) and [core_hi, hi), beyond k σ: a Poisson number of points, each placed exactly.
    if core_lo > lo:
        z_lo = (first_edge_ps + lo * binwidth_ps - centre_ps) * inv_sigma
        for _ in range(_poisson(bitgen, total * (tail_core_lo - _tail(z_lo)))):
            x = _normal_between(bitgen, -z_core_lo, -z_lo)
            i = math.floor((centre_ps - sigma_ps * x - first_edge_ps) / binwidth_ps)
            counts[min(max(i, lo), core_lo - 1)] += 1
    if core_hi < hi:
        z_hi = (first_edge_ps + hi * binwidth_ps - centre_ps) * inv_sigma
        for _ in range(_poisson(bitgen, total * (tail0 - _tail(z_hi)))):
            x = _normal_between(bitgen, z0, z_hi)
            i = math.floor((centre_ps + sigma_ps * x - first_edge_ps) / binwidth_ps)
            counts[min(max(i, core_hi), hi - 1)] += 1


@njit(cache=True)
def _draw(bitgen: int, cells: np.ndarray, cdf: np.ndarray, k_min: int, extra: float, n: int, first_edge_ps: float,
          binwidth_ps: float, means: np.ndarray, peaks_first: int, peaks_last: int, span_sigmas: float,
          counts_first: int, counts: np.ndarray) -> np.ndarray:
    """See :meth:`FlatPoisson.draw`; the flat part's table (cells, CDF, first count) and the rest (``extra``)."""
    row = _flat_row(bitgen, cells, cdf, k_min, extra, n)
    for k in range(peaks_first, peaks_last, 3):
        _add_gaussian_peak(bitgen, row, first_edge_ps, binwidth_ps, means[k], means[k + 1], means[k + 2], span_sigmas)
    flat_counts = counts.reshape(counts.size)
    for i in range(counts.size):
        flat_counts[i] = _poisson(bitgen, means[counts_first + i])
    return row


def gaussian_bin_means(first_edge_ps: float, binwidth_ps: float, n_bins: int, centre_ps: float, sigma_ps: float,
                       total: float, span_sigmas: float) -> tuple[int, np.ndarray]:
    """Expected counts total·P(bin) of a Gaussian peak (centre, sigma, ps) holding ``total`` counts in all, in
    the bins of a row (bin i from first_edge + i·binwidth, ps) within ±``span_sigmas`` σ of its centre:
    (first bin, counts)."""
    return _gaussian_bin_means(first_edge_ps, binwidth_ps, n_bins, centre_ps, sigma_ps, total, span_sigmas)


class FlatPoisson:
    """Rows of independent Poisson(λ) counts with one λ (a flat background), sampled exactly but cheaply,
    optionally with the Poisson counts of Gaussian peaks on top (a correlation histogram) and, in the same
    pass, Poisson counts of any other means (coincidences).

    λ = λ0 + δ with λ0 on a grid of 1/8. The Poisson(λ0) part inverts one uniform per entry through a
    cached table of 2¹⁶ cells of the uniform's range (its leading 16 bits, so one 64-bit word serves four
    entries): a cell lying within one step of the CDF gives its count at once, and the few cells that
    straddle a step draw the uniform's position within the cell and search the CDF itself, so the inversion
    is exact to the CDF's float precision (tails beyond 12 σ, < 1e-30, are folded into the last count
    kept). The Poisson(δ) part places a Poisson(n·δ) number of single counts uniformly over the row
    (Poisson counts in n bins are a Poisson total spread multinomially), and a sum of independent Poissons
    is Poisson(λ0 + δ). A row of 1024 at λ ≈ 16 costs ~3 µs; a new λ0 builds its table (~0.1 ms), and the
    ``kept`` latest tables (256 kB each) are kept: 3 h of the diurnal 50 km scenario visit ~45 grid points.

    A peak's core (bins expecting ≳ 2 counts) gets one Poisson count per bin; its tails get a Poisson
    number of points, each drawn from the normal conditioned on its tail (Marsaglia's tail method) and
    binned, so both are exact and the tails cost per count instead of per bin. Other means are drawn one
    by one (:func:`_poisson`).
    """

    def __init__(self, rng: np.random.Generator, kept: int = 32) -> None:
        self._rng = rng  # keeps the bit generator, and so the address, alive
        self._bitgen = bit_generator_address(rng)
        self._kept = kept  # tables kept, least recently used dropped
        self._tables: dict[float, tuple[np.ndarray, np.ndarray, int]] = {}  # λ0 → (cells, CDF, first count)
        self._latest: tuple[float, tuple[np.ndarray, np.ndarray, int]] = (0.0, _NO_TABLE)  # λ0, table

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        del state["_bitgen"]  # an address in this process: taken again from the unpickled generator
        state["_tables"] = {}  # a cache (MBs), rebuilt on demand
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._bitgen = bit_generator_address(self._rng)

    def __call__(self, mean: float, n: int) -> np.ndarray:
        """``n`` independent Poisson(``mean``) counts, int64."""
        return self.draw(mean, n, 0.0, 1.0, _NO_MEANS, 0, 0, 0.0, 0, _NO_COUNTS)

    def draw(self, mean: float, n: int, first_edge_ps: float, binwidth_ps: float, means: np.ndarray,
             peaks_first: int, peaks_last: int, span_sigmas: float, counts_first: int,
             counts: np.ndarray) -> np.ndarray:
        """A row of ``n`` counts (int64): Poisson(``mean``) plus, for each (centre ps, sigma ps, total) of
        ``means[peaks_first:peaks_last]`` in threes, Poisson counts of the means :func:`gaussian_bin_means`
        gives (bin i from first_edge + i·binwidth, ps). Also fills ``counts`` (int64, C-contiguous, any shape)
        with Poisson counts of the means from ``means[counts_first]`` on."""
        base = math.floor(mean * _FLAT_GRID) / _FLAT_GRID
        latest_base, (cells, cdf, k_min) = self._latest  # the background usually stays on one grid point
        if base != latest_base and n:  # an empty row reads no table (and keeps the latest one)
            cells, cdf, k_min = self._table(base)
        return _draw(self._bitgen, cells, cdf, k_min, (mean - base) * n, n, first_edge_ps, binwidth_ps, means,
                     peaks_first, peaks_last, span_sigmas, counts_first, counts)

    def _table(self, mean: float) -> tuple[np.ndarray, np.ndarray, int]:
        """The table of Poisson(``mean``), or none (empty cells) for 0."""
        if mean == 0:
            self._latest = (0.0, _NO_TABLE)
            return _NO_TABLE
        table = self._tables.pop(mean, None)
        if table is None:
            spread = 12.0 * math.sqrt(mean) + 12.0
            k_min = max(0, math.floor(mean - spread))
            cdf = pdtr(np.arange(k_min, math.ceil(mean + spread) + 1), mean)
            table = (_table_cells(cdf, k_min), cdf, k_min)
            if len(self._tables) >= self._kept:
                del self._tables[next(iter(self._tables))]
        self._tables[mean] = table
        self._latest = (mean, table)
        return table
