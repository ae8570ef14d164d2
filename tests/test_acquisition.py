"""Sync acquisition from raw tags (issue 4): an unknown offset within ±1 ms found to ≤ 10 ps at 33.5, 45 and
56.6 dB from ≤ 2 s of emulated tags, and no peak claimed in uncorrelated streams."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench import vtime
from bench.acquisition import acquire_offset
from bench.rig import Rig, build_emulated_rig
from bench.scenario import Scenario
from bench.sync import SyncAcquisitionFailed
from drivers.interfaces import EventType, TagBlock

PS_PER_S = 1_000_000_000_000


def _rig_at(smoke: Scenario, total_loss_db: float, seed: int) -> Rig:
    """The smoke link at ``total_loss_db``, the extra loss on Bob's arm, raw tags only."""
    bob = smoke.link.bob
    nominal = build_emulated_rig(smoke, seed).total_loss_db
    fibre = bob.fibre.model_copy(update={"device_loss_db": bob.fibre.device_loss_db + total_loss_db - nominal})
    link = smoke.link.model_copy(update={"bob": bob.model_copy(update={"fibre": fibre})})
    rig = build_emulated_rig(smoke.model_copy(update={"link": link}), seed, fidelity="tags")
    assert rig.total_loss_db == pytest.approx(total_loss_db)
    return rig


def _z_stamps(blocks: list[TagBlock], channel: int) -> np.ndarray:
    return np.concatenate([b.timestamps_ps[(b.channels == channel) & (b.event_types == EventType.TIME_TAG)]
                           for b in blocks])


@pytest.mark.parametrize(("loss_db", "blocks_s", "gap_s"), [
    (33.5, (0.1, 0.1), 1.7),  # ~8 M tags/s: two short blocks 1.8 s apart are plenty
    (45.0, (1.0,), 0.0),
    (56.6, (1.0, 1.0), 0.0),  # ~150 Z coincidences/s against 7.5 M Alice singles/s
])
def test_acquisition_finds_an_unknown_offset_to_10_ps(smoke: Scenario, loss_db: float, blocks_s: tuple[float, ...],
                                                     gap_s: float) -> None:
    rig = _rig_at(smoke, loss_db, seed=int(loss_db * 10))
    c, link, world = rig.channels, rig.emulator.link, rig.emulator.world
    target_ps = int(np.random.default_rng(int(loss_db)).integers(-1_000_000_000, 1_000_000_000))
    truth: list[tuple[int, float]] = []  # (time, Δ): sampled as time passes, the clocks' phase being causal

    async def read(duration_s: float) -> TagBlock:
        truth.append((world.now_ps, link.offset_ps(world.now_ps)))
        block = await rig.tagger.read_tags(round(duration_s * PS_PER_S))  # linear in Δ over the block
        truth.append((world.now_ps, link.offset_ps(world.now_ps)))
        return block

    async def main() -> tuple[list[TagBlock], int]:
        delay_ps = target_ps - round(link.offset_ps(world.now_ps))
        for ch in c.bob:  # the unknown offset: anywhere within ±1 ms
            await rig.tagger.set_input_delay(ch, delay_ps)
        blocks = [await read(blocks_s[0])]
        for duration_s in blocks_s[1:]:
            for _ in range(round(gap_s / 0.1)):
                await asyncio.sleep(0.1)
                truth.append((world.now_ps, link.offset_ps(world.now_ps)))
            blocks.append(await read(duration_s))
        return blocks, delay_ps

    blocks, delay_ps = vtime.run(main(), rig.env)
    found = acquire_offset(_z_stamps(blocks, c.alice_z), _z_stamps(blocks, c.bob_z))

    # Bob's stamps run ahead of true time by his delay (and < 1 ms of clock phase: < 0.01 ps of drift)
    t_ps, offset_ps = np.array(truth).T
    true_ps = float(np.interp(found.reference_ps - delay_ps, t_ps, offset_ps)) + delay_ps
    assert abs(found.offset_ps - true_ps) <= 10.0
    assert abs(found.offset_ps - true_ps) <= 5 * found.offset_sigma_ps + 1.0  # + clock noise between samples
    assert found.significance >= 6.0
    true_drift = (offset_ps[-1] - offset_ps[0]) / ((t_ps[-1] - t_ps[0]) / PS_PER_S)
    assert found.drift_ps_per_s == pytest.approx(true_drift, abs=5 * found.drift_sigma_ps_per_s)


def test_swapping_the_streams_negates_the_offset() -> None:
    rng = np.random.default_rng(3)
    offset_ps = 734_567_891
    alice = np.sort(rng.integers(0, PS_PER_S // 4, 25_000))  # 100 kHz: here Alice is the sparser stream
    twins = alice[rng.random(alice.size) < 0.05]
    twins += offset_ps + np.round(rng.normal(0.0, 25.0, twins.size)).astype(np.int64)
    bob = np.sort(np.concatenate([rng.integers(0, PS_PER_S // 4, 500_000), twins]))  # 2 MHz of singles
    forward = acquire_offset(alice, bob)
    backward = acquire_offset(bob, alice)
    assert forward.offset_ps == pytest.approx(offset_ps, abs=5.0)
    assert backward.offset_ps == pytest.approx(-forward.offset_ps, abs=1e-6)


def test_uncorrelated_streams_raise() -> None:
    rng = np.random.default_rng(4)
    duration_ps = PS_PER_S // 2
    alice = np.sort(rng.integers(0, duration_ps, 3_750_000))  # 7.5 MHz, as Alice's Z detector
    bob = np.sort(rng.integers(0, duration_ps, 50_000))  # 100 kHz, as Bob's at 45 dB
    with pytest.raises(SyncAcquisitionFailed, match="no coincidence peak"):
        acquire_offset(alice, bob)
