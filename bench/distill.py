"""Key distillation of one link: Alice and Bob, two objects that share only authenticated messages.

Each party buffers its own sifted bits (:class:`bench.sifting.PartyBits`: Z bits for key, X bits for the
phase-error test) as the acquisitions arrive. When both hold ``frames`` frames of Z bits, Bob opens a block
and the parties run, over the classical channel (:mod:`bench.channel`):

1. **Block** (Bob → Alice): Z and X bit counts, his QBER estimate and a fresh public Cascade seed. Alice
   takes the same bits from her buffer, assigns the key-store block id and discloses her X bits.
2. **Parameter estimation** (Bob): the X errors, counted against his own X bits.
3. **Error correction** (:mod:`bench.cascade`): Bob asks, Alice answers parity requests; one message
   carries the questions of all frames of the block.
4. **Verification** (:mod:`bench.verification`): Alice draws a hash key after Cascade has ended and sends
   it with her tags; Bob keeps the frames whose tags agree. A discarded frame is counted, never kept.
5. **Key length** (Bob): :func:`bench.finitekey.finite_key` (or the asymptotic length) from the kept Z bits,
   the X test, and what was disclosed: every Cascade parity and every verification tag bit of a kept frame.
6. **Privacy amplification** (:mod:`bench.privacy`): Alice draws a fresh uniform Toeplitz seed, deposits her
   key (pending) and sends the seed; Bob hashes, deposits and confirms; Alice confirms on his
   acknowledgement (:mod:`bench.keystore`, two-phase: no block is available at one party only).

Randomness: every draw (Cascade seeds, hash keys, Toeplitz seeds, the channel key) comes from a generator
the caller seeds, so a scenario replays bit for bit. That is right for an emulator and wrong for a
deployment, where they must come from the operating system (:func:`os_rng`).

A block that fails on the channel (tampered message, peer gone) is abandoned: its sifted bits are counted in
:attr:`DistillationTotals.sifted_bits_abandoned`, the stores are reconciled over a fresh channel (a block
deposited but unconfirmed is dropped at both), and distillation goes on. Nothing confirmed is touched.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.cascade import VARIANTS, CascadeAlice, ParityRequest, areconcile, cascade_plan
from bench.channel import Adversary, Channel, ChannelError, Message, memory_pair
from bench.channel_auth import hmac_auth
from bench.finitekey import EPS_COR_DEFAULT, EPS_SEC_DEFAULT, finite_key
from bench.keyrate import binary_entropy
from bench.keystore import KeyStore
from bench.privacy import seed_length, toeplitz_hash
from bench.sifting import PartyBits
from bench.verification import HashKey, Verification, draw_hash_key, frame_tags, verify

_log = logging.getLogger(__name__)

QBER_FLOOR = 0.005  # Cascade's first block size needs E > 0; below this the estimate is taken as this


class DistillationSettings(BaseModel):
    """How the link distils key; also the ``stack.distillation`` section of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description=(
        "distil key for real; false: every key block is booked at the asymptotic estimate N_z[1 − f·h(E_z) − h(E_x)]"))
    fraction: float = Field(1.0, gt=0, le=1, description=(
        "share of key-mode acquisitions whose coincidences are distilled for real (1: all of them, 'full'"
        " distillation); the secret key of the rest is booked at the secret fraction the distilled blocks"
        " reached (the report states the fraction)"))
    frame_bits: int = Field(2**17, ge=1024, description="Cascade frame, bits (issue 5: blocks >= 10^5 bits)")
    frames: int = Field(8, ge=1, description="frames per distillation block (one parity message serves all)")
    variant: str = Field("opt7", description=(
        f"Cascade variant, one of {sorted(VARIANTS)} (at QBER 4.3 % on 8 frames of 2^17 bits,"
        " opt7: f = 1.050 in ~400 round trips per block; opt8: f = 1.045 in ~1700; ci/bench.py --only cascade)"))
    finite_key: bool = Field(True, description=(
        "secret length by the finite-key bound of bench/finitekey.py; false: asymptotic n[1 - h(e_X)] - leak"))
    eps_sec: float = Field(EPS_SEC_DEFAULT, gt=0, lt=1, description=(
        "secrecy parameter of the finite-key bound: the distilled key is ε_sec-close to ideal"))
    eps_cor: float = Field(EPS_COR_DEFAULT, gt=0, lt=1, description=(
        "correctness parameter: bound on the probability that the two parties' keys differ after verification"))
    channel_latency_s: float = Field(2.5e-4, ge=0, description=(
        "one-way latency of the classical channel, s (default: 50 km of fibre at 5 µs/km)"))

    def model_post_init(self, _context: object) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown Cascade variant {self.variant!r}; choose from {sorted(VARIANTS)}")


@dataclass(frozen=True)
class BlockOutcome:
    """What one distilled block gave, as both parties agreed on it."""

    block_id: int
    t_s: float  # loop time the block was confirmed
    sifted_z_bits: int  # Z bits that entered error correction
    test_bits: int  # X bits disclosed for the phase-error test
    test_errors: int
    frames: int
    frames_discarded: int  # failed verification
    errors_corrected: int  # bits Cascade flipped in the kept frames
    parity_bits: int  # Cascade parities disclosed about the kept frames
    tag_bits: int  # verification tag bits of the kept frames
    shannon_bits: float  # Σ n·h(e/n) over the kept frames, e the errors Cascade corrected in each
    round_trips: int  # Cascade request/answer exchanges
    phase_error_bound: float
    key_bits: int  # final key, confirmed in both stores

    @property
    def ec_efficiency(self) -> float:
        """f = parities / (n·h(E)) over the kept frames (nan without errors)."""
        return self.parity_bits / self.shannon_bits if self.shannon_bits > 0 else math.nan


@dataclass
class DistillationTotals:
    blocks: int = 0
    sifted_bits_distilled: int = 0  # Z bits that went through a completed block
    sifted_bits_abandoned: int = 0  # Z bits of blocks abandoned on a channel failure
    key_bits: int = 0
    frames: int = 0
    frames_discarded: int = 0
    round_trips: int = 0
    parity_bits: int = 0
    shannon_bits: float = 0.0
    errors_corrected: int = 0
    outcomes: list[BlockOutcome] = field(default_factory=list)

    def add(self, outcome: BlockOutcome) -> None:
        self.outcomes.append(outcome)
        self.blocks += 1
        self.sifted_bits_distilled += outcome.sifted_z_bits
        self.key_bits += outcome.key_bits
        self.frames += outcome.frames
        self.frames_discarded += outcome.frames_discarded
        self.round_trips += outcome.round_trips
        self.parity_bits += outcome.parity_bits
        self.shannon_bits += outcome.shannon_bits
        self.errors_corrected += outcome.errors_corrected

    @property
    def secret_fraction(self) -> float | None:
        """Final key bits per distilled sifted Z bit."""
        return self.key_bits / self.sifted_bits_distilled if self.sifted_bits_distilled else None

    @property
    def ec_efficiency(self) -> float | None:
        return self.parity_bits / self.shannon_bits if self.shannon_bits > 0 else None


def os_rng() -> np.random.Generator:
    """A generator seeded from the operating system's entropy: what a deployment must use."""
    return np.random.default_rng(secrets.randbits(128))


class _Buffer:
    """One party's sifted bits, first in first out."""

    def __init__(self) -> None:
        self._z: deque[np.ndarray] = deque()
        self._x: deque[np.ndarray] = deque()
        self.z_bits = 0
        self.x_bits = 0

    def add(self, bits: PartyBits) -> None:
        if bits.z.size:
            self._z.append(bits.z)
            self.z_bits += bits.z.size
        if bits.x.size:
            self._x.append(bits.x)
            self.x_bits += bits.x.size

    @staticmethod
    def _take(parts: deque[np.ndarray], n: int) -> np.ndarray:
        out, got = [], 0
        while got < n:
            part = parts.popleft()
            if got + part.size > n:
                parts.appendleft(part[n - got:])
                part = part[:n - got]
            out.append(part)
            got += part.size
        return np.concatenate(out) if out else np.empty(0, np.uint8)

    def take(self, n_z: int, n_x: int) -> tuple[np.ndarray, np.ndarray]:
        if n_z > self.z_bits or n_x > self.x_bits:
            raise ValueError(f"asked for {n_z} Z and {n_x} X bits, holding {self.z_bits} and {self.x_bits}")
        self.z_bits -= n_z
        self.x_bits -= n_x
        return self._take(self._z, n_z), self._take(self._x, n_x)


def _send_request(request: ParityRequest) -> dict[str, np.ndarray]:
    return {"block_passes": np.asarray(request.block_passes, np.int64), "pass_index": request.pass_index,
            "frame": request.frame, "start": request.start, "stop": request.stop}


class _ChannelOracle:
    """Alice as Bob's Cascade sees her: each parity request is one round trip on the channel."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def parities(self, request: ParityRequest) -> np.ndarray:
        await self.channel.send("parities?", **_send_request(request))
        reply = await self.channel.recv("parities")
        count = int(reply.array("count"))
        return np.unpackbits(reply.array("bits"), count=count)


class Alice:
    """Alice's side: answers Bob's block protocol with her own bits and her own key store."""

    def __init__(self, store: KeyStore, settings: DistillationSettings, rng: np.random.Generator) -> None:
        self.store = store
        self.settings = settings
        self.rng = rng
        self.buffer = _Buffer()
        self.failure: Exception | None = None
        held = store.block_ids()
        self._next_block_id = max(held.confirmed | held.pending, default=0) + 1

    async def serve(self, channel: Channel) -> None:
        """Answer blocks until the channel closes. A failure of her own closes the channel (so that Bob is
        not left waiting) and is kept in :attr:`failure` for the owner to raise."""
        try:
            while True:
                await self._block(channel, await channel.recv("block?"))
        except ChannelError:
            return
        except Exception as exc:
            self.failure = exc
            await channel.close()

    async def _block(self, channel: Channel, opening: Message) -> None:
        s = self.settings
        n_z, n_x = int(opening.array("n_z")), int(opening.array("n_x"))
        frames = n_z // s.frame_bits
        plan = cascade_plan(s.variant, float(opening.array("qber")), frames, s.frame_bits,
                            int(opening.array("cascade_seed")))
        z, x = self.buffer.take(n_z, n_x)
        block_id = self._next_block_id
        self._next_block_id += 1
        await channel.send("block", block_id=np.int64(block_id), x_bits=np.packbits(x))
        keys = z.reshape(frames, s.frame_bits)
        oracle = CascadeAlice(keys, plan)
        while True:
            message = await channel.recv()
            if message.kind == "parities?":
                answer = oracle.parities(_parity_request(message))
                await channel.send("parities", count=np.int64(answer.size), bits=np.packbits(answer))
            elif message.kind == "verify?":
                break
            else:
                raise ChannelError(f"alice: unexpected {message.kind!r} during error correction")
        hash_key = draw_hash_key(self.rng)
        await channel.send("tags", points=np.array(hash_key.points, np.uint64), tags=frame_tags(keys, hash_key))
        decision = await channel.recv("amplify?")
        passed = decision.array("passed").astype(bool)
        out_bits = int(decision.array("key_bits"))
        if out_bits == 0:
            return
        kept = Verification(passed).keep(keys).ravel()
        seed = self.rng.integers(0, 2, seed_length(kept.size, out_bits), dtype=np.uint8)
        key = toeplitz_hash(kept, seed, out_bits)
        self.store.deposit(block_id, key, _loop_time())
        await channel.send("seed", bits=np.packbits(seed), count=np.int64(seed.size))
        await channel.recv("deposited")
        self.store.confirm(block_id)
        await channel.send("confirmed")


def _parity_request(message: Message) -> ParityRequest:
    return ParityRequest(tuple(int(q) for q in message.array("block_passes")), message.array("pass_index"),
                         message.array("frame"), message.array("start"), message.array("stop"))


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class Bob:
    """Bob's side: opens blocks, runs Cascade against Alice, decides the key length."""

    def __init__(self, store: KeyStore, settings: DistillationSettings, rng: np.random.Generator) -> None:
        self.store = store
        self.settings = settings
        self.rng = rng
        self.buffer = _Buffer()

    async def distil(self, channel: Channel, frames: int, qber_estimate: float) -> BlockOutcome:
        """One block of ``frames`` frames and every X bit buffered with them."""
        s = self.settings
        n_z, n_x = frames * s.frame_bits, self.buffer.x_bits
        cascade_seed = int(self.rng.integers(0, 2**62))
        qber = min(0.25, max(QBER_FLOOR, qber_estimate))
        plan = cascade_plan(s.variant, qber, frames, s.frame_bits, cascade_seed)
        z, x = self.buffer.take(n_z, n_x)
        await channel.send("block?", n_z=np.int64(n_z), n_x=np.int64(n_x), qber=np.float64(qber),
                           cascade_seed=np.int64(cascade_seed))
        opened = await channel.recv("block")
        block_id = int(opened.array("block_id"))
        alice_x = np.unpackbits(opened.array("x_bits"), count=n_x)
        test_errors = int(np.count_nonzero(alice_x != x))
        noisy = z.reshape(frames, s.frame_bits)
        result = await areconcile(noisy, plan, _ChannelOracle(channel))
        await channel.send("verify?")
        tags = await channel.recv("tags")
        points = tags.array("points")
        check = verify(tags.array("tags"), result.corrected, HashKey((int(points[0]), int(points[1]))))
        kept = check.keep(result.corrected)
        errors = np.count_nonzero(check.keep(result.corrected != noisy), axis=1)
        parities = int(check.keep(result.leaked_bits_per_frame).sum())
        length, phase_error = self._key_length(kept.size, n_x, test_errors, parities + check.leaked_bits)
        await channel.send("amplify?", passed=check.passed, key_bits=np.int64(length))
        if length > 0:
            seed_msg = await channel.recv("seed")
            seed = np.unpackbits(seed_msg.array("bits"), count=int(seed_msg.array("count")))
            key = toeplitz_hash(kept.ravel(), seed, length)
            self.store.deposit(block_id, key, _loop_time())
            self.store.confirm(block_id)  # Alice's seed came after her deposit
            await channel.send("deposited")
            await channel.recv("confirmed")
        return BlockOutcome(
            block_id=block_id, t_s=_loop_time(), sifted_z_bits=n_z, test_bits=n_x, test_errors=test_errors,
            frames=frames, frames_discarded=check.discarded, errors_corrected=int(errors.sum()),
            parity_bits=parities, tag_bits=check.leaked_bits,
            shannon_bits=float(np.sum(s.frame_bits * binary_entropy(errors / s.frame_bits))),
            round_trips=result.round_trips, phase_error_bound=phase_error, key_bits=length)

    def _key_length(self, n_key: int, n_test: int, test_errors: int, leaked: int) -> tuple[int, float]:
        s = self.settings
        if n_key == 0 or n_test == 0:
            return 0, 0.5
        if s.finite_key:
            fk = finite_key(n_key, n_test, test_errors, leaked, s.eps_sec, s.eps_cor)
            return fk.key_bits, fk.phase_error_bound
        e_x = test_errors / n_test
        return max(0, math.floor(n_key * (1.0 - binary_entropy(e_x)) - leaked)), e_x


class Distillery:
    """Both parties of one link, their channel and key stores, and the blocks in flight.

    ``store_dir``: where ``alice.keys.sqlite`` and ``bob.keys.sqlite`` live (opened, or created, and
    reconciled); ``None``: a temporary directory removed by :meth:`close`. ``adversary``: sees every frame
    on the channel (tests).
    """

    def __init__(self, settings: DistillationSettings, rng: np.random.Generator,
                 store_dir: Path | None = None, *, adversary: Adversary | None = None) -> None:
        self.settings = settings
        self._adversary = adversary
        self._tmp = tempfile.TemporaryDirectory(prefix="qkd-keys-") if store_dir is None else None
        directory = Path(self._tmp.name) if self._tmp is not None else store_dir
        directory.mkdir(parents=True, exist_ok=True)
        self.stores = {role: KeyStore(directory / f"{role}.keys.sqlite") for role in ("alice", "bob")}
        self._channel_key = rng.bytes(32)
        self.alice = Alice(self.stores["alice"], settings, np.random.default_rng(rng.integers(2**63)))
        self.bob = Bob(self.stores["bob"], settings, np.random.default_rng(rng.integers(2**63)))
        self.totals = DistillationTotals()
        self._reconcile()
        self._task: asyncio.Task[None] | None = None
        self._channels: tuple[Channel, Channel] | None = None
        self._server: asyncio.Task[None] | None = None

    def add(self, alice: PartyBits, bob: PartyBits, qber_estimate: float) -> None:
        """Hand each party its bits of one acquisition; start a block when enough are in and none runs."""
        if alice.z.size != bob.z.size or alice.x.size != bob.x.size:
            raise ValueError("the parties' sifted bits must pair up one to one")
        self.alice.buffer.add(alice)
        self.bob.buffer.add(bob)
        s = self.settings
        if self._task is None and self.bob.buffer.z_bits >= s.frames * s.frame_bits:
            self._task = asyncio.get_running_loop().create_task(
                self._run_block(s.frames, qber_estimate), name="distillation block")

    async def settle(self) -> None:
        """Wait for the block in flight, if any."""
        if self._task is not None:
            await self._task

    async def flush(self, qber_estimate: float) -> None:
        """Wait for the block in flight, then distil every whole frame still buffered."""
        await self.settle()
        frames = self.bob.buffer.z_bits // self.settings.frame_bits
        if frames:
            self._task = asyncio.get_running_loop().create_task(self._run_block(frames, qber_estimate))
            await self._task

    def _ends(self) -> tuple[Channel, Channel]:
        if self._channels is None:
            a, b = memory_pair(hmac_auth(self._channel_key, "alice"), hmac_auth(self._channel_key, "bob"),
                               latency_s=self.settings.channel_latency_s, adversary=self._adversary)
            self._channels = (a, b)
            self._server = asyncio.get_running_loop().create_task(self.alice.serve(a), name="alice")
        return self._channels

    async def _run_block(self, frames: int, qber_estimate: float) -> None:
        _, bob_end = self._ends()
        try:
            self.totals.add(await self.bob.distil(bob_end, frames, qber_estimate))
        except ChannelError as exc:
            _log.warning("distillation block abandoned: %s", exc)
            self.totals.sifted_bits_abandoned += frames * self.settings.frame_bits
            await self.pause()
            if self.alice.failure is not None:
                raise self.alice.failure from exc
            self._reconcile()
        finally:
            self._task = None

    def _reconcile(self) -> None:
        """Bring both stores to the blocks they both hold (at start, and after a failed block)."""
        alice_ids, bob_ids = self.stores["alice"].block_ids(), self.stores["bob"].block_ids()
        self.stores["alice"].reconcile(bob_ids)
        self.stores["bob"].reconcile(alice_ids)

    async def pause(self) -> None:
        """Close the channel (a later block opens a new one); the block in flight must have ended."""
        if self._channels is not None:
            for end in self._channels:
                await end.close()
            self._channels = None
        if self._server is not None:
            await self._server
            self._server = None

    def __getstate__(self) -> dict[str, object]:
        if self._task is not None or self._channels is not None or self._tmp is not None:
            raise RuntimeError("only a paused distillery with its stores in a given directory pickles")
        return self.__dict__.copy()  # the stores pickle closed: backup() before, reopen() after

    def backup(self, directory: Path) -> None:
        """Copy both key stores into ``directory`` (under their own file names)."""
        for store in self.stores.values():
            store.backup(directory / store.path.name)

    def reopen(self, directory: Path) -> None:
        """Open the stores from ``directory`` (after unpickling)."""
        for store in self.stores.values():
            store.reopen(directory / store.path.name)

    def close(self) -> None:
        """Close the stores, after :meth:`flush` and :meth:`pause`."""
        if self._task is not None or self._channels is not None:
            raise RuntimeError("close the distillery after flush() and pause()")
        for store in self.stores.values():
            store.close()
        if self._tmp is not None:
            self._tmp.cleanup()
