"""The SDK's calls for LDAP / Active Directory logins (a part of corral.client.Client)."""

from __future__ import annotations

from typing import Any

import httpx

from corral.api.ldap import LdapConfig, LdapSet, LdapTest, LdapTestResult

_PATH = "/api/v1/auth/ldap"


class LdapApi:
    """Mixed into Client, which does the HTTP."""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def get_ldap(self) -> LdapConfig:
        """The configuration (never the bind password); NotFound while LDAP is off."""
        return LdapConfig.model_validate(self._json("GET", _PATH))

    def set_ldap(self, req: LdapSet) -> LdapConfig:
        """Replace the configuration (no bind_password: keep the one set before)."""
        body = req.model_dump(mode="json", exclude_none=True)
        for optional in ("group_filter", "group_attribute"):  # None there means "off"
            body.setdefault(optional, None)
        return LdapConfig.model_validate(self._json("PUT", _PATH, json=body))

    def unset_ldap(self) -> None:
        self.request("DELETE", _PATH)

    def test_ldap(self, username: str | None = None) -> LdapTestResult:
        """Bind as the service account and look the user up (no password needed)."""
        body = LdapTest(username=username).model_dump(exclude_none=True)
        return LdapTestResult.model_validate(self._json("POST", f"{_PATH}/test", json=body))
