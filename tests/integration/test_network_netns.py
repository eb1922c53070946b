"""The agent's NAT network, for real: bridge, dnsmasq, nftables, inside network namespaces.

Every test runs the network code inside namespaces it creates (``corral-nt-XXXXXXXX``), via
``ip netns exec NS python -c ...``; nothing is sent outside them and nothing of the host's
own network (eth0, its routes, its nft ruleset) is read for writing or touched. The fixtures
kill every process left in the namespaces and delete them, even when a test fails.

Tools: iproute2, nftables, dnsmasq-base, and busybox (``busybox udhcpc`` is the DHCP client,
``busybox nslookup`` the DNS client); scripts/install-deps.sh installs them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from corral.agent.network import NetworkSpec
from corral.agent.network.bridge import bridge_mac

pytestmark = pytest.mark.integration

TIMEOUT = 30.0  # seconds, for any single command

# Runs one call of the public API inside the current (the test's) namespace; prints JSON.
HELPER = r"""
import json, sys, time
from pathlib import Path
from corral.agent import network as n
from corral.errors import CorralError
op, spec, state = sys.argv[1], n.NetworkSpec(**json.loads(sys.argv[2])), Path(sys.argv[3])
t0 = time.monotonic()
try:
    if op == "ensure":
        result = n.ensure_network(spec, state)
    elif op == "delete":
        result = n.delete_network(spec, state)
    elif op == "status":
        result = n.network_status(spec, state)
    elif op == "leases":
        result = [x.model_dump() for x in n.leases(spec, state)]
    elif op == "overlap":
        result = n.check_route_overlap(spec.subnet, spec.bridge)
    else:
        raise SystemExit(f"unknown op {op}")
    out = {"ok": True, "result": result}
except CorralError as exc:
    out = {"ok": False, "error": type(exc).__name__, "message": exc.message, "field": exc.field}
out["seconds"] = time.monotonic() - t0
print(json.dumps(out))
"""


def sh(argv: list[str], *, timeout: float = TIMEOUT, check: bool = True,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Netns:
    name: str
    state: Path
    created: list[str] = field(default_factory=list)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(["ip", "-n", self.name, *args], check=check)

    def ip_json(self, *args: str) -> Any:
        out = self.ip("-j", *args).stdout
        return json.loads(out) if out.strip() else []

    def exec(self, *argv: str, check: bool = True,
             timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return sh(["ip", "netns", "exec", self.name, *argv], check=check, timeout=timeout)

    def api(self, op: str, spec: NetworkSpec) -> dict[str, Any]:
        proc = self.exec(sys.executable, "-c", HELPER, op, spec.model_dump_json(),
                         str(self.state))
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    def pids(self) -> list[int]:
        out = sh(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]

    def bridges(self) -> list[str]:
        return [link["ifname"] for link in self.ip_json("link", "show", "type", "bridge")]

    def nft_table(self) -> list[dict[str, Any]]:
        proc = self.exec("nft", "-j", "list", "table", "inet", "corral", check=False)
        if proc.returncode != 0:
            assert "No such file or directory" in proc.stderr, proc.stderr
            return []
        items: list[dict[str, Any]] = json.loads(proc.stdout)["nftables"]
        return items

    def nft_chains(self) -> list[str]:
        return [i["chain"]["name"] for i in self.nft_table() if "chain" in i]

    def nft_rules(self) -> list[dict[str, Any]]:
        return [i["rule"] for i in self.nft_table() if "rule" in i]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _destroy(ns: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         timeout=TIMEOUT).stdout
    pids = [int(p) for p in out.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=TIMEOUT)


@pytest.fixture
def make_ns(tmp_path: Path) -> Iterator[Any]:
    """Creates namespaces on demand; all of them (and what runs in them) go at the end."""
    if os.geteuid() != 0:
        pytest.fail("the network namespace tests need root (ip netns add)")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("dnsmasq", "dnsmasq-base"),
                          ("busybox", "busybox-static")):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            pytest.fail(f"{tool} is missing: apt-get install {package} (scripts/install-deps.sh)")
    made: list[str] = []
    tag = uuid.uuid4().hex[:8]

    def make(suffix: str = "") -> Netns:
        name = f"corral-nt-{tag}{suffix}"
        sh(["ip", "netns", "add", name])
        made.append(name)
        ns = Netns(name, tmp_path / f"state{suffix}")
        ns.ip("link", "set", "lo", "up")
        return ns

    try:
        yield make
    finally:
        for name in reversed(made):
            _destroy(name)


def nat_spec(octet: int, **changes: Any) -> NetworkSpec:
    values: dict[str, Any] = {
        "name": "nt",
        "bridge": "crnt0",
        "subnet": f"10.210.{octet}.0/24",
        "gateway": f"10.210.{octet}.1",
        "dhcp_start": f"10.210.{octet}.100",
        "dhcp_end": f"10.210.{octet}.199",
        "nat": True,
        "dns_domain": "corral",
    }
    values.update(changes)
    return NetworkSpec(**values)


def ok(result: dict[str, Any]) -> Any:
    assert result["ok"], result
    return result["result"]


def dnsmasq_pid(ns: Netns, spec: NetworkSpec) -> int:
    return int((ns.state / spec.name / "dnsmasq.pid").read_text())


def attach_client(host: Netns, client: Netns, bridge: str, port: str) -> str:
    """A veth from ``bridge`` in ``host`` to ``client``; returns the client end's MAC."""
    host.ip("link", "add", f"h{port}", "type", "veth", "peer", "name", port,
            "netns", client.name)
    host.ip("link", "set", f"h{port}", "master", bridge, "up")
    client.ip("link", "set", port, "up")
    mac: str = client.ip_json("link", "show", "dev", port)[0]["address"]
    return mac


def udhcpc(client: Netns, port: str, hostname: str) -> str:
    """Ask for a lease with busybox udhcpc (no script: it changes nothing); returns the IP."""
    proc = client.exec("busybox", "udhcpc", "-i", port, "-n", "-q", "-t", "10", "-T", "1",
                       "-s", "/bin/true", "-x", f"hostname:{hostname}", timeout=TIMEOUT)
    m = re.search(r"lease of (\S+) obtained", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    return m.group(1)


def assert_nothing_left(ns: Netns, spec: NetworkSpec) -> None:
    assert ns.bridges() == []
    assert ns.pids() == [], "a process (dnsmasq?) is left in the namespace"
    assert ns.nft_rules() == []
    assert ns.nft_chains() == []
    assert not (ns.state / spec.name).exists()


def test_nat_network_dhcp_dns_masquerade_and_delete(make_ns: Any) -> None:
    host, client, outside = make_ns(), make_ns("c"), make_ns("o")
    spec = nat_spec(21)
    # an "uplink" from host to outside, all inside namespaces: 10.210.99.0/24
    host.ip("link", "add", "up0", "type", "veth", "peer", "name", "out0", "netns", outside.name)
    host.ip("addr", "add", "10.210.99.1/24", "dev", "up0")
    host.ip("link", "set", "up0", "up")
    outside.ip("addr", "add", "10.210.99.2/24", "dev", "out0")
    outside.ip("link", "set", "out0", "up")

    first = host.api("ensure", spec)
    ok(first)

    # the bridge, with the gateway address, no STP
    (link,) = host.ip_json("-d", "link", "show", "dev", "crnt0")
    assert link["linkinfo"]["info_kind"] == "bridge"
    assert link["linkinfo"]["info_data"]["stp_state"] == 0
    assert link["linkinfo"]["info_data"]["forward_delay"] == 0
    assert "UP" in link["flags"]
    (addrs,) = host.ip_json("-4", "addr", "show", "dev", "crnt0")
    assert [(a["local"], a["prefixlen"]) for a in addrs["addr_info"]] == [("10.210.21.1", 24)]
    assert host.exec("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert ok(host.api("status", spec)) == {"bridge": True, "dnsmasq": True, "nat": True}

    # idempotent: a second ensure keeps the same dnsmasq
    pid = dnsmasq_pid(host, spec)
    ok(host.api("ensure", spec))
    assert dnsmasq_pid(host, spec) == pid
    assert ok(host.api("leases", spec)) == []

    # the masquerade rule, tagged with the network
    rules = host.nft_rules()
    masq = [r for r in rules if any("masquerade" in e for e in r["expr"])]
    assert len(masq) == 1 and masq[0]["comment"] == "corral:nt"
    assert all(r["comment"] == "corral:nt" for r in rules)
    assert sorted(host.nft_chains()) == ["fwd-crnt0", "nat-crnt0"]  # named by device

    # DHCP from a client namespace through a veth on the bridge
    t0 = time.monotonic()
    mac = attach_client(host, client, "crnt0", "vc0")
    t_attached = time.monotonic()
    ip = udhcpc(client, "vc0", "client1")
    t_dhcp = time.monotonic() - t_attached
    t_lease = first["seconds"] + time.monotonic() - t0
    assert ip.startswith("10.210.21.") and 100 <= int(ip.rsplit(".", 1)[1]) <= 199
    lease = wait_for(
        lambda: [x for x in ok(host.api("leases", spec)) if x["mac"] == mac], what="the lease"
    )
    assert lease[0]["ip"] == ip and lease[0]["hostname"] == "client1"
    assert lease[0]["expires"] > time.time()
    # the bridge keeps its own MAC (it would otherwise take the lowest port's)
    assert host.ip_json("link", "show", "dev", "crnt0")[0]["address"] == bridge_mac(spec)

    # DNS: the guest's name resolves as NAME.corral at the gateway
    client.ip("addr", "add", f"{ip}/24", "dev", "vc0")
    client.ip("route", "add", "default", "via", "10.210.21.1")
    look = client.exec("busybox", "nslookup", "client1.corral", "10.210.21.1", timeout=15)
    assert ip in look.stdout, look.stdout

    # NAT: a datagram from the client reaches "outside" from the host's uplink address
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", outside.name, sys.executable, "-c",
         "import socket, sys\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.bind(('10.210.99.2', 5555)); s.settimeout(10)\n"
         "print('ready', flush=True)\n"
         "data, addr = s.recvfrom(100); print(addr[0], data.decode(), flush=True)\n"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        client.exec(sys.executable, "-c",
                    "import socket\n"
                    "socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                    ".sendto(b'hello', ('10.210.99.2', 5555))\n")
        out, err = receiver.communicate(timeout=15)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait(timeout=5)
    assert out.split() == ["10.210.99.1", "hello"], (out, err)

    print(
        f"\nFIGURES ensure_network (cold, incl. dnsmasq start): {first['seconds'] * 1000:.0f} ms;"
        f" udhcpc discover -> lease: {t_dhcp * 1000:.0f} ms; ensure_network + veth set-up + "
        f"udhcpc = first DHCP lease: {t_lease * 1000:.0f} ms"
    )

    # delete: bridge, dnsmasq, rules and files go; a second delete is fine
    ok(host.api("delete", spec))
    assert host.bridges() == []
    assert not _alive(pid)
    assert host.nft_rules() == [] and host.nft_chains() == []
    assert not (host.state / "nt").exists()
    assert ok(host.api("status", spec)) == {"bridge": False, "dnsmasq": False, "nat": False}
    assert ok(host.api("leases", spec)) == []
    ok(host.api("delete", spec))
    # nothing of it ever appeared in the test runner's own namespace
    assert sh(["ip", "link", "show", "dev", "crnt0"], check=False).returncode != 0


def test_bad_input_leaves_nothing_behind(make_ns: Any) -> None:
    ns = make_ns()
    ns.ip("link", "add", "d0", "type", "veth", "peer", "name", "d0p")  # no dummy module here
    ns.ip("addr", "add", "10.210.31.1/24", "dev", "d0")
    ns.ip("link", "set", "d0", "up")
    cases: list[tuple[NetworkSpec, str, str]] = [
        (nat_spec(31, subnet="10.210.31.128/25", gateway="10.210.31.129",
                  dhcp_start="10.210.31.200", dhcp_end="10.210.31.250"), "Conflict", "subnet"),
        (nat_spec(32, gateway="10.210.33.1"), "InvalidInput", "gateway"),
        (nat_spec(32, subnet="10.210.32.0/33"), "InvalidInput", "subnet"),
        (nat_spec(32, subnet="not-a-cidr"), "InvalidInput", "subnet"),
        (nat_spec(32, bridge="b" * 16), "InvalidInput", "bridge"),
        (nat_spec(32, bridge="d0"), "Conflict", "bridge"),  # not a bridge: never taken over
    ]
    for spec, error, fld in cases:
        result = ns.api("ensure", spec)
        assert not result["ok"], spec
        assert (result["error"], result["field"]) == (error, fld), result
        assert_nothing_left(ns, spec)
    assert ns.api("overlap", nat_spec(31))["error"] == "Conflict"
    ok(ns.api("overlap", nat_spec(32)))
    ns.ip("route", "add", "blackhole", "10.210.32.0/24")
    assert ns.api("overlap", nat_spec(32))["error"] == "Conflict"
    # the veth is untouched
    (d0,) = ns.ip_json("-4", "addr", "show", "dev", "d0")
    assert [a["local"] for a in d0["addr_info"]] == ["10.210.31.1"]


def _child_of(child: int, parent: int) -> bool:
    try:
        return int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1]) == parent
    except (OSError, IndexError, ValueError):
        return False


def test_ensure_repairs_and_applies_changes(make_ns: Any) -> None:
    host, client = make_ns(), make_ns("c")
    spec = nat_spec(41)
    ok(host.api("ensure", spec))
    pid = dnsmasq_pid(host, spec)

    # a lost pid file: ensure finds the running dnsmasq and starts no second one
    (host.state / "nt" / "dnsmasq.pid").unlink()
    ok(host.api("ensure", spec))
    assert dnsmasq_pid(host, spec) == pid
    # (its --dhcp-script helper, a child of the same command line, aside)
    assert [p for p in host.pids() if p != pid and not _child_of(p, pid)] == []

    # dnsmasq died: ensure starts a new one
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), what="dnsmasq to die")
    assert ok(host.api("status", spec))["dnsmasq"] is False
    ok(host.api("ensure", spec))
    pid2 = dnsmasq_pid(host, spec)
    assert pid2 != pid and _alive(pid2)

    # the bridge vanished: ensure re-creates it and restarts dnsmasq (its sockets were bound
    # to the old interface), and DHCP works on the new bridge
    host.ip("link", "del", "crnt0")
    assert ok(host.api("status", spec))["bridge"] is False
    ok(host.api("ensure", spec))
    pid3 = dnsmasq_pid(host, spec)
    assert pid3 != pid2 and not _alive(pid2)
    attach_client(host, client, "crnt0", "vc0")
    assert udhcpc(client, "vc0", "c1").startswith("10.210.41.")

    # a changed spec: the bridge carries only the new gateway, dnsmasq gets the new range
    changed = nat_spec(41, gateway="10.210.41.254", dhcp_start="10.210.41.10",
                       dhcp_end="10.210.41.20")
    ok(host.api("ensure", changed))
    (addrs,) = host.ip_json("-4", "addr", "show", "dev", "crnt0")
    assert [a["local"] for a in addrs["addr_info"]] == ["10.210.41.254"]
    conf = (host.state / "nt" / "dnsmasq.conf").read_text()
    assert "dhcp-range=10.210.41.10,10.210.41.20,255.255.255.0,12h" in conf
    assert not _alive(pid3)
    attach_client(host, client, "crnt0", "vc1")
    ip = udhcpc(client, "vc1", "c2")
    assert 10 <= int(ip.rsplit(".", 1)[1]) <= 20

    # nat switched off: the rules go, the rest stays
    ok(host.api("ensure", nat_spec(41, nat=False, gateway="10.210.41.254",
                                   dhcp_start="10.210.41.10", dhcp_end="10.210.41.20")))
    assert ok(host.api("status", spec)) == {"bridge": True, "dnsmasq": True, "nat": False}
    assert host.nft_chains() == []

    # delete finds dnsmasq even without its pid file
    (host.state / "nt" / "dnsmasq.pid").unlink()
    ok(host.api("delete", spec))
    assert_nothing_left(host, spec)


def test_failed_start_rolls_back(make_ns: Any) -> None:
    ns = make_ns()
    spec = nat_spec(51)
    # something already holds the DHCP port: dnsmasq cannot start
    blocker = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c",
         "import socket, time\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.bind(('0.0.0.0', 67)); print('ready', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert blocker.stdout is not None
        assert blocker.stdout.readline().strip() == "ready"
        result = ns.api("ensure", spec)
        assert not result["ok"] and result["error"] == "HostError", result
        assert "dnsmasq" in result["message"], result
        print("\nrollback error:", result["message"])
        assert ns.bridges() == []
        assert ns.nft_chains() == []
        assert ns.pids() == [blocker.pid]  # only the blocker: no dnsmasq left
    finally:
        blocker.kill()
        blocker.wait(timeout=5)
    ok(ns.api("delete", spec))
    assert_nothing_left(ns, spec)
