"""Cascade error correction between two parties that share only messages, many frames in lock-step.

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
bisection then runs one level per round trip for all open sub-blocks of all frames at once.

Assumptions: frames are independent; permutations are public (the same for every frame of a batch);
BINARY always ends on a true error, so Bob never flips a correct bit; remaining errors (frame error rate)
must be caught by verification hashing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from bench.keyrate import binary_entropy

COARSE_BLOCKS = 64  # up to this many blocks per frame, block parities come from packed bit masks
                    # (no shuffled copy of the frames is made unless a sub-block is asked about)


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

    perms: np.ndarray    # (passes, n): position in the pass order → bit index
    inverse: np.ndarray  # (passes, n): bit index → position in the pass order
    block_bits: np.ndarray
    blocks: np.ndarray   # blocks per frame
    depth: np.ndarray    # ⌈log2 k⌉: every sub-block at this depth is a single bit (or empty)
    masks: tuple[np.ndarray | None, ...]  # packed uint64 block masks of coarse passes


@lru_cache(maxsize=8)
def _layout(seed: int, frame_bits: int, block_bits: tuple[int, ...]) -> _Layout:
    n = frame_bits
    perms = np.stack([np.random.default_rng([seed, q]).permutation(n) for q in range(len(block_bits))])
    inverse = np.empty_like(perms)
    np.put_along_axis(inverse, perms, np.arange(n)[None, :], axis=1)
    k = np.array(block_bits, dtype=np.int64)
    blocks = -(-n // k)
    depth = np.ceil(np.log2(k)).astype(np.int64)
    masks = []
    for q in range(len(block_bits)):
        if blocks[q] > COARSE_BLOCKS:
            masks.append(None)
            continue
        member = np.zeros((blocks[q], n), dtype=np.uint8)
        member[np.arange(n) // k[q], perms[q]] = 1
        masks.append(_pack(member))
    for table in (perms, inverse, k, blocks, depth, *(m for m in masks if m is not None)):
        table.setflags(write=False)
    return _Layout(perms, inverse, k, blocks, depth, tuple(masks))


def _pack(bits: np.ndarray) -> np.ndarray:
    """Rows of bits → rows of uint64 words (little-endian bit order, zero padded)."""
    packed = np.packbits(bits, axis=1, bitorder="little")
    pad = -packed.shape[1] % 8
    return np.ascontiguousarray(np.pad(packed, ((0, 0), (0, pad)))).view(np.uint64)


class _ShuffledKeys:
    """Frames in each pass's order, packed 64 bits to a word, built lazily per (pass, frame): range parities
    then read ⌈L/64⌉ contiguous words instead of gathering L permuted bits."""

    def __init__(self, keys: np.ndarray, layout: _Layout) -> None:
        self.keys = keys  # (frames, n), natural order, the caller's array (Bob flips it in place)
        self.layout = layout
        passes, n = layout.perms.shape
        self.words_per_frame = -(-n // 64)
        self.words = np.zeros((passes, keys.shape[0], self.words_per_frame), dtype=np.uint64)
        self.ready = np.zeros((passes, keys.shape[0]), dtype=bool)

    def _prepare(self, q: np.ndarray, frame: np.ndarray) -> None:
        missing = ~self.ready[q, frame]
        if not missing.any():
            return
        for p in np.unique(q[missing]):
            rows = np.unique(frame[missing & (q == p)])
            self.words[p, rows] = _pack(np.take(self.keys[rows], self.layout.perms[p], axis=1))
            self.ready[p, rows] = True

    def block_parities(self, q: int) -> np.ndarray:
        """(frames, blocks) parities of the top-level blocks of pass ``q``."""
        mask = self.layout.masks[q]
        if mask is not None:
            words = _pack(self.keys)[:, None, :] & mask[None, :, :]
            return (np.bitwise_count(np.bitwise_xor.reduce(words, axis=2)) & 1).astype(np.uint8)
        shuffled = np.take(self.keys, self.layout.perms[q], axis=1)
        self.words[q] = _pack(shuffled)  # Bob starts a pass before he asks anything about it
        self.ready[q] = True
        return np.bitwise_xor.reduceat(shuffled, np.arange(0, self.keys.shape[1], self.layout.block_bits[q]), axis=1)

    def flip(self, frame: np.ndarray, bit: np.ndarray) -> None:
        """Mirror bit flips (distinct (frame, bit)) already applied to ``keys`` into the prepared rows."""
        q, f = np.nonzero(self.ready[:, frame])
        pos = self.layout.inverse[q, bit[f]]
        word = (q * self.keys.shape[0] + frame[f]) * self.words_per_frame + (pos >> 6)
        np.bitwise_xor.at(self.words.reshape(-1), word, np.left_shift(np.uint64(1), pos.astype(np.uint64) & 63))

    def parities(self, q: np.ndarray, frame: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Parity of ``length`` bits from ``start`` of each frame in the order of its pass."""
        self._prepare(q, frame)
        stop = start + length
        first, last = start >> 6, (stop - 1) >> 6
        head = np.left_shift(np.uint64(0xFFFF_FFFF_FFFF_FFFF), (start & 63).astype(np.uint64))
        tail = np.right_shift(np.uint64(0xFFFF_FFFF_FFFF_FFFF), (63 - ((stop - 1) & 63)).astype(np.uint64))
        base = (q * self.keys.shape[0] + frame) * self.words_per_frame + first
        count = last - first + 1
        flat = self.words.reshape(-1)
        if count.max() == 1:  # the common case: every range inside one word
            acc = flat[base] & head & tail
            return (np.bitwise_count(acc) & 1).astype(np.uint8)
        acc = np.empty(q.size, dtype=np.uint64)
        order = np.argsort(count, kind="stable")
        runs = _first_of_runs(count[order])
        for c, sel in zip(count[order[runs]], np.split(order, runs[1:]), strict=True):
            if c == 1:
                acc[sel] = flat[base[sel]] & head[sel] & tail[sel]
                continue
            w = flat[base[sel][:, None] + np.arange(c)]
            w[:, 0] &= head[sel]
            w[:, -1] &= tail[sel]
            acc[sel] = np.bitwise_xor.reduce(w, axis=1)
        return (np.bitwise_count(acc) & 1).astype(np.uint8)


def _first_of_runs(ordered: np.ndarray) -> np.ndarray:
    """Indices where a sorted array takes a new value (np.unique's hash path is slow on large int arrays)."""
    new = np.ones(ordered.size, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    return np.flatnonzero(new)


def _check_keys(keys: np.ndarray, plan: CascadePlan, who: str) -> np.ndarray:
    keys = np.asarray(keys)
    if keys.size == 0:
        raise ValueError(f"{who}: empty key")
    if keys.shape != (plan.frames, plan.frame_bits):
        raise ValueError(f"{who}: key shape {keys.shape} does not match the plan's "
                         f"{plan.frames} frames of {plan.frame_bits} bits")
    if not ((keys == 0) | (keys == 1)).all():
        raise ValueError(f"{who}: key bits must be 0 or 1")
    return np.ascontiguousarray(keys, dtype=np.uint8)


class CascadeAlice:
    """Alice's side: holds the sifted key and answers parity requests (the in-memory :class:`ParityOracle`)."""

    def __init__(self, keys: np.ndarray, plan: CascadePlan) -> None:
        self._keys = _check_keys(keys, plan, "Alice")
        self._plan = plan
        self._layout = _layout(plan.seed, plan.frame_bits, plan.block_bits)
        self._shuffled = _ShuffledKeys(self._keys, self._layout)

    def parities(self, request: ParityRequest) -> np.ndarray:
        plan = self._plan
        q, frame = np.asarray(request.pass_index), np.asarray(request.frame)
        start, stop = np.asarray(request.start), np.asarray(request.stop)
        if not q.shape == frame.shape == start.shape == stop.shape or q.ndim != 1:
            raise ValueError("parity request: pass_index, frame, start, stop must be 1-D and of equal length")
        if any(not 0 <= p < plan.passes for p in request.block_passes):
            raise ValueError(f"parity request: pass outside 0..{plan.passes - 1}")
        if q.size and ((q < 0).any() or (q >= plan.passes).any() or (frame < 0).any()
                       or (frame >= plan.frames).any() or (start < 0).any() or (stop <= start).any()
                       or (stop > plan.frame_bits).any()):
            raise ValueError("parity request: range outside the plan's passes, frames or frame bits")
        parts = [self._shuffled.block_parities(p).reshape(-1) for p in request.block_passes]
        if q.size:
            parts.append(self._shuffled.parities(q.astype(np.int64), frame.astype(np.int64),
                                                 start.astype(np.int64), (stop - start).astype(np.int64)))
        return np.concatenate(parts)


def _span(v: np.ndarray, block_len: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval [lo, hi) within its block of heap node ``v``: node i of depth d covers
    [⌈i·L/2^d⌉, ⌈(i+1)·L/2^d⌉), so children split their parent into halves that differ by at most one bit
    and the node of depth d holding offset o is i = ⌊o·2^d / L⌋."""
    depth = np.frexp(v)[1].astype(np.int64) - 1
    return _span_at(v - (np.int64(1) << depth), depth, block_len)


def _span_at(i: np.ndarray, depth: np.ndarray, block_len: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_span` of node ``i`` of ``depth``."""
    round_up = (np.int64(1) << depth) - 1
    return (i * block_len + round_up) >> depth, ((i + 1) * block_len + round_up) >> depth


@dataclass(frozen=True)
class _Nodes:
    """Sub-blocks: pass, frame, block (frame·blocks + block of the frame), heap id (1 the block, children
    2v, 2v+1), block start (pass order), block length."""

    q: np.ndarray
    frame: np.ndarray
    block: np.ndarray
    v: np.ndarray
    block_start: np.ndarray
    block_len: np.ndarray

    def __getitem__(self, sel: np.ndarray) -> _Nodes:
        return _Nodes(self.q[sel], self.frame[sel], self.block[sel], self.v[sel], self.block_start[sel],
                      self.block_len[sel])

    @staticmethod
    def concat(parts: list[_Nodes]) -> _Nodes:
        return _Nodes(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                        ("q", "frame", "block", "v", "block_start", "block_len")))


_EMPTY = np.zeros(0, dtype=np.int64)
_KNOWN, _ODD = np.uint8(2), np.uint8(1)  # node state: 0 unknown, 2 known and even, 3 known and odd


class _Bob:
    """Bob's state: noisy keys, and per pass a heap of every sub-block whose parity (Alice's) he knows,
    holding whether his own parity differs from it. Bit flips toggle that for every known block holding
    the bit, so odd blocks are found without recomputing parities."""

    def __init__(self, keys: np.ndarray, plan: CascadePlan) -> None:
        self.plan = plan
        self.keys = _check_keys(keys, plan, "Bob").copy()
        self.layout = _layout(plan.seed, plan.frame_bits, plan.block_bits)
        self.shuffled = _ShuffledKeys(self.keys, self.layout)
        # depth-major storage, so that the few nodes ever touched in passes of huge blocks share pages:
        # level d of pass q holds 2^d nodes per block from self.level[q, d]
        depth = np.arange(int(self.layout.depth.max()) + 1)
        per_level = np.where(depth <= self.layout.depth[:, None],
                             (plan.frames * self.layout.blocks)[:, None] << depth, 0)
        self.level = (np.cumsum(per_level) - per_level.reshape(-1)).reshape(per_level.shape)
        self.state = np.zeros(int(per_level.sum()), dtype=np.uint8)
        self.started = 0
        self.open: list[_Nodes] = []
        self.leaked = np.zeros(plan.frames, dtype=np.int64)

    def conversation(self) -> Generator[ParityRequest, np.ndarray, None]:
        plan, layout = self.plan, self.layout
        request = ParityRequest(tuple(range(plan.passes)), _EMPTY, _EMPTY, _EMPTY, _EMPTY)
        answer = self._check_answer((yield request), request)
        self.leaked += int(layout.blocks.sum())
        cuts = np.cumsum(plan.frames * layout.blocks)[:-1]
        alice_blocks = [a.reshape(plan.frames, -1) for a in np.split(answer, cuts)]
        for q in range(plan.passes):
            self.started = q + 1
            self._admit(self._start_pass(q, alice_blocks[q]))
            while self.open:
                yield from self._bisect()

    def _check_answer(self, answer: np.ndarray, request: ParityRequest) -> np.ndarray:
        answer = np.asarray(answer, dtype=np.uint8)
        if answer.shape != (request.size_bits(self.plan),) or (answer > 1).any():
            raise ValueError(f"Alice's answer has shape {answer.shape}, expected {request.size_bits(self.plan)} bits")
        return answer

    def _start_pass(self, q: int, alice: np.ndarray) -> _Nodes:
        """Mark every block of pass ``q`` known; return the odd ones."""
        layout, n = self.layout, self.plan.frame_bits
        k, nb = int(layout.block_bits[q]), int(layout.blocks[q])
        frame, block = np.divmod(np.arange(self.plan.frames * nb), nb)
        err = (self.shuffled.block_parities(q).reshape(-1) ^ alice.reshape(-1)).astype(np.uint8)
        self.state[self.level[q, 0]: self.level[q, 0] + err.size] = _KNOWN | err
        odd = np.flatnonzero(err)
        start = block[odd] * k
        return _Nodes(np.full(odd.size, q), frame[odd], odd, np.ones(odd.size, dtype=np.int64), start,
                      np.minimum(k, n - start))

    def _index(self, nodes: _Nodes, v: np.ndarray) -> np.ndarray:
        """Where node ``v`` of each of the nodes' blocks keeps its state."""
        depth = np.frexp(v)[1].astype(np.int64) - 1
        return self.level[nodes.q, depth] + (nodes.block << depth) + v - (np.int64(1) << depth)

    def _bisect(self) -> Generator[ParityRequest, np.ndarray, None]:
        """One BINARY level for every open sub-block: ask the left half's parity unless known."""
        nodes = _Nodes.concat(self.open)
        where = self._index(nodes, nodes.v)
        if len(self.open) > 1:  # cascades may have re-opened a node that is open already
            order = np.argsort(where)
            keep = order[_first_of_runs(where[order])]
            nodes, where = nodes[keep], where[keep]
        self.open = []
        nodes = nodes[self.state[where] == _KNOWN | _ODD]  # a cascade may have evened it
        left = 2 * nodes.v
        lo, mid = _span(left, nodes.block_len)
        where = self._index(nodes, left)  # the right child follows
        state = self.state[where]
        ask = np.flatnonzero(state < _KNOWN)
        if ask.size:
            q, frame, start = nodes.q[ask], nodes.frame[ask], nodes.block_start[ask] + lo[ask]
            request = ParityRequest((), q, frame, start, nodes.block_start[ask] + mid[ask])
            answer = self._check_answer((yield request), request)
            self.leaked += np.bincount(frame, minlength=self.plan.frames)
            state[ask] = _KNOWN | (self.shuffled.parities(q, frame, start, mid[ask] - lo[ask]) ^ answer)
        self.state[where] = state
        right_odd = (state & _ODD) ^ _ODD  # the parent is odd
        self.state[where + 1] = _KNOWN | right_odd
        self._admit(_Nodes(nodes.q, nodes.frame, nodes.block, left + right_odd, nodes.block_start,
                           nodes.block_len))

    def _admit(self, nodes: _Nodes) -> None:
        """Odd sub-blocks: single bits are errors and get flipped (cascading), larger ones wait for BINARY."""
        while nodes.q.size:
            lo, hi = _span(nodes.v, nodes.block_len)
            leaf = hi - lo == 1
            if not leaf.all():
                self.open.append(nodes[~leaf])
            if not leaf.any():
                return
            bits = self.layout.perms[nodes.q[leaf], nodes.block_start[leaf] + lo[leaf]]
            nodes = self._flip(nodes.frame[leaf], bits)

    def _flip(self, frame: np.ndarray, bit: np.ndarray) -> _Nodes:
        """Correct the bits; toggle every known block holding them; return the smallest known odd blocks."""
        n, layout = self.plan.frame_bits, self.layout
        flat = np.sort(frame * n + bit)
        flat = flat[_first_of_runs(flat)]  # two bisections may end on the same error
        self.keys.reshape(-1)[flat] ^= 1
        frame, bit = np.divmod(flat, n)
        self.shuffled.flip(frame, bit)
        q = np.repeat(np.arange(self.started), flat.size)
        frame, bit = np.tile(frame, self.started), np.tile(bit, self.started)
        k = layout.block_bits[q]
        pos = layout.inverse[q, bit]
        block_start = pos // k * k
        block_len = np.minimum(k, n - block_start)
        block = frame * layout.blocks[q] + pos // k
        # every ancestor of the bit, one column per depth; a column is real while its parent spans ≥ 2 bits
        depth = np.arange(int(layout.depth[: self.started].max()) + 1)
        i = ((pos - block_start)[:, None] << depth) // block_len[:, None]
        v = (np.int64(1) << depth) + i
        lo, hi = _span_at(i, depth, block_len[:, None])
        real = np.ones(v.shape, dtype=bool)
        real[:, 1:] = hi[:, :-1] - lo[:, :-1] >= 2
        node = self.level[q[:, None], depth] + (block[:, None] << depth) + i
        known = real & (self.state[np.where(real, node, 0)] >= _KNOWN)  # known blocks are closed upwards
        np.bitwise_xor.at(self.state, node[known], _ODD)
        odd = known & (self.state[np.where(known, node, 0)] == _KNOWN | _ODD)
        deepest = odd.shape[1] - 1 - np.argmax(odd[:, ::-1], axis=1)
        row = np.flatnonzero(odd.any(axis=1))
        pick = node[row, deepest[row]]
        order = np.argsort(pick)
        row = row[order[_first_of_runs(pick[order])]]  # flips that share their deepest odd block open it once
        return _Nodes(q[row], frame[row], block[row], v[row, deepest[row]], block_start[row], block_len[row])


def _result(bob: _Bob, round_trips: int) -> CascadeResult:
    return CascadeResult(bob.keys, bob.leaked, round_trips)


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
