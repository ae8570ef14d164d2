"""The classical channel between Alice and Bob: typed messages, authenticated and sequence-numbered.

DESIGN.md, "Key distillation": Alice and Bob share nothing but messages on a classical channel, in memory
with emulated latency or over TCP (bench/channel_tcp.py), and every message is authenticated. The
distillation codes against :class:`Channel`; :class:`ChannelEnd` implements it over a frame transport.

A :class:`Message` is a kind (short string) and named fields, each ``bytes`` or a numpy array of a plain
numeric or bool dtype. Arrays travel as raw little-endian bytes with dtype code and shape — never pickle,
which would let the peer run code — and arrive as read-only views on the received frame (no copy).

Frame (integers little-endian; the tag covers the session identifier and everything before the tag)::

    version u8 | seq u64 | len(kind) u8 | kind | n_fields u16
    per field: len(name) u8 | name | code u8 | code 0 → n_bytes u64, else → ndim u8 | dims u64 × ndim
    field data, concatenated in order | tag (32 bytes HMAC-SHA256 or 16 bytes Wegman–Carter)

The session identifier (32 random bytes per channel, from both ends' nonces over TCP) makes messages of an
earlier channel fail; the sequence number counts messages per direction from 0. A receiver checks, in
order: frame length (truncated or oversized frames), header format, sequence number (replayed, reordered or
dropped messages), tag (tampered or forged messages, wrong key). Security of the tags: bench/channel_auth.py.

Rejection policy: a rejected frame is never delivered; the rejection is logged (``bench.channel``, WARNING)
and raised as :class:`ChannelAuthError`. The receiving end is then *poisoned*: it closes its transport (the
peer's next ``recv`` raises :class:`ChannelClosed`) and every later ``send``/``recv`` raises
:class:`ChannelClosed` chained to the rejection. There is no resynchronisation inside a channel: a message
may have been lost, the conversation state is unknown, and a Wegman–Carter pad must not be tried twice. The
distillation opens a new channel (new session, sequence numbers from 0) and restarts the block in progress;
confirmed key is in the key store, so nothing confirmed is lost. An authentic message of the wrong kind
(``recv(expect=...)``) raises :class:`ChannelProtocolError` and poisons the end likewise; a missing or
mistyped field (:meth:`Message.array`, :meth:`Message.raw`) raises it too, and the caller should close.
Messages cut off at the end (dropped, then the connection closed) look like a peer that closed
(:class:`ChannelClosed`): a conversation must confirm its own completion, as verification does.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import struct
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import numpy as np

from bench.channel_auth import Auth, BytesLike

_log = logging.getLogger(__name__)

VERSION = 1
SESSION_BYTES = 32
MAX_FRAME_BYTES = 1 << 28  # 256 MiB: beyond this a frame is rejected unread (bounds memory and the WC ε)

FieldValue = bytes | np.ndarray
Sendable = FieldValue | bytearray | memoryview | np.generic  # numpy scalars travel as 0-d arrays
Adversary = Callable[[str, bytes], Sequence[bytes]]
"""Active attacker on an in-memory wire: (sending end's name, frame) → the frames delivered instead, in order."""

_DTYPES = tuple(np.dtype(c) for c in ("?", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8",
                                      "<f4", "<f8", "<c8", "<c16"))
_CODE = {dt.str: code for code, dt in enumerate(_DTYPES, start=1)}  # code 0 is bytes
_MAX_NDIM = 64
_HEAD = struct.Struct("<BQB")
_U8, _U16, _U64 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<Q")


class ChannelError(Exception):
    """Base of the classical channel's errors."""


class ChannelClosed(ChannelError):
    """The peer closed or dropped the connection, or this end was closed or poisoned by a rejection."""


class ChannelAuthError(ChannelError):
    """A received frame was rejected: tampered, forged, wrong key, replayed, reordered, truncated or garbage."""


class ChannelProtocolError(ChannelError):
    """An authentic message did not fit the conversation (unexpected kind, missing or mistyped field)."""


@dataclass(frozen=True)
class Message:
    """One message: ``kind`` and named fields (``bytes`` or read-only numpy arrays)."""

    kind: str
    fields: Mapping[str, FieldValue]

    def _field(self, name: str) -> FieldValue:
        try:
            return self.fields[name]
        except KeyError:
            raise ChannelProtocolError(f"message {self.kind!r} has no field {name!r}") from None

    def array(self, name: str) -> np.ndarray:
        value = self._field(name)
        if not isinstance(value, np.ndarray):
            raise ChannelProtocolError(f"field {name!r} of message {self.kind!r} is bytes, not an array")
        return value

    def raw(self, name: str) -> bytes:
        value = self._field(name)
        if not isinstance(value, bytes):
            raise ChannelProtocolError(f"field {name!r} of message {self.kind!r} is an array, not bytes")
        return value


@dataclass(frozen=True)
class ChannelStats:
    """Traffic of one end; bytes are whole frames (header, data, tag), without the TCP length prefix."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0


class Channel(Protocol):
    """One end of a duplex, message-oriented, authenticated classical channel."""

    name: str  # this end, for logs
    peer: str  # the other end: its name, or host:port over TCP

    @property
    def stats(self) -> ChannelStats: ...

    async def send(self, kind: str, /, **fields: Sendable) -> None:
        """Tag and send one message. Raises ChannelClosed once this end is closed or poisoned."""
        ...

    async def recv(self, expect: str | None = None) -> Message:
        """Next authentic message in order; with ``expect``, of that kind. Raises ChannelAuthError on a
        rejected frame, ChannelProtocolError on an unexpected one, ChannelClosed when the peer has gone."""
        ...

    async def close(self) -> None:
        """Close this end (idempotent); the peer's ``recv`` raises ChannelClosed after frames in flight."""
        ...


class FrameTransport(Protocol):
    """Carries whole frames in order between two ends; knows nothing of their contents."""

    peer: str

    async def write(self, parts: Sequence[BytesLike]) -> None:
        """Send the concatenation of ``parts`` as one frame."""
        ...

    async def read(self, max_bytes: int) -> bytes:
        """Next frame. ChannelClosed at a clean end of stream; ChannelAuthError on a truncated or oversized one."""
        ...

    async def close(self) -> None: ...


def _encode_header(seq: int, kind: str, fields: Mapping[str, Sendable]) -> tuple[bytes, list[memoryview]]:
    kind_b = kind.encode()
    if not 0 < len(kind_b) < 256:
        raise ValueError(f"message kind must be 1..255 bytes of UTF-8, got {kind!r}")
    head = bytearray(_HEAD.pack(VERSION, seq, len(kind_b)) + kind_b + _U16.pack(len(fields)))
    data = []
    for name, value in fields.items():
        name_b = name.encode()
        if len(name_b) > 255:
            raise ValueError(f"field name longer than 255 bytes: {name[:40]!r}...")
        head += _U8.pack(len(name_b)) + name_b
        if isinstance(value, bytes | bytearray | memoryview):
            view = memoryview(value).cast("B")
            head += _U8.pack(0) + _U64.pack(view.nbytes)
        elif isinstance(value, np.ndarray | np.generic):
            value = np.asarray(value)
            wire_dtype = value.dtype.newbyteorder("<")
            code = _CODE.get(wire_dtype.str)
            if code is None:
                raise TypeError(f"field {name!r}: dtype {value.dtype} cannot travel on the channel "
                                f"(allowed: {', '.join(str(dt) for dt in _DTYPES)})")
            head += _U8.pack(code) + _U8.pack(value.ndim) + b"".join(_U64.pack(d) for d in value.shape)
            view = memoryview(np.ascontiguousarray(value, dtype=wire_dtype).reshape(-1).view(np.uint8))
        else:
            raise TypeError(f"field {name!r} must be bytes or a numpy array, got {type(value).__name__}")
        data.append(view)
    return bytes(head), data


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    code: int
    shape: tuple[int, ...]
    n_bytes: int


@dataclass(frozen=True)
class _Header:
    seq: int
    kind: str
    fields: tuple[_FieldSpec, ...]
    size: int  # bytes of the header itself

    @property
    def data_bytes(self) -> int:
        return sum(f.n_bytes for f in self.fields)


class _Malformed(Exception):
    pass


class _HeaderReader:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise _Malformed("frame ends inside its header")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def text(self, n: int) -> str:
        try:
            return str(self.take(n), "utf-8")
        except UnicodeDecodeError:
            raise _Malformed("name is not UTF-8") from None


def _parse_header(buf: memoryview) -> _Header:
    r = _HeaderReader(buf)
    version, seq, kind_len = r.unpack(_HEAD)
    if version != VERSION:
        raise _Malformed(f"protocol version {version}, expected {VERSION}")
    kind = r.text(kind_len)
    (n_fields,) = r.unpack(_U16)
    specs, names = [], set()
    for _ in range(n_fields):
        name = r.text(r.unpack(_U8)[0])
        if name in names:
            raise _Malformed(f"field {name!r} twice")
        names.add(name)
        (code,) = r.unpack(_U8)
        if code == 0:
            shape: tuple[int, ...] = ()
            (n_bytes,) = r.unpack(_U64)
        elif code <= len(_DTYPES):
            (ndim,) = r.unpack(_U8)
            if ndim > _MAX_NDIM:
                raise _Malformed(f"field {name!r} has {ndim} dimensions")
            shape = tuple(r.unpack(_U64)[0] for _ in range(ndim))
            n_bytes = math.prod(shape) * _DTYPES[code - 1].itemsize
        else:
            raise _Malformed(f"field {name!r} has unknown type code {code}")
        specs.append(_FieldSpec(name, code, shape, n_bytes))
    return _Header(seq, kind, tuple(specs), r.pos)


def _fields(frame: memoryview, header: _Header) -> dict[str, FieldValue]:
    out: dict[str, FieldValue] = {}
    pos = header.size
    for f in header.fields:
        chunk = frame[pos:pos + f.n_bytes]
        pos += f.n_bytes
        out[f.name] = bytes(chunk) if f.code == 0 else np.frombuffer(chunk, _DTYPES[f.code - 1]).reshape(f.shape)
    return out


class ChannelEnd:
    """A :class:`Channel` over a :class:`FrameTransport`; built by :func:`memory_pair`, ``tcp_connect`` or
    ``TcpListener.accept`` (bench/channel_tcp.py). ``session`` must be the same fresh value at both ends."""

    def __init__(self, transport: FrameTransport, auth: Auth, *, session: bytes, name: str,
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.name, self.peer = name, transport.peer
        self._transport, self._auth, self._session = transport, auth, session
        self._max_frame_bytes = max_frame_bytes
        self._send_seq = self._recv_seq = 0
        self._stats = ChannelStats()
        self._recv_lock = asyncio.Lock()
        self._closed = False
        self._failure: BaseException | None = None

    @property
    def stats(self) -> ChannelStats:
        return self._stats

    def _check_open(self) -> None:
        if self._closed:
            why = f" after: {self._failure}" if self._failure else ""
            raise ChannelClosed(f"{self.name}: channel to {self.peer} is closed{why}") from self._failure

    async def send(self, kind: str, /, **fields: Sendable) -> None:
        self._check_open()
        header, data = _encode_header(self._send_seq, kind, fields)
        size = len(header) + sum(v.nbytes for v in data) + self._auth.send.tag_bytes
        if size > self._max_frame_bytes:
            raise ValueError(f"message {kind!r} is {size} bytes, above the frame limit of {self._max_frame_bytes}")
        tag = self._auth.send.tag([self._session, header, *data])
        self._send_seq += 1
        try:
            await self._transport.write([header, *data, tag])
        except Exception as exc:
            await self._poison(exc)
            raise
        s = self._stats
        self._stats = ChannelStats(s.messages_sent + 1, s.bytes_sent + size, s.messages_received, s.bytes_received)

    async def recv(self, expect: str | None = None) -> Message:
        async with self._recv_lock:
            self._check_open()
            try:
                frame = await self._transport.read(self._max_frame_bytes)
                self._check_open()  # closed locally while waiting
                message = self._open(frame)
                if expect is not None and message.kind != expect:
                    raise ChannelProtocolError(f"{self.name}: expected message {expect!r} from {self.peer}, "
                                               f"got {message.kind!r}")
            except Exception as exc:
                if not self._closed:
                    await self._poison(exc)
                raise
            s = self._stats
            self._stats = ChannelStats(s.messages_sent, s.bytes_sent, s.messages_received + 1,
                                       s.bytes_received + len(frame))
            return message

    def _open(self, frame: bytes) -> Message:
        """Check one frame; the message if it is authentic and next in sequence, else ChannelAuthError."""
        tag_bytes = self._auth.recv.tag_bytes
        view = memoryview(frame)
        body = view[:-tag_bytes]
        try:
            if len(frame) <= tag_bytes:
                raise _Malformed("frame shorter than a tag")
            header = _parse_header(body)
        except _Malformed as exc:
            raise self._rejection(f"truncated or malformed frame ({len(frame)} bytes): {exc}") from None
        expected_bytes = header.size + header.data_bytes + tag_bytes
        if len(frame) != expected_bytes:
            what = "truncated frame" if len(frame) < expected_bytes else "frame with trailing bytes"
            raise self._rejection(f"{what}: {len(frame)} bytes where its header declares {expected_bytes}")
        if header.seq != self._recv_seq:
            what = "replayed" if header.seq < self._recv_seq else "out-of-order (reordered or dropped before it)"
            raise self._rejection(f"{what} message: sequence number {header.seq}, expected {self._recv_seq}")
        expected_tag = self._auth.recv.tag([self._session, body])
        if not hmac.compare_digest(expected_tag, bytes(view[-tag_bytes:])):
            raise self._rejection(f"tag mismatch on message {self._recv_seq} ({len(frame)} bytes): tampered, "
                                  "forged, or the ends hold different keys or roles")
        self._recv_seq += 1
        return Message(header.kind, _fields(view, header))

    def _rejection(self, reason: str) -> ChannelAuthError:
        return ChannelAuthError(f"{self.name}: rejected message from {self.peer}: {reason}")

    async def _poison(self, exc: BaseException) -> None:
        """Log the failure, refuse all further traffic and close the transport."""
        level = logging.INFO if isinstance(exc, ChannelClosed) else logging.WARNING
        _log.log(level, "channel %s → %s closed after: %s", self.name, self.peer, exc)
        self._failure = exc
        await self.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class _MemoryWire:
    """One end's transport of an in-memory pair: frames reach the peer ``latency_s`` after they are written."""

    def __init__(self, name: str, peer: str, latency_s: float, adversary: Adversary | None,
                 inbox: asyncio.Queue[bytes | None], peer_inbox: asyncio.Queue[bytes | None]) -> None:
        self.name, self.peer = name, peer
        self._latency_s, self._adversary = latency_s, adversary
        self._inbox, self._peer_inbox = inbox, peer_inbox  # None marks the end of the stream
        self._in_flight: deque[bytes | None] = deque()  # FIFO towards the peer; one timer per frame
        self._closed = False

    def _launch(self, frame: bytes | None) -> None:
        self._in_flight.append(frame)
        asyncio.get_running_loop().call_later(self._latency_s, self._arrive)

    def _arrive(self) -> None:
        # Timers due at the same instant may fire in any order; delivering the head of the FIFO keeps order.
        self._peer_inbox.put_nowait(self._in_flight.popleft())

    async def write(self, parts: Sequence[BytesLike]) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.name}: wire to {self.peer} is closed")
        frame = b"".join(parts)
        for delivered in self._adversary(self.name, frame) if self._adversary else (frame,):
            self._launch(delivered)

    async def read(self, max_bytes: int) -> bytes:
        frame = await self._inbox.get()
        if frame is None:
            who = "this end" if self._closed else self.peer
            raise ChannelClosed(f"{self.name}: {who} closed the channel")
        if len(frame) > max_bytes:
            raise ChannelAuthError(f"{self.name}: rejected frame of {len(frame)} bytes from {self.peer}, "
                                   f"above the limit of {max_bytes}")
        return frame

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._launch(None)            # end of stream, behind the frames in flight
            self._inbox.put_nowait(None)  # wakes a recv waiting at this end


def memory_pair(alice_auth: Auth, bob_auth: Auth, *, latency_s: float = 0.0, names: tuple[str, str] = ("alice", "bob"),
                adversary: Adversary | None = None) -> tuple[ChannelEnd, ChannelEnd]:
    """Two connected in-process ends; each frame arrives ``latency_s`` seconds (one way, on the running loop's
    clock, so virtual time under bench/vtime.py) after it is sent. ``adversary`` sees every frame in transit
    and decides what is delivered instead (tests and fault injection)."""
    if latency_s < 0:
        raise ValueError(f"latency_s must be ≥ 0, got {latency_s}")
    to_a: asyncio.Queue[bytes | None] = asyncio.Queue()
    to_b: asyncio.Queue[bytes | None] = asyncio.Queue()
    wire_a = _MemoryWire(names[0], names[1], latency_s, adversary, inbox=to_a, peer_inbox=to_b)
    wire_b = _MemoryWire(names[1], names[0], latency_s, adversary, inbox=to_b, peer_inbox=to_a)
    session = secrets.token_bytes(SESSION_BYTES)
    return (ChannelEnd(wire_a, alice_auth, session=session, name=names[0]),
            ChannelEnd(wire_b, bob_auth, session=session, name=names[1]))
