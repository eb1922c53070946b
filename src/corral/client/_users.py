"""The SDK's calls for users, logins and API tokens (a part of corral.client.Client)."""

from __future__ import annotations

from typing import Any

import httpx

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


class UsersApi:
    """Mixed into Client, which does the HTTP."""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    # -- the caller -----------------------------------------------------------------------
    def login(self, username: str, password: str) -> LoginAnswer:
        """A session token for the user (no token needed for this call)."""
        body = LoginRequest(username=username, password=password).model_dump()
        return LoginAnswer.model_validate(self._json("POST", "/api/v1/login", json=body))

    def logout(self) -> None:
        """Revoke the token this client shows."""
        self.request("POST", "/api/v1/logout")

    def whoami(self) -> Whoami:
        return Whoami.model_validate(self._json("GET", "/api/v1/whoami"))

    def change_password(self, current: str, new: str) -> None:
        body = PasswordSet(password=new, current_password=current).model_dump()
        self.request("PUT", "/api/v1/password", json=body)

    # -- users ----------------------------------------------------------------------------
    def list_users(self) -> list[UserInfo]:
        return [UserInfo.model_validate(u) for u in self._json("GET", "/api/v1/users")]

    def get_user(self, name: str) -> UserInfo:
        return UserInfo.model_validate(self._json("GET", f"/api/v1/users/{name}"))

    def create_user(self, req: UserCreate) -> UserInfo:
        body = req.model_dump(mode="json", exclude_none=True)
        return UserInfo.model_validate(self._json("POST", "/api/v1/users", json=body))

    def update_user(self, name: str, req: UserPatch) -> UserInfo:
        body = req.model_dump(mode="json", exclude_none=True)
        return UserInfo.model_validate(self._json("PATCH", f"/api/v1/users/{name}", json=body))

    def delete_user(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/users/{name}")

    def set_user_password(self, name: str, password: str) -> None:
        body = PasswordSet(password=password).model_dump(exclude_none=True)
        self.request("PUT", f"/api/v1/users/{name}/password", json=body)

    def list_user_tokens(self, name: str) -> list[TokenInfo]:
        return [TokenInfo.model_validate(t)
                for t in self._json("GET", f"/api/v1/users/{name}/tokens")]

    def create_user_token(self, name: str, req: TokenCreate) -> TokenCreated:
        body = req.model_dump(mode="json", exclude_none=True)
        return TokenCreated.model_validate(
            self._json("POST", f"/api/v1/users/{name}/tokens", json=body))

    def revoke_user_token(self, name: str, token: str) -> None:
        self.request("DELETE", f"/api/v1/users/{name}/tokens/{token}")

    # -- the caller's API tokens ----------------------------------------------------------
    def list_tokens(self) -> list[TokenInfo]:
        return [TokenInfo.model_validate(t) for t in self._json("GET", "/api/v1/tokens")]

    def create_token(self, req: TokenCreate) -> TokenCreated:
        body = req.model_dump(mode="json", exclude_none=True)
        return TokenCreated.model_validate(self._json("POST", "/api/v1/tokens", json=body))

    def revoke_token(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/tokens/{name}")
