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

User input is read by :func:`load_mapping` with a bounded cost: no anchors or aliases (so what
is parsed is never larger than what was sent: no "billion laughs"), at most ``MAX_DEPTH``
nested collections and ``MAX_NODES`` nodes, no integer of more than ``MAX_INT_CHARS``
characters; each refusal is an InvalidInput naming the field.
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

MAX_DEPTH = 32  # nested collections of one document
MAX_NODES = 10_000  # scalars and collections of one document
MAX_INT_CHARS = 64  # an integer scalar (its decimal or base-60 form costs more with length)


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any) -> None:  # a yaml Mark (pure or libyaml's)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(problem + where)


# libyaml (C) where PyYAML was built with it: a large document parses in a tenth of the
# time, and the time is what the event loop waits for (the parse holds the GIL).
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_events(text: str) -> None:
    """Refuse anchors and aliases and bound nesting and nodes, on the parser's events alone
    (nothing is built): what is loaded after this can be no larger than what was sent."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused("YAML anchors and aliases (&name, *name) are not allowed",
                           event.start_mark)
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue  # stream and document markers
        nodes += 1
        if nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} YAML nodes", event.start_mark)
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(f"YAML nested more than {MAX_DEPTH} levels deep", event.start_mark)


class _BoundedLoader(_Base):  # type: ignore[misc]
    """The safe loader with integers bounded in length (run after :func:`_check_events`)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_CHARS:
            raise _Refused(f"an integer of more than {MAX_INT_CHARS} characters (quote it to "
                           "make it a string)", node.start_mark)
        value: int = super().construct_yaml_int(node)
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


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
        _check_events(text)
        data = yaml.load(text, Loader=_BoundedLoader)  # a safe loader, bounded
    except _Refused as exc:
        raise InvalidInput(f"{what}: {exc}", field=field) from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: a bad date
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
