"""Spec files the agent writes before it builds what they describe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_first(path: Path, text: str) -> Iterator[None]:
    """Write ``text`` to ``path`` before the block runs (an agent killed half-way finds the
    spec at its next start and finishes or removes the work); if the block fails, put back
    what the file held before, or remove it."""
    previous = path.read_text() if path.exists() else None
    path.write_text(text)
    try:
        yield
    except BaseException:
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(previous)
        raise
