"""What the UI's forms share: what a form shows (the values typed, an error per field), the
posted fields read once, and the API's refusals (a pydantic ValidationError, a
CorralError) turned into an error next to the form field they concern.

``fields`` maps what the API names (a request field, a quota) to the form's field; an
error that names none of them goes to ``fallback``: the form's first field, or a name the
template says at the form's top."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from corral.api.models import TEXT_MAX
from corral.engine.ui import session
from corral.errors import CorralError

Req = TypeVar("Req")
Res = TypeVar("Res")
HOST_ERRORS = (502, 503)  # a host that did not answer (a dry run, a push): said on the form


@dataclass
class Form:
    """What a form shows: the values typed (kept after a refusal), an error per field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def same(names: Iterable[str]) -> dict[str, str]:
    """The mapping of a form whose fields have the API's names."""
    return {n: n for n in names}


async def typed(request: Request, fields: Iterable[str]) -> dict[str, str]:
    """The posted ``fields``, trimmed ("" for one not sent); no longer than the API's
    longest text, whose own limits then say what is too long."""
    sent = await session.form(request)
    return {f: sent.get(f, "").strip()[:TEXT_MAX] for f in fields}


async def submit(form: Form, fields: Mapping[str, str], fallback: str,
                 make: Callable[[], Req], call: Callable[[Req], Res]) -> tuple[Res | None, int]:
    """``make`` the API's request of the form (its errors with those the form already has:
    every field's at once), then, if there are none, ``call`` the service with it; both in a
    worker (they may read the database or ask an agent). What the service answered and
    200, or None with the errors in ``form`` and the page's status."""
    try:
        req = await run_in_threadpool(make)
        if not form.errors:
            return await run_in_threadpool(call, req), 200
    except ValidationError as exc:
        form.errors = invalid(exc, fields, fallback) | form.errors
    except CorralError as exc:
        form.errors = refused(exc, fields, fallback) | form.errors
        return None, exc.status
    return None, 422


def invalid(exc: ValidationError, fields: Mapping[str, str], fallback: str) -> dict[str, str]:
    """Pydantic's errors by form field: a name of its ``loc`` (a list's item is under its
    field), else (a check of the whole request) the first field its message names."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        where = next((fields[str(p)] for p in err["loc"] if str(p) in fields), None)
        errors.setdefault(where or _named(message, fields) or fallback, sentence(message))
    return errors


def refused(exc: CorralError, fields: Mapping[str, str], fallback: str) -> dict[str, str]:
    """The engine's refusal next to the field it names (or the quota it counts, in its
    details). A host that failed is said on the form too; any other failure of the
    engine itself is no input's fault: re-raised, the error page."""
    if exc.status >= 500 and exc.status not in HOST_ERRORS:
        raise exc
    quota = exc.details.get("quota")
    name = quota if isinstance(quota, str) and quota in fields else exc.field or ""
    return {fields.get(name, fallback): sentence(exc.message)}


def sentence(text: str) -> str:
    """A message as the page says it (the API's start lower-case)."""
    return text[:1].upper() + text[1:]


def _named(message: str, fields: Mapping[str, str]) -> str | None:
    """The form field of the API name said first in ``message`` (as a whole word)."""
    found = [(m.start(), fields[name]) for name in fields
             if (m := re.search(rf"\b{re.escape(name)}\b", message))]
    return min(found)[1] if found else None
