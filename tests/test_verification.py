"""Verification hashing of corrected frames (bench/verification.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.verification import (
    MAX_FRAME_BITS,
    PRIME,
    TAG_BITS,
    HashKey,
    collision_probability,
    compare_tags,
    draw_hash_key,
    frame_tags,
    verify,
)


def direct_tag(frame: np.ndarray, r: int) -> int:
    """Σ_i m_i·r^i mod p in Python integers, m_i the 16-bit little-endian words of the zero-padded frame."""
    bits = [int(b) for b in frame] + [0] * (-frame.size % 16)
    words = [sum(bits[i + k] << k for k in range(16)) for i in range(0, len(bits), 16)]
    return sum(w * pow(r, i, PRIME) for i, w in enumerate(words)) % PRIME


@given(bits=st.integers(1, 400), frames=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       points=st.one_of(st.none(), st.sampled_from([(0, 1), (PRIME - 1, PRIME - 2), (2**32, 2**61 - 2**31)])))
@settings(max_examples=60, deadline=None)
def test_tags_equal_direct_polynomial_evaluation(bits: int, frames: int, seed: int,
                                                 points: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(seed)
    key = draw_hash_key(rng) if points is None else HashKey(points)
    keys = rng.integers(0, 2, (frames, bits), dtype=np.uint8)
    tags = frame_tags(keys, key)
    assert tags.shape == (frames, 2)
    assert tags.dtype == np.uint64
    for f in range(frames):
        assert [int(t) for t in tags[f]] == [direct_tag(keys[f], r) for r in key.points]


def test_exact_at_the_largest_frame() -> None:
    # all words 0xFFFF and r = p − 1, p − 2 make every float64 partial sum as large as it can get (< 2^53)
    key = HashKey((PRIME - 1, PRIME - 2))
    words = MAX_FRAME_BITS // 16
    tags = frame_tags(np.ones((1, MAX_FRAME_BITS), dtype=np.uint8), key)
    geometric = [0xFFFF * (pow(r, words, PRIME) - 1) * pow(r - 1, -1, PRIME) % PRIME for r in key.points]
    assert [int(t) for t in tags[0]] == geometric


def test_identical_frames_agree_and_every_single_flip_is_caught() -> None:
    rng = np.random.default_rng(1)
    alice = rng.integers(0, 2, (1, 1000), dtype=np.uint8)
    key = draw_hash_key(rng)
    assert verify(frame_tags(alice, key), alice.copy(), key).passed.all()
    bob = np.repeat(alice, 1000, axis=0)
    bob[np.arange(1000), np.arange(1000)] ^= 1  # frame i has bit i flipped
    result = verify(np.repeat(frame_tags(alice, key), 1000, axis=0), bob, key)
    assert result.discarded == 1000


def test_failed_frames_are_discarded_counted_and_not_leaked_for() -> None:
    rng = np.random.default_rng(2)
    alice = rng.integers(0, 2, (64, 2**12), dtype=np.uint8)
    bob = alice.copy()
    bad = np.array([3, 17, 40])
    bob[bad, rng.integers(0, 2**12, bad.size)] ^= 1
    bob[40, :100] ^= 1  # a burst on top
    key = draw_hash_key(rng)
    result = verify(frame_tags(alice, key), bob, key)
    np.testing.assert_array_equal(np.flatnonzero(~result.passed), bad)
    assert result.discarded == 3
    assert result.leaked_bits == TAG_BITS * 61
    kept = result.keep(bob)
    assert kept.shape == (61, 2**12)
    np.testing.assert_array_equal(kept, np.delete(alice, bad, axis=0))


def test_collision_bound_is_below_2_to_the_minus_64() -> None:
    assert collision_probability(2**20) == pytest.approx(((2**16 - 1) / PRIME) ** 2)
    assert collision_probability(2**20) < 2.0**-90
    assert collision_probability(MAX_FRAME_BITS) < 2.0**-80
    assert collision_probability(16) == 0.0  # one word: h_r(m) = m, no collision at all


def test_same_generator_seed_same_key_and_tags() -> None:
    frames = np.random.default_rng(3).integers(0, 2, (5, 777), dtype=np.uint8)
    first, again = draw_hash_key(np.random.default_rng(9)), draw_hash_key(np.random.default_rng(9))
    other = draw_hash_key(np.random.default_rng(10))
    assert first == again != other
    np.testing.assert_array_equal(frame_tags(frames, first), frame_tags(frames, again))
    assert (frame_tags(frames, first) != frame_tags(frames, other)).all()


def test_bool_and_wide_integer_frames_hash_like_uint8() -> None:
    frames = np.random.default_rng(4).integers(0, 2, (3, 100), dtype=np.uint8)
    key = draw_hash_key(np.random.default_rng(5))
    expected = frame_tags(frames, key)
    np.testing.assert_array_equal(frame_tags(frames.astype(bool), key), expected)
    np.testing.assert_array_equal(frame_tags(frames.astype(np.int64), key), expected)


@pytest.mark.parametrize(("frames", "match"), [
    (np.zeros(16, dtype=np.uint8), "frames must be a \\(frames, bits\\) array"),
    (np.zeros((0, 16), dtype=np.uint8), "frames must be a \\(frames, bits\\) array"),
    (np.zeros((2, 0), dtype=np.uint8), "frames must be a \\(frames, bits\\) array"),
    (np.full((2, 16), 2, dtype=np.uint8), "frames bits must be 0 or 1"),
    (np.full((2, 16), -1, dtype=np.int64), "frames bits must be 0 or 1"),
    (np.zeros((2, 16)), "frames must hold integer bits"),
])
def test_bad_frames_raise_naming_the_argument(frames: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        frame_tags(frames, HashKey((1, 2)))


def test_bad_keys_tags_and_lengths_raise_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="points"):
        HashKey((PRIME, 1))
    with pytest.raises(ValueError, match="points"):
        HashKey((-1, 1))
    with pytest.raises(ValueError, match="frame_bits"):
        collision_probability(MAX_FRAME_BITS + 1)
    tags = np.zeros((3, 2), dtype=np.uint64)
    with pytest.raises(ValueError, match="alice_tags"):
        compare_tags(np.zeros((3, 3), dtype=np.uint64), tags)
    with pytest.raises(ValueError, match="bob_tags"):
        compare_tags(tags, np.zeros(3, dtype=np.uint64))
    with pytest.raises(ValueError, match="differ in shape"):
        compare_tags(tags, tags[:2])
    with pytest.raises(ValueError, match="frames has 2 rows"):
        compare_tags(tags, tags).keep(np.zeros((2, 16), dtype=np.uint8))
