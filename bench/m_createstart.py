"""Benchmark 1: create + start a VM through corral's API, against `virsh create`, in one run.

corral: from the POST /api/v1/vms (SDK ``create_vm`` with ``start=True``) until
``virDomain.state()`` on the lab host's libvirt says running.
virsh: ``virsh -c URI create FILE`` of the domain XML corral defined (taken with
``virsh dumpxml --inactive`` from a warm-up VM; renamed: name, UUID, MAC, disk overlay and
console log; corral's metadata removed), from the launch of virsh until libvirt says
running. The overlay is made beforehand with ``qemu-img create`` (untimed), whereas corral's
timed path includes making its overlay: that is part of what corral does for a create.

Pairs are interleaved and their order alternates (corral first in even pairs, virsh first in
odd ones); each VM is destroyed (and the corral one deleted) right after it is measured, so
no booting guest competes with the next measurement for the two CPUs.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.api import VmCreate
from corral.client import Client
from corral.domainxml import Domain
from timing import BenchError, say, wait_running


class CreateNode(Protocol):
    """What the measurement needs of a node: a lab host's (benchnode) or this machine's own
    (node_createstart)."""

    @property
    def uri(self) -> str: ...

    @property
    def storage(self) -> Path: ...

    def client(self, timeout: float = 60.0) -> Client: ...


MEMORY = "128M"
CPUS = 1
IMAGE = "tiny"
RUN_TIMEOUT_S = 60.0


@dataclass
class CreateStartResult:
    corral_s: list[float] = field(default_factory=list)
    virsh_s: list[float] = field(default_factory=list)
    corral_op_done_s: list[float] = field(default_factory=list)  # POST -> operation success
    # The twins' untimed preparation: `qemu-img info` of the image + `qemu-img create` of the
    # overlay, the two commands corral's agent runs (timed, inside corral's path) per create.
    qemu_img_s: list[float] = field(default_factory=list)
    template_from: str = ""


def _virsh(uri: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


class _Rate:
    """Calls ``fn`` at most once per ``every`` seconds (for abort checks that cost a request)."""

    def __init__(self, every: float) -> None:
        self.every, self.last = every, time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            return True
        return False


def corral_create(client: Client, conn: Any, name: str) -> tuple[float, float]:
    """(POST -> libvirt running, POST -> operation success) in seconds; the VM is left running."""
    rate = _Rate(1.0)
    op_id = ""

    def failed() -> str | None:
        if not op_id or not rate.due():
            return None
        op = client.get_operation(op_id)
        return f"operation {op_id} failed: {op.message}" if op.status.value == "failure" else None

    req = VmCreate(name=name, image=IMAGE, memory=MEMORY, cpus=CPUS, start=True)
    t0 = time.perf_counter()
    op = client.create_vm(req)
    op_id = op.id
    running = wait_running(conn, name, t0, RUN_TIMEOUT_S, failed)
    client.wait(op.id, timeout=120)
    return running, time.perf_counter() - t0


def corral_delete(client: Client, name: str) -> None:
    op = client.delete_vm(name, force=True)
    client.wait(op.id, timeout=120)


class VirshTwin:
    """Domains made from corral's XML with `virsh create`, disks and logs in ``work``."""

    def __init__(self, node: CreateNode, template_xml: str, work: Path) -> None:
        self.node = node
        self.template = template_xml
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o755)  # QEMU runs as libvirt-qemu and opens the overlays here
        self.image = node.storage / "images" / f"{IMAGE}.qcow2"
        self.image_size = self._virtual_size()

    def _virtual_size(self) -> int:
        out = subprocess.run(["qemu-img", "info", "--output=json", str(self.image)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return int(json.loads(out)["virtual-size"])

    def prepare(self, name: str) -> tuple[Path, float]:
        """Overlay disk and XML file of ``name``: (the XML file, seconds qemu-img took)."""
        disk = self.work / f"{name}.qcow2"
        disk.unlink(missing_ok=True)
        t0 = time.perf_counter()
        self._virtual_size()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(self.image), str(disk), str(self.image_size)],
                       capture_output=True, text=True, timeout=60, check=True)
        qemu_img_s = time.perf_counter() - t0
        dom = Domain.from_xml(self.template)
        dom.name = name
        dom.uuid = str(uuid.uuid4())
        dom.vm_id = None  # not one of corral's VMs: its reconciler must not take it for one
        disks = dom.devices.disks
        if len(disks) != 1:
            raise BenchError(f"expected one disk in corral's domain XML, found {len(disks)}")
        disks[0].source_file = str(disk)
        for nic in dom.devices.interfaces:
            nic.mac = "52:54:01:{:02x}:{:02x}:{:02x}".format(*(random.randrange(256) for _ in range(3)))
            nic.target_dev = None
        log = str(self.work / f"{name}.log")
        for chardev in [*dom.devices.serials, *dom.devices.consoles]:
            if chardev.log_file is not None:
                chardev.log_file = log
        xml_file = self.work / f"{name}.xml"
        xml_file.write_text(dom.to_xml())
        return xml_file, qemu_img_s

    def create(self, conn: Any, name: str, xml_file: Path) -> float:
        """`virsh create` launch -> libvirt running, in seconds; the domain is left running."""
        t0 = time.perf_counter()
        proc = subprocess.Popen(["virsh", "-c", self.node.uri, "create", str(xml_file)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def failed() -> str | None:
            rc = proc.poll()
            if rc is None or rc == 0:
                return None
            return f"virsh create exited {rc}: {(proc.stderr.read() if proc.stderr else '').strip()}"

        try:
            elapsed = wait_running(conn, name, t0, RUN_TIMEOUT_S, failed)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if proc.returncode != 0:
            raise BenchError(f"virsh create {name} exited {proc.returncode}: {err.strip()}")
        return elapsed

    def destroy(self, name: str) -> None:
        _virsh(self.node.uri, "destroy", name)
        for suffix in (".qcow2", ".xml", ".log"):
            (self.work / f"{name}{suffix}").unlink(missing_ok=True)


def leftover_twins(uri: str, prefix: str) -> list[str]:
    out = _virsh(uri, "list", "--all", "--name").stdout
    return [n.strip() for n in out.splitlines() if n.strip().startswith(prefix)]


def run(node: CreateNode, conn: Any, pairs: int, work: Path) -> CreateStartResult:
    res = CreateStartResult()
    with node.client() as client:
        # Warm-up pair (not counted): first starts pay for caches; gives the template XML.
        say("create+start: warm-up corral VM (its XML is the template of the virsh twins)")
        corral_create(client, conn, "bw-corral")
        dumped = _virsh(node.uri, "dumpxml", "--inactive", "bw-corral")
        if dumped.returncode != 0:
            raise BenchError(f"virsh dumpxml bw-corral failed: {dumped.stderr.strip()}")
        template = dumped.stdout
        corral_delete(client, "bw-corral")
        res.template_from = "`virsh dumpxml --inactive` of bw-corral, a warm-up VM corral created"
        twin = VirshTwin(node, template, work)
        xml, _ = twin.prepare("bw-virsh")
        twin.create(conn, "bw-virsh", xml)
        twin.destroy("bw-virsh")

        for i in range(pairs):
            cname, vname = f"bc-{i:02d}", f"bv-{i:02d}"
            xml, qemu_img_s = twin.prepare(vname)
            res.qemu_img_s.append(qemu_img_s)
            order = ("corral", "virsh") if i % 2 == 0 else ("virsh", "corral")
            for which in order:
                if which == "corral":
                    running, done = corral_create(client, conn, cname)
                    corral_delete(client, cname)
                    res.corral_s.append(running)
                    res.corral_op_done_s.append(done)
                else:
                    elapsed = twin.create(conn, vname, xml)
                    twin.destroy(vname)
                    res.virsh_s.append(elapsed)
            say(f"create+start pair {i + 1}/{pairs}: corral {res.corral_s[-1] * 1000:.0f} ms, "
                f"virsh {res.virsh_s[-1] * 1000:.0f} ms")
    return res
