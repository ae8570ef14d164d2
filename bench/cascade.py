"""Cascade error correction between two parties that share only messages, many frames at once.

Protocol: Brassard & Salvail, "Secret-key reconciliation by public discussion", EUROCRYPT '93. Each pass
permutes the frame with a permutation both sides derive from a public seed, cuts it into blocks, compares
block parities and runs BINARY (bisection) on every block whose parities differ; every corrected bit makes
the blocks that hold it in the other passes odd again, and those are bisected in turn (the cascade). Bob
remembers Alice's parity of every (sub-)block he has learnt, so a cascade starts from the smallest known
block that turned odd and no parity is ever asked twice (as cascade-cpp, B. Rijsman, does).

Seed 000 names Cascade as the post-processing error correction and its speed as the bottleneck; seed 001
uses an error-correction inefficiency f = 1.09. Here f = leaked parities / (n·h(E)), E the true error rate.

Alice (:class:`CascadeAlice`) only answers :class:`ParityRequest` messages; Bob (:func:`reconcile`,
:func:`areconcile`) holds the noisy keys and the whole protocol state. One request carries the questions
of every frame and every open sub-block, so one round trip serves the whole batch: Alice's parities of the
top-level blocks of every pass do not depend on Bob's corrections and are all asked in the first message;
bisection then runs one level per round trip for all open sub-blocks of all frames at once. A frame with
nothing left to ask in its pass starts its next one while the others go on, so the batch takes as many round
trips as its slowest frame, and each frame's dialogue is the one it would have alone.

Speed (issue 5 asks ≥ 10 Mbit/s of sifted key per core): both sides run compiled loops (numba, cached on
disk) frame by frame over packed bits. Alice answers from the prefix parities of her frames in each pass's
order: two bit look-ups per range. Bob keeps his frames in each pass's order as words he flips along with his
key, and per block the binary tree of its sub-blocks as a heap (a 32-bit block's is half a cache line); a
loop over scattered nodes first prefetches them all. ci/bench.py measures ~45 Mbit/s for opt7 at QBER 4.3 %
on 2^17-bit frames, where cascade-cpp does 9.0 (original) and 5.4 (Yan et al.) Mbit/s.

Assumptions: frames are independent; permutations are public (the same for every frame of a batch);
BINARY always ends on a true error, so Bob never flips a correct bit; remaining errors (frame error rate)
must be caught by verification hashing.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from bench.keyrate import binary_entropy

COARSE_BLOCKS = 64  # passes of up to this many blocks per frame take their block parities from packed bit
                    # masks: nobody shuffles a frame in such a pass unless a sub-block of it is asked about
_ONE, _ALL = np.uint64(1), np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_ODD, _OPEN, _SPLIT = np.uint8(1), np.uint8(2), np.uint8(4)  # Bob's node state: his parity differs from Alice's;
                                                              # queued for BINARY; he knows both halves'
_ASK_FIELDS = 7  # Bob's table of questions: pass, frame, start, stop (the request), block, heap id, depth


def _original_blocks(qber: float, frame_bits: int) -> list[int]:
    """Brassard & Salvail 1993: 4 passes, k1 = 0.73/E, then doubling."""
    k1 = math.ceil(0.73 / qber)
    return [k1 << i for i in range(4)]


def _opt7_blocks(qber: float, frame_bits: int) -> list[int]:
    """Martinez-Mateo, Pacher, Peev, Ciurana, Martin, QIC 15 (2015) "Cascade opt. (7)": k1 = 2^⌈log2(1/E)⌉,
    k2 = 4·k1, then n/2; 14 passes as cascade-cpp runs it."""
    k1 = 2 ** math.ceil(math.log2(1 / qber))
    return [k1, 4 * k1] + [-(-frame_bits // 2)] * 12


def _opt8_blocks(qber: float, frame_bits: int) -> list[int]:
    """Martinez-Mateo et al. 2015 "Cascade opt. (8)": α = log2(1/E) − 1/2, k1 = 2^⌈α⌉, k2 = 2^⌈(α+12)/2⌉,
    k3 = 4096, then n/2; 14 passes as cascade-cpp runs it. Measured here (ci/bench.py, 2^17-bit frames,
    QBER 4.3 %): f = 1.045, against 1.18 for the original."""
    alpha = math.log2(1 / qber) - 0.5
    return [2 ** math.ceil(alpha), 2 ** math.ceil((alpha + 12) / 2), 4096] + [-(-frame_bits // 2)] * 11


VARIANTS: dict[str, Callable[[float, int], list[int]]] = {
    "original": _original_blocks,
    "opt7": _opt7_blocks,
    "opt8": _opt8_blocks,
}


@dataclass(frozen=True)
class CascadePlan:
    """What both parties agree on before the first parity: frame layout, block size per pass, shuffle seed."""

    variant: str
    frames: int
    frame_bits: int
    block_bits: tuple[int, ...]
    seed: int

    @property
    def passes(self) -> int:
        return len(self.block_bits)


def cascade_plan(variant: str, qber_estimate: float, frames: int, frame_bits: int, seed: int) -> CascadePlan:
    """Block sizes of ``variant`` for an estimated error rate (a fraction in (0, 0.5))."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Cascade variant {variant!r}; choose from {sorted(VARIANTS)}")
    if not 0.0 < qber_estimate < 0.5:
        raise ValueError(f"QBER estimate must lie in (0, 0.5), got {qber_estimate}")
    if frames < 1 or frame_bits < 2:
        raise ValueError(f"empty key: {frames} frames of {frame_bits} bits")
    if frame_bits >= 2**31:
        raise ValueError(f"frames of {frame_bits} bits: at most 2^31 - 1 (bit positions are int32)")
    blocks = tuple(min(k, frame_bits) for k in VARIANTS[variant](qber_estimate, frame_bits))
    return CascadePlan(variant, frames, frame_bits, blocks, seed)


@dataclass(frozen=True)
class ParityRequest:
    """One message from Bob: Alice's parities of index sets of her pass-permuted frames.

    ``block_passes``: for each listed pass, the parity of every top-level block of every frame (frame-major).
    Then one parity per range: positions ``start[i]:stop[i]`` of frame ``frame[i]`` in the order of pass
    ``pass_index[i]``. The answer is one bit per set, in this order.
    """

    block_passes: tuple[int, ...]
    pass_index: np.ndarray
    frame: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    def size_bits(self, plan: CascadePlan) -> int:
        """Parity bits the answer discloses."""
        blocks = _layout(plan.seed, plan.frame_bits, plan.block_bits).blocks
        return sum(plan.frames * int(blocks[q]) for q in self.block_passes) + self.frame.size


class ParityOracle(Protocol):
    """Alice as Bob sees her: answers parity requests, nothing else."""

    def parities(self, request: ParityRequest) -> np.ndarray: ...


class AsyncParityOracle(Protocol):
    """Alice behind a classical channel."""

    async def parities(self, request: ParityRequest) -> np.ndarray: ...


@dataclass(frozen=True)
class CascadeResult:
    corrected: np.ndarray             # (frames, frame_bits) uint8: Bob's key after Cascade
    leaked_bits_per_frame: np.ndarray  # parities disclosed about each frame
    round_trips: int                  # request/answer exchanges for the whole batch

    @property
    def leaked_bits(self) -> int:
        return int(self.leaked_bits_per_frame.sum())


def reconciliation_efficiency(leaked_bits_per_frame: np.ndarray, errors_per_frame: np.ndarray,
                              frame_bits: int) -> float:
    """f = Σ leaked / Σ n·h(e/n) over frames, e the true number of errors of each frame."""
    shannon_bits = frame_bits * binary_entropy(np.asarray(errors_per_frame) / frame_bits)
    return float(np.sum(leaked_bits_per_frame) / np.sum(shannon_bits))


@dataclass(frozen=True)
class _Layout:
    """Public tables of a plan: permutations and block geometry per pass."""

    perms: np.ndarray       # (passes, n) int32: position in the pass order → bit index
    inverse: np.ndarray     # (passes, n) int32: bit index → position in the pass order
    block_bits: np.ndarray  # (passes,) int64
    blocks: np.ndarray      # (passes,) int64: blocks per frame
    heap_size: np.ndarray   # (passes,) int64: 2^⌈log2 k⌉ (≥ 2), room for the sub-blocks of ≥ 2 bits of a block
    mask_first: np.ndarray  # (passes,) int64: a coarse pass's first row in ``masks``; −1 for the others
    masks: np.ndarray       # (blocks of coarse passes, ⌈n/64⌉) uint64: each block's bits in natural order, packed


@lru_cache(maxsize=8)
def _layout(seed: int, frame_bits: int, block_bits: tuple[int, ...]) -> _Layout:
    n = frame_bits
    perms = np.stack([np.random.default_rng([seed, q]).permutation(n) for q in range(len(block_bits))])
    perms = perms.astype(np.int32)
    inverse = np.empty_like(perms)
    np.put_along_axis(inverse, perms, np.arange(n, dtype=np.int32)[None, :], axis=1)
    k = np.array(block_bits, dtype=np.int64)
    blocks = -(-n // k)
    heap_size = np.maximum(2, np.int64(1) << np.ceil(np.log2(k)).astype(np.int64))
    coarse = blocks <= COARSE_BLOCKS
    mask_first = np.where(coarse, np.cumsum(np.where(coarse, blocks, 0)) - blocks, -1)
    rows = [np.zeros((0, -(-n // 64)), dtype=np.uint64)]
    for q in np.flatnonzero(coarse):
        member = np.zeros((blocks[q], n), dtype=np.uint8)
        member[np.arange(n) // k[q], perms[q]] = 1
        rows.append(_pack(member))
    masks = np.concatenate(rows)
    for table in (perms, inverse, k, blocks, heap_size, mask_first, masks):
        table.setflags(write=False)
    return _Layout(perms, inverse, k, blocks, heap_size, mask_first, masks)


def _lazy_zeros(shape: tuple[int, ...], dtype: type, dense: list[tuple[int, int]]) -> np.ndarray:
    """Zeros whose pages the kernel supplies on first touch: 2 MiB at a time in the ``dense`` ranges of items (the
    tables of passes of small blocks, all touched), 4 KiB elsewhere (the sparse trees of passes of big blocks;
    numpy would ask for huge pages throughout, and each first touch there would clear 2 MiB). A page fault costs
    microseconds on a virtual machine: thousands of them are a good part of a run."""
    itemsize = np.dtype(dtype).itemsize
    size = math.prod(shape) * itemsize
    if size < 1 << 22:
        return np.zeros(shape, dtype=dtype)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for first, last in dense:
        start = first * itemsize // mmap.PAGESIZE * mmap.PAGESIZE
        if hasattr(mmap, "MADV_HUGEPAGE") and last > first:
            memory.madvise(mmap.MADV_HUGEPAGE, start, last * itemsize - start)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)


def _fine_rows(layout: _Layout, packed: np.ndarray) -> list[tuple[int, int]]:
    """Item ranges of a (passes, frames, words) table held by the passes of small blocks (built at pass start)."""
    row = packed.size
    return [(q * row, (q + 1) * row) for q in np.flatnonzero(layout.mask_first < 0)]


def _pack(bits: np.ndarray) -> np.ndarray:
    """Rows of bits → rows of uint64 words (little-endian bit order, zero padded)."""
    packed = np.packbits(bits, axis=1, bitorder="little")
    pad = -packed.shape[1] % 8
    return np.ascontiguousarray(np.pad(packed, ((0, 0), (0, pad)))).view(np.uint64)


# ---- compiled kernels (numba, cached on disk). A frame is kept as packed words: bit j of word w is bit
# 64·w + j, either in natural order (``packed``) or in the order of one pass (``words``, Bob's, flipped
# along with his key; ``prefix``, Alice's, holding the parity of every prefix since her key never changes).

@intrinsic
def _prefetch(typingctx, array, index):  # type: ignore[no-untyped-def]
    """Ask the cache for the line of ``array[index]``, ``index`` a tuple of one integer per dimension: a hint that
    never faults, so it needs no bounds. Loops that look up scattered nodes first prefetch them all: they then
    wait for many cache misses at once instead of one after the other."""
    if not isinstance(array, types.Array) or not isinstance(index, types.BaseTuple) or len(index) != array.ndim:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        indices = [context.cast(builder, i, t, types.intp)
                   for i, t in zip(cgutils.unpack_tuple(builder, args[1]), idxty, strict=True)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, indices, wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, keep in all caches
        return context.get_dummy_value()

    return types.void(array, index), codegen


@njit(cache=True)
def _parity(x: np.uint64) -> np.uint8:
    x ^= x >> np.uint64(32)
    x ^= x >> np.uint64(16)
    x ^= x >> np.uint64(8)
    x ^= x >> np.uint64(4)
    x ^= x >> np.uint64(2)
    x ^= x >> np.uint64(1)
    return np.uint8(x & _ONE)


@njit(cache=True)
def _outside(start: int, stop: int) -> tuple[np.uint64, np.uint64]:
    """Masks of the bits of the first and of the last word of a range ``start:stop`` that lie outside it."""
    return ~(_ALL << np.uint64(start & 63)), ~(_ALL >> np.uint64(63 - ((stop - 1) & 63)))


@njit(cache=True)
def _span(i: int, d: int, length: int) -> tuple[int, int]:
    """[lo, hi) of node i of depth d in a block of ``length`` bits: [⌈i·L/2^d⌉, ⌈(i+1)·L/2^d⌉), so children
    split their parent into halves that differ by at most one bit."""
    round_up = (1 << d) - 1
    return (i * length + round_up) >> d, ((i + 1) * length + round_up) >> d


@njit(cache=True)
def _left_odd(state: np.ndarray, base: int, v: int, d: int, length: int) -> int:
    """Whether the left half of node v (depth d) of the block whose tree starts at ``base`` is odd, its halves
    known; a single bit known is even."""
    lo, mid = _span(2 * (v - (1 << d)), d + 1, length)
    return int(state[base + 2 * v] & _ODD) if mid - lo > 1 else 0


@njit(cache=True)
def _gather(packed: np.ndarray, perm: np.ndarray, out: np.ndarray) -> None:
    """``out`` ← the frame ``packed`` (natural order) in the order ``perm``, packed."""
    n = perm.size
    for w in range(out.size):
        base = 64 * w
        x = np.uint64(0)
        for j in range(min(64, n - base)):
            i = perm[base + j]
            x |= ((packed[i >> 6] >> np.uint64(i & 63)) & _ONE) << np.uint64(j)
        out[w] = x


@njit(cache=True)
def _to_prefix(words: np.ndarray) -> None:
    """In place: bit j of word w becomes the parity of bits 0 … 64·w + j."""
    carry = np.uint64(0)
    for w in range(words.size):
        x = words[w]
        x ^= x << np.uint64(1)
        x ^= x << np.uint64(2)
        x ^= x << np.uint64(4)
        x ^= x << np.uint64(8)
        x ^= x << np.uint64(16)
        x ^= x << np.uint64(32)
        x ^= carry
        words[w] = x
        carry = np.uint64(0) - (x >> np.uint64(63))


@njit(cache=True)
def _room(rows: np.ndarray, need: int) -> np.ndarray:
    """``rows`` (a 2-D scratch table) with room for at least ``need`` rows, its content kept."""
    if need <= rows.shape[0]:
        return rows
    wider = np.empty((max(need, 2 * rows.shape[0]), rows.shape[1]), rows.dtype)
    wider[: rows.shape[0]] = rows
    return wider


# The kernels below write their inner loops out in full: a helper taking arrays, even inlined, measured tens of
# nanoseconds per call here, more than the work of a step.

@njit(cache=True)
def _alice_blocks(perms: np.ndarray, block_bits: np.ndarray, blocks: np.ndarray, mask_first: np.ndarray,
                  masks: np.ndarray, packed: np.ndarray, prefix: np.ndarray, ready: np.ndarray, q: int,
                  out: np.ndarray, at: int) -> int:
    """Alice's parity of every top-level block of pass ``q``, frame-major, into ``out[at:]``; returns the end."""
    n = perms.shape[1]
    k, nb = block_bits[q], blocks[q]
    for f in range(packed.shape[0]):
        if mask_first[q] >= 0:
            for b in range(nb):
                x = np.uint64(0)
                for w in range(packed.shape[1]):
                    x ^= packed[f, w] & masks[mask_first[q] + b, w]
                out[at + b] = _parity(x)
        else:
            if not ready[q, f]:
                _gather(packed[f], perms[q], prefix[q, f])
                _to_prefix(prefix[q, f])
                ready[q, f] = True
            before = np.uint64(0)
            for b in range(nb):
                e = min(n, b * k + k) - 1
                end = (prefix[q, f, e >> 6] >> np.uint64(e & 63)) & _ONE
                out[at + b] = np.uint8(end ^ before)
                before = end
        at += nb
    return at


@njit(cache=True)
def _alice_ranges(perms: np.ndarray, packed: np.ndarray, prefix: np.ndarray, ready: np.ndarray, q: np.ndarray,
                  frame: np.ndarray, start: np.ndarray, stop: np.ndarray, out: np.ndarray, at: int) -> int:
    """Alice's parity of each range into ``out[at:]``; returns the index of the first range outside the plan, or
    −1 when all are inside (and only then answers)."""
    passes, n = perms.shape
    for j in range(q.size):
        p, f, s, e = np.int64(q[j]), np.int64(frame[j]), np.int64(start[j]) - 1, np.int64(stop[j]) - 1
        if not (0 <= p < passes and 0 <= f < packed.shape[0] and -1 <= s < e < n):
            return j
        _prefetch(prefix, (p, f, e >> 6))
        _prefetch(prefix, (p, f, max(s, 0) >> 6))
    for j in range(q.size):
        p, f, s, e = np.int64(q[j]), np.int64(frame[j]), np.int64(start[j]) - 1, np.int64(stop[j]) - 1
        if not ready[p, f]:
            _gather(packed[f], perms[p], prefix[p, f])
            _to_prefix(prefix[p, f])
            ready[p, f] = True
        x = (prefix[p, f, e >> 6] >> np.uint64(e & 63)) & _ONE
        if s >= 0:
            x ^= (prefix[p, f, s >> 6] >> np.uint64(s & 63)) & _ONE
        out[at + j] = np.uint8(x)
    return -1


@njit(cache=True)
def _bob_round(perms: np.ndarray, inverse: np.ndarray, block_bits: np.ndarray, blocks: np.ndarray,
               heap_size: np.ndarray, mask_first: np.ndarray, masks: np.ndarray, packed: np.ndarray,
               words: np.ndarray, ready: np.ndarray, alice_top: np.ndarray, top_first: np.ndarray,
               heap_first: np.ndarray, cur: np.ndarray, leaked: np.ndarray, state: np.ndarray, asked: np.ndarray,
               n_asked: int, answer: np.ndarray, later: np.ndarray, n_later: int, opened: np.ndarray,
               cand: np.ndarray, walks: np.ndarray, batch: np.ndarray, mark: np.ndarray) -> tuple:
    """One round of Bob's side for every frame: take Alice's answers to the ``n_asked`` questions ``asked``
    (rows: pass, frame, start, stop, block, heap id, depth; frame-ordered) and settle the children of each asked
    node, and of the ``n_later`` nodes ``later`` whose children were known already (rows: pass, frame, block,
    heap id, depth); correct the bits BINARY ends on and cascade; then ask the left half of every open node,
    starting the frame's next pass whenever it has nothing left to ask. A frame takes its steps in the order of
    the plain statement of the protocol (``reference_cascade`` in tests/test_cascade.py), batches of flips
    included, so its dialogue does not depend on the other frames.

    Returns the new tables (fresh ones: a request may outlive the round) and the scratch tables, grown if need
    be: ``opened`` (odd nodes waiting for BINARY) and ``cand`` (odd nodes found, to be sorted into ``opened`` and
    ``batch``, the bits to flip; ``mark`` has their bits set), rows: pass, block, heap id, depth; ``walks`` (a
    flipped bit's block and offset in it, per pass)."""
    passes, n = perms.shape
    frames = packed.shape[0]
    out = np.empty((_ASK_FIELDS, max(64, n_asked)), np.int32)
    out_later = np.empty((5, max(64, n_later)), np.int32)
    n_out, n_out_later, j, j_later = 0, 0, 0, 0
    cand = _room(cand, n_asked + n_later)
    for f in range(frames):
        n_cand, n_open, n_batch = 0, 0, 0
        end = j
        while end < n_asked and asked[1, end] == f:
            q = asked[0, end]
            _prefetch(state, (heap_first[q] + (f * blocks[q] + asked[4, end]) * heap_size[q] + asked[5, end],))
            _prefetch(words, (q, f, asked[2, end] >> 6))
            end += 1
        if j == end and cur[f] == passes - 1 and not (j_later < n_later and later[1, j_later] == f):
            continue  # the frame is done
        while j < end:  # Alice's answers: the odd half of each asked node
            q, s, e, b, v, d = asked[0, j], asked[2, j], asked[3, j], asked[4, j], asked[5, j], asked[6, j]
            first, last = s >> 6, (e - 1) >> 6
            x = np.uint64(0)
            for w in range(first, last + 1):
                x ^= words[q, f, w]
            head, tail = _outside(s, e)
            x ^= (words[q, f, first] & head) ^ (words[q, f, last] & tail)
            left_odd = answer[j] ^ _parity(x)
            node = heap_first[q] + (f * blocks[q] + b) * heap_size[q] + v
            state[node] |= _SPLIT
            lo = s - b * block_bits[q]
            mid = e - b * block_bits[q]
            hi = _span(v - (1 << d), d, min(block_bits[q], n - b * block_bits[q]))[1]
            if mid - lo > 1:  # single bits are never kept: a known one is always even once flipped
                state[node + v] = left_odd
            if hi - mid > 1:
                state[node + v + 1] = left_odd ^ _ODD  # the parent is odd
            leaked[f] += 1
            cand[n_cand, 0], cand[n_cand, 1], cand[n_cand, 2], cand[n_cand, 3] = q, b, 2 * v + 1 - left_odd, d + 1
            n_cand += 1
            j += 1
        while j_later < n_later and later[1, j_later] == f:
            q, b, v, d = later[0, j_later], later[2, j_later], later[3, j_later], later[4, j_later]
            left_odd = _left_odd(state, heap_first[q] + (f * blocks[q] + b) * heap_size[q], v, d,
                                 min(block_bits[q], n - b * block_bits[q]))
            cand[n_cand, 0], cand[n_cand, 1], cand[n_cand, 2], cand[n_cand, 3] = q, b, 2 * v + 1 - left_odd, d + 1
            n_cand += 1
            j_later += 1
        while True:
            # odd nodes found: single bits join the batch to flip, larger ones the open list, each at most once
            if n_cand:
                opened = _room(opened, n_open + n_cand)
            for c in range(n_cand):
                q, b, v, d = cand[c, 0], cand[c, 1], cand[c, 2], cand[c, 3]
                k = block_bits[q]
                lo, hi = _span(v - (1 << d), d, min(k, n - b * k))
                if hi - lo == 1:
                    _prefetch(perms, (q, b * k + lo))
            for c in range(n_cand):
                q, b, v, d = cand[c, 0], cand[c, 1], cand[c, 2], cand[c, 3]
                k = block_bits[q]
                lo, hi = _span(v - (1 << d), d, min(k, n - b * k))
                if hi - lo == 1:
                    bit = perms[q, b * k + lo]
                    if not mark[bit >> 6] & (_ONE << np.uint64(bit & 63)):
                        mark[bit >> 6] |= _ONE << np.uint64(bit & 63)
                        batch[n_batch] = bit
                        n_batch += 1
                    continue
                node = heap_first[q] + (f * blocks[q] + b) * heap_size[q] + v
                if not state[node] & _OPEN:
                    state[node] |= _OPEN
                    opened[n_open, 0], opened[n_open, 1], opened[n_open, 2], opened[n_open, 3] = q, b, v, d
                    n_open += 1
            n_cand = 0
            if n_batch:
                # correct the bits; toggle every known node holding one in the passes started (known nodes are
                # closed upwards, siblings known together); then, per bit and pass, the smallest odd known node
                # holding it is found (the cascade)
                walks = _room(walks, n_batch * (cur[f] + 1))
                cand = _room(cand, n_batch * (cur[f] + 1))
                for t in range(n_batch):
                    for q in range(cur[f] + 1):
                        _prefetch(inverse, (q, batch[t]))
                r = 0
                for t in range(n_batch):
                    for q in range(cur[f] + 1):
                        pos = inverse[q, batch[t]]
                        k = block_bits[q]
                        b = pos // k
                        base = heap_first[q] + (f * blocks[q] + b) * heap_size[q]
                        walks[r, 0], walks[r, 1], walks[r, 2], walks[r, 3] = q, b, base, pos - b * k
                        walks[r, 4], walks[r, 5] = min(k, n - b * k), pos
                        _prefetch(state, (base + 1,))
                        _prefetch(words, (q, f, pos >> 6))
                        r += 1
                r = 0
                for t in range(n_batch):
                    bit = batch[t]
                    mark[bit >> 6] &= ~(_ONE << np.uint64(bit & 63))
                    packed[f, bit >> 6] ^= _ONE << np.uint64(bit & 63)
                    for q in range(cur[f] + 1):
                        base, offset, length, pos = walks[r, 2], walks[r, 3], walks[r, 4], walks[r, 5]
                        r += 1
                        if ready[q, f]:
                            words[q, f, pos >> 6] ^= _ONE << np.uint64(pos & 63)
                        v, d, lo, hi = 1, 0, 0, length
                        state[base + 1] ^= _ODD
                        while state[base + v] & _SPLIT:
                            mid = _span(2 * v - (2 << d), d + 1, length)[1]
                            if offset < mid:
                                v, hi = 2 * v, mid
                            else:
                                v, lo = 2 * v + 1, mid
                            d += 1
                            if hi - lo < 2:
                                break
                            state[base + v] ^= _ODD
                for r in range(n_batch * (cur[f] + 1)):
                    q, b, base, offset, length = walks[r, 0], walks[r, 1], walks[r, 2], walks[r, 3], walks[r, 4]
                    v, d, lo, hi, odd_v, odd_d = 1, 0, 0, length, 0, 0
                    while True:
                        if state[base + v] & _ODD:
                            odd_v, odd_d = v, d
                        if not state[base + v] & _SPLIT:
                            break
                        mid = _span(2 * v - (2 << d), d + 1, length)[1]
                        if offset < mid:
                            v, hi = 2 * v, mid
                        else:
                            v, lo = 2 * v + 1, mid
                        d += 1
                        if hi - lo < 2:
                            break
                    if odd_v:
                        cand[n_cand, 0], cand[n_cand, 1], cand[n_cand, 2], cand[n_cand, 3] = q, b, odd_v, odd_d
                        n_cand += 1
                n_batch = 0
                continue
            # BINARY, one level: ask the left half of every open node still odd
            if n_out + n_open > out.shape[1]:
                wider = np.empty((_ASK_FIELDS, max(n_out + n_open, 2 * out.shape[1])), np.int32)
                wider[:, :n_out] = out[:, :n_out]
                out = wider
            if n_out_later + n_open > out_later.shape[1]:
                wider = np.empty((5, max(n_out_later + n_open, 2 * out_later.shape[1])), np.int32)
                wider[:, :n_out_later] = out_later[:, :n_out_later]
                out_later = wider
            asks, known = 0, 0
            for t in range(n_open):
                q, b, v, d = opened[t, 0], opened[t, 1], opened[t, 2], opened[t, 3]
                node = heap_first[q] + (f * blocks[q] + b) * heap_size[q] + v
                state[node] &= _ODD | _SPLIT
                if not state[node] & _ODD:
                    continue  # a correction evened it
                if state[node] & _SPLIT:  # reopened by a correction in its even half: its children are known
                    r = n_out_later + known
                    out_later[0, r], out_later[1, r], out_later[2, r], out_later[3, r], out_later[4, r] = q, f, b, v, d
                    known += 1
                    continue
                if not ready[q, f]:
                    _gather(packed[f], perms[q], words[q, f])
                    ready[q, f] = True
                k = block_bits[q]
                lo, mid = _span(2 * (v - (1 << d)), d + 1, min(k, n - b * k))
                out[0, n_out], out[1, n_out], out[2, n_out], out[3, n_out] = q, f, b * k + lo, b * k + mid
                out[4, n_out], out[5, n_out], out[6, n_out] = b, v, d
                n_out += 1
                asks += 1
            n_open = 0
            if asks:  # the nodes with known children go down one level together with the answers
                n_out_later += known
                break
            if known:  # nothing to ask: they go down at once
                cand = _room(cand, known)
                for t in range(n_out_later, n_out_later + known):
                    q, b, v, d = out_later[0, t], out_later[2, t], out_later[3, t], out_later[4, t]
                    left_odd = _left_odd(state, heap_first[q] + (f * blocks[q] + b) * heap_size[q], v, d,
                                         min(block_bits[q], n - b * block_bits[q]))
                    cand[n_cand, 0], cand[n_cand, 1], cand[n_cand, 2] = q, b, 2 * v + 1 - left_odd
                    cand[n_cand, 3] = d + 1
                    n_cand += 1
                continue
            if cur[f] == passes - 1:
                break
            # nothing left to ask in this pass: the frame starts its next one, its blocks all known, odd where
            # Bob's parity differs from Alice's
            cur[f] += 1
            q = cur[f]
            k, nb, size = block_bits[q], blocks[q], heap_size[q]
            top, base = top_first[q] + f * nb, heap_first[q] + f * nb * size
            if mask_first[q] < 0:
                _gather(packed[f], perms[q], words[q, f])  # Bob starts a pass before he asks anything about it
                ready[q, f] = True
            cand = _room(cand, nb)
            for b in range(nb):
                x = np.uint64(0)
                if mask_first[q] < 0:
                    s, e = b * k, min(n, b * k + k)
                    first, last = s >> 6, (e - 1) >> 6
                    for w in range(first, last + 1):
                        x ^= words[q, f, w]
                    head, tail = _outside(s, e)
                    x ^= (words[q, f, first] & head) ^ (words[q, f, last] & tail)
                else:
                    for w in range(packed.shape[1]):
                        x ^= packed[f, w] & masks[mask_first[q] + b, w]
                odd = _parity(x) ^ alice_top[top + b]
                state[base + b * size + 1] = odd
                if odd:
                    cand[n_cand, 0], cand[n_cand, 1], cand[n_cand, 2], cand[n_cand, 3] = q, b, 1, 0
                    n_cand += 1
    return out, n_out, out_later, n_out_later, opened, cand, walks


def _check_keys(keys: np.ndarray, plan: CascadePlan, who: str) -> np.ndarray:
    keys = np.asarray(keys)
    if keys.size == 0:
        raise ValueError(f"{who}: empty key")
    if keys.shape != (plan.frames, plan.frame_bits):
        raise ValueError(f"{who}: key shape {keys.shape} does not match the plan's "
                         f"{plan.frames} frames of {plan.frame_bits} bits")
    bits = keys.max() <= 1 if keys.dtype.kind in "bu" else ((keys == 0) | (keys == 1)).all()
    if not bits:
        raise ValueError(f"{who}: key bits must be 0 or 1")
    return np.ascontiguousarray(keys, dtype=np.uint8)


class CascadeAlice:
    """Alice's side: holds the sifted key and answers parity requests (the in-memory :class:`ParityOracle`)."""

    def __init__(self, keys: np.ndarray, plan: CascadePlan) -> None:
        self._plan = plan
        self._layout = _layout(plan.seed, plan.frame_bits, plan.block_bits)
        self._packed = _pack(_check_keys(keys, plan, "Alice"))
        # prefix parities of her frames in each pass's order, built the first time a pass and frame are asked
        self._prefix = _lazy_zeros((plan.passes, *self._packed.shape), np.uint64,
                                   _fine_rows(self._layout, self._packed))
        self._ready = np.zeros((plan.passes, plan.frames), dtype=bool)

    def parities(self, request: ParityRequest) -> np.ndarray:
        plan = self._plan
        q, frame, start, stop = (np.asarray(a) for a in (request.pass_index, request.frame, request.start,
                                                           request.stop))
        if not q.shape == frame.shape == start.shape == stop.shape or q.ndim != 1:
            raise ValueError("parity request: pass_index, frame, start, stop must be 1-D and of equal length")
        if not q.dtype == frame.dtype == start.dtype == stop.dtype == np.int32:  # Bob's own are int32
            if q.size and any(a.dtype.kind not in "iu" for a in (q, frame, start, stop)):
                raise ValueError("parity request: pass_index, frame, start, stop must be integers")
            q, frame, start, stop = (a.astype(np.int64, copy=False) for a in (q, frame, start, stop))
        if any(not 0 <= p < plan.passes for p in request.block_passes):
            raise ValueError(f"parity request: pass outside 0..{plan.passes - 1}")
        lay = self._layout
        out = np.empty(sum(plan.frames * int(lay.blocks[p]) for p in request.block_passes) + q.size, np.uint8)
        at = 0
        for p in request.block_passes:
            at = _alice_blocks(lay.perms, lay.block_bits, lay.blocks, lay.mask_first, lay.masks, self._packed,
                               self._prefix, self._ready, int(p), out, at)
        if _alice_ranges(lay.perms, self._packed, self._prefix, self._ready, q, frame, start, stop, out, at) >= 0:
            raise ValueError("parity request: range outside the plan's passes, frames or frame bits")
        return out


class _Bob:
    """Bob's state: his key (packed, corrected in place), his frames in the order of each pass started, and for
    every block the binary tree of its sub-blocks of ≥ 2 bits as a heap (1 the block, children of v at 2v and
    2v + 1), each node recording whether his parity differs from Alice's (odd) and whether he knows both halves'.
    Bit flips toggle every known block holding the bit, so odd blocks are found without recomputing parities.
    Single bits are not kept: one whose parity Bob knows is right (or flipped at once, since BINARY only ends on
    errors), so it never turns odd again and no cascade can start from it."""

    def __init__(self, keys: np.ndarray, plan: CascadePlan) -> None:
        self.plan = plan
        self.layout = _layout(plan.seed, plan.frame_bits, plan.block_bits)
        self.packed = _pack(_check_keys(keys, plan, "Bob"))  # his key, corrected in place
        self.words = _lazy_zeros((plan.passes, *self.packed.shape), np.uint64, _fine_rows(self.layout, self.packed))
        self.ready = np.zeros((plan.passes, plan.frames), dtype=bool)
        tops = plan.frames * self.layout.blocks
        self.top_first = np.cumsum(tops) - tops  # Alice's block parities: pass-major, then frame, then block
        heaps = tops * self.layout.heap_size  # untouched pages of the sparse trees of big blocks cost nothing
        self.heap_first = np.cumsum(heaps) - heaps
        fine = self.layout.mask_first < 0
        self.state = _lazy_zeros((int(heaps.sum()),), np.uint8,
                                 list(zip(self.heap_first[fine], self.heap_first[fine] + heaps[fine], strict=True)))
        self.cur = np.full(plan.frames, -1, dtype=np.int64)  # the pass each frame is in
        self.leaked = np.zeros(plan.frames, dtype=np.int64)
        # scratch of one frame: odd nodes found and odd nodes waiting for BINARY (grown by the kernel), bits to flip
        self.cand = np.empty((1024, 4), dtype=np.int32)
        self.opened = np.empty((1024, 4), dtype=np.int32)
        self.walks = np.empty((1024, 6), dtype=np.int64)
        self.batch = np.empty(plan.frame_bits, dtype=np.int32)
        self.mark = np.zeros(self.packed.shape[1], dtype=np.uint64)

    def conversation(self) -> Generator[ParityRequest, np.ndarray, None]:
        plan = self.plan
        request = ParityRequest(tuple(range(plan.passes)), _EMPTY, _EMPTY, _EMPTY, _EMPTY)
        alice_top = self._check_answer((yield request), request)
        self.leaked += int(self.layout.blocks.sum())
        asked, n, answer = np.zeros((_ASK_FIELDS, 1), dtype=np.int32), 0, np.zeros(0, dtype=np.uint8)
        later, n_later = np.zeros((5, 1), dtype=np.int32), 0
        lay = self.layout
        while True:
            asked, n, later, n_later, self.opened, self.cand, self.walks = _bob_round(
                lay.perms, lay.inverse, lay.block_bits, lay.blocks, lay.heap_size, lay.mask_first, lay.masks,
                self.packed, self.words, self.ready, alice_top, self.top_first, self.heap_first, self.cur,
                self.leaked, self.state, asked, n, answer, later, n_later, self.opened, self.cand, self.walks,
                self.batch, self.mark)
            if n == 0:
                return
            request = ParityRequest((), asked[0, :n], asked[1, :n], asked[2, :n], asked[3, :n])
            answer = self._check_answer((yield request), request)

    def _check_answer(self, answer: np.ndarray, request: ParityRequest) -> np.ndarray:
        answer = np.asarray(answer)
        expected = request.size_bits(self.plan)
        if answer.dtype == np.uint8:
            bits = answer.size == 0 or answer.max() <= 1
        else:
            bits = ((answer == 0) | (answer == 1)).all()
        if answer.shape != (expected,) or not bits:
            raise ValueError(f"Alice's answer has shape {answer.shape}, expected {expected} bits")
        return np.ascontiguousarray(answer, dtype=np.uint8)


_EMPTY = np.zeros(0, dtype=np.int64)


def _result(bob: _Bob, round_trips: int) -> CascadeResult:
    corrected = np.unpackbits(bob.packed.view(np.uint8), axis=1, count=bob.plan.frame_bits, bitorder="little")
    return CascadeResult(corrected, bob.leaked, round_trips)


def reconcile(noisy_keys: np.ndarray, plan: CascadePlan, oracle: ParityOracle) -> CascadeResult:
    """Bob's side of Cascade over a synchronous oracle; ``noisy_keys`` is (frames, frame_bits) of 0/1."""
    bob = _Bob(noisy_keys, plan)
    conversation = bob.conversation()
    round_trips = 0
    try:
        request = next(conversation)
        while True:
            answer = oracle.parities(request)
            round_trips += 1
            request = conversation.send(answer)
    except StopIteration:
        return _result(bob, round_trips)


async def areconcile(noisy_keys: np.ndarray, plan: CascadePlan, oracle: AsyncParityOracle) -> CascadeResult:
    """As :func:`reconcile`, with Alice behind an asynchronous channel."""
    bob = _Bob(noisy_keys, plan)
    conversation = bob.conversation()
    round_trips = 0
    try:
        request = next(conversation)
        while True:
            answer = await oracle.parities(request)
            round_trips += 1
            request = conversation.send(answer)
    except StopIteration:
        return _result(bob, round_trips)
