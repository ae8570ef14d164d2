"""Verification of corrected keys by polynomial hashing over GF(p), p = 2^61 − 1, many frames at once.

After error correction Alice draws a hash key, computes the tag of each of her frames and sends key and tags;
Bob computes the tags of his corrected frames and keeps a frame only where the tags agree. A frame whose tags
differ is discarded and counted, never kept (:class:`Verification`).

Hash (polynomial evaluation, Wegman & Carter, J. Comput. Syst. Sci. 22, 265 (1981); Stinson, Des. Codes
Cryptogr. 4, 369 (1994)): a frame of n bits is cut into L = ⌈n/16⌉ words m_i of 16 bits (zero padded; all
frames compared have the same n) and, for an evaluation point r ∈ GF(p),

    h_r(m) = Σ_{i<L} m_i · r^i  mod p.

Failure probability. For frames a ≠ b, h_r(a) − h_r(b) is a polynomial in r of degree ≤ L − 1 whose coefficients
a_i − b_i lie in (−2^16, 2^16) and are not all zero mod p, so it has at most L − 1 roots in the field GF(p):
Pr_r[h_r(a) = h_r(b)] ≤ (L − 1)/p. The tag is the pair (h_r1, h_r2) for two independent uniform points, so a
wrong frame passes with probability ≤ ((L − 1)/p)^2 (:func:`collision_probability`): < 2^-90 for 2^20-bit frames,
< 2^-80 at :data:`MAX_FRAME_BITS` = 2^25, in any case ≤ 2^-64. Over F kept frames ε_cor ≤ F·((L − 1)/p)^2
(union bound). The bound needs the key to be independent of the frames: Alice draws it after error correction
has ended and uses it once; a numpy Generator is not a cryptographic PRNG, so seed it afresh from the operating
system (e.g. ``np.random.default_rng(secrets.randbits(128))``) for each key.

Leak: the tag Alice sends discloses at most :data:`TAG_BITS` = 2·61 bits about each kept frame (Bob's one
pass/fail bit per frame is not counted, as usual for ε_cor-correct protocols).

Computation: the powers r^i are split into four 16-bit limbs, so Σ_i m_i·limb_t(r^i) is a product of
(frames × L) by (L × 8) matrices whose entries are < 2^16; every partial sum is an integer < L·2^32 ≤ 2^53 for
L ≤ 2^21, hence exact in float64 whatever the summation order (one einsum for all frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIME = 2**61 - 1
TAG_BITS = 2 * 61  # two residues mod 2^61 − 1
WORD_BITS = 16
MAX_FRAME_BITS = 2**25  # L ≤ 2^21 words keeps the limb products exact in float64
_P = np.uint64(PRIME)
_LOW29 = np.uint64(2**29 - 1)
_LOW32 = np.uint64(2**32 - 1)


@dataclass(frozen=True)
class HashKey:
    """Two evaluation points in [0, 2^61 − 1), drawn by Alice after error correction and sent to Bob."""

    points: tuple[int, int]

    def __post_init__(self) -> None:
        if len(self.points) != 2 or not all(0 <= int(r) < PRIME for r in self.points):
            raise ValueError(f"points must be two integers in [0, 2^61 - 1), got {self.points}")


def draw_hash_key(rng: np.random.Generator) -> HashKey:
    """A uniform key from ``rng`` (the only randomness this module uses)."""
    r = rng.integers(0, PRIME, size=2, dtype=np.uint64)
    return HashKey((int(r[0]), int(r[1])))


def collision_probability(frame_bits: int) -> float:
    """Bound on the probability that two different frames of ``frame_bits`` bits get the same tag."""
    if not 1 <= frame_bits <= MAX_FRAME_BITS:
        raise ValueError(f"frame_bits must be in 1..{MAX_FRAME_BITS}, got {frame_bits}")
    words = -(-frame_bits // WORD_BITS)
    return ((words - 1) / PRIME) ** 2


def _mulmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a·b mod 2^61 − 1 for uint64 arrays with entries < p (broadcasting), without 128-bit integers:
    with a = a1·2^32 + a0 and 2^61 ≡ 1, a·b ≡ 8·a1·b1 + (a1·b0 + a0·b1)·2^32 + a0·b0, each term < 2^61 + 8
    after folding, the sum < 2^63."""
    a1, a0 = a >> np.uint64(32), a & _LOW32
    b1, b0 = b >> np.uint64(32), b & _LOW32
    mid = a1 * b0 + a0 * b1  # < 2^62
    low = a0 * b0  # < 2^64
    s = ((a1 * b1) << np.uint64(3)) + (mid >> np.uint64(29)) + ((mid & _LOW29) << np.uint64(32))
    s = s + (low & _P) + (low >> np.uint64(61))
    s = (s & _P) + (s >> np.uint64(61))
    return np.where(s >= _P, s - _P, s)


def _powers(key: HashKey, words: int) -> np.ndarray:
    """(2, words) uint64: r^i mod p for each point, built by doubling (log2(words) vector steps)."""
    powers = np.ones((2, 1), dtype=np.uint64)
    while powers.shape[1] < words:
        stride = np.array([[pow(r, powers.shape[1], PRIME)] for r in key.points], dtype=np.uint64)
        powers = np.concatenate([powers, _mulmod(powers, stride)], axis=1)
    return powers[:, :words]


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[0] < 1 or not 1 <= frames.shape[1] <= MAX_FRAME_BITS:
        raise ValueError(f"frames must be a (frames, bits) array with 1..{MAX_FRAME_BITS} bits per frame, "
                         f"got shape {frames.shape}")
    if frames.dtype == np.bool_:
        return frames.view(np.uint8)
    if not np.issubdtype(frames.dtype, np.integer):
        raise ValueError(f"frames must hold integer bits, got dtype {frames.dtype}")
    if frames.dtype == np.uint8 and frames.max() <= 1:
        return frames
    if ((frames != 0) & (frames != 1)).any():
        raise ValueError("frames bits must be 0 or 1")
    return frames.astype(np.uint8)


def frame_tags(frames: np.ndarray, key: HashKey) -> np.ndarray:
    """Tags of each row of ``frames`` ((frames, bits) of 0/1): a (frames, 2) uint64 array of residues mod p."""
    frames = _check_frames(frames)
    count, bits = frames.shape
    pad = -bits % WORD_BITS
    if pad:
        frames = np.pad(frames, ((0, 0), (0, pad)))
    words = np.packbits(frames, axis=1, bitorder="little").view("<u2").astype(np.float64)  # (count, L)
    powers = _powers(key, words.shape[1])
    limbs = np.stack([(powers >> np.uint64(WORD_BITS * t)) & np.uint64(0xFFFF) for t in range(4)], axis=1)
    # (count, 2·4) exact integers < 2^53; einsum's own loop, not a BLAS call whose threads wake slowly
    sums = np.einsum("fl,kl->fk", words, limbs.reshape(8, -1).astype(np.float64))
    shifts = np.array([1 << (WORD_BITS * t) for t in range(4)], dtype=np.uint64)
    terms = _mulmod(sums.astype(np.uint64).reshape(count, 2, 4), shifts)  # limb t carries weight 2^(16t)
    total = terms.sum(axis=2)  # 4 terms < p: no overflow
    total = (total & _P) + (total >> np.uint64(61))
    return np.where(total >= _P, total - _P, total)


@dataclass(frozen=True)
class Verification:
    """Outcome of comparing tags frame by frame; only frames that passed go on to privacy amplification."""

    passed: np.ndarray  # (frames,) bool

    @property
    def discarded(self) -> int:
        return int(self.passed.size - np.count_nonzero(self.passed))

    @property
    def leaked_bits(self) -> int:
        """Tag bits disclosed about the frames that are kept (the tags of discarded frames leak nothing kept)."""
        return TAG_BITS * int(np.count_nonzero(self.passed))

    def keep(self, frames: np.ndarray) -> np.ndarray:
        """The rows of ``frames`` that passed; ``frames`` must have one row per verified frame."""
        frames = np.asarray(frames)
        if frames.ndim < 1 or frames.shape[0] != self.passed.size:
            raise ValueError(f"frames has {frames.shape[0] if frames.ndim else 0} rows, "
                             f"verification covered {self.passed.size}")
        return frames[self.passed]


def compare_tags(alice_tags: np.ndarray, bob_tags: np.ndarray) -> Verification:
    """Frame-wise comparison of two (frames, 2) tag arrays."""
    alice_tags, bob_tags = np.asarray(alice_tags), np.asarray(bob_tags)
    for name, tags in (("alice_tags", alice_tags), ("bob_tags", bob_tags)):
        if tags.ndim != 2 or tags.shape[1] != 2:
            raise ValueError(f"{name} must have shape (frames, 2), got {tags.shape}")
    if alice_tags.shape != bob_tags.shape:
        raise ValueError(f"alice_tags {alice_tags.shape} and bob_tags {bob_tags.shape} differ in shape")
    return Verification((alice_tags == bob_tags).all(axis=1))


def verify(alice_tags: np.ndarray, bob_frames: np.ndarray, key: HashKey) -> Verification:
    """Bob's side: hash his corrected frames with Alice's key and compare with the tags she sent."""
    return compare_tags(alice_tags, frame_tags(bob_frames, key))
