"""`python bench/network.py`: corral's networks against the raw tools; writes its own section
(``<!-- network -->`` ... ``<!-- /network -->``) of docs/benchmarks.md.

1. Network create until DHCP answers. corral: on a node of its own (lab host ``nwbench``,
   index 71, ``corral up`` inside; no image, no VM), ``Client.create_network(NetworkCreate(
   mode=isolated, subnet=...))`` and the operation waited for, then a DHCP client (busybox
   udhcpc, in a namespace joined to the new bridge by a veth) until it holds a lease. Raw: in
   the same lab host, by hand: ``ip link add ... type bridge``, ``ip addr add``, ``ip link set
   up``, ``dnsmasq`` with the config corral renders, then the same DHCP client. Rounds
   interleaved, each network deleted before the next round.
2. Guest-to-guest TCP throughput: iperf3 (one stream, 5 s) between two namespaces on a Linux
   bridge and on an Open vSwitch bridge (userspace datapath: the only one on hosts without
   the kernel module), both built by corral's agent code, against a plain veth pair between
   the same kind of namespaces, measured in the same run, repeated and interleaved.

Traffic stays in namespaces made here (10.210.180.0/22 and the lab host's 10.209.71.0/30);
everything is removed at the end, whatever happened. Needs root, iperf3, openvswitch-switch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import outcome
import sections
from corral.agent.network import NetworkSpec, dnsmasq
from corral.api import NetworkCreate
from corral.client import Client
from corral.lab import LabHost
from timing import median, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
LAB_NAME, LAB_INDEX, PORT = "nwbench", 71, 8443
CORRAL = [sys.executable, "-m", "corral.cli.main"]
NS = "nwb"  # prefix of the namespaces made here

HELPER = r"""
import json, sys
from pathlib import Path
from corral.agent import network as n
op, spec, state = sys.argv[1], n.NetworkSpec(**json.loads(sys.argv[2])), Path(sys.argv[3])
getattr(n, op + "_network")(spec, state)
"""


class BenchError(Exception):
    pass


def sh(argv: list[str], timeout: float = 60, check: bool = True,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env} if env else None, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns(name: str) -> str:
    full = f"{NS}-{name}"
    sh(["ip", "netns", "add", full])
    sh(["ip", "-n", full, "link", "set", "lo", "up"])
    return full


def del_netns(name: str) -> None:
    """Kill what runs in the namespace (by pid: only what this benchmark started there)."""
    for pid in sh(["ip", "netns", "pids", name], check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.1)
    sh(["ip", "netns", "del", name], check=False)


def destroy_netns() -> None:
    for line in sh(["ip", "netns", "list"]).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{NS}-"):
            del_netns(name)


def udhcpc(ns: str, port: str) -> str:
    proc = sh(["ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", port, "-n", "-q", "-t", "20",
               "-T", "1", "-s", "/bin/true"], timeout=60)
    m = re.search(r"lease of (\S+) obtained", proc.stdout + proc.stderr)
    if not m:
        raise BenchError(f"no DHCP lease: {proc.stdout} {proc.stderr}")
    return m.group(1)


def lease_on(lab_ns: str, bridge: str, client_ns: str, port: str) -> float:
    """Seconds to join ``bridge`` with a veth from ``client_ns`` and get a DHCP lease."""
    t0 = time.perf_counter()
    sh(["ip", "-n", lab_ns, "link", "add", f"h{port}", "type", "veth", "peer", "name", port,
        "netns", client_ns])
    sh(["ip", "-n", lab_ns, "link", "set", f"h{port}", "master", bridge, "up"])
    sh(["ip", "-n", client_ns, "link", "set", port, "up"])
    udhcpc(client_ns, port)
    return time.perf_counter() - t0


# -- 1. create until DHCP answers -----------------------------------------------------------

@dataclass
class CreateResult:
    corral_total: list[float] = field(default_factory=list)
    corral_api: list[float] = field(default_factory=list)  # POST until the operation is done
    raw_total: list[float] = field(default_factory=list)
    raw_setup: list[float] = field(default_factory=list)
    dhcp: list[float] = field(default_factory=list)  # join + lease, both paths


def raw_network(host: LabHost, octet: int, state: Path) -> tuple[str, Path, float]:
    """ip + dnsmasq by hand, the config corral would render; (bridge, pid file, seconds)."""
    spec = NetworkSpec(name=f"raw{octet}", bridge=f"rawbr{octet}", subnet=f"10.210.{octet}.0/24",
                       gateway=f"10.210.{octet}.1", dhcp_start=f"10.210.{octet}.128",
                       dhcp_end=f"10.210.{octet}.254", mode="isolated", dns_domain="corral")
    paths = dnsmasq.Paths.of(spec, state)
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.conf.write_text(dnsmasq.render_config(spec, paths))
    t0 = time.perf_counter()
    for argv in (["ip", "link", "add", spec.bridge, "type", "bridge", "stp_state", "0",
                  "forward_delay", "0"],
                 ["ip", "addr", "add", f"{spec.gateway}/24", "dev", spec.bridge],
                 ["ip", "link", "set", spec.bridge, "up"],
                 ["dnsmasq", f"--conf-file={paths.conf}"]):
        host.run(argv, timeout=30)
    return spec.bridge, paths.pid, time.perf_counter() - t0


def run_create(host: LabHost, client: Client, rounds: int, state: Path) -> CreateResult:
    res = CreateResult()
    lab_ns = host.netns
    for i in range(rounds + 1):  # round 0 warms up both paths
        octet_c, octet_r = 180 + (i % 2) * 2, 181 + (i % 2) * 2
        for which in (("corral", "raw") if i % 2 == 0 else ("raw", "corral")):
            cns = netns(f"c{i}{which[0]}")
            if which == "corral":
                name = f"bn{i}"
                t0 = time.perf_counter()
                op = client.create_network(NetworkCreate(name=name, mode="isolated",
                                                         subnet=f"10.210.{octet_c}.0/24"))
                client.wait(op.id, timeout=60)
                t_api = time.perf_counter() - t0
                t_dhcp = lease_on(lab_ns, f"cr-{name}", cns, f"p{i}c")
                client.wait(client.delete_network(name).id, timeout=60)
                if i:
                    res.corral_api.append(t_api)
                    res.corral_total.append(t_api + t_dhcp)
                    res.dhcp.append(t_dhcp)
            else:
                bridge, pid_file, t_setup = raw_network(host, octet_r, state)
                t_dhcp = lease_on(lab_ns, bridge, cns, f"p{i}r")
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)  # the dnsmasq we started
                host.run(["ip", "link", "del", bridge])
                if i:
                    res.raw_setup.append(t_setup)
                    res.raw_total.append(t_setup + t_dhcp)
                    res.dhcp.append(t_dhcp)
            del_netns(cns)
        say(f"create+DHCP round {i}/{rounds}")
    return res


# -- 2. throughput --------------------------------------------------------------------------

@dataclass
class Throughput:
    gbps: dict[str, list[float]] = field(default_factory=dict)


def iperf(server_ns: str, client_ns: str, server_ip: str, seconds: int) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "--forceflush",
                               "-B", server_ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 10
        assert server.stdout is not None
        while "listening" not in server.stdout.readline().lower():
            if time.monotonic() > deadline or server.poll() is not None:
                raise BenchError("iperf3 server did not start")
        out = sh(["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-t",
                  str(seconds), "-J"], timeout=seconds + 30).stdout
        bps = float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
        return bps / 1e9
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)


def agent_network(host_ns: str, spec: NetworkSpec, state: Path, env: dict[str, str]) -> None:
    sh(["ip", "netns", "exec", host_ns, sys.executable, "-c", HELPER, "ensure",
        json.dumps(vars(spec) | {"peers": []}), str(state)], timeout=120, env=env)


def run_throughput(root: Path, repeats: int, seconds: int) -> Throughput:
    res = Throughput()
    h, a, b = netns("h"), netns("a"), netns("b")
    ovs_dir = root / "ovs"
    env = {"OVS_RUNDIR": str(ovs_dir), "OVS_DBDIR": str(ovs_dir), "OVS_LOGDIR": str(ovs_dir)}
    lb = NetworkSpec(name="tpl", bridge="crtp-lb", subnet="10.210.184.0/24",
                     gateway="10.210.184.1", dhcp_start="10.210.184.100",
                     dhcp_end="10.210.184.199", mode="isolated")
    ov = NetworkSpec(name="tpo", bridge="crtp-ovs", subnet="10.210.185.0/24",
                     gateway="10.210.185.1", dhcp_start="10.210.185.100",
                     dhcp_end="10.210.185.199", mode="isolated", backend="ovs")
    agent_network(h, lb, root / "state", env)
    agent_network(h, ov, root / "state", env)
    vsctl = ["ip", "netns", "exec", h, "ovs-vsctl", f"--db=unix:{ovs_dir}/db.sock", "--timeout=10"]
    # one port per guest namespace on each bridge, as libvirt plugs a tap
    for ns, n in ((a, 1), (b, 2)):
        for kind, bridge, octet in (("l", "crtp-lb", 184), ("o", "crtp-ovs", 185)):
            sh(["ip", "-n", h, "link", "add", f"h{kind}{n}", "type", "veth", "peer", "name",
                f"e{kind}", "netns", ns])
            if kind == "l":
                sh(["ip", "-n", h, "link", "set", f"h{kind}{n}", "master", bridge])
            else:
                sh([*vsctl, "add-port", bridge, f"h{kind}{n}"], env=env)
            sh(["ip", "-n", h, "link", "set", f"h{kind}{n}", "up"])
            sh(["ip", "-n", ns, "addr", "add", f"10.210.{octet}.{10 + n}/24", "dev", f"e{kind}"])
            sh(["ip", "-n", ns, "link", "set", f"e{kind}", "up"])
    sh(["ip", "-n", a, "link", "add", "ev", "type", "veth", "peer", "name", "ev", "netns", b])
    for ns, n in ((a, 1), (b, 2)):
        sh(["ip", "-n", ns, "addr", "add", f"10.210.186.{n}/24", "dev", "ev"])
        sh(["ip", "-n", ns, "link", "set", "ev", "up"])
    paths = {"veth pair": "10.210.186.2", "Linux bridge": "10.210.184.12",
             "Open vSwitch (netdev)": "10.210.185.12"}
    order = list(paths)
    iperf(b, a, paths["veth pair"], 1)  # warm-up
    for r in range(repeats):
        for what in order if r % 2 == 0 else reversed(order):
            res.gbps.setdefault(what, []).append(iperf(b, a, paths[what], seconds))
        say(f"throughput round {r + 1}/{repeats}: " + ", ".join(
            f"{k} {v[-1]:.2f}" for k, v in res.gbps.items()))
    return res


# -- report ---------------------------------------------------------------------------------

def _first_line(argv: list[str]) -> str:
    try:
        out = sh(argv, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def facts() -> list[str]:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [f"kernel {os.uname().release}, {os.cpu_count()} CPUs",
            _first_line(["ovs-vswitchd", "--version"]), _first_line(["iperf3", "--version"]),
            _first_line(["dnsmasq", "--version"]), f"load average (1/5/15 min): {load}"]


def section(started: str, duration: float, create: CreateResult | None, tp: Throughput | None,
            error: str | None, at_start: list[str]) -> str:
    def ms(values: list[float]) -> str:
        return f"{median(values) * 1000:.1f} ms" if values else "n/a"

    lines = ["## Networks (`bench/network.py`)", "",
             f"Written by `bench/network.py` on {started}; the run took {duration / 60:.1f} min. "
             "Raw tools measured in the same run, interleaved. At the "
             f"start: {'; '.join(at_start)}. At the end: {facts()[-1]}.", ""]
    if error:
        lines += sections.error_lines("**The run failed:**", error)
    if create and create.corral_total:
        ratio = median(create.corral_total) / median(create.raw_total)
        lines += [
            "### Create a network until DHCP answers", "",
            "corral: `Client.create_network(NetworkCreate(mode='isolated', subnet=...))`, the "
            "operation waited for, then a namespace joins the new bridge with a veth and busybox "
            "udhcpc asks for a lease. Raw: `ip link add type bridge`, `ip addr add`, `ip link set "
            "up` and `dnsmasq` with the config corral renders, run one by one inside the same lab "
            "host, then the same DHCP client. One warm-up round not counted.", "",
            "|  | n | median | min | max |", "| --- | --- | --- | --- | --- |",
            f"| corral: API until DHCP lease | {len(create.corral_total)} | "
            f"{ms(create.corral_total)} | {min(create.corral_total) * 1000:.1f} ms | "
            f"{max(create.corral_total) * 1000:.1f} ms |",
            f"| raw: ip + dnsmasq until DHCP lease | {len(create.raw_total)} | "
            f"{ms(create.raw_total)} | {min(create.raw_total) * 1000:.1f} ms | "
            f"{max(create.raw_total) * 1000:.1f} ms |",
            f"| corral: POST until the operation is done (info) | {len(create.corral_api)} | "
            f"{ms(create.corral_api)} | | |",
            f"| raw: the four commands (info) | {len(create.raw_setup)} | "
            f"{ms(create.raw_setup)} | | |",
            f"| veth + udhcpc lease, both paths (info) | {len(create.dhcp)} | "
            f"{ms(create.dhcp)} | | |", "",
            f"Ratio of medians corral / raw: **{ratio:.2f}**.", ""]
    if tp and tp.gbps:
        base = median(tp.gbps.get("veth pair", [float("nan")]))
        lines += [
            "### Guest-to-guest TCP throughput", "",
            "iperf3, one stream, between two namespaces each joined by a veth to the bridge "
            "(where libvirt plugs a guest's tap; an OVS port for Open vSwitch), bridges built "
            "by corral's agent code (isolated networks); against a plain veth pair between two "
            "namespaces. Paths interleaved, order alternating.", "",
            "| path | median | runs (Gbit/s) | vs veth pair |", "| --- | --- | --- | --- |"]
        for what, values in tp.gbps.items():
            lines.append(f"| {what} | {median(values):.2f} Gbit/s | "
                         f"{', '.join(f'{v:.2f}' for v in values)} | {median(values) / base:.2f} |")
        lines += ["", "Open vSwitch's userspace datapath moves every packet through "
                  "ovs-vswitchd (AF_PACKET in, out), on the same 2 CPUs as iperf3 itself.", ""]
    return "\n".join(lines) + "\n"


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--root", type=Path, default=Path("/tmp/corral-bench-network"))
    p.add_argument("--rounds", type=int, default=5, help="create+DHCP rounds per path")
    p.add_argument("--repeats", type=int, default=5, help="iperf3 runs per path")
    p.add_argument("--seconds", type=int, default=5, help="length of one iperf3 run")
    p.add_argument("--report", type=Path, default=REPORT)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/network.py needs root (namespaces, bridges)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    measured = sections.Measured.now()
    started = f"{measured.started:%Y-%m-%d %H:%M} UTC"
    t_start = time.monotonic()
    at_start = facts()
    create: CreateResult | None = None
    tp: Throughput | None = None
    error = None
    host = LabHost(LAB_NAME, LAB_INDEX, root / "host")
    data_dir = root / "node"
    try:
        destroy_netns()
        host.stop()  # one left by an interrupted run
        sh(["rm", "-rf", str(data_dir), str(root / "ovs"), str(root / "state")])
        host.start()
        host.run([*CORRAL, "up", "--detach", "--data-dir", str(data_dir), "--port", str(PORT)],
                 timeout=180)
        cfg: dict[str, Any] = json.loads((data_dir / "client.json").read_text())
        say("node up; measuring create until DHCP answers")
        with Client(f"https://{host.address}:{PORT}", cfg["token"], cfg["ca"]) as client:
            create = run_create(host, client, args.rounds, root / "state")
        say("measuring throughput")
        tp = run_throughput(root, args.repeats, args.seconds)
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        error = f"{type(exc).__name__}: {exc}"
        say(f"benchmark failed: {error}")
    finally:
        destroy_netns()
        with contextlib.suppress(Exception):
            host.run([*CORRAL, "down", "--data-dir", str(data_dir)], timeout=60, check=False)
        host.stop()
    text = section(started, time.monotonic() - t_start, create, tp, error, at_start)
    sections.write_section(args.report, "network", text, measured)
    print(text)
    return outcome.finish(error)  # no target: ratios against the raw tools, for information


if __name__ == "__main__":
    sys.exit(main())
