"""Checkpoints of a scenario run: a snapshot at a quiescent segment boundary, and resume from it.

A run is segmented at multiples of the scenario's ``checkpoint_interval_s`` (:mod:`bench.runner`); when
:meth:`bench.stack.LinkStack.run` returns at a boundary, no asyncio task of the stack and no SimPy process is
left, only pending :meth:`emulators.world.World.at` calls. The snapshot is then one pickle of the whole run
state (:class:`RunState`: scenario, seed, rig without its SimPy environment, stack, monitor with its score
watchers) and a consistent copy of both key stores, written to ``DIR/checkpoint.tmp/`` and renamed to
``DIR/checkpoint/``; only the newest is kept. Random streams are numpy generators, pickled with their exact
state, so a resumed run continues bit for bit (docs/decisions/0004).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.monitor import Monitor
from bench.rig import Rig, source_digest
from bench.scenario import Scenario
from bench.stack import LinkStack
from bench.vtime import PS_PER_S

CHECKPOINT = "checkpoint"  # the newest complete snapshot
_WRITING = "checkpoint.tmp"  # a snapshot being written (incomplete until renamed)
_REPLACED = "checkpoint.old"  # the previous snapshot, between two renames
_STATE = "state.pickle"
_MANIFEST = "manifest.json"
_FORMAT = 1


class CheckpointError(Exception):
    """A run state that cannot be checkpointed, or a directory without a usable checkpoint (names the path)."""


@dataclass
class RunState:
    """Everything a run needs to go on from a segment boundary."""

    scenario: Scenario
    seed: int
    duration_s: float  # simulated time the run ends at, s
    rig: Rig
    stack: LinkStack
    monitor: Monitor
    boundary_s: float = 0.0  # the last segment end the run has passed, s
    wall_s: float = 0.0  # wall-clock time the run had taken at that boundary, s (a resumed run's report adds on)

    @property
    def now_s(self) -> float:
        return self.rig.world.now_ps / PS_PER_S


def write(run_dir: Path, state: RunState) -> Path:
    """Snapshot ``state`` (at a segment boundary) into ``run_dir/checkpoint``, replacing the previous one.
    Raises :class:`CheckpointError` if any part of it cannot be carried over (a live SimPy process, a
    generator, an open connection) rather than dropping it."""
    rig = state.rig
    try:
        rig.world.check_resumable()
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    except (RuntimeError, TypeError, AttributeError, pickle.PicklingError) as exc:
        raise CheckpointError(f"run state at t={state.now_s:g} s cannot be checkpointed: {exc}") from exc
    tmp, final, old = run_dir / _WRITING, run_dir / CHECKPOINT, run_dir / _REPLACED
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / _STATE).write_bytes(blob)
    if state.stack.distillery is not None:
        state.stack.distillery.backup(tmp)
    manifest = {"format": _FORMAT, "t_s": state.now_s, "now_ps": rig.world.now_ps,
                "sha256": hashlib.sha256(blob).hexdigest(), "source": source_digest(),
                "files": sorted(p.name for p in tmp.iterdir())}
    (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    for path in tmp.iterdir():  # on disk before the rename makes the snapshot the newest (power loss)
        _fsync(path)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    _fsync(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's entries to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clear(run_dir: Path) -> None:
    """Remove any checkpoint of an earlier run from ``run_dir`` (a new run starts there)."""
    for name in (CHECKPOINT, _WRITING, _REPLACED):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _newest(run_dir: Path) -> Path:
    for candidate in (run_dir / CHECKPOINT, run_dir / _REPLACED):  # .old: killed between the two renames
        if (candidate / _MANIFEST).is_file():
            return candidate
    raise CheckpointError(f"{run_dir}: no checkpoint to resume from (no {CHECKPOINT}/{_MANIFEST})")


def load(run_dir: Path) -> RunState:
    """The run state of ``run_dir``'s newest checkpoint, its key stores restored into ``run_dir/keys`` and
    reopened, its rig on a fresh SimPy environment at the checkpoint's time."""
    snapshot = _newest(run_dir)
    try:
        manifest = json.loads((snapshot / _MANIFEST).read_text())
        blob = (snapshot / _STATE).read_bytes()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{snapshot}: unreadable checkpoint: {exc}") from exc
    if manifest.get("format") != _FORMAT or hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
        raise CheckpointError(f"{snapshot}: checkpoint damaged (format or SHA-256 does not match its manifest)")
    if manifest.get("source") != source_digest():
        raise CheckpointError(f"{snapshot}: written by other code (source digest {manifest.get('source')}, this"
                              f" installation {source_digest()}); the run would not continue as it began:"
                              " resume with the qkd-bench that started it, or run it again")
    state: RunState = pickle.loads(blob)
    distillery = state.stack.distillery
    if distillery is not None:
        keys = run_dir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        for store in distillery.stores.values():
            for suffix in ("", "-wal", "-shm"):  # blocks made after the checkpoint will be made again
                (keys / (store.path.name + suffix)).unlink(missing_ok=True)
            shutil.copyfile(snapshot / store.path.name, keys / store.path.name)
        distillery.reopen(keys)
    state.rig.resume(int(manifest["now_ps"]))
    return state


__all__ = ["CHECKPOINT", "CheckpointError", "RunState", "clear", "load", "write"]
