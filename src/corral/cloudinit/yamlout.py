"""A small, predictable YAML writer for the seed files, and the YAML reader of user input.

Every YAML file corral puts into a seed goes through :func:`dump`, so its shape is always
the same (which lets the tiny guest read it with a few lines of awk):

- block style only: a mapping is ``key: value`` lines, a sequence is ``- item`` lines, each
  level indented by two spaces; a mapping inside a sequence starts on the ``- `` line;
- keys are plain when they are simple words (``[A-Za-z0-9_][A-Za-z0-9_.-]*``), else JSON
  double-quoted; scalars are JSON: strings double-quoted (JSON escapes, which YAML
  double-quoted scalars share), numbers, ``true``/``false``, ``null``;
- a sequence inside a sequence (a ``runcmd`` argv) is one JSON flow sequence;
- empty collections are ``{}`` and ``[]``.

The output is plain YAML 1.1 and 1.2: real cloud-init reads it like any other file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from corral.errors import InvalidInput

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _plain(value: Any) -> Any:
    """``value`` with only JSON types (YAML dates become ISO strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"a YAML value of type {type(value).__name__} cannot go into a seed")


def _scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _mapping(data: Mapping[str, Any], indent: int, out: list[str], first_prefix: str = "") -> None:
    pad = " " * indent
    for index, (key, value) in enumerate(data.items()):
        lead = first_prefix if index == 0 and first_prefix else pad
        head = f"{lead}{_key(key)}:"
        if isinstance(value, Mapping) and value:
            out.append(head)
            _mapping(value, indent + 2, out)
        elif isinstance(value, list) and value:
            out.append(head)
            _sequence(value, indent + 2, out)
        else:
            out.append(f"{head} {_empty_or_scalar(value)}")


def _sequence(items: Sequence[Any], indent: int, out: list[str]) -> None:
    pad = " " * indent
    for item in items:
        if isinstance(item, Mapping) and item:
            _mapping(item, indent + 2, out, first_prefix=f"{pad}- ")
        else:
            out.append(f"{pad}- {_empty_or_scalar(item)}")


def _empty_or_scalar(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return _scalar(value)  # a flow sequence (possibly empty): JSON is YAML
    return _scalar(value)


def dump(data: Mapping[str, Any], header: str | None = None) -> str:
    """``data`` as YAML in the shape described above; ``header`` is a first line."""
    out: list[str] = [header] if header else []
    _mapping(_plain(data), 0, out)
    return "\n".join(out) + "\n"


def load_mapping(text: str, field: str, what: str) -> dict[str, Any]:
    """Parse a YAML document that must be a mapping (or empty); InvalidInput naming ``field``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{what} is not valid YAML: {exc}".replace("\n", " "), field=field) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be a YAML mapping, not {type(data).__name__}", field=field)
    try:
        plain: dict[str, Any] = _plain(data)
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}", field=field) from None
    return plain
