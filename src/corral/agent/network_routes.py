"""Agent routes of networks: ``/v1/networks/{name}`` build (``PUT``), remove, status, dry run
(``POST .../check``) and DHCP leases; bodies and answers are ``corral.agent_api.networks``.

Specs are kept on disk (``<net_dir>/<name>.json``, the body as sent) so the agent rebuilds
every network at start (``Networks.restore``); the NIC and port routes read them too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter

from corral.agent import network
from corral.agent.specfile import written_first
from corral.agent_api import Deleted, Ok
from corral.agent_api.networks import Lease, NetworkBody, NetworkSpec, NetworkStatus
from corral.errors import CorralError, NotFound
from corral.validation import validate_name

log = logging.getLogger(__name__)


class Networks:
    """The networks of this host, by their spec files."""

    def __init__(self, net_dir: Path) -> None:
        self.net_dir = net_dir

    def _file(self, name: str) -> Path:
        return self.net_dir / f"{validate_name(name, 'network')}.json"

    def spec(self, name: str) -> NetworkSpec:
        path = self._file(name)
        if not path.exists():
            raise NotFound(f"network {name} is not set up on this host")
        return _read(path)

    def specs(self) -> list[NetworkSpec]:
        return [_read(p) for p in sorted(self.net_dir.glob("*.json"))]

    def ensure(self, name: str, body: NetworkBody) -> NetworkStatus:
        """Build or repair a network. Its spec file is written first (an agent killed half-way
        finishes the job at its next start, or a delete finds what to remove) and taken back
        if the build fails (the network module has undone its part by then)."""
        spec = NetworkSpec.of(name, body)
        network.validate_spec(spec)
        with written_first(self._file(name), body.model_dump_json()):
            network.ensure_network(spec, self.net_dir)
        return self._status(spec)

    def delete(self, name: str) -> bool:
        """Remove a network; False when this host has none of that name (idempotent)."""
        if not self._file(name).exists():
            return False
        spec = self.spec(name)
        shared = any(o.bridge == spec.bridge for o in self.specs() if o.name != name)
        network.delete_network(spec, self.net_dir, keep_bridge=shared)
        self._file(name).unlink(missing_ok=True)
        return True

    def status(self, name: str) -> NetworkStatus:
        return self._status(self.spec(name))

    def _status(self, spec: NetworkSpec) -> NetworkStatus:
        return NetworkStatus.model_validate(network.network_status(spec, self.net_dir))

    def restore(self) -> None:
        """Rebuild every network at start (host boot, agent restart); one that cannot be
        built is logged and left for the next ensure, never blocks the others."""
        for spec in self.specs():
            try:
                network.ensure_network(network.restored(spec, self.net_dir), self.net_dir)
            except CorralError as exc:
                log.error("network %s could not be restored: %s", spec.name, exc.message)


def _read(path: Path) -> NetworkSpec:
    """A spec file: the body as sent, named by the file."""
    return NetworkSpec.of(path.stem, NetworkBody.model_validate_json(path.read_text()))


def router(nets: Networks) -> APIRouter:
    r = APIRouter()

    @r.put("/v1/networks/{name}", response_model_exclude_none=True)
    def ensure_network(name: str, body: NetworkBody) -> NetworkStatus:
        return nets.ensure(name, body)

    @r.delete("/v1/networks/{name}")
    def delete_network(name: str) -> Deleted:
        return Deleted(deleted=nets.delete(name))

    @r.get("/v1/networks/{name}", response_model_exclude_none=True)
    def network_status(name: str) -> NetworkStatus:
        return nets.status(name)

    @r.post("/v1/networks/{name}/check")
    def check_network(name: str, body: NetworkBody) -> Ok:
        network.check_network(NetworkSpec.of(name, body))
        return Ok()

    @r.get("/v1/networks/{name}/leases")
    def leases(name: str) -> list[Lease]:
        return network.leases(nets.spec(name), nets.net_dir)

    return r
