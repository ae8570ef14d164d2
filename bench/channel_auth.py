"""Message authentication for the classical channel (bench/channel.py): HMAC-SHA256 or Wegman–Carter.

An :class:`Authenticator` tags the messages of one direction. The channel end feeds it the session
identifier, then the frame header (which holds the sequence number) and the payload; the receiver recomputes
the tag with the authenticator of the same direction and compares in constant time. Each end therefore
holds an :class:`Auth`: one authenticator for what it sends, one for what it receives.

Security of the two options
---------------------------
**HMAC-SHA256, pre-shared key** (:class:`HmacSha256`, :func:`hmac_auth`). Computationally secure: HMAC is a
PRF, hence an unforgeable MAC, as long as SHA-256's compression function is a PRF (Bellare, "New proofs for
NMAC and HMAC: security without collision-resistance", CRYPTO 2006; RFC 2104; FIPS 198-1). With a 256-bit
key and 256-bit tag the best known forgery costs about 2^256 classical / 2^128 quantum (Grover) work. The
key is reused for every message, so no QKD key is spent; the price is that QKD's key is then only as safe
as HMAC *during* the run: a later break of HMAC does not expose key distilled earlier (Mosca, Stebila,
Ustaoğlu, "Quantum key distribution in the classical authenticated key exchange framework", PQCrypto 2013),
but a break in real time would let a man in the middle run the protocol with each party. Each direction has
its own label (``A>B``, ``B>A``), so a message reflected back to its sender is rejected.

**Wegman–Carter, key from the pool** (:class:`WegmanCarter`, :func:`wegman_carter_auth`). Information-
theoretically secure. The message is cut into 15-byte chunks, each read little-endian with a 1 set above
its top byte (as Poly1305, Bernstein 2005, does), giving L coefficients m_i < 2^121; with p = 2^127 − 1 the
tag is t = Σ m_i k^(L−i+1) + b + s (mod p). The hash key (k, b) is drawn once (32 bytes) and reused; s is a
fresh 16-byte one-time pad from the pool for every message. For two distinct messages of L and L' chunks
the difference of their polynomials is a non-zero polynomial of degree ≤ max(L, L') without constant term,
so a forger who has seen (m, t) hits t' for m' ≠ m with probability ≤ max(L, L')/p over k: the family is
ε-almost strongly universal with ε = max(L, L')/p (Wegman & Carter, JCSS 22, 1981; Stinson, "Universal
hashing and authentication codes", Des. Codes Cryptogr. 4, 1994; den Boer 1993 / Taylor 1994 for the
polynomial bound). Drawing k, b, s as 128-bit integers mod p adds a statistical distance < 2^-125. A frame
is at most ``MAX_FRAME_BYTES`` = 256 MiB, so L ≤ 1.8·10^7 and ε < 2^-102 per message. Reusing (k, b) across
messages and rounds costs nothing beyond ε per message in the composable sense, including the information
leaked by whether a forgery was accepted (Portmann, "Key recycling in authentication", IEEE Trans. Inf.
Theory 60, 2014, arXiv:1202.1229): after r rounds of ℓ messages the error is ≤ r·ℓ·ε. Cost: 128 bits of
pool key per message per direction, drawn by the sender when it tags and by the receiver when it checks.

Key-source contract (:data:`KeySource`): ``source(n)`` returns n fresh secret bytes; the source of one
direction hands the same bytes in the same order to both ends and never hands a byte out twice. A pad of a
rejected message is discarded with the channel (bench/channel.py poisons the end), never reused; after a
rejection or a lost connection the two ends may have drawn different numbers of pads (a receiver draws none
for a frame it never saw), so the pool must bring both to a common position before a new channel is opened.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

BytesLike = bytes | bytearray | memoryview
KeySource = Callable[[int], bytes]
Role = Literal["alice", "bob"]

P127 = (1 << 127) - 1  # Mersenne prime of the Wegman–Carter field
WC_CHUNK_BYTES = 15    # message bytes per field element (< 2^121 with the appended 1)
WC_PAD_BYTES = 16      # pool key per message and direction
WC_HASH_KEY_BYTES = 32  # (k, b), drawn once
HMAC_MIN_KEY_BYTES = 32


class Authenticator(Protocol):
    """Tags the messages of one direction; may be stateful (Wegman–Carter draws a pad per call)."""

    @property
    def tag_bytes(self) -> int: ...

    def tag(self, parts: Sequence[BytesLike]) -> bytes:
        """Tag of the concatenation of ``parts``; called exactly once per message at each end."""
        ...


class HmacSha256:
    """HMAC-SHA256 over ``direction`` + message with a pre-shared key of at least 32 bytes."""

    tag_bytes = 32

    def __init__(self, key: bytes, direction: bytes) -> None:
        if len(key) < HMAC_MIN_KEY_BYTES:
            raise ValueError(f"HMAC-SHA256 needs a key of at least {HMAC_MIN_KEY_BYTES} bytes, got {len(key)}")
        self._keyed = hmac.new(key, direction, hashlib.sha256)

    def tag(self, parts: Sequence[BytesLike]) -> bytes:
        mac = self._keyed.copy()
        for part in parts:
            mac.update(part)
        return mac.digest()


def _uniform_mod_p(key: bytes) -> int:
    """16 key bytes → an element of F_p, p = 2^127 − 1 (statistical distance from uniform < 2^-126)."""
    return int.from_bytes(key, "little") % P127


class PolyHash:
    """m ↦ Σ m_i k^(L−i+1) mod 2^127 − 1 over the 15-byte chunks m_i of a message, each read little-endian with a
    1 set above its top byte. Evaluated ``BLOCK_CHUNKS`` chunks at a time as a dot product with a table of
    powers of k (numpy object arrays: Python integers in a C loop), twice as fast as plain Horner."""

    BLOCK_CHUNKS = 4096

    def __init__(self, k: int) -> None:
        powers, x = [0] * self.BLOCK_CHUNKS, 1
        for i in range(self.BLOCK_CHUNKS):
            x = x * k % P127
            powers[-1 - i] = x
        self._k, self._k_block = k, x
        self._powers = np.array(powers, dtype=object)  # k^B … k^1

    def __call__(self, data: bytes) -> int:
        acc, full = 0, len(data) // WC_CHUNK_BYTES
        for first in range(0, full, self.BLOCK_CHUNKS):
            n = min(self.BLOCK_CHUNKS, full - first)
            rows = np.empty((n, 16), dtype=np.uint8)
            rows[:, :WC_CHUNK_BYTES] = np.frombuffer(data, np.uint8, n * WC_CHUNK_BYTES,
                                                     first * WC_CHUNK_BYTES).reshape(n, WC_CHUNK_BYTES)
            rows[:, WC_CHUNK_BYTES] = 1
            words = rows.view("<u8")
            chunks = words[:, 0].astype(object) + (words[:, 1].astype(object) << 64)
            shift = self._k_block if n == self.BLOCK_CHUNKS else pow(self._k, n, P127)
            acc = (acc * shift + np.dot(chunks, self._powers[self.BLOCK_CHUNKS - n:])) % P127
        tail = data[full * WC_CHUNK_BYTES:]
        if tail:
            acc = (acc + int.from_bytes(tail, "little") + (1 << (8 * len(tail)))) * self._k % P127
        return acc


class WegmanCarter:
    """Polynomial hash over F_(2^127−1) with a reused 32-byte hash key, tag encrypted by a 16-byte pad per message."""

    tag_bytes = 16

    def __init__(self, hash_key: bytes, pads: KeySource) -> None:
        if len(hash_key) != WC_HASH_KEY_BYTES:
            raise ValueError(f"the Wegman–Carter hash key is {WC_HASH_KEY_BYTES} bytes, got {len(hash_key)}")
        self._hash = PolyHash(_uniform_mod_p(hash_key[:16]))
        self._b = _uniform_mod_p(hash_key[16:])
        self._pads = pads

    def tag(self, parts: Sequence[BytesLike]) -> bytes:
        pad = self._pads(WC_PAD_BYTES)
        if len(pad) != WC_PAD_BYTES:
            raise ValueError(f"key source returned {len(pad)} bytes for a {WC_PAD_BYTES}-byte pad")
        t = (self._hash(b"".join(parts)) + self._b + _uniform_mod_p(pad)) % P127
        return t.to_bytes(self.tag_bytes, "little")


@dataclass(frozen=True)
class Auth:
    """How one channel end tags what it sends (``send``) and checks what it receives (``recv``)."""

    send: Authenticator
    recv: Authenticator


def _for_role(alice_to_bob: Authenticator, bob_to_alice: Authenticator, role: Role) -> Auth:
    if role not in ("alice", "bob"):
        raise ValueError(f"role must be 'alice' or 'bob', got {role!r}")
    return Auth(alice_to_bob, bob_to_alice) if role == "alice" else Auth(bob_to_alice, alice_to_bob)


def hmac_auth(key: bytes, role: Role) -> Auth:
    """HMAC-SHA256 both ways with one pre-shared key (≥ 32 bytes), a distinct label per direction."""
    return _for_role(HmacSha256(key, b"A>B"), HmacSha256(key, b"B>A"), role)


def wegman_carter_auth(hash_key: bytes, pads_alice_to_bob: KeySource, pads_bob_to_alice: KeySource,
                       role: Role) -> Auth:
    """Wegman–Carter both ways: one hash key (32 bytes, e.g. from the pool), one pad source per direction."""
    return _for_role(WegmanCarter(hash_key, pads_alice_to_bob), WegmanCarter(hash_key, pads_bob_to_alice), role)
