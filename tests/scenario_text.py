"""The shipped smoke scenario as text, and helpers to make bad scenarios out of it with known line numbers."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "scenarios" / "smoke-50km-1h.yaml"
TEXT = SMOKE.read_text(encoding="utf-8")


def edit(old: str, new: str, text: str = TEXT) -> str:
    """``text`` with the single occurrence of ``old`` replaced by ``new``."""
    assert text.count(old) == 1, f"{old!r} must occur exactly once in the scenario text"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    """1-based number of the only line of ``text`` that contains ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}, expected exactly one"
    return hits[0]
