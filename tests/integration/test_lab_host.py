"""corral.lab.LabHost, for real: namespaces, a private libvirtd, a TCG guest, cleanup.

Each test uses lab hosts named ``t<6 hex>`` (netns ``corral-t…``, veth ``crl-t…``) on
indexes from 200 up that no route of the machine covers yet, so that it does not collide
with ``corral lab up`` (which counts from 1) or with another test run. Only addresses in
10.209.<index>.0/30 are used; nothing is sent anywhere else. The fixture stops every lab
host a test made and removes its directory, even when the test fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from corral.errors import Conflict, InvalidInput
from corral.lab import LabHost
from corral.lab._net import ROUTER_NETNS

pytestmark = pytest.mark.integration

libvirt = pytest.importorskip("libvirt")

TINY_DOMAIN = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><serial type='pty'/></devices>
</domain>
"""


def _need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("lab hosts need root")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _free_indexes(count: int, start: int = 200) -> list[int]:
    routes = json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    taken = [
        ipaddress.IPv4Network(r["dst"], strict=False)
        for r in routes
        if r.get("dst") not in (None, "default") and r.get("type") not in ("local", "broadcast")
    ]
    free = [
        i
        for i in range(start, 251)
        if not any(n.overlaps(ipaddress.IPv4Network(f"10.209.{i}.0/30")) for n in taken)
    ]
    if len(free) < count:
        pytest.skip("no free lab index")
    return free[:count]


def _mounts_mentioning(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


def _pids_mentioning(path: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if str(path).encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_gone(host: LabHost, pids: Sequence[int] = ()) -> None:
    assert host.netns not in _ip("netns", "list").stdout.split()
    assert not (Path("/run/netns") / host.netns).exists()
    assert _ip("link", "show", "dev", host.veth).returncode != 0
    assert _ip("-4", "route", "show", str(host.subnet)).stdout.strip() == ""
    assert [p for p in pids if _alive(p)] == []
    assert [p for p in _pids_mentioning(host.root_dir) if _alive(p)] == []
    assert _mounts_mentioning(host.root_dir) == []
    assert not (host.root_dir / "run").exists()
    router_links = _ip("-n", ROUTER_NETNS, "link", "show", "dev", f"crr-{host.name}")
    assert router_links.returncode != 0


@pytest.fixture
def make_host() -> Iterator[Callable[[], LabHost]]:
    _need("ip", "nsenter", "unshare", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64")
    made: list[LabHost] = []
    dirs: list[Path] = []
    indexes = iter(_free_indexes(4))

    def make() -> LabHost:
        root = Path(tempfile.mkdtemp(prefix="crl-lab-", dir="/tmp"))
        dirs.append(root)
        host = LabHost(f"t{uuid.uuid4().hex[:6]}", next(indexes), root)
        made.append(host)
        return host

    try:
        yield make
    finally:
        for host in made:
            host.stop()
        for root in dirs:
            shutil.rmtree(root, ignore_errors=True)


def _qemu_pid(host: LabHost, domain: str) -> int:
    return int((host.root_dir / "run" / "libvirt" / "qemu" / f"{domain}.pid").read_text())


def _netns_pids(host: LabHost) -> list[int]:
    return [int(p) for p in _ip("netns", "pids", host.netns).stdout.split()]


def test_lab_host_runs_a_tcg_domain_and_serves_tcp(make_host: Callable[[], LabHost]) -> None:
    host = make_host()
    t0 = time.monotonic()
    host.start()
    print(f"lab host started in {time.monotonic() - t0:.2f} s")
    assert host.address == f"10.209.{host.index}.2"
    assert host.gateway == f"10.209.{host.index}.1"
    assert host.run(["hostname"]).stdout.strip() == host.netns

    conn = libvirt.open(host.libvirt_uri())
    try:
        dom = conn.createXML(TINY_DOMAIN.format(name="tiny"), 0)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        pid = _qemu_pid(host, "tiny")
        assert pid in _netns_pids(host)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"qemu-system-x86_64" in cmdline[0]
        assert b"tcg" in b" ".join(cmdline)
        dom.destroy()
        assert _wait(lambda: not _alive(pid))
        assert conn.listDomainsID() == []
    finally:
        conn.close()

    # libvirtd also listens on TCP at the lab host's address (for migration).
    tcp = libvirt.open(f"qemu+tcp://{host.address}/system")
    try:
        assert tcp.getHostname() == host.netns
    finally:
        tcp.close()

    addrs = json.loads(_ip("-j", "-n", host.netns, "addr").stdout)
    assert host.address in [a["local"] for i in addrs for a in i["addr_info"]]

    server = host.popen(
        [sys.executable, "-m", "http.server", "--bind", host.address, "8099"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=host.root_dir,
    )
    try:
        reply = b""

        def answered() -> bool:
            nonlocal reply
            try:
                with socket.create_connection((host.address, 8099), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    reply = s.recv(64)
                return True
            except OSError:
                return False

        assert _wait(answered, timeout=15)
        assert reply.startswith(b"HTTP/1.0 200")
        assert server.pid in _netns_pids(host)

        holder = _netns_pids(host)
        t0 = time.monotonic()
        host.stop()
        print(f"lab host stopped in {time.monotonic() - t0:.2f} s")
        assert server.wait(timeout=10) != 0  # killed by stop()
        assert_gone(host, holder)
        host.stop()  # idempotent
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_two_lab_hosts_side_by_side(make_host: Callable[[], LabHost]) -> None:
    one, two = make_host(), make_host()
    one.start()
    two.start()
    conns = [libvirt.open(h.libvirt_uri()) for h in (one, two)]
    try:
        # The same domain name on both: they are different hosts to libvirt.
        for conn in conns:
            conn.createXML(TINY_DOMAIN.format(name="same"), 0)
        pids = [_qemu_pid(h, "same") for h in (one, two)]
        assert pids[0] != pids[1]
        assert pids[0] in _netns_pids(one) and pids[0] not in _netns_pids(two)
        assert pids[1] in _netns_pids(two) and pids[1] not in _netns_pids(one)
        uuids = {c.getCapabilities().split("<uuid>")[1].split("</uuid>")[0] for c in conns}
        assert len(uuids) == 2
        for h in (one, two):
            with socket.create_connection((h.address, 16509), timeout=5):
                pass
        # Lab hosts reach each other (through the lab router), as migration needs ...
        for here, there in ((one, two), (two, one)):
            uri = f"qemu+tcp://{there.address}/system"
            out = here.run(["virsh", "-c", uri, "hostname"], timeout=30).stdout
            assert out.strip() == there.netns
        # ... but nothing beyond the lab network.
        for h in (one, two):
            routes = json.loads(_ip("-j", "-n", h.netns, "route", "show").stdout)
            assert {r["dst"] for r in routes} == {str(h.subnet), f"10.209.{h.index}.4/30", "10.209.0.0/16"}
    finally:
        for conn in conns:
            conn.close()
    one_pids = _netns_pids(one)
    one.stop()
    assert_gone(one, one_pids)
    # Stopping one leaves the other running.
    assert pids[1] in _netns_pids(two) and _alive(pids[1])
    two_pids = _netns_pids(two)
    two.stop()
    assert_gone(two, two_pids)


def test_start_of_a_running_name_is_a_conflict(make_host: Callable[[], LabHost]) -> None:
    host = make_host()
    host.start()
    twin = LabHost(host.name, host.index, Path(tempfile.mkdtemp(prefix="crl-lab-", dir="/tmp")))
    try:
        with pytest.raises(Conflict):
            twin.start()
        assert host.run(["virsh", "-c", "qemu:///system", "version"]).returncode == 0
    finally:
        shutil.rmtree(twin.root_dir, ignore_errors=True)


def test_failed_start_cleans_up(make_host: Callable[[], LabHost], monkeypatch: pytest.MonkeyPatch) -> None:
    host = make_host()

    def boom(self: LabHost) -> None:
        raise RuntimeError("simulated failure after the mounts")

    monkeypatch.setattr(LabHost, "_start_daemons", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        host.start()
    assert_gone(host)
    host.stop()
    assert_gone(host)


@pytest.mark.parametrize("step", ["_start_holder", "_bind_mounts", "_start_daemons"])
def test_stop_cleans_a_half_built_host(
    make_host: Callable[[], LabHost], monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """start() fails half way and (unlike the real start) leaves everything: stop() cleans."""
    host = make_host()
    real_step, real_stop = getattr(LabHost, step), LabHost.stop
    seen: list[int] = []

    def step_then_fail(self: LabHost) -> None:
        real_step(self)
        seen.extend(_netns_pids(self))
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(LabHost, step, step_then_fail)
    monkeypatch.setattr(LabHost, "stop", lambda self: None)
    with pytest.raises(RuntimeError, match="simulated"):
        host.start()
    assert host.netns in _ip("netns", "list").stdout.split()
    assert seen  # the holder at least
    monkeypatch.undo()
    real_stop(host)
    assert_gone(host, seen)

    # A second object of the same name cleans up after a lost one too.
    monkeypatch.setattr(LabHost, step, step_then_fail)
    monkeypatch.setattr(LabHost, "stop", lambda self: None)
    seen.clear()
    with pytest.raises(RuntimeError, match="simulated"):
        host.start()
    monkeypatch.undo()
    LabHost(host.name, host.index, host.root_dir).stop()
    assert_gone(host, seen)


def test_stop_of_a_never_started_host_is_a_no_op(make_host: Callable[[], LabHost]) -> None:
    host = make_host()
    host.stop()
    host.stop()
    assert_gone(host)


@pytest.mark.parametrize(
    ("name", "index"),
    [("", 1), ("UPPER", 1), ("toolongna", 1), ("-lead", 1), ("a_b", 1), ("ok", 0), ("ok", 251)],
)
def test_invalid_name_or_index(name: str, index: int) -> None:
    with pytest.raises(InvalidInput):
        LabHost(name, index, Path("/tmp/crl-lab-invalid"))
