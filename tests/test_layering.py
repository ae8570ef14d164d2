"""Architecture rules that keep emulated and real hardware interchangeable (DESIGN.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WIRING = {"bench/rig.py"}  # the only module allowed to pick emulated or real devices
DRIVER_CONTRACTS = ("drivers.interfaces", "drivers.errors")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


BENCH_MODULES = sorted(p for p in (REPO / "bench").rglob("*.py") if p.relative_to(REPO).as_posix() not in WIRING)


@pytest.mark.parametrize("path", BENCH_MODULES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_bench_imports_no_emulator_and_no_concrete_driver(path: Path) -> None:
    for name in _imports(path):
        assert not name.startswith("emulators"), f"{path.name} imports {name}"
        if name.startswith("drivers"):
            assert name.startswith(DRIVER_CONTRACTS), f"{path.name} imports concrete driver {name}"


@pytest.mark.parametrize("path", BENCH_MODULES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_bench_never_reads_or_sleeps_on_the_wall_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "time":
            assert node.attr not in {"time", "sleep", "monotonic"}, f"{path.name} uses time.{node.attr}"


@pytest.mark.parametrize("path", sorted((REPO / "emulators").rglob("*.py")), ids=lambda p: p.name)
def test_emulators_know_nothing_of_the_stack(path: Path) -> None:
    assert not [n for n in _imports(path) if n.startswith("bench")]


@pytest.mark.parametrize("path", sorted((REPO / "drivers").rglob("*.py")), ids=lambda p: p.name)
def test_drivers_import_neither_stack_nor_emulators(path: Path) -> None:
    assert not [n for n in _imports(path) if n.startswith(("bench", "emulators"))]
