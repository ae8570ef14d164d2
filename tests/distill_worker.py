"""Distillation worker for the pipeline kill test (tests/test_distill.py): Alice and Bob distil blocks of
synthetic sifted bits (QBER 4 %) into their stores in DIR until killed, reconciling the stores at start as
the parties do after a restart. Prints the confirmed block ids it found at start, then ``ready``.

Usage: python distill_worker.py DIR SEED
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

from bench.distill import DistillationSettings, Distillery
from bench.sifting import PartyBits

SETTINGS = DistillationSettings(frame_bits=2048, frames=16, channel_latency_s=0.0)


async def _feed(d: Distillery, rng: np.random.Generator) -> None:
    n = SETTINGS.frame_bits * SETTINGS.frames // 2
    while True:
        az, ax = rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8)
        flips = (rng.random((2, n)) < 0.04).astype(np.uint8)
        d.add(PartyBits(az, ax), PartyBits(az ^ flips[0], ax ^ flips[1]), 0.04)
        await asyncio.sleep(0.001)


def main() -> None:
    directory, seed = Path(sys.argv[1]), int(sys.argv[2])
    d = Distillery(SETTINGS, np.random.default_rng(seed), directory)
    print(",".join(map(str, sorted(d.stores["alice"].block_ids().confirmed))), flush=True)
    print("ready", flush=True)
    asyncio.run(_feed(d, np.random.default_rng(seed + 1)))


if __name__ == "__main__":
    main()
