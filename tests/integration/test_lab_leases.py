"""Disk leases for real (docs/ha.md "Disk leases"): a 2-host `corral lab` with shared
storage, where every lab host runs virtlockd with its lockspace on storage both share
(qemu.conf ``lock_manager = "lockd"``).

- An HA VM runs on host 1: host 1's virtlockd holds its disk's lease (the lockspace file
  named by the disk path's sha256), so host 2's virtlockd could not take it (this test takes
  the same fcntl lock virtlockd takes: refused). A domain defined BY HAND on host 2 over the
  same disk file is refused (corral knows nothing of it). In the lab all hosts share one
  kernel, so QEMU's own image lock answers first: libvirt 9 acquires the lease only when the
  guest's CPUs start, after QEMU opened its disks (see docs/ha.md "Disk leases").
- virtlockd on host 1 killed: its leases are gone, so the VM's QEMU is stopped there before
  a new virtlockd runs (sampled every 50 ms); the engine restarts the HA VM in place with a
  fresh lease, held by the new virtlockd, and the domain by hand on host 2 is still refused.
- A VM whose root disk is on the host's own storage still starts under the lock manager.

One lab for the module, brought down at the end even when a test fails.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import LabCli, Sampling, lab_session, qemu_pid
from nodeutil import wait_for

from corral.lab import _procs

# alone: its HA timing must not compete with the other lane's TCG guests (Makefile)
pytestmark = [pytest.mark.integration, pytest.mark.solo]

TINY = ("--image", "tiny", "--memory", "128M")  # 64M: no boot
# libvirt's lease error, or QEMU's own image lock (one kernel: it answers first in the lab)
REFUSED = re.compile(r"resource busy|Lockspace resource .* is locked|Failed to get \"write\" lock")


@pytest.fixture(scope="module")
def lab(tiny_cache: Path) -> Iterator[LabCli]:
    with lab_session(2, "shared", 600, "lk", "--deb-cache", str(tiny_cache)) as cli:
        yield cli


@pytest.fixture(scope="module")
def engine(lab: LabCli) -> Iterator[LabEngine]:
    yield from lab_engine(lab)


def virsh(lab: LabCli, n: int, *args: str, check: bool = True,
          ) -> subprocess.CompletedProcess[str]:
    uri = lab.lab_host(host(lab, n)).libvirt_uri()
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          timeout=120, check=check)


def root_disk(lab: LabCli, n: int, vm: str) -> str:
    """The file of the VM's first writable disk, as libvirt opens it."""
    xml = virsh(lab, n, "dumpxml", vm).stdout
    for disk in re.findall(r"<disk type='file' device='disk'>.*?</disk>", xml, re.S):
        if "<readonly/>" not in disk:
            found = re.search(r"<source file='([^']+)'", disk)
            assert found, disk
            return found.group(1)
    raise AssertionError(f"no writable file disk in {vm}'s XML:\n{xml}")


def intruder_xml(name: str, disk: str) -> str:
    """A domain nobody but this test knows of, booting from ``disk``."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>
"""


def assert_refused_by_the_lease(lab: LabCli, name: str) -> None:
    started = virsh(lab, 2, "start", name, check=False)
    assert started.returncode != 0, f"a second QEMU started on the disk: {started.stdout}"
    assert REFUSED.search(started.stderr), started.stderr
    assert virsh(lab, 2, "domstate", name).stdout.strip() == "shut off"


def lease_held(lab: LabCli, disk: str) -> bool:
    """Whether some process holds the disk's lease: the lock virtlockd takes (fcntl, write,
    byte 0 of the lockspace file named by the disk path's sha256) is refused to us."""
    lease = lab.root / "lockspace" / hashlib.sha256(disk.encode()).hexdigest()
    with open(lease, "rb+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            return True
        fcntl.lockf(f, fcntl.LOCK_UN, 1, 0)
        return False


class Sampler(Sampling):
    """Every 50 ms: is the old QEMU alive while a virtlockd other than the killed one runs (a
    QEMU without a lease next to a lock daemon ready to grant its disk to anyone)?"""

    def __init__(self, lab: LabCli, old_qemu: int, old_lockd: int,
                 limit_s: float = 120) -> None:
        super().__init__(0.05, limit_s)
        self.host = lab.lab_host(host(lab, 1))
        self.old_qemu, self.old_lockd = old_qemu, old_lockd
        self.unprotected = 0

    def sample(self) -> None:
        lockd = self.host.daemon_pid("virtlockd")
        if lockd not in (None, self.old_lockd) and _procs.is_alive(self.old_qemu):
            self.unprotected += 1


def test_lab_hosts_run_virtlockd_with_a_shared_lockspace(lab: LabCli) -> None:
    for n in (1, 2):
        h = lab.lab_host(host(lab, n))
        assert h.daemon_pid("virtlockd") is not None
        assert 'lock_manager = "lockd"' in (h.root_dir / "etc" / "qemu.conf").read_text()
        lockd_conf = (h.root_dir / "etc" / "qemu-lockd.conf").read_text()
        assert f'file_lockspace_dir = "{lab.root / "lockspace"}"' in lockd_conf


def test_a_second_qemu_on_an_ha_vms_disk_is_refused_even_after_virtlockd_dies(
        lab: LabCli, engine: LabEngine) -> None:
    h1, vm, intruder = host(lab, 1), "lease-ha", "lease-intruder"
    try:
        lab.run("vm", "create", vm, *TINY, "--pool", "shared", "--host", h1, "--ha",
                "--start", timeout=300)
        disk = root_disk(lab, 1, vm)
        assert Path(disk).is_relative_to(lab.root / "shared"), disk
        xml = lab.root / "intruder.xml"
        xml.write_text(intruder_xml(intruder, disk))
        virsh(lab, 2, "define", str(xml))
        assert lease_held(lab, disk)
        assert_refused_by_the_lease(lab, intruder)

        lab_host = lab.lab_host(h1)
        old_qemu, old_lockd = qemu_pid(lab_host, vm), lab_host.daemon_pid("virtlockd")
        assert old_qemu is not None and old_lockd is not None
        with Sampler(lab, old_qemu, old_lockd) as sampler:
            os.kill(old_lockd, signal.SIGKILL)
            wait_for("the VM's QEMU stopped on host 1", lambda: not _procs.is_alive(old_qemu),
                     timeout=30, every=0.1)
            wait_for("virtlockd running again on host 1",
                     lambda: lab_host.daemon_pid("virtlockd") not in (None, old_lockd),
                     timeout=30, every=0.1)
            wait_for("the HA VM restarted in place",
                     lambda: (qemu_pid(lab_host, vm) not in (None, old_qemu)
                              and engine.vm(vm)["state"] == "running"),
                     timeout=120, every=0.5)
        assert sampler.samples > 0 and sampler.unprotected == 0, vars(sampler)
        assert engine.vm(vm)["host"] == h1
        assert lease_held(lab, disk)  # a fresh lease, in the new virtlockd
        assert_refused_by_the_lease(lab, intruder)
    finally:
        virsh(lab, 2, "destroy", intruder, check=False)
        virsh(lab, 2, "undefine", intruder, check=False)
        lab.run("vm", "delete", vm, "--force", check=False, timeout=300)


def test_a_vm_on_the_hosts_own_storage_with_a_seed_cdrom_starts_under_the_lock_manager(
        lab: LabCli, engine: LabEngine) -> None:
    h2, vm = host(lab, 2), "lease-local"
    try:
        lab.run("vm", "create", vm, *TINY, "--host", h2, "--hostname", "seeded", "--start",
                timeout=300)
        assert engine.vm(vm)["state"] == "running"
        assert virsh(lab, 2, "domstate", vm).stdout.strip() == "running"
        disk = root_disk(lab, 2, vm)
        assert lease_held(lab, disk)  # its own host's disk is leased too
        xml = virsh(lab, 2, "dumpxml", vm).stdout
        cdroms = re.findall(r"<disk type='file' device='cdrom'>.*?<source file='([^']+)'",
                            xml, re.S)
        assert cdroms, xml
        for seed in cdroms:  # read-only: no exclusive lease (another host may read it)
            lease = lab.root / "lockspace" / hashlib.sha256(seed.encode()).hexdigest()
            assert not lease.exists() or not lease_held(lab, seed)
    finally:
        lab.run("vm", "delete", vm, "--force", check=False, timeout=300)
