"""A scripted serial wire for byte-level dialogue tests of serial drivers (PyMeasure style)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

Reply = bytes | Sequence[bytes]


class ScriptedWire:
    """A non-blocking fake serial port that plays ``script``, a list of ``(expected_write, reply)``.

    Every write must equal the next expected bytes exactly; its reply (``b""`` for none) then becomes
    readable. A reply given as a sequence of chunks is released one chunk per read, like bytes trickling
    in. ``pending`` is input already waiting before the first write (a stale prompt).
    """

    def __init__(self, script: Sequence[tuple[bytes, Reply]], *, pending: bytes = b"") -> None:
        self._script = deque(script)
        self._pending = bytearray(pending)
        self._chunks: deque[bytes] = deque()
        self.closed = False

    def write(self, data: bytes, /) -> int:
        assert self._script, f"unexpected write {data!r}: the script is finished"
        expected, reply = self._script.popleft()
        assert data == expected, f"wrote {data!r}, the script expected {expected!r}"
        self._chunks = deque([reply] if isinstance(reply, bytes) else reply)
        return len(data)

    def read_until(self, expected: bytes = b"\n", size: int | None = None) -> bytes:
        if self._chunks:
            self._pending += self._chunks.popleft()
        end = self._pending.find(expected)
        n = len(self._pending) if end < 0 else end + len(expected)
        chunk = bytes(self._pending[:n])
        del self._pending[:n]
        return chunk

    def reset_input_buffer(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        self.closed = True

    def assert_done(self) -> None:
        """Fail unless every scripted write happened and every reply byte was read."""
        assert not self._script, f"script not finished, next expected write {self._script[0][0]!r}"
        assert not self._pending and not any(self._chunks), f"reply bytes left unread: {bytes(self._pending)!r}"
