"""docs/benchmarks.md is shared by several benchmarks: each owns one marked section.

A section is the text between ``<!-- NAME -->`` and ``<!-- /NAME -->``; writing it replaces
only that section (or appends it), so one benchmark never erases another's results.
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def write_section(path: Path, name: str, body: str) -> None:
    """Replace section ``name`` of the report at ``path`` with ``body`` (without markers)."""
    begin, end = markers(name)
    section = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
