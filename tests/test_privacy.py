"""Privacy amplification by Toeplitz hashing (bench/privacy.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.privacy import (
    ERROR_BUDGET,
    _convolution_sums,
    expand_seed,
    rounding_error_bound,
    seed_length,
    toeplitz_hash,
)


def direct(key: np.ndarray, seed: np.ndarray, out_bits: int) -> np.ndarray:
    """T·key mod 2 with the matrix written out: T[i, j] = seed[i − j + n − 1]."""
    n = key.size
    toeplitz = seed[np.arange(out_bits)[:, None] - np.arange(n)[None, :] + n - 1].astype(np.int64)
    return (toeplitz @ key.astype(np.int64) % 2).astype(np.uint8)


def random_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2, n, dtype=np.uint8)


@given(n=st.integers(1, 200), data=st.data(), block_bits=st.sampled_from([None, 1, 2, 8, 32, 256]),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_equals_the_matrix_written_out(n: int, data: st.DataObject, block_bits: int | None, seed: int) -> None:
    out_bits = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    key, toeplitz_seed = random_bits(rng, n), random_bits(rng, seed_length(n, out_bits))
    result = toeplitz_hash(key, toeplitz_seed, out_bits, block_bits=block_bits)
    assert result.dtype == np.uint8
    assert result.shape == (out_bits,)
    np.testing.assert_array_equal(result, direct(key, toeplitz_seed, out_bits))


@pytest.mark.parametrize("block_bits", [None, 16, 512, 4096])
def test_equals_exact_integer_convolution_on_larger_blocks(block_bits: int | None) -> None:
    rng = np.random.default_rng(7)
    for n, out_bits in [(5000, 2200), (4096, 4096), (6001, 1)]:
        key, seed = random_bits(rng, n), random_bits(rng, seed_length(n, out_bits))
        exact = np.convolve(seed.astype(np.int64), key.astype(np.int64))[n - 1: n - 1 + out_bits] & 1
        np.testing.assert_array_equal(toeplitz_hash(key, seed, out_bits, block_bits=block_bits), exact)


@pytest.mark.parametrize(("n", "block_bits"), [(2**18, 2**16), (2**17, 2**8)])
def test_float_error_within_the_bound(n: int, block_bits: int) -> None:
    # all ones makes every sum as large as it can be; random bits are the typical case
    rng = np.random.default_rng(8)
    out_bits = n // 2
    bound = rounding_error_bound(n, block_bits)
    for key, seed in [(np.ones(n, np.uint8), np.ones(seed_length(n, out_bits), np.uint8)),
                      (random_bits(rng, n), random_bits(rng, seed_length(n, out_bits)))]:
        sums = _convolution_sums(key, seed, out_bits, block_bits, workers=1)
        assert np.abs(sums - np.rint(sums)).max() <= bound < ERROR_BUDGET
        for i in rng.integers(0, out_bits, 5):  # the integers themselves: Σ_j seed[i − j + n − 1]·key[j]
            assert np.rint(sums[i]) == np.dot(seed[i: i + n][::-1].astype(np.int64), key)


def test_error_bound_at_a_million_bits_is_far_below_one_half() -> None:
    assert rounding_error_bound(10**6) < 2e-5
    assert rounding_error_bound(2**27) < ERROR_BUDGET < rounding_error_bound(2**28)


def test_identical_keys_agree_and_every_single_flip_changes_the_output() -> None:
    rng = np.random.default_rng(9)
    n, out_bits = 600, 128
    key, seed = random_bits(rng, n), random_bits(rng, seed_length(n, out_bits))
    reference = toeplitz_hash(key, seed, out_bits)
    np.testing.assert_array_equal(toeplitz_hash(key.copy(), seed, out_bits), reference)
    for j in range(n):  # the output moves by column j of T, zero only for an all-zero 128-bit seed window
        flipped = key.copy()
        flipped[j] ^= 1
        assert (toeplitz_hash(flipped, seed, out_bits) != reference).any()


def test_workers_and_input_types_do_not_change_the_output() -> None:
    rng = np.random.default_rng(10)
    n, out_bits = 3 * 2**16 + 5, 70000
    key, seed = random_bits(rng, n), random_bits(rng, seed_length(n, out_bits))
    reference = toeplitz_hash(key, seed, out_bits)
    np.testing.assert_array_equal(toeplitz_hash(key, seed, out_bits, workers=2), reference)
    np.testing.assert_array_equal(toeplitz_hash(key.astype(bool), seed.astype(np.int64), out_bits), reference)


def test_expanded_seed_is_deterministic_shake256() -> None:
    bits = expand_seed(12345, 1000)
    assert bits.dtype == np.uint8
    assert bits.shape == (1000,)
    np.testing.assert_array_equal(bits, expand_seed(12345, 1000))
    assert (bits != expand_seed(12346, 1000)).any()
    stream = hashlib.shake_256((12345).to_bytes(2, "little")).digest(125)
    np.testing.assert_array_equal(bits, np.unpackbits(np.frombuffer(stream, np.uint8), bitorder="little"))
    assert expand_seed(0, 0).size == 0
    n, out_bits = 2000, 900
    key = random_bits(np.random.default_rng(11), n)
    first = toeplitz_hash(key, expand_seed(5, seed_length(n, out_bits)), out_bits)
    np.testing.assert_array_equal(first, toeplitz_hash(key, expand_seed(5, seed_length(n, out_bits)), out_bits))
    assert (first != toeplitz_hash(key, expand_seed(6, seed_length(n, out_bits)), out_bits)).any()


def test_bad_arguments_raise_naming_the_argument() -> None:
    key, seed = np.zeros(100, np.uint8), np.zeros(seed_length(100, 40), np.uint8)
    with pytest.raises(ValueError, match="out_bits"):
        toeplitz_hash(key, np.zeros(seed_length(100, 101), np.uint8), 101)  # m > n
    with pytest.raises(ValueError, match="out_bits"):
        toeplitz_hash(key, seed, 0)
    with pytest.raises(ValueError, match="seed must have"):
        toeplitz_hash(key, seed[:-1], 40)
    with pytest.raises(ValueError, match="seed bits"):
        toeplitz_hash(key, np.full_like(seed, 2), 40)
    with pytest.raises(ValueError, match="key must be a non-empty 1-D"):
        toeplitz_hash(key.reshape(10, 10), seed, 40)
    with pytest.raises(ValueError, match="key must be a non-empty 1-D"):
        toeplitz_hash(np.zeros(0, np.uint8), seed, 40)
    with pytest.raises(ValueError, match="key must hold integer bits"):
        toeplitz_hash(key.astype(float), seed, 40)
    with pytest.raises(ValueError, match="block_bits"):
        toeplitz_hash(key, seed, 40, block_bits=48)
    with pytest.raises(ValueError, match="workers"):
        toeplitz_hash(key, seed, 40, workers=0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        expand_seed(-1, 8)
    with pytest.raises(ValueError, match="n_bits"):
        expand_seed(1, -8)


def test_sizes_beyond_exact_float64_are_refused() -> None:
    n = 2**24  # with 1-bit blocks the sum over 2^24 blocks alone breaks the error budget
    with pytest.raises(ValueError, match="too long for exact float64"):
        toeplitz_hash(np.zeros(n, np.uint8), np.zeros(seed_length(n, 1), np.uint8), 1, block_bits=1)
