"""An overlay network's server moves from one host to the other, for real (issue 15).

Two hosts (namespaces joined by an underlay veth) carry one VXLAN segment; h1 serves it
(gateway address and MAC, dnsmasq), h2 only carries it. Then the engine's move as the hosts
see it: h1 (fenced, back) gets ``serve=False``, h2 gets ``serve=True``. h1 must drop all of
the gateway (dnsmasq, address, and the gateway's MAC on its bridge), h2 must take it all, and
guests on both hosts then get leases from h2 and reach the gateway across the overlay. An
agent that boots again does not start serving on its own (``restored``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from test_network_layouts_netns import api, configure, make_ns, ok, reaches, spec
from test_network_netns import Netns, udhcpc

from corral.agent.network.bridge import bridge_mac

pytestmark = pytest.mark.integration
__all__ = ["make_ns"]

RESTORED = r"""
import json, sys
from pathlib import Path
from corral.agent import network as n
print(json.dumps(n.restored(n.NetworkSpec(**json.loads(sys.argv[1])), Path(sys.argv[2])).serve))
"""
NAME, VNI, OCTET = "ovmove", 5101, 143
GATEWAY = f"10.210.{OCTET}.1"


def restored_serves(ns: Netns, s: Any) -> bool:
    proc = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-c", RESTORED,
                           s.model_dump_json(), str(ns.state)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return bool(json.loads(proc.stdout.strip().splitlines()[-1]))


def bridge_of(ns: Netns) -> dict[str, Any]:
    info: dict[str, Any] = ns.ip_json("addr", "show", "dev", f"cr-{NAME}")[0]
    return info


def ipv4(ns: Netns) -> list[str]:
    return [a["local"] for a in bridge_of(ns).get("addr_info", []) if a["family"] == "inet"]


def client_on(host: Netns, make: Any, port: str) -> tuple[Netns, str]:
    client = make(port)
    client.ip("link", "add", port, "type", "veth", "peer", "name", f"h{port}",
              "netns", host.name)
    host.ip("link", "set", f"h{port}", "up")
    host.ip("link", "set", f"h{port}", "master", f"cr-{NAME}")
    client.ip("link", "set", port, "mtu", "1450", "up")
    ip = udhcpc(client, port, port)
    configure(client, port, ip)
    return client, ip


def test_the_server_moves_and_both_hosts_converge(make_ns: Any) -> None:
    h1, h2 = make_ns("m1"), make_ns("m2")
    h1.ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", h2.name)
    for i, h in enumerate((h1, h2), 1):
        h.ip("addr", "add", f"10.210.140.{i}/24", "dev", "ul0")
        h.ip("link", "set", "ul0", "up")

    def body(i: int, serve: bool) -> Any:
        return spec(NAME, OCTET, vni=VNI, local=f"10.210.140.{i}",
                    peers=[f"10.210.140.{3 - i}"], mode="isolated", serve=serve)

    ok(api(h1, "ensure", body(1, True)))
    ok(api(h2, "ensure", body(2, False)))
    c2, _ = client_on(h2, make_ns, "mc2")  # a lease from h1, over VXLAN
    assert ipv4(h1) == [GATEWAY] and bridge_of(h1)["address"] == bridge_mac(body(1, True))
    assert restored_serves(h1, body(1, True))  # its dnsmasq runs: only an agent restart

    ok(api(h1, "ensure", body(1, False)))  # the old server, back: it only carries
    ok(api(h2, "ensure", body(2, True)))  # the new one serves
    assert ok(api(h1, "status", body(1, False))) == {"bridge": True, "overlay": True}
    assert ipv4(h1) == [] and bridge_of(h1)["address"] != bridge_mac(body(1, True))
    assert not restored_serves(h1, body(1, True))  # booted again: it waits for the engine
    assert ok(api(h2, "status", body(2, True)))["dnsmasq"] is True
    assert ipv4(h2) == [GATEWAY] and bridge_of(h2)["address"] == bridge_mac(body(2, True))

    c1, ip1 = client_on(h1, make_ns, "mc1")  # a lease from h2 now, over VXLAN
    assert ip1.startswith(f"10.210.{OCTET}.")
    leased = (h2.state / NAME / "dnsmasq.leases").read_text()
    assert ip1 in leased
    assert reaches(c1, GATEWAY) and reaches(c2, GATEWAY)
    for h, i, serve in ((h1, 1, False), (h2, 2, True)):
        ok(api(h, "delete", body(i, serve)))
