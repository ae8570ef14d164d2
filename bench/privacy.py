"""Privacy amplification by Toeplitz hashing, computed exactly with float64 FFTs in cache-sized blocks.

Family. For a key x ∈ {0,1}^n and a seed s ∈ {0,1}^(n+m−1), the output is y = T_s·x mod 2 with the m×n Toeplitz
matrix T_s[i, j] = s[i − j + n − 1]. Over uniform seeds the family is 2-universal: for x ≠ x', T_s·(x ⊕ x') is
uniform on {0,1}^m, so Pr_s[T_s·x = T_s·x'] = 2^-m (Carter & Wegman, J. Comput. Syst. Sci. 18, 143 (1979);
Krawczyk, CRYPTO '94, LNCS 839). By the leftover hash lemma against quantum side information (Tomamichel,
Schaffner, Smith, Renner, IEEE Trans. Inf. Theory 57, 5524 (2011)) the output is ε_sec-close to uniform and
independent of Eve's information once m ≤ H_min − 2·log2(1/ε_sec) (the cost that bench/finitekey.py charges).

Seed. Alice draws it and sends it over the authenticated channel; it may be public but must be independent of
the key, and fresh for every block: the same seed on two blocks is not 2-universal for the joint output (two
equal differences collide together with probability 2^-m, not 2^-2m). The clean choice is n + m − 1 fresh
uniform bits passed as ``seed``. :func:`expand_seed` instead stretches a short seed with SHAKE-256 (FIPS 202):
the matrix is then one of at most 2^k for a k-bit short seed, the family is no longer 2-universal, and secrecy
rests on SHAKE-256 output being indistinguishable from random — computational security, at best that of the
short seed, not the information-theoretic bound above. It suits the emulator, not a security claim.

Computation. The product is the middle of the integer convolution s ∗ x reduced mod 2. Key and output are cut
into blocks of b bits; every (output block, input block) pair is a b×b Toeplitz product, a cyclic convolution
of length 2b between a (2b)-window of the seed and a zero-padded key block, and the window depends only on the
difference of the block indices. All windows and key blocks are transformed once (rfft of length 2b), the
products are summed over input blocks in the frequency domain, and one inverse transform per output block gives
the integer sums. Blocks of 2^16 bits keep the transforms in cache (pocketfft's cost per point grows ~5× from
2^18 to 2^20 points on our 2-core VM): at n = 10^6, m = 0.45·10^6 this takes half the CPU time of one
transform of length n + m − 1, although it transforms 4(n + m) points instead of 3(n + m).

Exactness. Each output sum is an integer ≤ n, so rounding recovers it exactly when the float64 error is < 1/2.
With u = 2^-53, a block of b bits, t = log2(2b), nb input blocks, γ_k = k·u/(1 − k·u), forward-error bound of
the FFT δ = t·η/(1 − t·η), η = u + γ_4·(√2 + u) (Higham, "Accuracy and Stability of Numerical Algorithms",
2nd ed., Thm. 24.2; radix-2 Cooley–Tukey, twiddles accurate to u), products and the sum over nb blocks accurate
to β = √2·γ_(nb+2), and ‖FFT(v)‖_∞ ≤ ‖v‖_1, ‖FFT(v)‖_2 = √(2b)·‖v‖_2 for 0/1 vectors:

    max |ĉ − c| ≤ nb·b^(3/2)·[(1 + δ)·K/√2 + √2·δ],   K = 2δ + 2√2·(δ + δ² + β·(1 + δ)²)

(:func:`rounding_error_bound`). At b = 2^16 and n = 10^6 (nb = 16) this is 1.8·10^-5. pocketfft's real
radix-4/2 passes are not literally the radix-2 algorithm of the theorem, so we refuse any size whose bound
exceeds :data:`ERROR_BUDGET` = 2^-5 (keys up to ~1.3·10^8 bits), a factor 16 below 1/2, and the tests check the
bound against the measured error and the output against direct computation mod 2.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft

BLOCK_BITS = 2**16
ERROR_BUDGET = 2.0**-5
_TILE = 8192  # frequency bins per step of the block sum, so that its operands stay in cache
_U = 2.0**-53


def seed_length(key_bits: int, out_bits: int) -> int:
    """Seed bits a Toeplitz matrix of ``out_bits`` × ``key_bits`` needs."""
    return key_bits + out_bits - 1


def expand_seed(seed: int, n_bits: int) -> np.ndarray:
    """``n_bits`` pseudo-random 0/1 (uint8) from SHAKE-256 of a non-negative integer (little-endian bytes).

    Deterministic; computationally secure only (see the module docstring)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if n_bits < 0:
        raise ValueError(f"n_bits must be >= 0, got {n_bits}")
    stream = hashlib.shake_256(seed.to_bytes(seed.bit_length() // 8 + 1, "little")).digest(-(-n_bits // 8))
    return np.unpackbits(np.frombuffer(stream, dtype=np.uint8), count=n_bits, bitorder="little")


def _gamma(k: int) -> float:
    return k * _U / (1 - k * _U)


def rounding_error_bound(key_bits: int, block_bits: int | None = None) -> float:
    """Upper bound on the float64 error of any convolution sum before rounding (module docstring), for the
    block size :func:`toeplitz_hash` uses with the same arguments."""
    b = _block(key_bits, block_bits)
    nb = -(-key_bits // b)
    t = math.log2(2 * b)
    eta = _U + _gamma(4) * (math.sqrt(2) + _U)
    delta = t * eta / (1 - t * eta)
    beta = math.sqrt(2) * _gamma(nb + 2)
    k = 2 * delta + 2 * math.sqrt(2) * (delta + delta**2 + beta * (1 + delta) ** 2)
    return nb * b**1.5 * ((1 + delta) * k / math.sqrt(2) + math.sqrt(2) * delta)


def _block(key_bits: int, block_bits: int | None) -> int:
    """``block_bits`` checked, or by default the smallest power of two ≥ ``key_bits``, capped at BLOCK_BITS."""
    if block_bits is None:
        return min(BLOCK_BITS, 1 << (key_bits - 1).bit_length())
    if block_bits < 1 or block_bits & (block_bits - 1):
        raise ValueError(f"block_bits must be a power of two, got {block_bits}")
    return block_bits


def _bits(bits: np.ndarray, name: str) -> np.ndarray:
    bits = np.asarray(bits)
    if bits.ndim != 1 or bits.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of bits, got shape {bits.shape}")
    if bits.dtype != np.bool_ and not np.issubdtype(bits.dtype, np.integer):
        raise ValueError(f"{name} must hold integer bits, got dtype {bits.dtype}")
    if ((bits != 0) & (bits != 1)).any():
        raise ValueError(f"{name} bits must be 0 or 1")
    return bits


def _convolution_sums(key: np.ndarray, seed: np.ndarray, out_bits: int, block_bits: int,
                      workers: int) -> np.ndarray:
    """Float64 sums Σ_j seed[i − j + n − 1]·key[j] for i < out_bits, before rounding."""
    n, b = key.size, block_bits
    nb, mb = -(-n // b), -(-out_bits // b)
    x = np.zeros(nb * b)
    x[:n] = key
    key_spectra = fft.rfft(x.reshape(nb, b), n=2 * b, axis=1, workers=workers)[::-1]  # last key block first
    s = np.zeros((nb + mb) * b)
    s[nb * b - n: nb * b - n + seed.size] = seed
    # window d covers the seed for block pairs with I − J = d − nb + 1: output block I sums windows I..I+nb−1
    window_spectra = fft.rfft(sliding_window_view(s, 2 * b)[::b], axis=1, workers=workers)
    sums = np.zeros((mb, b + 1), dtype=np.complex128)
    for f0 in range(0, b + 1, _TILE):
        bins = slice(f0, min(b + 1, f0 + _TILE))
        product = np.empty((mb, bins.stop - f0), dtype=np.complex128)
        for j in range(nb):
            np.multiply(window_spectra[j: j + mb, bins], key_spectra[j, bins], out=product)
            sums[:, bins] += product
    return fft.irfft(sums, n=2 * b, axis=1, workers=workers)[:, b - 1: 2 * b - 1].reshape(-1)[:out_bits]


def toeplitz_hash(key: np.ndarray, seed: np.ndarray, out_bits: int, *, workers: int = 1,
                  block_bits: int | None = None) -> np.ndarray:
    """``out_bits`` bits (uint8 0/1) T_seed·key mod 2 of an n-bit ``key`` and an (n + out_bits − 1)-bit ``seed``.

    ``workers``: threads for the FFTs (scipy.fft). ``block_bits``: a power of two, the block size of the
    computation (default min(2^16, n rounded up to a power of two)); the result does not depend on it."""
    key = _bits(key, "key")
    n = key.size
    if not 1 <= out_bits <= n:
        raise ValueError(f"out_bits must be in 1..{n} (the key length), got {out_bits}")
    seed = _bits(seed, "seed")
    if seed.size != seed_length(n, out_bits):
        raise ValueError(f"seed must have key bits + out_bits − 1 = {seed_length(n, out_bits)} bits, "
                         f"got {seed.size}")
    block_bits = _block(n, block_bits)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bound = rounding_error_bound(n, block_bits)
    if bound > ERROR_BUDGET:
        raise ValueError(f"key of {n} bits too long for exact float64 sums at block_bits={block_bits} "
                         f"(error bound {bound:.2g} > {ERROR_BUDGET})")
    sums = _convolution_sums(key, seed, out_bits, block_bits, workers)
    return (np.rint(sums).astype(np.int64) & 1).astype(np.uint8)
