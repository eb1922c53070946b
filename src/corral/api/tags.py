"""Host tags (`corral host tag add h1 ssd`, `vm create --host-tag ssd`): a module of its own,
with no pydantic, so the request types and the engine check them the same way."""

from __future__ import annotations

import re

from corral.errors import InvalidInput

TAG_MAX = 63
TAG_RE = re.compile(r"[a-z0-9._-]+")
TAG_SCHEMA = {"pattern": "^[a-z0-9._-]+$", "minLength": 1, "maxLength": TAG_MAX}


def validate_tag(tag: object, field: str = "tag") -> str:
    """``tag`` as given, or 422 naming ``field``: 1-63 of a-z, 0-9, '-', '_' and '.'."""
    if not isinstance(tag, str) or not tag:
        raise InvalidInput("a tag is 1-63 of a-z, 0-9, '-', '_' and '.'", field=field)
    if len(tag) > TAG_MAX:
        raise InvalidInput(f"tag {tag[:TAG_MAX]}... is longer than {TAG_MAX} characters",
                           field=field)
    if not TAG_RE.fullmatch(tag):
        raise InvalidInput(f"tag {tag!r} may hold only a-z, 0-9, '-', '_' and '.' "
                           "(lowercase)", field=field)
    return tag
