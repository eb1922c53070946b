"""/api/v1/ca.pem and the join of a host: what a newcomer may reach before it has credentials."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from corral.agent_api.reports import CorosyncFiles, HostReport, ReportAnswer
from corral.api.cluster import JoinAnswer, JoinRequest, JoinToken, JoinTokenRequest
from corral.engine.context import EngineContext
from corral.engine.reconciler import Reconciler
from corral.engine.routes.deps import context, need, reporting_host
from corral.engine.services import ha_corosync, host_join
from corral.engine.tls import ensure_ca

router = APIRouter(prefix="/api/v1", tags=["cluster"])


@router.get("/ca.pem", response_class=PlainTextResponse,
            responses={200: {"content": {"application/x-pem-file": {}}}})
def ca_certificate(ctx: EngineContext = Depends(context)) -> PlainTextResponse:
    """The engine's CA certificate, unauthenticated: a client or a joining host checks its
    SHA-256 fingerprint against the one it was given (the join token, `corral remote add`)
    before it trusts anything signed by it."""
    ensure_ca(ctx.settings.tls_dir)  # made on the engine's first start; here if it is not yet
    return PlainTextResponse((ctx.settings.tls_dir / "ca.pem").read_text(),
                             media_type="application/x-pem-file")


@router.post("/hosts/tokens", status_code=201, response_model=JoinToken,
             dependencies=need("host.create"))
def create_join_token(req: JoinTokenRequest | None = None,
                      ctx: EngineContext = Depends(context)) -> JoinToken:
    """A one-time token a new host joins with (`corral agent join URL --token T`): it expires
    after ``ttl_s`` and works once. Only its hash is kept; it is shown this once."""
    return host_join.create_token(ctx, (req or JoinTokenRequest()).ttl_s)


@router.post("/hosts/join", response_model=JoinAnswer)
def join_host(req: JoinRequest, ctx: EngineContext = Depends(context)) -> JoinAnswer:
    """A host joins: the token (not a bearer token: this is how a host without credentials
    gets some) is spent, and the host's CSR comes back signed by the engine's CA."""
    return host_join.join(ctx, req)


@router.post("/agent/report", response_model=ReportAnswer)
def agent_report(report: HostReport, request: Request,
                 host_id: str = Depends(reporting_host)) -> ReportAnswer:
    """A host's agent reports (mutual TLS: the host is known by its certificate): a
    heartbeat, and at once its domains' lifecycle events."""
    reconciler: Reconciler = request.app.state.reconciler
    return reconciler.report(host_id, report)


@router.get("/agent/corosync", response_model=CorosyncFiles)
def agent_corosync(request: Request,
                   host_id: str = Depends(reporting_host)) -> CorosyncFiles:
    """The cluster's corosync.conf and knet key for a host's agent (mutual TLS) that keeps its
    corosync configured (`corral agent run --corosync-conf PATH`): the report's answer says
    when they changed (a host joined or left)."""
    return ha_corosync.files(context(request))
