"""Key distillation between Alice and Bob over the authenticated channel (bench/distill.py): identical keys in
both stores, verification catching what Cascade missed, the finite-key length, and tampering."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import distill
from bench.cascade import AsyncParityOracle, CascadePlan, CascadeResult
from bench.distill import DistillationSettings, Distillery
from bench.finitekey import finite_key
from bench.keystore import KeyStore
from bench.sifting import PartyBits, sift, sift_events
from drivers.interfaces.tagger import CoincidenceCounts, CoincidenceEvents, CoincidenceSpec

WORKER = Path(__file__).with_name("distill_worker.py")
WORKER_ENV = {**os.environ, "PYTHONPATH": str(WORKER.parents[1])}  # this checkout's bench, not an installed one
SMALL = DistillationSettings(frame_bits=1024, frames=64, channel_latency_s=0.0)


def _pair(rng: np.random.Generator, n_z: int, qber_z: float, n_x: int, qber_x: float) -> tuple[PartyBits, PartyBits]:
    az, ax = rng.integers(0, 2, n_z, dtype=np.uint8), rng.integers(0, 2, n_x, dtype=np.uint8)
    bz = az ^ (rng.random(n_z) < qber_z).astype(np.uint8)
    bx = ax ^ (rng.random(n_x) < qber_x).astype(np.uint8)
    return PartyBits(az, ax), PartyBits(bz, bx)


def _distil(d: Distillery, rng: np.random.Generator, qbers: list[float], *, estimate: float | None = None,
            acquisitions: int = 4) -> None:
    """One block per entry of ``qbers`` (Z and X at that error rate), fed in ``acquisitions`` pieces."""
    s = d.settings
    per = s.frames * s.frame_bits // acquisitions

    async def main() -> None:
        for q in qbers:
            for _ in range(acquisitions):
                d.add(*_pair(rng, per, q, per, q), q if estimate is None else estimate)
                await asyncio.sleep(0)
            await d.flush(q)
        await d.pause()

    asyncio.run(main())


def _stored_keys(d: Distillery) -> tuple[np.ndarray, np.ndarray]:
    alice, bob = d.stores["alice"], d.stores["bob"]
    n = alice.available_bits()
    assert bob.available_bits() == n
    if n == 0:
        return np.empty(0, np.uint8), np.empty(0, np.uint8)
    key = alice.withdraw(n, "test")
    return key.bits, bob.withdraw_spans(key.withdrawal.spans, "test").bits


def test_keys_are_identical_over_ten_thousand_frames_at_qber_1_to_10_percent() -> None:
    # 10 blocks of 1000 frames, one at each QBER from 1 to 10 %: every frame either verified or discarded
    d = Distillery(DistillationSettings(frame_bits=1024, frames=1000, channel_latency_s=0.0),
                   np.random.default_rng(1))
    try:
        _distil(d, np.random.default_rng(2), [q / 100 for q in range(1, 11)])
        t = d.totals
        assert t.frames == 10_000 and t.blocks == 10
        assert t.frames_discarded <= 20  # Cascade leaves a frame wrong rarely; verification drops it
        alice, bob = _stored_keys(d)
        assert alice.size == t.key_bits > 0
        np.testing.assert_array_equal(alice, bob)
        assert d.stores["alice"].digest() == d.stores["bob"].digest()
        assert [o.key_bits for o in t.outcomes] == sorted((o.key_bits for o in t.outcomes), reverse=True)
    finally:
        d.close()


@settings(max_examples=6, deadline=None)
@given(qber=st.floats(0.01, 0.10), seed=st.integers(0, 2**32 - 1))
def test_any_qber_in_range_gives_identical_keys(qber: float, seed: int) -> None:
    d = Distillery(SMALL, np.random.default_rng(seed))
    try:
        _distil(d, np.random.default_rng(seed + 1), [qber])
        alice, bob = _stored_keys(d)
        np.testing.assert_array_equal(alice, bob)
        o = d.totals.outcomes[0]
        errors = o.errors_corrected
        kept_bits = (o.frames - o.frames_discarded) * SMALL.frame_bits
        assert abs(errors / kept_bits - qber) < 6 * np.sqrt(qber / kept_bits) + 1e-3  # Cascade found the errors
    finally:
        d.close()


def test_uncorrectable_frames_are_caught_by_verification_and_never_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # an error Cascade cannot see (two flips in one frame keep every parity) is what verification is for
    real = distill.areconcile

    async def leaves_errors(noisy: np.ndarray, plan: CascadePlan, oracle: AsyncParityOracle) -> CascadeResult:
        result = await real(noisy, plan, oracle)
        corrected = result.corrected.copy()
        corrected[[3, 3, 17], [10, 11, 500]] ^= 1
        return CascadeResult(corrected, result.leaked_bits_per_frame, result.round_trips)

    monkeypatch.setattr(distill, "areconcile", leaves_errors)
    d = Distillery(SMALL, np.random.default_rng(3))
    try:
        _distil(d, np.random.default_rng(4), [0.04])
        t = d.totals
        assert t.frames_discarded == 2 and t.key_bits > 0
        alice, bob = _stored_keys(d)
        np.testing.assert_array_equal(alice, bob)
    finally:
        d.close()


def test_a_wrong_qber_estimate_still_gives_identical_keys() -> None:
    d = Distillery(SMALL, np.random.default_rng(3))
    try:
        _distil(d, np.random.default_rng(4), [0.12], estimate=0.005)
        alice, bob = _stored_keys(d)
        np.testing.assert_array_equal(alice, bob)
    finally:
        d.close()


def test_key_length_is_the_finite_key_bound_of_what_was_disclosed() -> None:
    d = Distillery(DistillationSettings(frame_bits=2**15, frames=4, channel_latency_s=0.0), np.random.default_rng(5))
    try:
        _distil(d, np.random.default_rng(6), [0.043])
        o = d.totals.outcomes[0]
        kept = (o.frames - o.frames_discarded) * 2**15
        bound = finite_key(kept, o.test_bits, o.test_errors, o.parity_bits + o.tag_bits)
        assert o.key_bits == bound.key_bits > 0
        assert o.tag_bits == 122 * (o.frames - o.frames_discarded)
        assert 1.0 < o.ec_efficiency < 1.15  # opt7 on 2^15-bit frames
    finally:
        d.close()


def test_a_tampered_message_abandons_the_block_and_the_next_one_succeeds() -> None:
    tampered: list[int] = []

    def flip_one(sender: str, frame: bytes) -> list[bytes]:
        if sender == "alice" and not tampered and len(frame) > 200:  # her X bits, or a parity answer
            tampered.append(len(frame))
            return [frame[:100] + bytes([frame[100] ^ 1]) + frame[101:]]
        return [frame]

    d = Distillery(SMALL, np.random.default_rng(7), adversary=flip_one)
    try:
        _distil(d, np.random.default_rng(8), [0.04, 0.04])
        t = d.totals
        assert tampered and t.sifted_bits_abandoned == SMALL.frames * SMALL.frame_bits
        assert t.blocks == 1 and t.key_bits > 0
        alice, bob = _stored_keys(d)
        np.testing.assert_array_equal(alice, bob)
    finally:
        d.close()


def test_stores_reopen_and_go_on_with_new_block_ids(tmp_path: Path) -> None:
    for run in range(2):
        d = Distillery(SMALL, np.random.default_rng(10 + run), tmp_path)
        try:
            _distil(d, np.random.default_rng(20 + run), [0.04])
        finally:
            d.close()
    with KeyStore(tmp_path / "alice.keys.sqlite") as alice, KeyStore(tmp_path / "bob.keys.sqlite") as bob:
        assert alice.block_ids().confirmed == bob.block_ids().confirmed == frozenset({1, 2})
        assert alice.digest() == bob.digest()


def test_each_party_gets_its_own_bits_as_the_counts_say() -> None:
    # pair 0 = Z; 1..4 = X outputs ++, +-, -+, -- (only their diagonal, the central peak, counts)
    rng = np.random.default_rng(9)
    counts = rng.integers(0, 50, (5, 2, 2))
    spec = CoincidenceSpec(((1, 5), (2, 6), (2, 7), (3, 6), (3, 7)), 120, 400)
    cells = rng.permutation(np.repeat(np.arange(20, dtype=np.uint8), counts.ravel()))
    events = CoincidenceEvents(cells >> 2, (cells >> 1) & 1, cells & 1)
    alice, bob = sift_events(events)
    tally = sift(CoincidenceCounts(spec, counts))
    assert alice.z.size == bob.z.size == tally.n_z
    assert int(np.count_nonzero(alice.z != bob.z)) == tally.errors_z
    assert alice.x.size == bob.x.size == tally.n_x
    assert int(np.count_nonzero(alice.x != bob.x)) == tally.errors_x


def test_settings_refuse_an_unknown_variant() -> None:
    with pytest.raises(ValueError, match="unknown Cascade variant"):
        DistillationSettings(variant="turbo")


def test_killing_the_pipeline_anywhere_loses_no_confirmed_key_and_the_stores_agree(tmp_path: Path) -> None:
    """The distillation (tests/distill_worker.py) SIGKILLed at seeded random moments, mid-block or mid-commit,
    and restarted: every block confirmed before a kill is still there, and the two stores always agree."""
    confirmed: set[int] = set()
    for i, delay_s in enumerate(np.random.default_rng(11).uniform(0.2, 0.8, 6)):
        worker = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), str(i)], env=WORKER_ENV,
                                  stdout=subprocess.PIPE, text=True)
        assert worker.stdout is not None
        found = {int(b) for b in worker.stdout.readline().strip().split(",") if b}
        assert worker.stdout.readline().strip() == "ready"
        time.sleep(delay_s)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait() == -signal.SIGKILL
        worker.stdout.close()
        assert confirmed <= found  # nothing confirmed before the last kill was lost
        with KeyStore(tmp_path / "alice.keys.sqlite") as alice, KeyStore(tmp_path / "bob.keys.sqlite") as bob:
            a, b = alice.block_ids(), bob.block_ids()
            assert a.confirmed <= b.confirmed | b.pending and b.confirmed <= a.confirmed | a.pending
        confirmed = found
    d = Distillery(SMALL, np.random.default_rng(99), tmp_path)  # the final restart reconciles
    try:
        assert len(d.stores["alice"].block_ids().confirmed) >= 3
        assert d.stores["alice"].digest() == d.stores["bob"].digest()
        alice, bob = _stored_keys(d)
        assert alice.size > 0
        np.testing.assert_array_equal(alice, bob)
    finally:
        d.close()
