"""Passwords and other secrets given as files (``--password-file`` and the like): the file's
first line is the secret, so a trailing newline or a comment line below it is not part of it."""

from __future__ import annotations

from pathlib import Path

from corral.errors import InvalidInput


def first_line(path: Path, field: str) -> str:
    """The first line of ``path`` ('' for an empty file); a 422 naming ``field`` when the
    file cannot be read."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field=field) from exc
    return text.splitlines()[0] if text else ""
