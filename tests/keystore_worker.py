"""Writer for the key-store kill test (tests/test_keystore.py): Alice's and Bob's stores driven in lock-step.

At start it reconciles the two stores as the parties do after a restart. Then, per cycle, block ``i``: Alice
deposits, Bob deposits, Alice confirms, Bob confirms, Alice's consumer withdraws key and Bob's consumer
withdraws the same spans. After each report-worthy commit it appends a line to LOG (``os.write`` + fsync):

    R <alice confirmed> <alice dropped> <bob confirmed> <bob dropped>   what reconciliation changed
    C <block_id>                                                        both deposited, Alice confirmed
    A <withdrawal_id> <spans> <sha256 of the key>                       Alice's consumer holds the key
    B <withdrawal_id> <spans> <sha256 of the key>                       Bob's consumer holds the key

(id lists comma-separated or ``-``; spans ``block:start:stop`` comma-separated.) ``--kill-after N`` SIGKILLs
the process right after its N-th store write of the cycles, before that write is reported.

Usage: python keystore_worker.py DIR SEED [--kill-after N] [--cycles N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bench.keystore import KeyStore, Span

BLOCK_BITS = (1000, 4000)  # block length range; every block is longer than any withdrawal,
WITHDRAW_BITS = (1, 1000)  # so Alice always has key for the withdrawal of a cycle


def block_bits(seed: int, block_id: int) -> np.ndarray:
    """The final key of block ``block_id``, the same for both parties and for the test."""
    rng = np.random.default_rng([seed, block_id])
    return rng.integers(0, 2, int(rng.integers(*BLOCK_BITS)), dtype=np.uint8)


def withdraw_bits(seed: int, block_id: int) -> int:
    return int(np.random.default_rng([seed, block_id, 1]).integers(*WITHDRAW_BITS))


def key_sha(bits: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(bits).tobytes() + len(bits).to_bytes(8, "big")).hexdigest()


def format_spans(spans: Iterable[Span]) -> str:
    return ",".join(f"{s.block_id}:{s.start_bit}:{s.stop_bit}" for s in spans)


def parse_spans(text: str) -> tuple[Span, ...]:
    return tuple(Span(*map(int, s.split(":"))) for s in text.split(","))


def format_ids(ids: Iterable[int]) -> str:
    return ",".join(map(str, ids)) or "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("--kill-after", type=int)
    parser.add_argument("--cycles", type=int)
    args = parser.parse_args()
    log = os.open(args.dir / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def report(*fields: object) -> None:
        os.write(log, (" ".join(map(str, fields)) + "\n").encode())
        os.fsync(log)

    writes = 0

    def wrote() -> None:
        nonlocal writes
        writes += 1
        if writes == args.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    with KeyStore(args.dir / "alice.sqlite") as alice, KeyStore(args.dir / "bob.sqlite") as bob:
        alice_ids, bob_ids = alice.block_ids(), bob.block_ids()
        a, b = alice.reconcile(bob_ids), bob.reconcile(alice_ids)
        report("R", *(format_ids(ids) for ids in (a.confirmed, a.dropped, b.confirmed, b.dropped)))
        ids = alice.block_ids()
        block_id = max(ids.confirmed | ids.pending, default=0) + 1
        while args.cycles is None or args.cycles > 0:
            bits = block_bits(args.seed, block_id)
            alice.deposit(block_id, bits, t_s=0.5 * block_id)
            wrote()
            bob.deposit(block_id, bits, t_s=0.5 * block_id)
            wrote()
            alice.confirm(block_id)
            wrote()
            report("C", block_id)
            bob.confirm(block_id)
            wrote()
            key = alice.withdraw(withdraw_bits(args.seed, block_id), "sae-alice")
            wrote()
            report("A", key.withdrawal.withdrawal_id, format_spans(key.withdrawal.spans), key_sha(key.bits))
            key = bob.withdraw_spans(key.withdrawal.spans, "sae-bob")
            wrote()
            report("B", key.withdrawal.withdrawal_id, format_spans(key.withdrawal.spans), key_sha(key.bits))
            block_id += 1
            if args.cycles is not None:
                args.cycles -= 1


if __name__ == "__main__":
    main()
