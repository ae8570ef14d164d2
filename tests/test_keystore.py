"""Crash-safe key store (bench/keystore.py): hand-out, agreement between parties, corruption, SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keystore_worker import block_bits, key_sha, parse_spans

from bench.keystore import (
    BlockIds,
    CorruptStore,
    DuplicateBlock,
    KeyAlreadyUsed,
    KeyStore,
    KeyStoreError,
    NotEnoughKey,
    Span,
    StoresDiverged,
    Withdrawal,
)

WORKER = Path(__file__).with_name("keystore_worker.py")
WORKER_ENV = {**os.environ, "PYTHONPATH": str(WORKER.parents[1])}  # this checkout's bench, not an installed one


def random_bits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n, dtype=np.uint8)


def fill(store: KeyStore, blocks: dict[int, np.ndarray]) -> None:
    """Deposit and confirm, as if the peer had acknowledged every block."""
    for block_id, bits in blocks.items():
        store.deposit(block_id, bits, t_s=float(block_id))
        store.confirm(block_id)


def most_uses(store: KeyStore, block_sizes: dict[int, int]) -> int:
    """How often the most-used bit was handed out, by the store's own withdrawal log."""
    uses = {i: np.zeros(n, int) for i, n in block_sizes.items()}
    for w in store.withdrawals():
        for s in w.spans:
            uses[s.block_id][s.start_bit:s.stop_bit] += 1
    return max(int(u.max()) for u in uses.values())


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    blocks = {i: random_bits(1000 + 37 * i, i) for i in (3, 1, 2)}
    path = tmp_path / "alice.sqlite"
    with KeyStore(path) as store:
        fill(store, blocks)
        first = store.withdraw(700, "app")
        second = store.withdraw(1500, "app")
        assert store.available_bits() == 3000 + 37 * 6 - 2200
    with KeyStore(path) as store:
        rest = store.withdraw(store.available_bits(), "app")
        with pytest.raises(NotEnoughKey, match=r"alice\.sqlite"):
            store.withdraw(1, "app")
        assert [w.withdrawal_id for w in store.withdrawals()] == [1, 2, 3]
    handed = np.concatenate([first.bits, second.bits, rest.bits])
    np.testing.assert_array_equal(handed, np.concatenate([blocks[i] for i in sorted(blocks)]))
    assert second.withdrawal.spans == (Span(1, 700, 1037), Span(2, 0, 1074), Span(3, 0, 89))


def test_pending_key_is_not_handed_out(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "s.sqlite") as store:
        store.deposit(1, random_bits(500, 1), t_s=0.0)
        assert store.available_bits() == 0
        with pytest.raises(NotEnoughKey):
            store.withdraw(1, "app")
        store.confirm(1)
        store.confirm(1)
        assert store.withdraw(500, "app").bits.size == 500


def test_bad_blocks_are_refused(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "s.sqlite") as store:
        for bits in (np.array([0, 1, 2]), np.zeros((2, 8), np.uint8), np.array([], np.uint8)):
            with pytest.raises(ValueError, match="0/1"):
                store.deposit(1, bits, t_s=0.0)
        with pytest.raises(KeyStoreError, match="never deposited"):
            store.confirm(7)


def test_duplicate_block_id_is_rejected_and_leaves_the_store_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with KeyStore(path) as store:
        fill(store, {5: random_bits(100, 1)})
        digest = store.digest()
        with pytest.raises(DuplicateBlock, match="block 5"):
            store.deposit(5, random_bits(100, 2), t_s=1.0)
    with KeyStore(path) as store:
        with pytest.raises(DuplicateBlock):
            store.deposit(5, random_bits(100, 1), t_s=1.0)
        assert store.digest() == digest


def test_no_bit_is_handed_out_twice_by_master_or_follower(tmp_path: Path) -> None:
    blocks = {i: random_bits(800, i) for i in range(1, 5)}
    with KeyStore(tmp_path / "alice.sqlite") as alice, KeyStore(tmp_path / "bob.sqlite") as bob:
        fill(alice, blocks)
        fill(bob, blocks)
        keys = [alice.withdraw(n, "app") for n in (300, 900, 1, 1000)]
        bob_keys = [bob.withdraw_spans(k.withdrawal.spans, "app") for k in (keys[0], keys[2], keys[3])]
        for a, b in zip((keys[0], keys[2], keys[3]), bob_keys, strict=True):
            np.testing.assert_array_equal(a.bits, b.bits)
        with pytest.raises(KeyAlreadyUsed, match=r"bob\.sqlite"):  # keys[1] was skipped by Bob: never served
            bob.withdraw_spans(keys[1].withdrawal.spans, "app")
        with pytest.raises(KeyAlreadyUsed):
            bob.withdraw_spans(keys[3].withdrawal.spans, "app")
        assert most_uses(alice, dict.fromkeys(blocks, 800)) == most_uses(bob, dict.fromkeys(blocks, 800)) == 1
        assert alice.available_bits() == 3200 - 2201
        assert bob.available_bits() == 3200 - 2201 + 500  # follower: block 1's rest was handed out by Alice


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["deposit", "withdraw", "reopen"]), st.integers(1, 3000)),
                max_size=10))
def test_hand_out_is_the_deposited_key_in_order_exactly_once(ops: list[tuple[str, int]]) -> None:
    """Whatever the interleaving of deposits, withdrawals and restarts: the concatenated hand-outs are a
    prefix of the concatenated deposits, and what is left is exactly the rest."""
    deposited, handed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.sqlite"
        store = KeyStore(path)
        try:
            for block_id, (op, n) in enumerate(ops):
                if op == "deposit":
                    deposited.append(random_bits(n, block_id))
                    fill(store, {block_id: deposited[-1]})
                elif op == "reopen":
                    store.close()
                    store = KeyStore(path)
                elif n <= store.available_bits():
                    handed.append(store.withdraw(n, "app").bits)
                else:
                    with pytest.raises(NotEnoughKey):
                        store.withdraw(n, "app")
            all_bits = np.concatenate([np.zeros(0, np.uint8), *deposited])
            out = np.concatenate([np.zeros(0, np.uint8), *handed])
            np.testing.assert_array_equal(out, all_bits[:out.size])
            assert store.available_bits() == all_bits.size - out.size
        finally:
            store.close()


def test_digests_agree_whatever_the_order_and_use(tmp_path: Path) -> None:
    blocks = {i: random_bits(300 + i, i) for i in range(1, 6)}
    with KeyStore(tmp_path / "a.sqlite") as alice, KeyStore(tmp_path / "b.sqlite") as bob:
        fill(alice, blocks)
        fill(bob, dict(reversed(blocks.items())))
        alice.withdraw(900, "app")
        assert alice.digest() == bob.digest()
        bob.deposit(6, random_bits(10, 6), t_s=9.0)  # pending blocks are not part of the agreement
        assert alice.digest() == bob.digest()
        alice.deposit(6, random_bits(10, 7), t_s=9.0)
        alice.confirm(6)
        bob.confirm(6)
        assert alice.digest() != bob.digest()


def test_reconcile_resolves_both_stores_to_the_blocks_both_hold(tmp_path: Path) -> None:
    bits = {i: random_bits(64, i) for i in range(1, 6)}
    with KeyStore(tmp_path / "a.sqlite") as alice, KeyStore(tmp_path / "b.sqlite") as bob:
        fill(alice, {1: bits[1], 2: bits[2]})   # 1 confirmed by both; 2 confirmed by Alice, Bob killed before
        fill(bob, {1: bits[1]})                 #   his confirm; 3 both pending; 4 only Alice; 5 only Bob
        bob.deposit(2, bits[2], t_s=2.0)
        for store in (alice, bob):
            store.deposit(3, bits[3], t_s=3.0)
        alice.deposit(4, bits[4], t_s=4.0)
        bob.deposit(5, bits[5], t_s=5.0)
        alice_ids, bob_ids = alice.block_ids(), bob.block_ids()
        a, b = alice.reconcile(bob_ids), bob.reconcile(alice_ids)
        assert (a.confirmed, a.dropped, b.confirmed, b.dropped) == ((3,), (4,), (2, 3), (5,))
        assert alice.block_ids() == bob.block_ids() == BlockIds(frozenset({1, 2, 3}), frozenset())
        assert alice.digest() == bob.digest()
        assert alice.reconcile(bob.block_ids()).confirmed == ()  # idempotent
        with pytest.raises(StoresDiverged, match=r"a\.sqlite"):
            alice.reconcile(BlockIds(frozenset({1, 2}), frozenset()))
        with pytest.raises(StoresDiverged):
            alice.reconcile(BlockIds(frozenset({1, 2, 3, 9}), frozenset()))


def test_corrupt_or_foreign_files_are_refused_by_name(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"definitely not SQLite " * 100)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    store_path = tmp_path / "store.sqlite"
    KeyStore(store_path).close()
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(store_path.read_bytes()[:5000])
    for path in (garbage, foreign, truncated):
        with pytest.raises(CorruptStore, match=path.name):
            KeyStore(path)
    with sqlite3.connect(store_path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(CorruptStore, match="schema version"):
        KeyStore(store_path)


def test_a_flipped_bit_in_a_block_is_caught_before_it_is_handed_out(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    marker = b"block one of the key store " * 20
    with KeyStore(path) as store:
        fill(store, {1: np.unpackbits(np.frombuffer(marker, np.uint8)), 2: random_bits(4096, 2)})
    raw = bytearray(path.read_bytes())
    raw[raw.index(marker) + 100] ^= 0x10
    path.write_bytes(bytes(raw))
    with KeyStore(path) as store:
        with pytest.raises(CorruptStore, match=r"s\.sqlite: block 1 fails its SHA-256"):
            store.withdraw(10, "app")
        assert store.available_bits() == 8 * len(marker) + 4096  # the refused withdrawal changed nothing


def parse_log(path: Path) -> dict[str, list[list[str]]]:
    """Report lines by kind; a torn last line (killed mid-write) was never reported."""
    lines: dict[str, list[list[str]]] = {"R": [], "C": [], "A": [], "B": []}
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            lines[line[0]].append(line.split()[1:])
    return lines


def store_log_covers(store_log: list[Withdrawal], reported: list[list[str]]) -> int:
    """Every key a consumer reported is in the store's log as reported; return how many logged keys were not
    reported (handed out by a commit whose caller was killed before it could report)."""
    logged = {w.withdrawal_id: w.spans for w in store_log}
    for withdrawal_id, spans, _ in reported:
        assert logged[int(withdrawal_id)] == parse_spans(spans)
    return len(logged) - len(reported)


def test_sigkilled_writer_loses_no_confirmed_block_and_never_hands_out_key_twice(tmp_path: Path) -> None:
    """Both parties' stores in one writer (tests/keystore_worker.py), SIGKILLed after each store write of a cycle
    and then at seeded random moments, restarted each time; finally a clean run, and the logs are audited."""
    seed, delays_s = 5, np.random.default_rng(5).uniform(0.1, 0.5, 4)
    command = [sys.executable, str(WORKER), str(tmp_path), str(seed)]
    write_points = range(1, 7)  # right after each store write of a cycle, before it is reported
    for n in write_points:
        killed = subprocess.run([*command, "--kill-after", str(n)], env=WORKER_ENV, check=False)
        assert killed.returncode == -signal.SIGKILL
    for delay_s in delays_s:  # anywhere: in a commit, in reconciliation, at start-up
        worker = subprocess.Popen(command, env=WORKER_ENV)
        time.sleep(delay_s)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait() == -signal.SIGKILL
    kills = len(write_points) + len(delays_s)
    subprocess.run([*command, "--cycles", "2"], env=WORKER_ENV, check=True)
    log = parse_log(tmp_path / "log.txt")

    # each deterministic kill point left the state its position implies, and reconciliation resolved it
    after = log["R"][1:4]
    assert after[0][1] != "-" and after[0][2:] == ["-", "-"]  # Alice deposited only: she drops it
    assert after[1][0] != "-" and after[1][2] != "-"          # both deposited: both confirm
    assert after[2][0] == "-" and after[2][2] != "-"          # Alice confirmed: Bob confirms too

    with KeyStore(tmp_path / "alice.sqlite") as alice, KeyStore(tmp_path / "bob.sqlite") as bob, \
            KeyStore(tmp_path / "expected.sqlite") as expected:
        ids = alice.block_ids()
        assert ids == bob.block_ids() and not ids.pending
        assert {int(c[0]) for c in log["C"]} <= ids.confirmed
        assert alice.digest() == bob.digest()
        fill(expected, {i: block_bits(seed, i) for i in sorted(ids.confirmed)})
        assert alice.digest() == expected.digest()  # contents as deposited

        # no bit handed out twice by either party, and every handed-out key is the deposited key
        sizes = {i: block_bits(seed, i).size for i in ids.confirmed}
        assert most_uses(alice, sizes) == most_uses(bob, sizes) == 1
        for withdrawal_id, spans, sha in log["A"] + log["B"]:
            key = np.concatenate([block_bits(seed, s.block_id)[s.start_bit:s.stop_bit] for s in parse_spans(spans)])
            assert key_sha(key) == sha, withdrawal_id
        assert {a[1] for a in log["B"]} <= {a[1] for a in log["A"]}  # Bob serves only what Alice handed out

        # keys lost in flight (committed, caller killed) are logged, at most one per kill and party
        assert 1 <= store_log_covers(alice.withdrawals(), log["A"]) <= kills
        assert 1 <= store_log_covers(bob.withdrawals(), log["B"]) <= kills
        handed = sum(w.n_bits for w in alice.withdrawals())
        assert alice.available_bits() + handed == expected.available_bits()  # Alice lost no confirmed bit
        assert len(log["C"]) >= 5 and len(log["B"]) >= 2  # kill-after runs 4-6 and the final run, at least
