"""Privacy amplification by Toeplitz hashing (bench/privacy.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.privacy import KERNELS, _clmul, expand_seed, seed_length, toeplitz_hash


def direct(key: np.ndarray, seed: np.ndarray, out_bits: int) -> np.ndarray:
    """T·key mod 2 with the matrix written out: T[i, j] = seed[i − j + n − 1]."""
    n = key.size
    toeplitz = seed[np.arange(out_bits)[:, None] - np.arange(n)[None, :] + n - 1].astype(np.int32)
    return (toeplitz @ key.astype(np.int32) % 2).astype(np.uint8)


def row(key: np.ndarray, seed: np.ndarray, i: int) -> int:
    """Output bit i alone: Σ_j seed[i − j + n − 1]·key[j] mod 2."""
    return int(np.dot(seed[i: i + key.size][::-1].astype(np.int64), key)) & 1


def random_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2, n, dtype=np.uint8)


def test_the_portable_kernel_is_always_there() -> None:
    assert KERNELS[-1] == 0


@given(a=st.integers(0, 2**64 - 1), b=st.integers(0, 2**64 - 1))
@settings(max_examples=300, deadline=None)
def test_software_carry_less_product(a: int, b: int) -> None:
    product = 0
    for i in range(64):
        if b >> i & 1:
            product ^= a << i
    assert _clmul(np.uint64(a), np.uint64(b)) == (product & (2**64 - 1), product >> 64)


@given(n=st.integers(1, 2000), data=st.data(), block_bits=st.sampled_from([None, 512, 1024, 2048]),
       width=st.sampled_from(KERNELS), workers=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_equals_the_matrix_written_out(n: int, data: st.DataObject, block_bits: int | None, width: int,
                                       workers: int, seed: int) -> None:
    # 2000 bits are 32 words: blocks of 512 bits (8 words) take two levels of the recursion, and the tiling
    # of the word matrix into squares leaves remainders both ways (out_bits near n makes it taller than wide)
    out_bits = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    key, toeplitz_seed = random_bits(rng, n), random_bits(rng, seed_length(n, out_bits))
    result = toeplitz_hash(key, toeplitz_seed, out_bits, block_bits=block_bits, workers=workers, kernel=width)
    assert result.dtype == np.uint8
    assert result.shape == (out_bits,)
    np.testing.assert_array_equal(result, direct(key, toeplitz_seed, out_bits))


@pytest.mark.parametrize("width", KERNELS)
@pytest.mark.parametrize("block_bits", [None, 512, 4096])
def test_equals_the_integer_convolution_mod_2_on_larger_keys(width: int, block_bits: int | None) -> None:
    rng = np.random.default_rng(7)
    for n, out_bits in [(5000, 2200), (4096, 4096), (6001, 1), (9000, 8999), (8193, 4160)]:
        key, seed = random_bits(rng, n), random_bits(rng, seed_length(n, out_bits))
        exact = np.convolve(seed.astype(np.int64), key.astype(np.int64))[n - 1: n - 1 + out_bits] & 1
        np.testing.assert_array_equal(toeplitz_hash(key, seed, out_bits, block_bits=block_bits, kernel=width), exact)


def test_every_kernel_agrees_at_a_quarter_million_bits_and_rows_check_out() -> None:
    rng = np.random.default_rng(8)
    n, out_bits = 250_001, 112_345
    key, seed = random_bits(rng, n), random_bits(rng, seed_length(n, out_bits))
    reference = toeplitz_hash(key, seed, out_bits)
    for width in KERNELS[1:]:
        np.testing.assert_array_equal(toeplitz_hash(key, seed, out_bits, kernel=width), reference)
    for i in [0, 1, 63, 64, out_bits - 1, *rng.integers(0, out_bits, 200)]:
        assert reference[i] == row(key, seed, i)


@pytest.mark.parametrize("n", [10**6, 10**6 + 1])
def test_analytic_outputs_at_a_million_bits(n: int) -> None:
    out_bits = 450_000
    # all-ones matrix and key: every output bit is n mod 2
    ones = toeplitz_hash(np.ones(n, np.uint8), np.ones(seed_length(n, out_bits), np.uint8), out_bits)
    assert (ones == n % 2).all()
    # a seed with the single bit k set: one diagonal, T[i, j] = 1 for j = i + n − 1 − k, so y is a shifted key
    key = random_bits(np.random.default_rng(9), n)
    for k in [0, 1, 100_000, n - 1, n + out_bits - 2]:
        seed = np.zeros(seed_length(n, out_bits), np.uint8)
        seed[k] = 1
        i = np.arange(out_bits)
        j = i + n - 1 - k
        expected = np.where((j >= 0) & (j < n), key[np.clip(j, 0, n - 1)], 0)
        np.testing.assert_array_equal(toeplitz_hash(key, seed, out_bits), expected)


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


def test_workers_block_size_and_input_types_do_not_change_the_output() -> None:
    rng = np.random.default_rng(10)
    n, out_bits = 3 * 2**16 + 5, 70000
    key, seed = random_bits(rng, n), random_bits(rng, seed_length(n, out_bits))
    reference = toeplitz_hash(key, seed, out_bits)
    np.testing.assert_array_equal(toeplitz_hash(key, seed, out_bits, workers=2), reference)
    np.testing.assert_array_equal(toeplitz_hash(key, seed, out_bits, block_bits=512), reference)
    np.testing.assert_array_equal(toeplitz_hash(key, seed, out_bits, block_bits=3 * 512), reference)
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
    with pytest.raises(ValueError, match="key bits"):
        toeplitz_hash(np.full(100, -1, np.int64), seed, 40)
    with pytest.raises(ValueError, match="key must be a non-empty 1-D"):
        toeplitz_hash(key.reshape(10, 10), seed, 40)
    with pytest.raises(ValueError, match="key must be a non-empty 1-D"):
        toeplitz_hash(np.zeros(0, np.uint8), seed, 40)
    with pytest.raises(ValueError, match="key must hold integer bits"):
        toeplitz_hash(key.astype(float), seed, 40)
    for block_bits in (0, 48, 1000, -512):
        with pytest.raises(ValueError, match="block_bits"):
            toeplitz_hash(key, seed, 40, block_bits=block_bits)
    with pytest.raises(ValueError, match="workers"):
        toeplitz_hash(key, seed, 40, workers=0)
    with pytest.raises(ValueError, match="kernel"):
        toeplitz_hash(key, seed, 40, kernel=3)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        expand_seed(-1, 8)
    with pytest.raises(ValueError, match="n_bits"):
        expand_seed(1, -8)
