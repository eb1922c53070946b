"""/api/v1/auth/ldap: the LDAP / Active Directory login configuration (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from corral.api.ldap import LdapConfig, LdapSet, LdapTest, LdapTestResult
from corral.engine.context import EngineContext
from corral.engine.routes.deps import context, need
from corral.engine.services import ldap_auth

router = APIRouter(prefix="/api/v1/auth/ldap", tags=["users"])


@router.get("", response_model=LdapConfig, dependencies=need("user.read"))
def show(ctx: EngineContext = Depends(context)) -> LdapConfig:
    """The configuration (never the bind password: ``bind_password_set`` says whether one
    is kept); 404 while LDAP is off."""
    return ldap_auth.get_config(ctx)


@router.put("", response_model=LdapConfig, dependencies=need("user.update"))
def set_config(req: LdapSet, ctx: EngineContext = Depends(context)) -> LdapConfig:
    """Replace the configuration (the bind password is kept when none is sent). Directory
    users get their roles from the group map at their next login."""
    return ldap_auth.set_config(ctx, req)


@router.delete("", status_code=204, dependencies=need("user.update"))
def unset(ctx: EngineContext = Depends(context)) -> Response:
    """LDAP off: directory users cannot log in any more; local users are not touched."""
    ldap_auth.unset(ctx)
    return Response(status_code=204)


@router.post("/test", response_model=LdapTestResult, dependencies=need("user.update"))
def test(req: LdapTest, ctx: EngineContext = Depends(context)) -> LdapTestResult:
    """Bind as the service account and, given a user name, find the user, its groups and the
    role a login would give it (no password needed). 503 when the directory does not
    answer, 502 when it refuses the service account."""
    return ldap_auth.probe(ctx, req.username)
