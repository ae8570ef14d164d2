"""The classical channel over TCP (asyncio streams), for Alice and Bob in two processes or on two hosts.

Each frame of bench/channel.py travels behind a 4-byte little-endian length. On connecting, both sides
first send a hello — 8 magic bytes and a 16-byte random nonce — and the session identifier is the
connector's nonce followed by the listener's; since every tag covers it and each side picks its own nonce
afresh, no message recorded on an earlier connection is accepted on a new one. The hello itself is not
authenticated: altering it only makes the first message fail its tag.

Errors name the peer's address: a clean end of stream at a frame boundary raises ``ChannelClosed``; a
stream that ends inside a frame, a length above the frame limit, or a hello of the wrong form raises
``ChannelAuthError`` (and poisons the end, bench/channel.py). A send to a peer that has gone may succeed
(the bytes sit in the socket buffer); the following ``recv`` raises ``ChannelClosed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
from collections.abc import Sequence

from bench.channel import MAX_FRAME_BYTES, ChannelAuthError, ChannelClosed, ChannelEnd
from bench.channel_auth import Auth, BytesLike

_log = logging.getLogger(__name__)

HELLO_MAGIC = b"QKDBCH\x00\x01"
NONCE_BYTES = 16
STREAM_LIMIT_BYTES = 1 << 20  # asyncio read buffer before the socket is paused
_LENGTH = struct.Struct("<I")


def _address(writer: asyncio.StreamWriter) -> str:
    host, port = writer.get_extra_info("peername")[:2]
    return f"{host}:{port}"


class _StreamWire:
    """Length-prefixed frames on an asyncio stream pair; a cancelled ``read`` resumes where it stopped."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.peer = _address(writer)
        self._pending_length: int | None = None  # length already read of a frame whose body has not arrived

    async def write(self, parts: Sequence[BytesLike]) -> None:
        # Synchronous writes keep a frame contiguous even when several tasks send at once.
        self._writer.write(_LENGTH.pack(sum(memoryview(p).nbytes for p in parts)))
        for part in parts:
            self._writer.write(part)
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise ChannelClosed(f"connection to {self.peer} lost: {exc}") from exc

    async def read(self, max_bytes: int) -> bytes:
        try:
            if self._pending_length is None:
                (length,) = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))
                if length > max_bytes:
                    raise ChannelAuthError(f"frame length {length} from {self.peer} exceeds the limit of "
                                           f"{max_bytes} bytes (garbage on the stream?)")
                self._pending_length = length
            frame = await self._reader.readexactly(self._pending_length)
        except asyncio.IncompleteReadError as exc:
            if self._pending_length is None and not exc.partial:
                raise ChannelClosed(f"{self.peer} closed the connection") from None
            expected = _LENGTH.size if self._pending_length is None else self._pending_length
            raise ChannelAuthError(f"truncated frame from {self.peer}: the stream ended after {len(exc.partial)} "
                                   f"of {expected} bytes") from None
        except ConnectionError as exc:
            raise ChannelClosed(f"connection to {self.peer} lost: {exc}") from exc
        self._pending_length = None
        return frame

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


async def _open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auth: Auth, name: str,
                connector: bool, max_frame_bytes: int) -> ChannelEnd:
    """Exchange hellos, then wrap the stream in an authenticated channel end."""
    wire = _StreamWire(reader, writer)
    nonce = secrets.token_bytes(NONCE_BYTES)
    try:
        writer.write(HELLO_MAGIC + nonce)
        await writer.drain()
        hello = await reader.readexactly(len(HELLO_MAGIC) + NONCE_BYTES)
    except asyncio.IncompleteReadError as exc:
        await wire.close()
        raise ChannelClosed(f"{name}: {wire.peer} closed the connection during the hello "
                            f"({len(exc.partial)} bytes received)") from None
    except ConnectionError as exc:
        await wire.close()
        raise ChannelClosed(f"{name}: connection to {wire.peer} lost during the hello: {exc}") from exc
    if not hello.startswith(HELLO_MAGIC):
        await wire.close()
        error = ChannelAuthError(f"{name}: {wire.peer} does not speak this channel protocol "
                                 f"(hello starts {hello[:len(HELLO_MAGIC)]!r})")
        _log.warning("%s", error)
        raise error
    peer_nonce = hello[len(HELLO_MAGIC):]
    session = nonce + peer_nonce if connector else peer_nonce + nonce
    return ChannelEnd(wire, auth, session=session, name=name, max_frame_bytes=max_frame_bytes)


async def tcp_connect(host: str, port: int, auth: Auth, *, name: str = "alice",
                      max_frame_bytes: int = MAX_FRAME_BYTES) -> ChannelEnd:
    """Connect to a :class:`TcpListener` and return the authenticated channel end."""
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT_BYTES)
    except OSError as exc:
        raise ChannelClosed(f"{name}: cannot connect to {host}:{port}: {exc}") from exc
    return await _open(reader, writer, auth, name, connector=True, max_frame_bytes=max_frame_bytes)


class TcpListener:
    """Listens on a TCP port; :meth:`accept` hands out one channel end per incoming connection."""

    def __init__(self, auth: Auth, name: str, max_frame_bytes: int) -> None:
        self._auth, self._name, self._max_frame_bytes = auth, name, max_frame_bytes
        self._incoming: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._incoming.put_nowait((reader, writer))

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._connected, host, port, limit=STREAM_LIMIT_BYTES)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound — the port the OS chose when asked for 0."""
        if self._server is None:
            raise RuntimeError("listener not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def accept(self) -> ChannelEnd:
        """Wait for the next connection and complete its hello. The ``auth`` given to :func:`tcp_listen` is
        used for it: with Wegman–Carter, accept one connection at a time (the pads are one stream)."""
        reader, writer = await self._incoming.get()
        return await _open(reader, writer, self._auth, self._name, connector=False,
                           max_frame_bytes=self._max_frame_bytes)

    async def close(self) -> None:
        """Stop listening and drop connections not yet accepted; accepted channel ends stay open."""
        if self._server is not None:
            self._server.close()
        while not self._incoming.empty():
            _, writer = self._incoming.get_nowait()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def tcp_listen(auth: Auth, host: str = "127.0.0.1", port: int = 0, *, name: str = "bob",
                     max_frame_bytes: int = MAX_FRAME_BYTES) -> TcpListener:
    """Listen on ``host:port`` (port 0: any free port, see :attr:`TcpListener.address`)."""
    listener = TcpListener(auth, name, max_frame_bytes)
    await listener.start(host, port)
    return listener
