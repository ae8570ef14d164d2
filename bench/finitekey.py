"""Finite-key secret length of one BBM92 block: key from the Z basis, phase error bounded from the X basis.

Bound (Tomamichel, Lim, Gisin, Renner, "Tight finite-key analysis for quantum cryptography", Nat. Commun.
3, 634 (2012), valid against coherent attacks for an entanglement-based BB84/BBM92 with n key bits and k
test bits sampled at random)::

    ℓ = ⌊ n·[1 − h(e_X + μ)] − leak_EC − log2(2 / (ε_sec²·ε_cor)) ⌋,
    μ = sqrt( (n + k)/(n·k) · (k + 1)/k · ln(2/ε_sec) )

- **μ is the statistical margin.** The phase error of the n key bits is estimated from the error rate
  e_X of the k test bits, and μ bounds its fluctuation (sampling without replacement, a Serfling bound).
- **leak_EC is what error correction disclosed.** For Cascade that is the parities it revealed, or
  f·n·h(e_Z) when estimated.
- **log2(1/ε_cor) bits pay for verification.** This is the universal hash that makes Alice's and Bob's
  keys identical except with probability ε_cor.
- **2·log2(1/ε_sec) + 1 bits pay for privacy amplification.** This is the cost of the leftover hash
  lemma.

The result is ε_sec-secret and ε_cor-correct. Seed 001 (S11) uses the refinement of Lim et al., PRL 126,
100501 (2021), which tightens the statistics and needs 14–17 % less block length for the same key. The
bound here is the more conservative of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.keyrate import EC_EFFICIENCY_SEED, binary_entropy

EPS_SEC_DEFAULT = 1e-10
EPS_COR_DEFAULT = 1e-15


@dataclass(frozen=True)
class FiniteKey:
    """Secret length of one block and every term that went into it (bits)."""

    key_bits: int  # ℓ, never negative
    n_key: int  # sifted Z bits entering privacy amplification
    n_test: int  # X bits used to estimate the phase error
    phase_error_bound: float  # e_X + μ, the phase-error rate assumed for the key bits
    margin: float  # μ
    leak_ec_bits: float
    verification_bits: float  # log2(1/ε_cor)
    privacy_amplification_bits: float  # 2·log2(1/ε_sec) + 1


def statistical_margin(n_key: int, n_test: int, eps_sec: float) -> float:
    """μ of Tomamichel et al. (2012): the phase-error fluctuation allowed for at ε_sec."""
    return math.sqrt((n_key + n_test) / (n_key * n_test) * (n_test + 1) / n_test * math.log(2.0 / eps_sec))


def finite_key(n_key: int, n_test: int, test_errors: int, leak_ec_bits: float,
               eps_sec: float = EPS_SEC_DEFAULT, eps_cor: float = EPS_COR_DEFAULT) -> FiniteKey:
    """The ε_sec-secret, ε_cor-correct key length of a block of ``n_key`` Z bits tested by ``n_test`` X bits."""
    if n_key < 0 or n_test < 0 or not 0 <= test_errors <= n_test:
        raise ValueError(f"need n_key >= 0 and 0 <= test_errors <= n_test, got n_key={n_key}, "
                         f"n_test={n_test}, test_errors={test_errors}")
    if leak_ec_bits < 0:
        raise ValueError(f"leak_ec_bits must be >= 0, got {leak_ec_bits}")
    for name, eps in (("eps_sec", eps_sec), ("eps_cor", eps_cor)):
        if not 0 < eps < 1:
            raise ValueError(f"{name} must be in (0, 1), got {eps}")
    verification = math.log2(1.0 / eps_cor)
    amplification = 2.0 * math.log2(1.0 / eps_sec) + 1.0
    if n_key == 0 or n_test == 0:
        return FiniteKey(0, n_key, n_test, 0.5, math.inf, leak_ec_bits, verification, amplification)
    margin = statistical_margin(n_key, n_test, eps_sec)
    phase_error = min(0.5, test_errors / n_test + margin)
    length = n_key * (1.0 - binary_entropy(phase_error)) - leak_ec_bits - verification - amplification
    return FiniteKey(max(0, math.floor(length)), n_key, n_test, phase_error, margin, leak_ec_bits,
                     verification, amplification)


def estimated_leak_bits(n_key: int, qber_z: float, ec_efficiency: float = EC_EFFICIENCY_SEED) -> float:
    """Error-correction leakage f·n·h(E_z) when no reconciliation was run (seed 001, S12: f = 1.09)."""
    return ec_efficiency * n_key * float(binary_entropy(qber_z))
