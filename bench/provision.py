"""Provisioning benchmark: `vm create` with a cloud-init seed, from the API call to SSH answering.

Runs alone (`.venv/bin/python bench/provision.py`, as root): starts its own lab host
("cibench", index 59: a network + mount namespace with its own libvirtd, see corral.lab) and
a corral node in it like bench/benchnode.py does, builds the tiny image, then measures
``--runs`` times (median reported), interleaved with a raw twin:

- corral: SDK ``create_vm`` (tiny image, 128M, an SSH key, a host name, a runcmd, start)
  until the guest's SSH server sends its banner, then until ``ssh root@IP true`` returns.
  The breakdown comes from the operation's own progress events (their server timestamps):
  disk, seed build (engine renders the files, agent writes the ISO), domain define + start;
  then guest boot to the SSH banner.
- raw: ``virsh create`` of the same domain XML (renamed; its own overlay and seed ISO, made
  beforehand, untimed) until the banner and the login: the floor corral is compared with.

The guest's address is read from the network's dnsmasq lease file by MAC, and SSH is polled
from inside the lab host (the guests' network lives there) by a small poller process. Each
VM is deleted right after its measurement. Appends (or replaces) its section of
docs/benchmarks.md between ``<!-- provision -->`` and ``<!-- /provision -->``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import outcome
import sections
from benchnode import PORT, BenchNode, seed_debs
from corral.api import CloudInit, VmCreate
from corral.client import Client
from corral.cloudinit import build_iso, render
from corral.domainxml import Domain
from corral.lab import LabHost
from guests import not_booted
from timing import BenchError, median, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
NAME, INDEX = "cibench", 59
RUNCMD = "#cloud-config\nruncmd:\n  - echo provisioned > /root/provisioned\n"

# Runs inside the lab host: waits for MAC's lease, then the SSH banner, then a login.
POLLER = r"""
import json, socket, subprocess, sys, time
mac, leases, key, deadline = sys.argv[1], sys.argv[2], sys.argv[3], time.time() + float(sys.argv[4])
ip = None
while ip is None and time.time() < deadline:
    try:
        for line in open(leases):
            f = line.split()
            if len(f) >= 3 and f[1].lower() == mac:
                ip = f[2]
    except OSError:
        pass
    time.sleep(0.02)
if ip is None:
    sys.exit("no lease for " + mac)
t_lease = time.time()
banner = None
while banner is None and time.time() < deadline:
    try:
        with socket.create_connection((ip, 22), timeout=1) as s:
            s.settimeout(2)
            data = s.recv(64)
            if data.startswith(b"SSH-"):
                banner = time.time()
    except OSError:
        time.sleep(0.05)
if banner is None:
    sys.exit("no SSH banner from " + ip)
ssh = ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes", "-o",
       "BatchMode=yes", "root@" + ip, "cat /root/provisioned 2>/dev/null; hostname"]
out = ""
while time.time() < deadline:
    p = subprocess.run(ssh, capture_output=True, text=True, timeout=30)
    if p.returncode == 0 and "provisioned" in p.stdout:
        out = p.stdout
        break
    time.sleep(0.1)
if not out:
    sys.exit("no SSH login with runcmd done on " + ip)
print(json.dumps({"ip": ip, "lease": t_lease, "banner": banner, "login": time.time(), "out": out}))
"""


@dataclass
class Sample:
    t0: float  # wall clock of the API call / virsh launch
    lease: float
    banner: float
    login: float
    steps: dict[str, float] = field(default_factory=dict)  # progress message -> wall clock


@dataclass
class Result:
    corral: list[Sample] = field(default_factory=list)
    raw: list[Sample] = field(default_factory=list)
    ack_s: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class OpEvents:
    """Operation events from the SSE stream: op id -> {message or status: server time}."""

    def __init__(self, client: Client) -> None:
        self.seen: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(client,), daemon=True)
        self._thread.start()

    def _read(self, client: Client) -> None:
        with contextlib.suppress(Exception):
            for ev in client.events():
                if ev.type != "operation":
                    continue
                d = ev.data
                when = datetime.fromisoformat(str(d["updated_at"]))
                t = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
                key = d["status"] if d["status"] in ("success", "failure") else (d.get("message") or "")
                with self._lock:
                    self.seen.setdefault(str(d["id"]), {}).setdefault(key, t)

    def steps(self, op_id: str, timeout: float = 10) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                got = dict(self.seen.get(op_id, {}))
            if "success" in got or "failure" in got:
                return got
            time.sleep(0.05)
        raise BenchError(f"no end event for operation {op_id}")


def _poller(node: BenchNode, mac: str, key: Path, timeout: float) -> subprocess.Popen[str]:
    leases = node.data_dir / "agent" / "networks" / "default" / "dnsmasq.leases"
    return node.host.popen([sys.executable, "-c", POLLER, mac.lower(), str(leases), str(key),
                            str(timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _poll_result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise BenchError("the SSH poller did not finish") from None
    if proc.returncode != 0:
        raise BenchError(f"SSH poller: {err.strip()[-300:]}")
    data: dict[str, Any] = json.loads(out)
    return data


def corral_run(client: Client, events: OpEvents, node: BenchNode, key: Path, name: str,
               res: Result) -> Sample:
    ci = CloudInit(hostname=name, ssh_authorized_keys=[key.with_suffix(".pub").read_text().strip()],
                   user_data=RUNCMD)
    req = VmCreate(name=name, image="tiny", memory="128M", cpus=1, start=True, cloud_init=ci)
    # The poller needs the MAC before the VM exists: start it on the VM's MAC as soon as known.
    t0 = time.time()
    op = client.create_vm(req)
    res.ack_s.append(time.time() - t0)
    proc = _poller(node, client.get_vm(name).mac or "", key, 120)
    client.wait(op.id, timeout=120)
    try:
        polled = _poll_result(proc, 150)
    except BenchError as exc:
        raise not_booted(f"{name} to answer SSH ({exc})", 120, [name], 1, client.console_log,
                         state="not answering") from None
    if name not in polled["out"]:
        raise BenchError(f"{name}: the guest's host name is not {name}: {polled['out']!r}")
    return Sample(t0, polled["lease"], polled["banner"], polled["login"], events.steps(op.id))


def raw_run(node: BenchNode, template: str, key: Path, work: Path, name: str) -> Sample:
    """`virsh create` of corral's XML with a fresh overlay and seed (made untimed)."""
    image = node.storage / "images" / "tiny.qcow2"
    disk, seed = work / f"{name}.qcow2", work / f"{name}-cidata.iso"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
                    str(disk)], check=True, timeout=60)
    mac = "52:54:01:{:02x}:{:02x}:{:02x}".format(*(random.randrange(256) for _ in range(3)))
    files = render(instance=str(uuid.uuid4()), hostname=name, mac=mac, user_data=RUNCMD,
                   ssh_authorized_keys=[key.with_suffix(".pub").read_text().strip()])
    seed.write_bytes(build_iso(files.as_dict()))
    dom = Domain.from_xml(template)
    dom.name, dom.uuid, dom.vm_id = name, str(uuid.uuid4()), None
    for d in dom.devices.disks:
        d.source_file = str(seed if d.device == "cdrom" else disk)
    for nic in dom.devices.interfaces:
        nic.mac, nic.target_dev = mac, None
    for chardev in [*dom.devices.serials, *dom.devices.consoles]:
        if chardev.log_file is not None:
            chardev.log_file = str(work / f"{name}.log")
    xml = work / f"{name}.xml"
    xml.write_text(dom.to_xml())
    proc = _poller(node, mac, key, 120)
    t0 = time.time()
    created = subprocess.run(["virsh", "-c", node.uri, "create", str(xml)], capture_output=True,
                             text=True, timeout=60, check=False)
    if created.returncode != 0:
        proc.kill()
        raise BenchError(f"virsh create {name}: {created.stderr.strip()}")
    try:
        polled = _poll_result(proc, 150)
    except BenchError as exc:
        raise not_booted(f"{name} (raw twin) to answer SSH ({exc})", 120, [name], 1,
                         lambda vm: (work / f"{vm}.log").read_text(errors="replace"),
                         state="not answering") from None
    finally:
        subprocess.run(["virsh", "-c", node.uri, "destroy", name], capture_output=True, timeout=60,
                       check=False)
        for path in (disk, seed, xml, work / f"{name}.log"):
            path.unlink(missing_ok=True)
    return Sample(t0, polled["lease"], polled["banner"], polled["login"])


def measure(node: BenchNode, runs: int, work: Path, res: Result) -> None:
    key = work / "id_ed25519"
    key.unlink(missing_ok=True)
    key.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   timeout=30)
    with node.client() as client, node.client(timeout=3600.0) as stream:
        events = OpEvents(stream)
        time.sleep(0.5)
        say("provision: warm-up VM (not counted; its XML is the raw twin's template)")
        corral_run(client, events, node, key, "pw-corral", res)
        template = subprocess.run(["virsh", "-c", node.uri, "dumpxml", "--inactive", "pw-corral"],
                                  capture_output=True, text=True, timeout=60, check=True).stdout
        client.wait(client.delete_vm("pw-corral", force=True).id, timeout=120)
        res.ack_s.clear()
        for i in range(runs):
            order = ("corral", "raw") if i % 2 == 0 else ("raw", "corral")
            for which in order:
                if which == "corral":
                    name = f"pc-{i:02d}"
                    res.corral.append(corral_run(client, events, node, key, name, res))
                    client.wait(client.delete_vm(name, force=True).id, timeout=120)
                else:
                    res.raw.append(raw_run(node, template, key, work, f"pr-{i:02d}"))
            c, r = res.corral[-1], res.raw[-1]
            say(f"provision run {i + 1}/{runs}: corral {c.banner - c.t0:.2f} s to SSH banner, "
                f"raw virsh {r.banner - r.t0:.2f} s")


def _col(samples: list[Sample], start: str, end: str) -> float:
    def at(s: Sample, what: str) -> float:
        return {"t0": s.t0, "lease": s.lease, "banner": s.banner, "login": s.login}.get(what) \
            or s.steps[what]
    return median([at(s, end) - at(s, start) for s in samples])


def report(res: Result, facts: dict[str, str]) -> str:
    c, r = res.corral, res.raw
    rows = [
        ("API call -> 202 (operation accepted)", median(res.ack_s)),
        ("disk: qcow2 overlay (operation 'creating disk' -> next step)",
         _col(c, "creating disk", "building cloud-init seed")),
        ("seed build: engine renders, agent writes the ISO", _col(c, "building cloud-init seed",
                                                                   "defining domain")),
        ("domain define + start (-> operation success)", _col(c, "defining domain", "success")),
        ("guest boot: operation success -> SSH banner", _col(c, "success", "banner")),
        ("SSH login with the key, runcmd done (`ssh root@IP ...`)", _col(c, "banner", "login")),
    ]
    total_banner, total_login = _col(c, "t0", "banner"), _col(c, "t0", "login")
    raw_banner, raw_login = _col(r, "t0", "banner"), _col(r, "t0", "login")
    lines = [
        "## Provisioning: `vm create` with cloud-init until SSH answers (bench/provision.py)",
        "",
        f"{len(c)} runs each, medians; the raw "
        "twin is `virsh create` of the same domain XML with an overlay and a seed made beforehand "
        "(untimed), measured interleaved in the same run. Tiny guest, 128 MiB, "
        "1 vCPU; the seed holds a host name, an SSH key and a runcmd.",
        "",
        "| Measure | Median |",
        "| --- | --- |",
        f"| **corral: API call -> SSH banner** | **{total_banner:.2f} s** |",
        f"| corral: API call -> SSH login done (runcmd ran) | {total_login:.2f} s |",
        f"| raw: `virsh create` -> SSH banner | {raw_banner:.2f} s |",
        f"| raw: `virsh create` -> SSH login done | {raw_login:.2f} s |",
        f"| ratio corral / raw, to the banner | {total_banner / raw_banner:.2f} |",
        "",
        "Breakdown of corral's path (operation progress events, server timestamps):",
        "",
        "| Step | Median |",
        "| --- | --- |",
        *[f"| {what} | {sec * 1000:.0f} ms |" for what, sec in rows],
        "",
        "All runs, API call -> SSH banner (s): corral "
        + ", ".join(f"{s.banner - s.t0:.2f}" for s in c) + "; raw "
        + ", ".join(f"{s.banner - s.t0:.2f}" for s in r) + ".",
        "",
        *[f"- {k}: {v}" for k, v in facts.items()],
        *[f"- note: {n}" for n in res.notes],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/corral-provision"))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--report", type=Path, default=REPORT)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/provision.py needs root (namespaces, libvirtd)", file=sys.stderr)
        return 2
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    measured = sections.Measured.now()
    res = Result()
    host = LabHost(NAME, INDEX, root / "host")
    node: BenchNode | None = None
    facts: dict[str, str] = {"load average at start": " / ".join(f"{x:.2f}" for x in os.getloadavg())}
    error = None
    try:
        host.stop()  # one left by an earlier run
        host.start()
        node = BenchNode(root, host, res.notes)
        shutil.rmtree(node.data_dir, ignore_errors=True)
        (root / "work").mkdir(exist_ok=True)
        (root / "work").chmod(0o755)
        seed_debs(root / "debs", node.storage / "build" / "cache" / "debs")
        node.up()
        with node.client() as client:
            say("provision: building the tiny image")
            client.wait(client.build_tiny("tiny").id, timeout=900)
            h = client.status().hosts[0]
            facts["virtualization"] = f"{h.virt_type} ({h.virt_note or 'KVM'})"
        facts["node"] = f"lab host {NAME} (index {INDEX}), https://{host.address}:{PORT}"
        measure(node, args.runs, root / "work", res)
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}"
        say(f"provision benchmark failed: {error}")
    finally:
        if node is not None:
            with contextlib.suppress(Exception), node.client(timeout=30) as client:
                for vm in client.list_vms():
                    client.wait_quiet(client.delete_vm(vm.name, force=True).id, timeout=60)
            node.down()
        host.stop()
    facts["load average at the end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    if error or not res.corral:
        print(f"no report written: {error}", file=sys.stderr)
        return outcome.finish(error or "no run measured")
    section = report(res, facts)
    sections.write_section(args.report, "provision", section, measured)
    print(section)
    return outcome.finish(None)  # no target: corral against the raw twin, for information


if __name__ == "__main__":
    sys.exit(main())
