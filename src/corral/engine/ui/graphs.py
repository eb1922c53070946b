"""The live graphs' data for the web UI: the API's stats (services/stats.py) for the
session's user, polled by static/graphs.js (uPlot) every few seconds (sync routes: FastAPI
runs them in its thread pool, as they ask the host's agent). A VM another project
holds answers 404, as the page does."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from corral.engine.services import stats
from corral.engine.ui import views
from corral.engine.ui.routes import UiRoute, ctx_of, ui_need
from corral.engine.ui.session import Caller

router = APIRouter(route_class=UiRoute, include_in_schema=False)
_SINCE = Query(None, ge=0, description="only points after this unix time")


@router.get("/ui/vms/{name}/stats")
def vm_stats(request: Request, name: str, since: float | None = _SINCE,
             caller: Caller = Depends(ui_need("vm.read"))) -> JSONResponse:
    ctx = ctx_of(request)
    views.readable_vm(ctx, caller.who, name)  # 404 unless the caller may read it
    shown = stats.vm_stats(ctx, name, since)
    return JSONResponse(shown.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.get("/ui/hosts/{name}/stats")
def host_stats(request: Request, name: str, since: float | None = _SINCE,
               caller: Caller = Depends(ui_need("host.read"))) -> JSONResponse:
    shown = stats.host_stats(ctx_of(request), name, since)
    return JSONResponse(shown.model_dump(mode="json"), headers={"Cache-Control": "no-store"})
