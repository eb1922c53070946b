"""The SDK's calls for hosts' fence methods and power (a part of corral.client.Client)."""

from __future__ import annotations

from typing import Any

import httpx

from corral.api import Operation
from corral.api.fencing import FenceMethod, FenceMethodSet, FenceTest, HostPowerSet

# Each method's agent may take its whole timeout (20 s) on a `status`
_TEST_TIMEOUT_S = 200.0


class FencingApi:
    """Mixed into Client, which does the HTTP."""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def fence_methods(self, host: str) -> list[FenceMethod]:
        return [FenceMethod.model_validate(x)
                for x in self._json("GET", f"/api/v1/hosts/{host}/fence")]

    def set_fence_method(self, host: str, req: FenceMethodSet) -> FenceMethod:
        """Add a method (``req.position`` None: after the last) or replace one."""
        return FenceMethod.model_validate(self._json(
            "PUT", f"/api/v1/hosts/{host}/fence", json=req.model_dump(mode="json")))

    def remove_fence_method(self, host: str, position: int | None = None) -> list[FenceMethod]:
        """Remove one method (None: all); the methods left."""
        params = {"position": position} if position is not None else {}
        return [FenceMethod.model_validate(x) for x in self._json(
            "DELETE", f"/api/v1/hosts/{host}/fence", params=params)]

    def test_fence(self, host: str) -> FenceTest:
        """Every method's `status` (nothing is powered)."""
        return FenceTest.model_validate(self._json(
            "POST", f"/api/v1/hosts/{host}/fence/test", timeout=_TEST_TIMEOUT_S))

    def host_power(self, host: str, action: str, force: bool = False) -> Operation:
        """Power the host on, off or cycle it through its fence methods (an operation)."""
        body = HostPowerSet.model_validate({"action": action, "force": force})
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/hosts/{host}/power", json=body.model_dump(mode="json")))
