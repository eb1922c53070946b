"""The cluster, for real: a 3-host `corral lab` (engine + hosts joined with tokens, network
`default` a VXLAN overlay across them, image `tiny` built on the first) and tiny guests.

One lab for the module (its own root, names and HOME; brought down at the end even when a
test fails), driven through the CLI as a user would. Tests run in order and build on each
other: the guests that boot early keep running for the power-off test. Traffic stays in the
lab's namespaces: the lab hosts' underlay is 10.209.0.0/16, the guests' network 10.212.0.0/24
is isolated.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from clusterutil import LabEngine, host, host_has_image, lab_engine
from labutil import CORRAL, LabCli, assert_nothing_left, lab_session
from nodeutil import wait_for
from websockets.sync.client import connect

from corral.agent.join import join as agent_join
from corral.engine.tls import ensure_ca, sign_host
from corral.host_identity import Identity
from corral.pki import join_token, make_csr

pytestmark = pytest.mark.integration

HEARTBEAT_TIMEOUT_S = 5.0  # the engine's default (`corral up --heartbeat-timeout`)
LAB_NET = ipaddress.IPv4Network("10.212.0.0/24")
TINY = ("--image", "tiny", "--memory", "128M")


@pytest.fixture(scope="module")
def lab(tiny_cache: Path) -> Iterator[LabCli]:
    with lab_session(3, "shared", 600, "lc", "--deb-cache", str(tiny_cache)) as cli:
        yield cli


@pytest.fixture(scope="module")
def engine(lab: LabCli) -> Iterator[LabEngine]:
    yield from lab_engine(lab)


def test_three_hosts_joined_and_the_default_network_spans_them(lab: LabCli) -> None:
    hosts = {h["name"]: h for h in lab.json("host", "list")}
    assert {n: h["status"] for n, h in hosts.items()} == {host(lab, i): "up" for i in (1, 2, 3)}
    nets = {n["name"]: n for n in lab.json("net", "list")}
    default = nets["default"]
    assert default["status"] == "ready" and default["subnet"] == str(LAB_NET)
    assert default["overlay"] == "vxlan" and default["mode"] == "isolated"
    images = {i["name"]: i for i in lab.json("image", "list")}
    assert images["tiny"]["status"] == "ready"
    # Built on the first host only: the others get it when a VM needs it there.
    assert host_has_image(lab, host(lab, 1), "tiny")
    assert not host_has_image(lab, host(lab, 2), "tiny")
    assert not host_has_image(lab, host(lab, 3), "tiny")


def _join_cli(lab: LabCli, engine: LabEngine, token: str, name: str, state_dir: Path,
              ) -> subprocess.CompletedProcess[str]:
    """`corral agent join` from this machine (refused joins never reach serving)."""
    return subprocess.run(
        [*CORRAL, "agent", "join", engine.url, "--token", token, "--name", name,
         "--address", "10.209.254.2", "--listen", "127.0.0.1", "--port", "1",
         "--state-dir", str(state_dir)],
        env=lab.env, capture_output=True, text=True, timeout=60, check=False)


def test_a_bad_a_reused_token_and_a_foreign_certificate_are_refused(
        lab: LabCli, engine: LabEngine, tmp_path: Path) -> None:
    fingerprint = engine.sdk().create_join_token().ca_fingerprint
    bad = _join_cli(lab, engine, join_token(fingerprint, "not-the-secret"), "ghost1",
                    tmp_path / "a")
    assert bad.returncode == 2 and "unknown join token" in bad.stderr
    assert not Identity.of(tmp_path / "a").exists()

    token = lab.run("host", "token", "--ttl", "5m").stdout.strip()
    ghost = Identity.of(tmp_path / "g")
    agent_join(engine.url, token, "ghost2", "https://10.209.254.3:8444", ["10.209.254.3"],
               ghost)  # the join API, as an agent's first start calls it
    try:
        again = _join_cli(lab, engine, token, "ghost3", tmp_path / "b")
        assert again.returncode == 2 and "already used (by host ghost2)" in again.stderr
        assert "ghost3" not in engine.host_states()
    finally:
        lab.run("host", "remove", "ghost2", "--force", check=False)
    assert "ghost2" not in engine.host_states()

    # A certificate of another CA (another engine's), on both sides of the mutual TLS; the
    # same request with the certificate the lab gave (a host's, the engine's) is answered.
    other = tmp_path / "other-ca"
    ensure_ca(other)
    key, csr = make_csr("intruder", ["10.209.254.4"])
    intruder = (tmp_path / "intruder.pem", tmp_path / "intruder.key")
    intruder[0].write_bytes(sign_host(other, csr.decode(), "intruder"))
    intruder[1].write_bytes(key)
    member = Path(lab.state()["hosts"][host(lab, 1)]["root_dir"]) / "agent" / "identity"
    tls = engine.data_dir / "tls"
    agent_url = f"https://{lab.hosts()[host(lab, 2)]['address']}:8444/v1/host"
    for method, url, ca, good in (
            ("POST", f"{engine.url}/api/v1/agent/report", engine.config()["ca"],
             (member / "cert.pem", member / "key.pem")),
            ("GET", agent_url, None, (tls / "engine.pem", tls / "engine.key"))):
        assert _tls_call(method, url, ca, good) is not None  # answered (422, 200)
        assert _tls_call(method, url, ca, intruder) is None, url  # refused in the handshake


def _tls_call(method: str, url: str, ca: str | None, cert: tuple[Path, Path]) -> int | None:
    """The HTTP status of a call showing ``cert``, or None when TLS refused it."""
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
    ctx.load_cert_chain(*cert)
    try:
        return httpx.request(method, url, json={} if method == "POST" else None, verify=ctx,
                             timeout=10).status_code
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return None


def test_a_create_on_a_host_without_the_image_fetches_it_and_boots(
        lab: LabCli, engine: LabEngine) -> None:
    target = host(lab, 3)
    assert not host_has_image(lab, target, "tiny")
    lab.run("vm", "create", "far", *TINY, "--host", target, "--start", timeout=300)
    assert engine.vm("far")["host"] == target
    assert host_has_image(lab, target, "tiny")
    address = engine.wait_booted("far")
    assert ipaddress.IPv4Address(address) in LAB_NET  # DHCP from the serving host, via VXLAN


def test_vms_spread_across_hosts_boot_and_reach_each_other(
        lab: LabCli, engine: LabEngine) -> None:
    for vm in ("v1", "v2"):
        lab.run("vm", "create", vm, *TINY, "--start", timeout=300)
    where = {vm: engine.vm(vm)["host"] for vm in ("far", "v1", "v2")}
    assert sorted(where.values()) == [host(lab, i) for i in (1, 2, 3)], where  # spread
    addresses = {vm: engine.wait_booted(vm) for vm in where}
    assert len(set(addresses.values())) == 3, addresses  # one DHCP server: no address twice
    # One segment across hosts: a guest reaches a guest of another host.
    ping = engine.console_run("v1", f"ping -c 1 -W 5 {addresses['far']} >/dev/null && echo ok",
                              timeout=60)
    assert ping.output == "ok", (where, addresses, ping)
    # Isolated: nothing beyond the segment, neither the lab's engine nor this machine.
    engine_ip = lab.state()["engine"]["address"]
    machine_ip = engine_ip.rsplit(".", 1)[0] + ".1"
    for outside in (engine_ip, machine_ip):
        probe = engine.console_run(
            "v1", f"ping -c 1 -W 2 {outside} >/dev/null 2>&1 && echo reached || echo no",
            timeout=30)
        assert probe.output == "no", (outside, probe)


def _rfb_banner(engine: LabEngine, vm: str) -> bytes:
    """The first bytes of the VM's graphical console, through the engine's VNC WebSocket
    (what the web UI's noVNC opens), relayed by the VM's host's agent over mutual TLS."""
    cfg = engine.config()
    tls = ssl.create_default_context(cafile=cfg["ca"])
    with connect(f"wss://{urlsplit(cfg['url']).netloc}/api/v1/vms/{vm}/vnc-websocket",
                 ssl=tls, additional_headers={"Authorization": f"Bearer {cfg['token']}"},
                 open_timeout=20, close_timeout=5) as ws:
        msg = ws.recv(timeout=20)
    return msg if isinstance(msg, bytes) else msg.encode()


def test_the_graphical_console_of_a_vm_on_each_host_answers_through_the_engine(
        lab: LabCli, engine: LabEngine) -> None:
    """The lab's engine runs on none of the hosts: every VM's VNC is relayed by its host."""
    for vm in ("far", "v1", "v2"):
        assert _rfb_banner(engine, vm).startswith(b"RFB 003.0"), vm


def test_strict_anti_affinity_keeps_two_apart_and_refuses_a_third(lab: LabCli) -> None:
    eligible = [host(lab, 1), host(lab, 2)]
    lab.run("vm", "group", "create", "aa", "--policy", "anti-affinity", "--strict")
    try:
        for h in eligible:
            lab.run("host", "tag", "add", h, "aa")
        for vm in ("a1", "a2"):
            lab.run("vm", "create", vm, *TINY, "--group", "aa", "--host-tag", "aa")
        placed = {json.loads(lab.run("vm", "show", vm, "--output", "json").stdout)["host"]
                  for vm in ("a1", "a2")}
        assert placed == set(eligible)
        third = lab.run("vm", "create", "a3", *TINY, "--group", "aa", "--host-tag", "aa",
                        check=False)
        assert third.returncode != 0
        said = " ".join(third.stderr.split())
        assert "no host can take a3" in said and "group" in said, said
        assert "a3" not in {v["name"] for v in lab.json("vm", "list")}
    finally:
        for vm in ("a1", "a2", "a3"):
            lab.run("vm", "delete", vm, "--force", check=False)
        lab.run("vm", "group", "delete", "aa", check=False)
        for h in eligible:
            lab.run("host", "tag", "remove", h, "aa", check=False)


def test_a_host_that_joins_later_gets_the_network_and_pool_and_runs_a_vm(
        lab: LabCli, engine: LabEngine) -> None:
    lab.run("lab", "add-host", timeout=300)
    late = host(lab, 4)
    assert engine.host_states()[late] == "up"
    lab.run("vm", "create", "late", *TINY, "--host", late, "--pool", "shared", "--start",
            timeout=300)
    try:
        assert engine.vm("late")["host"] == late
        address = engine.wait_booted("late")  # its DHCP answer came over the overlay
        assert ipaddress.IPv4Address(address) in LAB_NET
    finally:
        lab.run("vm", "delete", "late", "--force", check=False, timeout=120)


def test_power_off_makes_a_host_unresponsive_while_the_others_keep_running(
        lab: LabCli, engine: LabEngine) -> None:
    # A host with a guest that does not serve the network's DHCP (the first host does).
    victim_vm = next(vm for vm in ("v1", "v2") if engine.vm(vm)["host"] != host(lab, 1))
    victim = engine.vm(victim_vm)["host"]
    others = [vm for vm in ("far", "v1", "v2") if vm != victim_vm]
    lab.run("lab", "fault", victim, "power-off")
    wait_for(f"{victim} to be unresponsive", lambda: engine.host_states()[victim]
             == "unresponsive", timeout=HEARTBEAT_TIMEOUT_S + 5, every=0.5)
    states = engine.host_states()
    assert all(s == "up" for h, s in states.items() if h != victim), states
    for vm in others:
        assert engine.vm(vm)["state"] == "running"
        assert engine.console_run(vm, "echo alive").output == "alive"

    lab.run("lab", "fault", victim, "power-on", timeout=180)  # waits for the engine's `up`
    assert engine.host_states()[victim] == "up"
    wait_for(f"{victim_vm} to be reported stopped",
             lambda: engine.vm(victim_vm)["state"] == "stopped", timeout=30)
    assert all(engine.vm(vm)["state"] == "running" for vm in others)


def test_lab_down_leaves_nothing_behind(lab: LabCli, engine: LabEngine) -> None:
    if engine._sdk is not None:
        engine._sdk.close()
        engine._sdk = None
    lab.run("lab", "down", timeout=180)
    assert_nothing_left(lab)
