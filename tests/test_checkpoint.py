"""Checkpoint and resume (docs/decisions/0004): a run SIGKILLed at a random moment and resumed writes the report,
series and key stores of an uninterrupted run; a directory with nothing to resume is bad input; a snapshot
refuses state it cannot carry over."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scenario_text import REPO, SMOKE

from bench import checkpoint
from bench.checkpoint import CheckpointError, RunState
from bench.cli import EXIT_BAD_INPUT, EXIT_OK, main
from bench.keystore import KeyStore
from bench.monitor import Monitor
from bench.rig import build_emulated_rig, source_digest
from bench.scenario import Scenario
from bench.stack import LinkStack

UNTIL = "600"  # simulated s: five segments of 120 s, ~0.2 s of wall time each after the first
MANIFEST = Path("checkpoint") / "manifest.json"


def cli(*argv: str | Path) -> tuple[int, str]:
    """``main`` in-process; (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "smoke-120.yaml"
    path.write_text(SMOKE.read_text() + "\ncheckpoint_interval_s: 120\n")
    return path


def _comparable(run_dir: Path) -> dict[str, object]:
    report = json.loads((run_dir / "report.json").read_text())
    del report["wall_s"], report["speedup"]
    return report


def _digests(run_dir: Path) -> list[str]:
    digests = []
    for role in ("alice", "bob"):
        with KeyStore(run_dir / "keys" / f"{role}.keys.sqlite") as store:
            digests.append(store.digest())
    return digests


def _checkpoint_time(run_dir: Path) -> float | None:
    """Simulated time of ``run_dir``'s checkpoint (None: none yet, or one being renamed)."""
    try:
        return float(json.loads((run_dir / MANIFEST).read_text())["t_s"])
    except (OSError, ValueError):
        return None


def test_killed_run_resumes_to_the_uninterrupted_report(scenario_file: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli("run", scenario_file, "--until", UNTIL, "--out", whole, "--no-progress")[0] == EXIT_OK

    run = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(scenario_file), "--until", UNTIL,
                            "--out", str(killed), "--no-progress"], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # wait for two checkpoints (one segment's wall time apart), then kill within the next one and a half
        seen: list[tuple[float, float]] = []  # (checkpoint's simulated time, wall time it appeared)
        deadline = time.monotonic() + 60
        while len(seen) < 2:
            assert run.poll() is None and time.monotonic() < deadline, f"checkpoints seen: {seen}"
            t_s = _checkpoint_time(killed)
            if t_s is not None and (not seen or t_s != seen[-1][0]):
                seen.append((t_s, time.monotonic()))
            time.sleep(0.005)
        delay_s = random.uniform(0.0, 1.5 * (seen[1][1] - seen[0][1]))
        time.sleep(delay_s)
        run.send_signal(signal.SIGKILL)
    finally:
        run.wait()
    assert run.returncode == -signal.SIGKILL
    assert not (killed / "report.json").exists(), f"finished within {delay_s:.2f} s of its checkpoint {seen[1]}"

    code, err = cli("resume", killed, "--no-progress")
    assert code == EXIT_OK, err
    assert _comparable(killed) == _comparable(whole)
    assert _digests(killed) == _digests(whole)
    with np.load(whole / "series.npz") as a, np.load(killed / "series.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_resume_without_a_checkpoint_is_bad_input(scenario_file: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = cli("resume", empty)
    assert code == EXIT_BAD_INPUT and f"{empty}: no checkpoint" in err and "Traceback" not in err
    code, err = cli("resume", tmp_path / "absent")
    assert code == EXIT_BAD_INPUT and f"{tmp_path / 'absent'}: no such run directory" in err

    done = tmp_path / "done"
    assert cli("run", scenario_file, "--until", "240", "--out", done, "--no-progress")[0] == EXIT_OK
    assert (done / MANIFEST).is_file()
    code, err = cli("resume", done)
    assert code == EXIT_BAD_INPUT and f"{done}: the run has finished" in err

    (done / "report.json").unlink()
    (done / "checkpoint" / "state.pickle").write_bytes(b"not the snapshot")
    code, err = cli("resume", done)
    assert code == EXIT_BAD_INPUT and "checkpoint damaged" in err and str(done) in err


def _state(smoke: Scenario, tmp_path: Path) -> RunState:
    rig = build_emulated_rig(smoke, smoke.seed)
    monitor = Monitor()
    stack = LinkStack(rig.devices(), smoke.stack, monitor, seed=smoke.seed, key_dir=tmp_path / "keys")
    return RunState(smoke, smoke.seed, 60.0, rig, stack, monitor)


def test_snapshot_refuses_a_live_process(smoke: Scenario, tmp_path: Path) -> None:
    state = _state(smoke, tmp_path)
    checkpoint.write(tmp_path, state)  # what the emulators schedule themselves is carried over

    def blink():  # type: ignore[no-untyped-def]
        yield state.rig.env.timeout(1)

    state.rig.env.process(blink())
    with pytest.raises(CheckpointError, match=r"cannot be checkpointed.*not a World\.at call"):
        checkpoint.write(tmp_path, state)
    state.stack.close()


def test_snapshot_refuses_a_generator_attribute(smoke: Scenario, tmp_path: Path) -> None:
    state = _state(smoke, tmp_path)
    state.rig.emulator.pending = (n for n in range(3))  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match="generator"):
        checkpoint.write(tmp_path, state)
    assert not (tmp_path / "checkpoint").exists()
    state.stack.close()


def test_resumed_state_continues_bit_for_bit(smoke: Scenario, tmp_path: Path) -> None:
    """Below the CLI: the unpickled rig draws what the original draws next."""
    state = _state(smoke, tmp_path)
    checkpoint.write(tmp_path, state)
    resumed = checkpoint.load(tmp_path)
    for rig in (state.rig, resumed.rig):
        rig.env.run(until=rig.world.now_ps + 3_600 * 10**12)  # an hour of clocks and cryocoolers
    for node in ("alice", "bob"):
        a, b = state.rig.emulator.link.nodes[node], resumed.rig.emulator.link.nodes[node]
        assert a.clock.truth() == b.clock.truth()
        assert a.detectors.recycles == b.detectors.recycles
    assert os.fspath(resumed.stack.distillery.stores["alice"].path).startswith(os.fspath(tmp_path))
    state.stack.close()
    resumed.stack.close()


def test_segments_do_not_cut_distillation_blocks_short(scenario_file: Path, tmp_path: Path) -> None:
    """A boundary carries the buffered bits over: the run distils the same full blocks with or without them
    (before, each boundary flushed a short block, whose finite-key fraction is worse)."""
    unsegmented = tmp_path / "unsegmented.yaml"
    unsegmented.write_text(SMOKE.read_text() + "\ncheckpoint_interval_s: 86400\n")
    reports = []
    for name, path in (("segmented", scenario_file), ("unsegmented", unsegmented)):
        assert cli("run", path, "--until", UNTIL, "--out", tmp_path / name, "--no-progress")[0] == EXIT_OK
        reports.append(json.loads((tmp_path / name / "report.json").read_text()))
    segmented, whole = reports
    assert segmented["distillation"]["blocks"] >= 1
    assert segmented["distillation"] == whole["distillation"]
    assert segmented["metrics"]["secret_key_rate_bps_mean"] == whole["metrics"]["secret_key_rate_bps_mean"]


def test_a_checkpoint_of_other_code_is_refused(scenario_file: Path, tmp_path: Path) -> None:
    """The pickle holds objects, not their code: resumed on other sources, a run would not continue as it began."""
    run_dir = tmp_path / "run"
    assert cli("run", scenario_file, "--until", "240", "--out", run_dir, "--no-progress")[0] == EXIT_OK
    (run_dir / "report.json").unlink()
    manifest = json.loads((run_dir / MANIFEST).read_text())
    assert manifest["source"] == source_digest()
    (run_dir / MANIFEST).write_text(json.dumps({**manifest, "source": "0" * 16}))
    code, err = cli("resume", run_dir)
    assert code == EXIT_BAD_INPUT and "written by other code" in err and str(run_dir) in err


def test_the_source_digest_does_not_need_the_packages_own_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """An uninstalled wheel leaves ``site-packages/bench/__pycache__``. Under an editable install that
    directory makes ``bench`` a namespace package with no ``__file__``, while its modules still load from the
    repo. The digest must still hash the real sources: it raised TypeError there, and every checkpoint write
    with it."""
    import bench
    import drivers
    import emulators

    expected = source_digest()
    for package in (bench, emulators, drivers):
        monkeypatch.setattr(package, "__file__", None)
    assert source_digest.__wrapped__() == expected
