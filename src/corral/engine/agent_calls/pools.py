"""Calls of pools, volumes, root disks in pools and disks of domains
(``corral.agent_api.pools``). Root-disk creation, full clones and templates are agent jobs:
corral.engine.agent_jobs runs them."""

from __future__ import annotations

from corral.agent_api import Deleted, Ok
from corral.agent_api.images import ImageInfo
from corral.agent_api.pools import (
    AttachBody,
    BlockResizeBody,
    DetachBody,
    DiskAttached,
    DiskDetached,
    DiskResized,
    DomainDisk,
    PoolBody,
    PoolSetup,
    PoolStats,
    ResizeBody,
    RootBody,
    RootDeleted,
    RootDisk,
    RootGrown,
    RootTemplateBody,
    VolumeBody,
    VolumeFormat,
    VolumeInfo,
)
from corral.agent_api.rbd_fencing import FenceBody, Fenced
from corral.agent_api.snapshots import CloneBody
from corral.engine.agent_calls import AgentCalls
from corral.engine.agent_calls.jobs import JobStart


class PoolCalls(AgentCalls):
    # -- pools ---------------------------------------------------------------------------
    def check_pool(self, name: str, body: PoolBody) -> Ok:
        """The host's dry run of ``ensure_pool``: a clear error if it cannot have the pool."""
        return self._send("POST", f"/v1/pools/{name}/check", Ok, body, timeout=60)

    def ensure_pool(self, name: str, body: PoolBody) -> PoolSetup:
        return self._send("PUT", f"/v1/pools/{name}", PoolSetup, body, timeout=120)

    def pool_stats(self, name: str) -> PoolStats:
        return self._send("GET", f"/v1/pools/{name}", PoolStats, timeout=30)

    def forget_pool(self, name: str) -> Deleted:
        return self._send("DELETE", f"/v1/pools/{name}", Deleted, timeout=120)

    # -- volumes -------------------------------------------------------------------------
    def volumes(self, pool: str) -> list[VolumeInfo]:
        return self._send_list("GET", f"/v1/pools/{pool}/volumes", VolumeInfo, timeout=60)

    def volume(self, pool: str, name: str) -> VolumeInfo:
        """NotFound when absent (``pool_missing`` in its details: the host lacks the pool)."""
        return self._send("GET", f"/v1/pools/{pool}/volumes/{name}", VolumeInfo, timeout=30)

    def create_volume(self, pool: str, name: str, size: int,
                      fmt: VolumeFormat = "qcow2") -> VolumeInfo:
        return self._send("PUT", f"/v1/pools/{pool}/volumes/{name}", VolumeInfo,
                          VolumeBody(size=size, format=fmt), timeout=300)

    def resize_volume(self, pool: str, name: str, size: int) -> VolumeInfo:
        return self._send("POST", f"/v1/pools/{pool}/volumes/{name}/resize", VolumeInfo,
                          ResizeBody(size=size), timeout=300)

    def delete_volume(self, pool: str, name: str) -> Deleted:
        return self._send("DELETE", f"/v1/pools/{pool}/volumes/{name}", Deleted, timeout=300)

    # -- storage fencing (HA: corral.agent.pools.rbd_fence) -------------------------------
    def fence_volume(self, pool: str, name: str) -> Fenced:
        """Blocklist the Ceph clients of an RBD volume; Conflict: not an rbd pool."""
        return self._send("POST", f"/v1/pools/{pool}/volumes/{name}/fence", Fenced,
                          FenceBody(), timeout=120)

    def fence_root(self, pool: str, vm: str) -> Fenced:
        """Blocklist the Ceph clients of VM ``vm``'s root disk in an rbd pool."""
        return self._send("POST", f"/v1/pools/{pool}/roots/{vm}/fence", Fenced, FenceBody(),
                          timeout=120)

    # -- disks of domains ----------------------------------------------------------------
    def domain_disks(self, vm: str) -> list[DomainDisk]:
        return self._send_list("GET", f"/v1/domains/{vm}/disks", DomainDisk, timeout=30)

    def attach_disk(self, vm: str, xml: str, controller_xml: str | None = None) -> DiskAttached:
        return self._send("POST", f"/v1/domains/{vm}/disks/attach", DiskAttached,
                          AttachBody(xml=xml, controller_xml=controller_xml), timeout=120)

    def detach_disk(self, vm: str, source: str) -> DiskDetached:
        # Past the agent's own wait for the guest to release the disk (about 60 s).
        return self._send("POST", f"/v1/domains/{vm}/disks/detach", DiskDetached,
                          DetachBody(source=source), timeout=180)

    def resize_domain_disk(self, vm: str, target: str, size: int) -> DiskResized:
        return self._send("POST", f"/v1/domains/{vm}/disks/resize", DiskResized,
                          BlockResizeBody(target=target, size=size), timeout=120)

    # -- root disks of VMs in pools (create, full clone, template: jobs) ------------------
    def grow_root(self, pool: str, vm: str, size: int) -> RootGrown:
        """Grow a stopped VM's root disk (pool ``default``: the host's storage dir)."""
        return self._send("POST", f"/v1/pools/{pool}/roots/{vm}/grow", RootGrown,
                          ResizeBody(size=size), timeout=300)

    def delete_root(self, pool: str, vm: str) -> RootDeleted:
        return self._send("DELETE", f"/v1/pools/{pool}/roots/{vm}", RootDeleted, timeout=300)

    def linked_clone_root(self, pool: str, vm: str, source: str) -> RootDisk:
        return self._send("PUT", f"/v1/pools/{pool}/roots/{vm}/linked-clone", RootDisk,
                          CloneBody(source=source), timeout=300)

    # Jobs: these send nothing, they name the route for corral.engine.agent_jobs.run_job.
    def create_root_job(self, pool: str, vm: str, body: RootBody) -> JobStart[RootDisk]:
        return JobStart(f"/v1/pools/{pool}/roots/{vm}", body, RootDisk)

    def full_clone_root_job(self, pool: str, vm: str,
                            body: CloneBody) -> JobStart[RootDisk]:
        return JobStart(f"/v1/pools/{pool}/roots/{vm}/full-clone", body, RootDisk)

    def root_template_job(self, pool: str, vm: str,
                          body: RootTemplateBody) -> JobStart[ImageInfo]:
        return JobStart(f"/v1/pools/{pool}/roots/{vm}/template", body, ImageInfo)


