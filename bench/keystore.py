"""Crash-safe key store: one SQLite file per party, final key in blocks that both parties confirm.

Lifecycle of a block (ids assigned by Alice and carried in the distillation's messages):

1. each party deposits it (:meth:`KeyStore.deposit`) → ``pending``, durable before it acknowledges to its peer;
2. on the peer's acknowledgement each party confirms it (:meth:`KeyStore.confirm`) → ``available``. Only
   available key is handed out, so no party uses a block its peer may not hold;
3. after a restart, before any new block is distilled, both parties exchange :meth:`KeyStore.block_ids` and
   each calls :meth:`KeyStore.reconcile` with the peer's: a block both hold is confirmed on both, a pending
   block the peer lacks is dropped (never confirmed anywhere, as a confirm needs both deposits; its id is free),
   and a confirmed block one side lacks raises :class:`StoresDiverged`. Both stores end with the same
   blocks, which :meth:`KeyStore.digest` checks.

Hand-out: Alice (the master) hands out key with :meth:`KeyStore.withdraw`, from the lowest available block id
on, keeping an offset per block (partial blocks are used, nothing is wasted). Bob (the follower) hands out
exactly the spans (:class:`Span`) Alice's key names with :meth:`KeyStore.withdraw_spans`; spans at or past his
offset are served, earlier ones raise :class:`KeyAlreadyUsed`, and bits a later span skips are never served.
The follower never calls ``withdraw``.

Crash safety. Every operation is one SQLite transaction (``BEGIN IMMEDIATE`` … ``COMMIT``): a kill before the
commit leaves no trace, a kill after it leaves the whole operation. Journal: WAL with ``synchronous=FULL``,
so the WAL is fsynced at every commit and a committed deposit or confirm survives power loss as well as a
kill. It must: the party acknowledges to its peer right after the commit, and the peer then hands out key.
WAL costs one fsync per commit (a rollback journal needs several) and lets readers run beside the writer; it
needs a local file system (shared-memory index) and the ``-wal`` file belongs to the store.
Hand-out is consume-first: the commit that advances the offsets also logs the withdrawal (id, consumer,
spans), and only then are the bits returned. A kill between that commit and the caller receiving the bits
loses that one withdrawal's key (logged as handed out, never handed out again) rather than risk handing it
out twice: a killed caller has lost whatever it held anyway, and a caller in another process cannot prove
it did not use the key. Hence no state ``reserved``: reservation and consumption are the same commit.
Bits of a fully used block are erased (``secure_delete``; old copies can linger in the WAL until it is
overwritten); its SHA-256 stays for :meth:`KeyStore.digest`. Opening runs SQLite's ``quick_check``
(about 50 ms per 50 MB on the 2-core VM).

Bits are ``np.packbits`` bytes (big-endian bit order); times are the caller's loop time (virtual in emulation).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

APPLICATION_ID = int.from_bytes(b"QKDk", "big")  # SQLite header field that marks a file as a qkd-bench key store
SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE blocks (
        block_id INTEGER PRIMARY KEY,
        n_bits INTEGER NOT NULL CHECK (n_bits > 0),
        handed_bits INTEGER NOT NULL DEFAULT 0 CHECK (handed_bits BETWEEN 0 AND n_bits),
        state TEXT NOT NULL CHECK (state IN ('pending', 'available', 'consumed')),
        created_s REAL NOT NULL,
        sha256 BLOB NOT NULL,
        bits BLOB NOT NULL)""",  # last: reading the other columns never walks the blob's overflow pages
    "CREATE INDEX blocks_by_state ON blocks (state, block_id)",
    "CREATE TABLE withdrawals (withdrawal_id INTEGER PRIMARY KEY, consumer TEXT NOT NULL)",
    """CREATE TABLE spans (
        withdrawal_id INTEGER NOT NULL REFERENCES withdrawals,
        position INTEGER NOT NULL,
        block_id INTEGER NOT NULL REFERENCES blocks,
        start_bit INTEGER NOT NULL,
        stop_bit INTEGER NOT NULL,
        PRIMARY KEY (withdrawal_id, position))""",
)


class KeyStoreError(Exception):
    """A key-store operation was refused; the message names the store's file."""


class CorruptStore(KeyStoreError):
    """The file is not a readable qkd-bench key store of this schema, or a block fails its SHA-256 check."""


class DuplicateBlock(KeyStoreError):
    """A block id was deposited twice."""


class NotEnoughKey(KeyStoreError):
    """Fewer available bits than asked for."""


class KeyAlreadyUsed(KeyStoreError):
    """A span asked of the follower covers bits this store has already handed out (or skipped)."""


class StoresDiverged(KeyStoreError):
    """A block is confirmed on one side and unknown to the other: the protocol's invariant is broken."""


@dataclass(frozen=True)
class Span:
    """Bits ``start_bit:stop_bit`` (half-open) of block ``block_id``."""

    block_id: int
    start_bit: int
    stop_bit: int

    @property
    def n_bits(self) -> int:
        return self.stop_bit - self.start_bit


@dataclass(frozen=True)
class Withdrawal:
    """One hand-out as the store logs it: the key is the concatenation of ``spans`` in order."""

    withdrawal_id: int
    consumer: str
    spans: tuple[Span, ...]

    @property
    def n_bits(self) -> int:
        return sum(s.n_bits for s in self.spans)


@dataclass(frozen=True, eq=False)
class Key:
    """Key handed to a consumer: ``bits`` (uint8 0/1) and the withdrawal that names it to the peer."""

    withdrawal: Withdrawal
    bits: np.ndarray


@dataclass(frozen=True)
class BlockIds:
    """What a party tells its peer at reconciliation."""

    confirmed: frozenset[int]  # available or consumed
    pending: frozenset[int]


@dataclass(frozen=True)
class Reconciliation:
    """What :meth:`KeyStore.reconcile` changed."""

    confirmed: tuple[int, ...]  # pending here, held by the peer: now available
    dropped: tuple[int, ...]    # pending here, unknown to the peer: deleted


class KeyStore:
    """One party's key store in an SQLite file; opening an existing file resumes it, a new path creates one.

    Not thread-safe: use it from the thread that opened it (the stack's event loop). Each call blocks for
    about one fsync.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connect()

    def _connect(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None)  # transactions are explicit
        try:
            self._open()
        except BaseException as e:
            self._db.close()
            if isinstance(e, sqlite3.DatabaseError):
                raise CorruptStore(f"{self.path}: not a readable qkd-bench key store ({e})") from e
            raise

    def _open(self) -> None:
        db = self._db
        (app_id,) = db.execute("PRAGMA application_id").fetchone()
        if app_id == 0 and db.execute("SELECT 1 FROM sqlite_master").fetchone() is None:
            self._create()
        elif app_id != APPLICATION_ID:
            raise CorruptStore(f"{self.path}: not a qkd-bench key store (SQLite application_id {app_id:#x})")
        versions = db.execute("SELECT version FROM schema_version").fetchall()
        if versions != [(SCHEMA_VERSION,)]:
            raise CorruptStore(f"{self.path}: schema version {versions}, this code reads {SCHEMA_VERSION}")
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise CorruptStore(f"{self.path}: SQLite integrity check failed: {check[:3]}")
        (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise KeyStoreError(f"{self.path}: cannot use a write-ahead log (journal mode {mode!r})")
        for pragma in ("synchronous = FULL", "foreign_keys = ON", "secure_delete = ON"):
            db.execute(f"PRAGMA {pragma}")

    def _create(self) -> None:
        with self._transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit: all of it is committed or none of it."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def __getstate__(self) -> dict[str, Path]:
        return {"path": self.path}  # the file is the state: a checkpoint copies it (backup) and reopens it

    def __setstate__(self, state: dict[str, Path]) -> None:
        self.path = state["path"]  # closed until reopen()

    def reopen(self, path: str | Path) -> None:
        """Open the store at ``path`` (e.g. restored from a checkpoint) in place of the one this was."""
        self.path = Path(path)
        self._connect()

    def backup(self, path: str | Path) -> None:
        """Write a consistent copy of the store, WAL included, to the new file ``path``."""
        with closing(sqlite3.connect(path)) as copy:
            self._db.backup(copy)

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def deposit(self, block_id: int, bits: np.ndarray, t_s: float) -> None:
        """Store a block as pending. ``bits``: 1-D 0/1 array; ``t_s``: the caller's loop time in seconds."""
        bits = np.asarray(bits)
        if bits.ndim != 1 or bits.size == 0 or (bits.dtype != np.bool_ and (bits.min() < 0 or bits.max() > 1)):
            raise ValueError(f"a key block is a non-empty 1-D array of 0/1, got shape {bits.shape}")
        packed = np.packbits(bits).tobytes()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM blocks WHERE block_id = ?", (int(block_id),)).fetchone():
                raise DuplicateBlock(f"{self.path}: block {block_id} is already in the store")
            db.execute("INSERT INTO blocks (block_id, n_bits, bits, sha256, created_s, state) "
                       "VALUES (?, ?, ?, ?, ?, 'pending')",
                       (int(block_id), bits.size, packed, hashlib.sha256(packed).digest(), float(t_s)))

    def confirm(self, block_id: int) -> None:
        """The peer has deposited ``block_id``: make it available. Confirming twice is harmless."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM blocks WHERE block_id = ?", (int(block_id),)).fetchone() is None:
                raise KeyStoreError(f"{self.path}: cannot confirm block {block_id}, it was never deposited here")
            db.execute("UPDATE blocks SET state = 'available' WHERE block_id = ? AND state = 'pending'",
                       (int(block_id),))

    def withdraw(self, n_bits: int, consumer: str) -> Key:
        """Master side: hand out ``n_bits`` available bits, lowest block id first, never to be handed out again."""
        if n_bits < 1:
            raise ValueError(f"withdraw at least one bit, not {n_bits}")
        with self._transaction() as db:
            spans: list[Span] = []
            missing = n_bits
            with closing(db.execute("SELECT block_id, n_bits, handed_bits FROM blocks WHERE state = 'available' "
                                    "ORDER BY block_id")) as rows:
                for block_id, size, handed in rows:
                    take = min(size - handed, missing)
                    spans.append(Span(block_id, handed, handed + take))
                    missing -= take
                    if missing == 0:
                        break
            if missing:
                raise NotEnoughKey(f"{self.path}: {n_bits} bits asked for, {n_bits - missing} available")
            return self._hand_out(db, spans, consumer)

    def withdraw_spans(self, spans: Iterable[Span], consumer: str) -> Key:
        """Follower side: hand out exactly ``spans`` (the master's :attr:`Key.withdrawal`), each at or past this
        store's offset in its block; bits skipped before a span are never handed out."""
        asked = list(spans)
        if not asked or len({s.block_id for s in asked}) != len(asked):
            raise ValueError(f"spans must name distinct blocks, got {asked}")
        with self._transaction() as db:
            for s in asked:
                row = db.execute("SELECT n_bits, handed_bits, state FROM blocks WHERE block_id = ?",
                                 (s.block_id,)).fetchone()
                if row is None or row[2] == "pending":
                    raise KeyStoreError(f"{self.path}: block {s.block_id} is not confirmed here")
                size, handed, _ = row
                if not 0 <= s.start_bit < s.stop_bit <= size:
                    raise ValueError(f"{s} lies outside block {s.block_id} of {size} bits")
                if s.start_bit < handed:
                    raise KeyAlreadyUsed(f"{self.path}: {s} overlaps the {handed} bits already handed out")
            return self._hand_out(db, asked, consumer)

    def _hand_out(self, db: sqlite3.Connection, spans: list[Span], consumer: str) -> Key:
        """Within the caller's transaction: log the withdrawal, advance the offsets, read and check the bits."""
        withdrawal_id = db.execute("INSERT INTO withdrawals (consumer) VALUES (?)", (consumer,)).lastrowid
        assert withdrawal_id is not None
        parts: list[np.ndarray] = []
        for position, s in enumerate(spans):
            size, packed, sha = db.execute("SELECT n_bits, bits, sha256 FROM blocks WHERE block_id = ?",
                                           (s.block_id,)).fetchone()
            if hashlib.sha256(packed).digest() != sha:
                raise CorruptStore(f"{self.path}: block {s.block_id} fails its SHA-256 check")
            first = s.start_bit // 8
            window = np.frombuffer(packed, np.uint8, -(-s.stop_bit // 8) - first, first)
            parts.append(np.unpackbits(window)[s.start_bit - 8 * first:s.stop_bit - 8 * first])
            used_up = s.stop_bit == size
            db.execute("UPDATE blocks SET handed_bits = ?, state = ?, bits = CASE WHEN ? THEN x'' ELSE bits END "
                       "WHERE block_id = ?",
                       (s.stop_bit, "consumed" if used_up else "available", used_up, s.block_id))
            db.execute("INSERT INTO spans VALUES (?, ?, ?, ?, ?)",
                       (withdrawal_id, position, s.block_id, s.start_bit, s.stop_bit))
        return Key(Withdrawal(withdrawal_id, consumer, tuple(spans)), np.concatenate(parts))

    def available_bits(self) -> int:
        """Confirmed bits not yet handed out. On the follower an upper bound: it also counts bits the master
        handed out in withdrawals this store never served (a consumer killed before asking for them)."""
        (n,) = self._db.execute("SELECT COALESCE(SUM(n_bits - handed_bits), 0) FROM blocks "
                                "WHERE state = 'available'").fetchone()
        return int(n)

    def block_ids(self) -> BlockIds:
        """This party's side of reconciliation."""
        states = dict(self._db.execute("SELECT block_id, state FROM blocks").fetchall())
        return BlockIds(frozenset(i for i, s in states.items() if s != "pending"),
                        frozenset(i for i, s in states.items() if s == "pending"))

    def reconcile(self, peer: BlockIds) -> Reconciliation:
        """After a restart and before any new deposit: keep exactly the blocks both parties hold.

        Run by both parties on each other's :meth:`block_ids`, taken before either reconciles. Idempotent, so a
        crash half-way through is repaired by running it again.
        """
        held_by_peer = peer.confirmed | peer.pending
        with self._transaction() as db:
            states = dict(db.execute("SELECT block_id, state FROM blocks").fetchall())
            diverged = sorted(({i for i, s in states.items() if s != "pending"} - held_by_peer)
                              | (peer.confirmed - states.keys()))
            if diverged:
                raise StoresDiverged(f"{self.path}: blocks {diverged[:10]} are confirmed on one side only")
            confirmed = tuple(sorted(i for i, s in states.items() if s == "pending" and i in held_by_peer))
            dropped = tuple(sorted(i for i, s in states.items() if s == "pending" and i not in held_by_peer))
            db.executemany("UPDATE blocks SET state = 'available' WHERE block_id = ?", [(i,) for i in confirmed])
            db.executemany("DELETE FROM blocks WHERE block_id = ?", [(i,) for i in dropped])
        return Reconciliation(confirmed, dropped)

    def digest(self) -> str:
        """SHA-256 (hex) over (id, length, SHA-256 of the bits) of every confirmed block in id order.

        Used blocks count too, so two parties' stores agree after a restart exactly when their digests do.
        """
        h = hashlib.sha256()
        for block_id, size, sha in self._db.execute("SELECT block_id, n_bits, sha256 FROM blocks "
                                                    "WHERE state != 'pending' ORDER BY block_id"):
            h.update(block_id.to_bytes(8, "big", signed=True) + size.to_bytes(8, "big") + sha)
        return h.hexdigest()

    def withdrawals(self) -> list[Withdrawal]:
        """The hand-out log, oldest first (including any whose caller was killed before receiving the key)."""
        log: dict[int, tuple[str, list[Span]]] = {}
        for withdrawal_id, consumer, block_id, start, stop in self._db.execute(
                "SELECT withdrawal_id, consumer, block_id, start_bit, stop_bit FROM withdrawals "
                "JOIN spans USING (withdrawal_id) ORDER BY withdrawal_id, position"):
            log.setdefault(withdrawal_id, (consumer, []))[1].append(Span(block_id, start, stop))
        return [Withdrawal(i, consumer, tuple(spans)) for i, (consumer, spans) in log.items()]
