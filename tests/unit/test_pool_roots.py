"""Root disks of VMs in dir/shared pools (corral.agent.pools.roots) with the real qemu-img:
the image copied once as a base, overlays, linked clones frozen inside the pool, and every
base collected with its last user. (RBD root disks run against real Ceph in
tests/integration/test_vm_on_pools.py.)"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from corral.agent.pools import PoolRegistry, PoolSpec
from corral.agent.pools.roots import RootDisks
from corral.agent.storage import Storage, qemu_img_info
from corral.errors import Conflict, InvalidInput, NotFound

MIB = 1 << 20


def _byte(path: Path, offset: int) -> int:
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -v {offset} 1", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split(":", 1)[1].split()[0], 16)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[RootDisks, Storage, Path]:
    storage = Storage(tmp_path / "storage")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(storage.image_path("img")),
                    str(16 * MIB)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 4096",
                    str(storage.image_path("img"))], check=True, capture_output=True)
    registry = PoolRegistry(tmp_path / "state" / "pools")
    shared = tmp_path / "shared"
    shared.mkdir()
    # Known to the agent as `PUT /v1/pools/sh` leaves it (setup's QEMU-reachability check of
    # every parent directory would refuse pytest's 0700 temporary dir).
    spec = PoolSpec(name="sh", type="shared", id="p1", path=str(shared))
    (tmp_path / "state" / "pools" / "sh.json").write_text(json.dumps(spec.to_dict()))
    return RootDisks(registry, storage), storage, shared


def test_root_disks_share_one_base_copy_and_leave_nothing(
        setup: tuple[RootDisks, Storage, Path]) -> None:
    roots, _storage, shared = setup
    made = roots.create("sh", "a", "img", 32 * MIB)
    assert made == {"source": str(shared / ".vms" / "a.qcow2"), "created": True}
    assert roots.create("sh", "a", "img", 32 * MIB)["created"] is False  # idempotent
    roots.create("sh", "b", "img", None)
    base = shared / ".bases" / "img.img.qcow2"
    for vm, size in (("a", 32 * MIB), ("b", 16 * MIB)):
        info = qemu_img_info(shared / ".vms" / f"{vm}.qcow2")
        assert info["backing-filename"] == str(base) and info["virtual-size"] == size
        assert _byte(shared / ".vms" / f"{vm}.qcow2", 0) == 0x61
    assert roots.delete("sh", "a") == {"deleted": True, "bases_removed": []}
    assert roots.delete("sh", "b") == {"deleted": True, "bases_removed": ["img.img.qcow2"]}
    assert roots.delete("sh", "b")["deleted"] is False
    assert not list((shared / ".vms").iterdir()) and not list((shared / ".bases").iterdir())


def test_a_base_under_a_running_guests_disk_stays_when_another_vm_goes(
        setup: tuple[RootDisks, Storage, Path]) -> None:
    """A running guest's QEMU holds its disk's write lock (plain `qemu-img info` is refused
    then): deleting another VM of the pool must still see that the disk uses the base."""
    roots, _storage, shared = setup
    roots.create("sh", "running", "img", None)
    roots.create("sh", "gone", "img", None)
    disk = shared / ".vms" / "running.qcow2"
    # qemu-io keeps the image open for writing (and locked) as long as it sleeps.
    holder = subprocess.Popen(["qemu-io", "-f", "qcow2", "-c", "sleep 60000", str(disk)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Until the lock is taken, read from /proc/locks (a probe with qemu-img would take
        # a lock of its own, which qemu-io then fails to get); bounded in time, not tries:
        # a loaded machine starts qemu-io slowly.
        inode = f":{disk.stat().st_ino} "
        deadline = time.monotonic() + 60
        while inode not in Path("/proc/locks").read_text():
            if holder.poll() is not None:
                pytest.fail(f"qemu-io ended: {holder.communicate()[1]}")
            if time.monotonic() > deadline:
                pytest.fail("qemu-io did not lock the disk in 60 s")
            time.sleep(0.05)
        assert subprocess.run(["qemu-img", "info", str(disk)], capture_output=True,
                              timeout=30, check=False).returncode != 0  # what delete met
        assert roots.delete("sh", "gone") == {"deleted": True, "bases_removed": []}
        assert (shared / ".bases" / "img.img.qcow2").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert roots.delete("sh", "running")["bases_removed"] == ["img.img.qcow2"]


def test_linked_clone_in_the_pool_and_source_deleted_first(
        setup: tuple[RootDisks, Storage, Path]) -> None:
    roots, _storage, shared = setup
    roots.create("sh", "src", "img", None)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x62 0 4096",
                    str(shared / ".vms" / "src.qcow2")], check=True, capture_output=True)
    out = roots.linked_clone("sh", "src", "new")
    assert out["created"] and roots.linked_clone("sh", "src", "new")["created"] is False
    frozen = shared / ".bases" / "src@new.qcow2"
    for vm in ("src", "new"):
        path = shared / ".vms" / f"{vm}.qcow2"
        assert qemu_img_info(path)["backing-filename"] == str(frozen)
        assert _byte(path, 0) == 0x62
    assert roots.qemu_source("sh", "new") == str(shared / ".vms" / "new.qcow2")
    roots.delete("sh", "src")
    assert frozen.exists()  # the clone still needs it
    assert sorted(roots.delete("sh", "new")["bases_removed"]) == ["img.img.qcow2",
                                                                   "src@new.qcow2"]


def test_refusals(setup: tuple[RootDisks, Storage, Path]) -> None:
    roots, _storage, _shared = setup
    with pytest.raises(NotFound):
        roots.create("sh", "a", "nope", None)
    with pytest.raises(InvalidInput):
        roots.create("sh", "../a", "img", None)
    with pytest.raises(NotFound):
        roots.linked_clone("sh", "ghost", "x")
    with pytest.raises(NotFound):
        roots.create("nopool", "a", "img", None)
    roots.create("sh", "snap", "img", None)
    path = _shared_disk(setup, "snap")
    subprocess.run(["qemu-img", "snapshot", "-c", "s1", str(path)], check=True)
    with pytest.raises(Conflict, match="has snapshots"):
        roots.linked_clone("sh", "snap", "x")


def _shared_disk(setup: tuple[RootDisks, Storage, Path], vm: str) -> Path:
    return setup[2] / ".vms" / f"{vm}.qcow2"


def test_a_host_without_the_image_makes_its_disk_from_the_pool_base(
        setup: tuple[RootDisks, Storage, Path]) -> None:
    """A second host of a shared pool needs no copy of the image: the base another host
    put in the pool is enough (and the agent's route says whether it is there)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from corral.agent.jobs import JobRunner
    from corral.agent.pools import root_routes

    roots, _storage, shared = setup
    other = Storage(shared.parent / "other-host")  # its images/ dir is empty
    app = FastAPI()
    app.include_router(root_routes.router(shared.parent / "state", other, JobRunner()))
    with TestClient(app) as client:
        assert client.get("/v1/pools/sh/bases/img").json() == {"present": False}
        roots.create("sh", "a", "img", None)  # the first host copies its image in
        assert client.get("/v1/pools/sh/bases/img").json() == {"present": True}
    second = RootDisks(roots.pools, other)
    second.create("sh", "b", "img", None)
    info = qemu_img_info(shared / ".vms" / "b.qcow2")
    assert info["backing-filename"] == str(shared / ".bases" / "img.img.qcow2")
    assert _byte(shared / ".vms" / "b.qcow2", 0) == 0x61
    with pytest.raises(NotFound):  # neither on the host nor in the pool
        second.create("sh", "c", "ghost", None)



def test_a_vm_of_another_project_gets_its_root_disk_in_a_shared_pool(
        setup: tuple[RootDisks, Storage, Path]) -> None:
    """Hosts know a VM of project pa by its full name `pa.web`: an HA VM of a project has
    its root disk in a shared pool under that name, and a clone of it too."""
    roots, _storage, shared = setup
    made = roots.create("sh", "pa.web", "img", None)
    assert made == {"source": str(shared / ".vms" / "pa.web.qcow2"), "created": True}
    assert roots.linked_clone("sh", "pa.web", "pa.copy")["created"] is True
    with pytest.raises(InvalidInput):
        roots.create("sh", "pa.web.x", "img", None)
    assert roots.delete("sh", "pa.copy")["deleted"] is True
    assert roots.delete("sh", "pa.web")["deleted"] is True
