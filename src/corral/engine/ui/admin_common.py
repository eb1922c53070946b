"""What the admin pages' route modules share (admin.py and the admin_*_forms.py): an admin
page drawn, the browser sent back after an action, a permission checked again in the
project of the object acted on, a create form's project checked. The engine's context of
a request is routes.ctx_of; the forms' own plumbing is forms.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from corral.engine.ui import views
from corral.engine.ui.admin_views import Page
from corral.engine.ui.forms import Form, typed
from corral.engine.ui.routes import ctx_of, render
from corral.engine.ui.session import Caller
from corral.errors import Forbidden


def show(request: Request, caller: Caller, page: Page, status: int = 200,
         **values: Any) -> Response:
    """An admin page (admin.html draws every one; ``values``: what its own form shows)."""
    return render(request, "admin.html", caller, status=status, page=page.nav, p=page,
                  **values)


def back(url: str) -> Response:
    """After a post: the browser gets ``url`` (a reload does not post again)."""
    return RedirectResponse(url, status_code=303)


def check(caller: Caller, permission: str, project: str) -> None:
    """``permission`` in the object's own project (the route's checked it anywhere): 403."""
    if not views.may(caller.who, permission, project):
        raise Forbidden(f"your role in project {project} does not allow this ({permission})",
                        permission=permission)


async def project_form(request: Request, caller: Caller, fields: Iterable[str],
                       permission: str, doing: str) -> Form:
    """A create form's fields as typed, with its project's error: none chosen, or one where
    the caller's role may not ``permission`` (``doing``: "create networks in"). The audit
    log's project is the one asked, as the API's ``?project=``."""
    form = Form(await typed(request, fields))
    asked = form.values["project"]
    request.state.audit_project = asked or None
    if not asked:
        form.errors["project"] = "Choose a project."
    elif asked not in await run_in_threadpool(views.projects_with, ctx_of(request), caller.who,
                                              permission):
        form.errors["project"] = f"You may not {doing} project {asked}."
    return form
