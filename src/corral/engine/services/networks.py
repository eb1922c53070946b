"""Networks: desired state in the DB, built on each host by its agent."""

from __future__ import annotations

import ipaddress

from corral.api import Network as NetworkOut
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Network
from corral.errors import InvalidInput, NotFound


def to_api(n: Network) -> NetworkOut:
    return NetworkOut(
        name=n.name, bridge=n.bridge, subnet=n.subnet, gateway=n.gateway,
        dhcp_start=n.dhcp_start, dhcp_end=n.dhcp_end, nat=n.nat,
    )


def agent_body(n: Network) -> dict[str, object]:
    return {
        "bridge": n.bridge, "subnet": n.subnet, "gateway": n.gateway,
        "dhcp_start": n.dhcp_start, "dhcp_end": n.dhcp_end, "nat": n.nat, "dns_domain": "corral",
    }


def ensure_default(ctx: EngineContext, subnet: str, bridge: str = "corral0") -> NetworkOut:
    """The `default` NAT network of `corral up`: gateway .1, DHCP over the upper half."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise InvalidInput(f"subnet {subnet!r} is not a CIDR: {exc}", field="subnet") from exc
    if net.num_addresses < 8:
        raise InvalidInput(f"subnet {subnet} is too small for a network", field="subnet")
    hosts = list(net.hosts())
    with ctx.db.session() as s:
        row = s.query(Network).filter_by(name="default").one_or_none()
        if row is None:
            row = Network(
                name="default", bridge=bridge, subnet=str(net), gateway=str(hosts[0]),
                dhcp_start=str(hosts[len(hosts) // 2]), dhcp_end=str(hosts[-1]), nat=True,
            )
            s.add(row)
            s.flush()
        body = agent_body(row)
        hosts_ids = [h.id for h in s.query(Host).filter_by(status="up")]
        out = to_api(row)
    for host_id in hosts_ids:
        ctx.agent(host_id).call("PUT", f"/v1/networks/{out.name}", json=body)
    return out


def list_networks(ctx: EngineContext) -> list[NetworkOut]:
    with ctx.db.session() as s:
        return [to_api(n) for n in s.query(Network).order_by(Network.name)]


def get(ctx: EngineContext, name: str) -> NetworkOut:
    with ctx.db.session() as s:
        row = s.query(Network).filter_by(name=name).one_or_none()
        if row is None:
            raise NotFound(f"network {name} not found")
        return to_api(row)


def leases(ctx: EngineContext, name: str) -> list[dict[str, object]]:
    get(ctx, name)
    with ctx.db.session() as s:
        hosts_ids = [h.id for h in s.query(Host).filter_by(status="up")]
    out: list[dict[str, object]] = []
    for host_id in hosts_ids:
        out.extend(ctx.agent(host_id).call("GET", f"/v1/networks/{name}/leases", timeout=10))
    return out
