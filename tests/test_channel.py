"""The authenticated classical channel (bench/channel.py, channel_auth.py, channel_tcp.py): messages round-trip
in memory and over TCP, latency runs in virtual time, and every attack on a frame in transit is rejected."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest

from bench import vtime
from bench.channel import (
    Adversary,
    ChannelAuthError,
    ChannelClosed,
    ChannelEnd,
    ChannelProtocolError,
    Message,
    memory_pair,
)
from bench.channel_auth import (
    P127,
    WC_PAD_BYTES,
    Auth,
    BytesLike,
    PolyHash,
    Role,
    hmac_auth,
    wegman_carter_auth,
)
from bench.channel_tcp import HELLO_MAGIC, NONCE_BYTES, tcp_connect, tcp_listen

KEY = bytes(range(32))


@dataclass
class Cursor:
    """One end's view of a shared key stream (the pool of one direction): hands out bytes in order, counts them."""

    stream: bytes
    drawn: int = 0

    def __call__(self, n: int) -> bytes:
        out = self.stream[self.drawn:self.drawn + n]
        self.drawn += n
        return out


@dataclass
class WcKeys:
    hash_key: bytes
    alice_to_bob: bytes
    bob_to_alice: bytes

    @classmethod
    def fresh(cls) -> WcKeys:
        return cls(secrets.token_bytes(32), secrets.token_bytes(4096), secrets.token_bytes(4096))

    def auth(self, role: Role, hash_key: bytes | None = None) -> tuple[Auth, Cursor, Cursor]:
        """Auth of one end and its two cursors (alice→bob, bob→alice)."""
        ab, ba = Cursor(self.alice_to_bob), Cursor(self.bob_to_alice)
        return wegman_carter_auth(hash_key or self.hash_key, ab, ba, role), ab, ba


def auth_pair(scheme: str) -> tuple[Auth, Auth]:
    if scheme == "hmac":
        return hmac_auth(KEY, "alice"), hmac_auth(KEY, "bob")
    keys = WcKeys.fresh()
    return keys.auth("alice")[0], keys.auth("bob")[0]


@asynccontextmanager
async def connected(transport: str, alice_auth: Auth, bob_auth: Auth) -> AsyncIterator[tuple[ChannelEnd, ChannelEnd]]:
    if transport == "memory":
        alice, bob = memory_pair(alice_auth, bob_auth)
    else:
        listener = await tcp_listen(bob_auth, "127.0.0.1", 0)
        host, port = listener.address
        try:
            bob, alice = await asyncio.gather(listener.accept(), tcp_connect(host, port, alice_auth))
        finally:
            await listener.close()
    try:
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()


def payload() -> dict[str, bytes | np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "bits": rng.integers(0, 2, 1000).astype(bool),
        "frames": rng.integers(0, 2**63, (7, 11), dtype=np.int64),
        "packed": rng.integers(0, 256, 333, dtype=np.uint8),
        "qber": np.asarray(0.043),
        "phases": (rng.normal(size=6) + 1j * rng.normal(size=6)).astype(np.complex64),
        "big_endian": np.arange(5, dtype=">f8"),
        "strided": np.arange(40, dtype=np.int32)[::3],
        "empty": np.zeros((0, 3), dtype=np.uint16),
        "seed": b"\x01\x02\x03",
        "nothing": b"",
    }


def assert_same(message: Message, sent: dict[str, bytes | np.ndarray]) -> None:
    assert list(message.fields) == list(sent)
    for name, value in sent.items():
        if isinstance(value, bytes):
            assert message.raw(name) == value
        else:
            got = message.array(name)
            assert got.dtype == value.dtype.newbyteorder("<") and got.shape == value.shape
            np.testing.assert_array_equal(got, value)
            assert not got.flags.writeable  # a view on the received frame


# --- round trips -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("scheme", ["hmac", "wegman-carter"])
@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_bytes_and_arrays_round_trip_both_ways(transport: str, scheme: str) -> None:
    sent = payload()
    async with connected(transport, *auth_pair(scheme)) as (alice, bob):
        await alice.send("parities", **sent)
        await alice.send("done")
        assert_same(await bob.recv(expect="parities"), sent)
        assert (await bob.recv()).fields == {}
        await bob.send("answer", bits=~sent["bits"])
        np.testing.assert_array_equal((await alice.recv("answer")).array("bits"), ~sent["bits"])
        assert (alice.stats.messages_sent, alice.stats.messages_received) == (2, 1)
        assert (alice.stats.bytes_sent, alice.stats.bytes_received) == (bob.stats.bytes_received, bob.stats.bytes_sent)
        assert alice.stats.bytes_sent > sum(len(v) if isinstance(v, bytes) else v.nbytes for v in sent.values())


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_closing_one_end_ends_the_peers_stream_after_frames_in_flight(transport: str) -> None:
    async with connected(transport, *auth_pair("hmac")) as (alice, bob):
        await alice.send("last", x=np.arange(3))
        await alice.close()
        assert (await bob.recv()).kind == "last"
        with pytest.raises(ChannelClosed, match=alice.name if transport == "memory" else r"127\.0\.0\.1:\d+"):
            await bob.recv()
        with pytest.raises(ChannelClosed):
            await alice.send("after close")


def test_latency_is_one_way_and_runs_in_virtual_time() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        alice, bob = memory_pair(*auth_pair("hmac"), latency_s=0.25)
        seen = []
        await alice.send("first")
        await alice.send("second")
        for _ in range(2):
            seen.append(((await bob.recv()).kind, loop.time()))
        await asyncio.sleep(1.0)
        await bob.send("reply")
        seen.append(((await alice.recv()).kind, loop.time()))
        await alice.close()
        await bob.close()
        return seen

    wall0 = vtime.wall_clock_s()
    seen = vtime.run(main())
    assert [kind for kind, _ in seen] == ["first", "second", "reply"]
    assert [t for _, t in seen] == pytest.approx([0.25, 0.25, 1.5], abs=1e-9)
    assert vtime.wall_clock_s() - wall0 < 0.5


# --- attacks in transit ------------------------------------------------------------------------------------


def attacked_pair(scheme: str, adversary: Adversary) -> tuple[ChannelEnd, ChannelEnd]:
    return memory_pair(*auth_pair(scheme), adversary=adversary)


def flip(frame: bytes, position: int) -> bytes:
    return frame[:position] + bytes([frame[position] ^ 0x01]) + frame[position + 1:]


def rejected_and_logged(caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    return any(r.levelno == logging.WARNING and reason in r.getMessage() for r in caplog.records)


SCHEMES = ["hmac", "wegman-carter"]


@pytest.mark.asyncio
@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_flipped_payload_byte_is_rejected_logged_and_poisons_both_ends(
        scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    alice, bob = attacked_pair(scheme, lambda _, frame: [flip(frame, len(frame) - 40)])
    await alice.send("key", block=np.arange(100, dtype=np.uint8))
    with pytest.raises(ChannelAuthError, match="rejected message from alice: tag mismatch"):
        await bob.recv()
    assert rejected_and_logged(caplog, "tag mismatch")
    assert bob.stats.messages_received == 0
    with pytest.raises(ChannelClosed, match="tag mismatch") as closed:
        await bob.recv()
    assert isinstance(closed.value.__cause__, ChannelAuthError)
    with pytest.raises(ChannelClosed, match="bob closed"):
        await alice.recv()


@dataclass
class Tap:
    """Records every frame and delivers it unchanged."""

    frames: list[bytes] = field(default_factory=list)

    def __call__(self, _: str, frame: bytes) -> list[bytes]:
        self.frames.append(frame)
        return [frame]


async def send_probe(alice: ChannelEnd) -> None:
    await alice.send("parity", bits=np.array([1, 0, 1], dtype=np.uint8), seed=b"s")


@pytest.mark.asyncio
@pytest.mark.parametrize("scheme", SCHEMES)
async def test_every_single_byte_flip_is_rejected(scheme: str) -> None:
    tap = Tap()
    await send_probe(attacked_pair(scheme, tap)[0])
    frame_bytes = len(tap.frames[0])
    assert frame_bytes > 40
    for position in range(frame_bytes):
        alice, bob = attacked_pair(scheme, lambda _, frame, at=position: [flip(frame, at)])
        await send_probe(alice)
        with pytest.raises(ChannelAuthError):
            await bob.recv()
        await alice.close()


@dataclass
class Replayer:
    """Delivers the first frame, then the first frame again in place of the second."""

    first: bytes | None = None

    def __call__(self, _: str, frame: bytes) -> list[bytes]:
        if self.first is None:
            self.first = frame
        return [self.first]


@dataclass
class Reorderer:
    """Holds the first frame and delivers it after the second (or drops it: ``drop``)."""

    drop: bool = False
    held: bytes | None = None

    def __call__(self, _: str, frame: bytes) -> list[bytes]:
        if self.held is None:
            self.held = frame
            return []
        return [frame] if self.drop else [frame, self.held]


@pytest.mark.asyncio
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("make_adversary", "reason"), [
    (Replayer, "replayed message: sequence number 0, expected 1"),
    (Reorderer, "out-of-order (reordered or dropped before it) message: sequence number 1, expected 0"),
    (lambda: Reorderer(drop=True), "out-of-order"),
    (lambda: lambda _, f: [f[:-1]], "truncated frame"),
    (lambda: lambda _, f: [f[:7]], "truncated or malformed frame"),
    (lambda: lambda _, f: [f + b"\x00"], "trailing bytes"),
    (lambda: lambda _, f: [b""], "truncated or malformed frame"),
], ids=["replay", "reorder", "drop", "truncate-tag", "truncate-header", "extend", "empty"])
async def test_replayed_reordered_dropped_or_truncated_messages_are_rejected(
        scheme: str, make_adversary: Callable[[], Adversary], reason: str, caplog: pytest.LogCaptureFixture) -> None:
    alice, bob = attacked_pair(scheme, make_adversary())
    await alice.send("first", x=np.arange(4))
    await alice.send("second", x=np.arange(4))
    received = []
    with pytest.raises(ChannelAuthError, match="rejected message from alice") as rejected:
        while True:
            received.append((await bob.recv()).kind)
    assert reason in str(rejected.value)
    assert received in ([], ["first"])
    assert rejected_and_logged(caplog, reason)
    await alice.close()


@pytest.mark.asyncio
async def test_an_hmac_frame_from_an_earlier_session_with_the_same_key_is_rejected() -> None:
    tap = Tap()
    old_alice, old_bob = memory_pair(hmac_auth(KEY, "alice"), hmac_auth(KEY, "bob"), adversary=tap)
    await old_alice.send("first", x=np.arange(4))
    assert (await old_bob.recv()).kind == "first"
    alice, bob = memory_pair(hmac_auth(KEY, "alice"), hmac_auth(KEY, "bob"), adversary=lambda _, f: tap.frames)
    await alice.send("first", x=np.arange(4))
    with pytest.raises(ChannelAuthError, match="tag mismatch"):
        await bob.recv()


@pytest.mark.asyncio
async def test_wrong_hmac_key_or_role_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    for bob_auth in (hmac_auth(secrets.token_bytes(32), "bob"), hmac_auth(KEY, "alice")):
        alice, bob = memory_pair(hmac_auth(KEY, "alice"), bob_auth)
        await alice.send("hello", x=np.arange(3))
        with pytest.raises(ChannelAuthError, match="tag mismatch"):
            await bob.recv()
        await alice.close()
    assert rejected_and_logged(caplog, "tag mismatch")


@pytest.mark.asyncio
async def test_wrong_wegman_carter_hash_key_or_pads_out_of_step_are_rejected() -> None:
    keys = WcKeys.fresh()
    wrong_hash = keys.auth("bob", hash_key=secrets.token_bytes(32))[0]
    skipped_pad, ab, _ = keys.auth("bob")
    ab(WC_PAD_BYTES)  # Bob's pool is one pad ahead of Alice's
    for bob_auth in (wrong_hash, skipped_pad):
        alice, bob = memory_pair(keys.auth("alice")[0], bob_auth)
        await alice.send("hello", x=np.arange(3))
        with pytest.raises(ChannelAuthError, match="tag mismatch"):
            await bob.recv()
        await alice.close()


@pytest.mark.asyncio
async def test_each_wegman_carter_tag_consumes_a_fresh_pad_at_both_ends() -> None:
    keys = WcKeys.fresh()
    alice_auth, alice_ab, alice_ba = keys.auth("alice")
    bob_auth, bob_ab, bob_ba = keys.auth("bob")
    alice, bob = memory_pair(alice_auth, bob_auth)
    for i in range(3):
        await alice.send("block", x=np.full(1000, i))  # the same length each time, still a new pad
        assert (await bob.recv()).array("x")[0] == i
    await bob.send("ok")
    await alice.recv("ok")
    assert (alice_ab.drawn, bob_ab.drawn) == (3 * WC_PAD_BYTES, 3 * WC_PAD_BYTES)
    assert (alice_ba.drawn, bob_ba.drawn) == (WC_PAD_BYTES, WC_PAD_BYTES)


def horner(data: bytes, k: int) -> int:
    """The Wegman–Carter polynomial by its definition (bench/channel_auth.py)."""
    acc = 0
    for start in range(0, len(data), 15):
        chunk = data[start:start + 15]
        acc = (acc + int.from_bytes(chunk, "little") + (1 << (8 * len(chunk)))) * k % P127
    return acc


def test_poly_hash_evaluates_the_polynomial_across_block_boundaries() -> None:
    k = int.from_bytes(secrets.token_bytes(16), "little") % P127
    block = 15 * PolyHash.BLOCK_CHUNKS
    poly = PolyHash(k)
    for n_bytes in (0, 1, 14, 15, 16, 40, block - 1, block, block + 15, 2 * block + 7):
        data = secrets.token_bytes(n_bytes)
        assert poly(data) == horner(data, k), n_bytes
    data = bytes(range(40))  # chunks of 15, 15 and 10 bytes, written out
    m = [int.from_bytes(data[s:s + 15], "little") + (1 << (8 * len(data[s:s + 15]))) for s in (0, 15, 30)]
    assert poly(data) == (m[0] * k**3 + m[1] * k**2 + m[2] * k) % P127
    assert poly(data + b"\x00") != poly(data)  # a trailing zero byte changes the last coefficient


# --- the conversation ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_unexpected_kind_or_field_raises_protocol_error_and_poisons() -> None:
    alice, bob = memory_pair(*auth_pair("hmac"))
    await alice.send("seed", seed=b"abc")
    message = await bob.recv()
    with pytest.raises(ChannelProtocolError, match="is bytes, not an array"):
        message.array("seed")
    with pytest.raises(ChannelProtocolError, match="has no field 'bits'"):
        message.raw("bits")
    await alice.send("parities")
    with pytest.raises(ChannelProtocolError, match="expected message 'answer' from alice, got 'parities'"):
        await bob.recv(expect="answer")
    with pytest.raises(ChannelClosed):
        await bob.send("anything")
    await alice.close()


@pytest.mark.asyncio
async def test_a_message_that_cannot_be_encoded_is_refused_before_it_uses_a_sequence_number() -> None:
    alice, bob = memory_pair(*auth_pair("hmac"))
    with pytest.raises(TypeError, match="dtype object"):
        await alice.send("bad", x=np.array([{}, 1], dtype=object))
    with pytest.raises(TypeError, match="must be bytes or a numpy array"):
        await alice.send("bad", x=[1, 2])  # type: ignore[arg-type]
    await alice.send("good", x=np.int16(7))
    assert (await bob.recv()).array("x") == 7
    await alice.close()
    await bob.close()


# --- TCP: the peer misbehaves ---------------------------------------------------------------------------------


@dataclass
class CaptureWire:
    """A frame transport that keeps the last frame it is asked to write (Alice's frames for a raw socket)."""

    peer: str = "raw"
    frame: bytes = b""

    async def write(self, parts: Sequence[BytesLike]) -> None:
        self.frame = b"".join(parts)

    async def read(self, max_bytes: int) -> bytes:
        raise AssertionError("a capture wire only writes")

    async def close(self) -> None:
        pass


@dataclass
class RawAlice:
    """Alice as a bare socket after the hello, facing Bob's accepted channel end."""

    writer: asyncio.StreamWriter
    address: str
    bob: ChannelEnd
    encoder: ChannelEnd  # Alice's side of this session, writing into ``wire``
    wire: CaptureWire

    async def frame(self, kind: str, **fields: np.ndarray) -> bytes:
        """A genuine length-prefixed frame of this session."""
        await self.encoder.send(kind, **fields)
        return len(self.wire.frame).to_bytes(4, "little") + self.wire.frame


@asynccontextmanager
async def raw_alice() -> AsyncIterator[RawAlice]:
    listener = await tcp_listen(hmac_auth(KEY, "bob"))
    reader, writer = await asyncio.open_connection(*listener.address)
    nonce = secrets.token_bytes(NONCE_BYTES)
    writer.write(HELLO_MAGIC + nonce)
    bob = await listener.accept()
    await listener.close()
    bob_nonce = (await reader.readexactly(len(HELLO_MAGIC) + NONCE_BYTES))[len(HELLO_MAGIC):]
    wire = CaptureWire()
    encoder = ChannelEnd(wire, hmac_auth(KEY, "alice"), session=nonce + bob_nonce, name="alice")
    host, port = writer.get_extra_info("sockname")[:2]
    try:
        yield RawAlice(writer, f"{host}:{port}", bob, encoder, wire)
    finally:
        writer.close()
        await writer.wait_closed()
        await bob.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("garbage", "reason"), [
    (b"\x10\x00\x00\x00" + bytes(16), "rejected message from {peer}: truncated or malformed frame (16 bytes)"),
    (b"\xff\xff\xff\x7f", "frame length 2147483647 from {peer} exceeds the limit"),
    (b"\x64\x00\x00\x00" + bytes(10), "truncated frame from {peer}: the stream ended after 10 of 100 bytes"),
    (b"\x64\x00", "truncated frame from {peer}: the stream ended after 2 of 4 bytes"),
], ids=["garbage-frame", "huge-length", "cut-in-frame", "cut-in-length"])
async def test_garbage_or_a_cut_stream_from_a_tcp_peer_is_rejected_naming_its_address(
        garbage: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    async with raw_alice() as alice:
        alice.writer.write(garbage)
        alice.writer.write_eof()
        reason = reason.format(peer=alice.address)
        with pytest.raises(ChannelAuthError, match=re.escape(reason)):
            await alice.bob.recv()
    assert rejected_and_logged(caplog, reason)


@pytest.mark.asyncio
async def test_a_tcp_peer_with_a_foreign_hello_is_rejected_at_accept(caplog: pytest.LogCaptureFixture) -> None:
    listener = await tcp_listen(hmac_auth(KEY, "bob"))
    _, writer = await asyncio.open_connection(*listener.address)
    writer.write(b"GET / HTTP/1.1\r\nHost: bob\r\n\r\n")
    host, port = writer.get_extra_info("sockname")[:2]
    with pytest.raises(ChannelAuthError, match=f"{host}:{port} does not speak this channel protocol"):
        await listener.accept()
    assert rejected_and_logged(caplog, "does not speak")
    writer.close()
    await writer.wait_closed()
    await listener.close()


@pytest.mark.asyncio
async def test_tcp_recv_cancelled_inside_a_frame_resumes_it() -> None:
    async with raw_alice() as alice:
        frame = await alice.frame("bits", x=np.arange(1000))
        alice.writer.write(frame[:500])
        await alice.writer.drain()
        pending = asyncio.ensure_future(alice.bob.recv())
        await asyncio.sleep(0.02)  # wall clock: the half frame arrives, Bob reads its length and waits
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        alice.writer.write(frame[500:])
        np.testing.assert_array_equal((await alice.bob.recv()).array("x"), np.arange(1000))


@pytest.mark.asyncio
async def test_connecting_to_a_closed_port_names_it() -> None:
    listener = await tcp_listen(hmac_auth(KEY, "bob"))
    host, port = listener.address
    await listener.close()
    with pytest.raises(ChannelClosed, match=f"cannot connect to {host}:{port}"):
        await tcp_connect(host, port, hmac_auth(KEY, "alice"))
