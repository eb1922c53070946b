"""The engine's client of an agent's HTTP API; agent errors come back as corral errors."""

from __future__ import annotations

import time
from typing import Any

import httpx

from corral import errors
from corral.errors import HostError

# An agent restarting (the engine restarts one that died at once) refuses connections for
# a few seconds; a refused connection sent nothing, so any request may be tried again.
RECONNECT_S = 15.0


class AgentClient:
    def __init__(self, url: str, token: str, timeout: float = 60.0,
                 reconnect_s: float = RECONNECT_S) -> None:
        self.url = url
        self.reconnect_s = reconnect_s
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def call(self, method: str, path: str, *, json: Any = None, timeout: float | None = None,
             text: bool = False, reconnect: bool = True) -> Any:
        """``reconnect``: wait up to ``reconnect_s`` for an agent that refuses connections."""
        deadline = time.monotonic() + (self.reconnect_s if reconnect else 0.0)
        delay = 0.1
        while True:
            try:
                resp = self._http.request(
                    method, path, json=json,
                    timeout=timeout if timeout is not None else self._http.timeout,
                )
                break
            except httpx.ConnectError as exc:
                if time.monotonic() + delay > deadline:
                    raise HostError(f"agent at {self.url} unreachable: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except httpx.HTTPError as exc:
                raise HostError(f"agent at {self.url} unreachable: {exc}") from exc
        if resp.status_code >= 400:
            try:
                body = resp.json().get("error") or {}
            except ValueError:
                body = {"message": resp.text[:500]}
            body.setdefault("code", "host_error")
            raise errors.from_dict(body)
        return resp.text if text else resp.json()

    # Small named helpers keep the services readable.
    def facts(self) -> dict[str, Any]:
        # Also the probe of a host being added: a wrong address fails at once.
        return dict(self.call("GET", "/v1/host", timeout=10, reconnect=False))

    def domains(self) -> list[dict[str, Any]]:
        # The reconciler's poll: a refusing agent is reported at once, not waited for.
        return list(self.call("GET", "/v1/domains", timeout=10, reconnect=False))

    def domain(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/domains/{name}", timeout=10))

    def define(self, name: str, xml: str) -> dict[str, Any]:
        return dict(self.call("PUT", f"/v1/domains/{name}", json={"xml": xml}))

    def act(self, name: str, action: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/domains/{name}/{action}"))

    def undefine(self, name: str) -> None:
        self.call("DELETE", f"/v1/domains/{name}")

    def console_log(self, name: str) -> str:
        return str(self.call("GET", f"/v1/domains/{name}/console-log", text=True))

    def create_disk(self, vm: str, image: str | None, size: int | None) -> dict[str, Any]:
        return dict(self.call("PUT", f"/v1/disks/{vm}", json={"image": image, "size": size}))

    def delete_disk(self, vm: str) -> None:
        self.call("DELETE", f"/v1/disks/{vm}")

    def write_seed(self, vm: str, files: dict[str, str]) -> dict[str, Any]:
        return dict(self.call("PUT", f"/v1/seeds/{vm}", json={"files": files}))

    def delete_seed(self, vm: str) -> None:
        self.call("DELETE", f"/v1/seeds/{vm}")

    def addresses(self, vm: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v1/domains/{vm}/addresses", timeout=10))

    def close(self) -> None:
        self._http.close()
