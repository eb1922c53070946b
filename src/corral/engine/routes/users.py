"""/api/v1/login, /logout, /whoami, /password, /users and /tokens: who may call the API."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Request, Response

from corral.api.users import (
    LoginAnswer,
    LoginRequest,
    PasswordSet,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    UserCreate,
    UserInfo,
    UserPatch,
    Whoami,
)
from corral.engine import access
from corral.engine.context import EngineContext
from corral.engine.db.models import Token, utcnow
from corral.engine.permissions import SELF
from corral.engine.routes.deps import context, need, principal
from corral.engine.services import auth, logins, users
from corral.errors import Forbidden, InvalidInput, NotFound

router = APIRouter(prefix="/api/v1", tags=["users"])


def _token_info(t: Token) -> TokenInfo:
    return TokenInfo(name=t.name, role=t.role, project=t.project, kind=t.kind,
                     created_at=t.created_at, expires_at=t.expires_at,
                     last_used_at=t.last_used_at)


def _own_user(who: auth.Principal) -> str:
    if who.user is None:
        raise InvalidInput("this token is the engine's own and belongs to no user: log in as "
                           "a user (`corral login`) for this", field="token")
    return who.user


@router.post("/login", response_model=LoginAnswer)
def login(req: LoginRequest, request: Request,
          ctx: EngineContext = Depends(context)) -> LoginAnswer:
    """A session token for a user name and password (unauthenticated). Failures are slowed
    down per user and per client address, then locked for a while (429)."""
    address = request.client.host if request.client else None
    request.state.login_user = req.username  # the name tried, for the audit log
    name = logins.check(ctx, req.username, req.password, address)
    token, expires = auth.start_session(ctx, name)
    role = users.get(ctx, name).role
    return LoginAnswer(token=token, expires_at=expires, user=name, role=role)


@router.post("/logout", status_code=204, dependencies=need(SELF))
def logout(who: auth.Principal = Depends(principal),
           ctx: EngineContext = Depends(context)) -> Response:
    """End the login session this request shows: its token is refused from the next
    request on. An API token is not a session (revoke it: DELETE /api/v1/tokens/NAME)."""
    if who.kind != "session":
        raise InvalidInput("this is an API token, not a login session: revoke it with "
                           f"DELETE /api/v1/tokens/{who.token_name}", field="token")
    auth.revoke(ctx, who.token_id)
    return Response(status_code=204)


@router.get("/whoami", response_model=Whoami, dependencies=need(SELF))
def whoami(who: auth.Principal = Depends(principal)) -> Whoami:
    """The caller: user, token, the roles it holds per project and what they permit."""
    projects: dict[str, list[str]] = {}
    for role, project in who.access.grants:
        projects.setdefault(project, []).append(role)
    return Whoami(user=who.user, role=who.role, token_name=who.token_name, kind=who.kind,
                  project=who.access.only, permissions=sorted(who.access.anywhere()),
                  projects=projects)


@router.put("/password", status_code=204, dependencies=need(SELF))
def change_own_password(req: PasswordSet, who: auth.Principal = Depends(principal),
                        ctx: EngineContext = Depends(context)) -> Response:
    """Change the caller's own password (the current one is needed); its sessions end."""
    name = _own_user(who)
    if req.current_password is None or not users.check_password(ctx, name, req.current_password):
        raise InvalidInput("the current password is wrong", field="current_password")
    users.set_password(ctx, name, req.password)
    return Response(status_code=204)


# -- users (admins) -------------------------------------------------------------------------

@router.get("/users", response_model=list[UserInfo], dependencies=need("user.read"))
def list_users(ctx: EngineContext = Depends(context)) -> list[UserInfo]:
    return users.list_users(ctx)


@router.post("/users", status_code=201, response_model=UserInfo, dependencies=need("user.create"))
def create_user(req: UserCreate, ctx: EngineContext = Depends(context)) -> UserInfo:
    """A local user; without a password it logs in only with API tokens an admin makes."""
    return users.create(ctx, req.name, req.role, req.password)


@router.get("/users/{name}", response_model=UserInfo, dependencies=need("user.read"))
def get_user(name: str, ctx: EngineContext = Depends(context)) -> UserInfo:
    return users.get(ctx, name)


@router.patch("/users/{name}", response_model=UserInfo, dependencies=need("user.update"))
def update_user(name: str, req: UserPatch, ctx: EngineContext = Depends(context)) -> UserInfo:
    """A new role: it caps every token of the user from the next request on."""
    return users.update(ctx, name, req.role)


@router.delete("/users/{name}", status_code=204, dependencies=need("user.delete"))
def delete_user(name: str, ctx: EngineContext = Depends(context)) -> Response:
    """The user and its tokens; refused for the last admin."""
    users.delete(ctx, name)
    return Response(status_code=204)


@router.put("/users/{name}/password", status_code=204, dependencies=need("user.update"))
def set_password(name: str, req: PasswordSet, ctx: EngineContext = Depends(context)) -> Response:
    """Set a user's password (an admin's reset); the user's sessions end."""
    users.set_password(ctx, name, req.password)
    return Response(status_code=204)


@router.get("/users/{name}/tokens", response_model=list[TokenInfo],
            dependencies=need("user.read"))
def list_user_tokens(name: str, ctx: EngineContext = Depends(context)) -> list[TokenInfo]:
    return [_token_info(t) for t in auth.list_tokens(ctx, name)]


@router.post("/users/{name}/tokens", status_code=201, response_model=TokenCreated,
             dependencies=need("user.update"))
def create_user_token(name: str, req: TokenCreate, who: auth.Principal = Depends(principal),
                      ctx: EngineContext = Depends(context)) -> TokenCreated:
    """An API token for another user (a service user without a password, say): its role
    holds no more than the caller may; the user's own rights cap it again at each use. Its
    secret is shown this once."""
    users.get(ctx, name)  # 404 first
    return _new_token(ctx, name, req, who)


@router.delete("/users/{name}/tokens/{token}", status_code=204,
               dependencies=need("user.update"))
def revoke_user_token(name: str, token: str, ctx: EngineContext = Depends(context)) -> Response:
    auth.revoke_named(ctx, name, token)
    return Response(status_code=204)


# -- the caller's own API tokens -------------------------------------------------------------

@router.get("/tokens", response_model=list[TokenInfo], dependencies=need(SELF))
def list_tokens(who: auth.Principal = Depends(principal),
                ctx: EngineContext = Depends(context)) -> list[TokenInfo]:
    """The caller's tokens, sessions included (never their secrets)."""
    return [_token_info(t) for t in auth.list_tokens(ctx, _own_user(who))]


@router.post("/tokens", status_code=201, response_model=TokenCreated, dependencies=need(SELF))
def create_token(req: TokenCreate, who: auth.Principal = Depends(principal),
                 ctx: EngineContext = Depends(context)) -> TokenCreated:
    """An API token of the caller's, whose role holds no more than the caller may (the
    user's rights cap it again at each use); its secret is shown this once."""
    return _new_token(ctx, _own_user(who), req, who)


def _new_token(ctx: EngineContext, user: str, req: TokenCreate,
               maker: auth.Principal) -> TokenCreated:
    """Without a role: the user's own role (``admin`` for a user whose rights all come
    from role assignments: the token then caps nothing, the user's rights rule)."""
    owner = users.get(ctx, user)
    role = req.role or (owner.role if owner.role != "none" else "admin")
    with ctx.db.session() as s:
        wanted = access.role_sets(s).get(role)
    if wanted is None:
        raise InvalidInput(f"role {role} not found (`corral role list`)", field="role")
    if req.role:
        for whose, held in (("its maker", maker.access.anywhere()),
                            (f"user {user}", auth.user_access(ctx, user).anywhere())):
            beyond = sorted(wanted - held)
            if beyond:
                raise Forbidden(f"a token cannot do more than {whose}: role {role} holds "
                                f"{', '.join(beyond[:4])}{', ...' if len(beyond) > 4 else ''}"
                                f", which {whose} may not", field="role")
    if req.project is not None and not maker.access.sees(req.project):
        raise NotFound(f"project {req.project} not found", field="project")
    expires = utcnow() + timedelta(seconds=req.expires_in_s) if req.expires_in_s else None
    secret = auth.create_token(ctx, req.name, role, user=user, expires_at=expires,
                               replace=False, project=req.project)
    made = next(t for t in auth.list_tokens(ctx, user) if t.name == req.name)
    return TokenCreated(token=secret, **_token_info(made).model_dump())


@router.delete("/tokens/{name}", status_code=204, dependencies=need(SELF))
def revoke_token(name: str, who: auth.Principal = Depends(principal),
                 ctx: EngineContext = Depends(context)) -> Response:
    """Revoke one of the caller's tokens: refused from the next request on."""
    auth.revoke_named(ctx, _own_user(who), name)
    return Response(status_code=204)
