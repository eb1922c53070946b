"""The agent's storage routes: pools and volumes (``/v1/pools``), and the disks of domains
(``/v1/domains/NAME/disks``: hot-plug, hot-unplug, live resize)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from corral.agent.hypervisor import Hypervisor
from corral.agent.hypervisor.disks import DiskOps
from corral.agent.pools import PoolSpec, host_registry, rbd_fence
from corral.agent_api import Deleted, Ok
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
    VolumeBody,
    VolumeInfo,
)
from corral.agent_api.rbd_fencing import FenceBody, Fenced
from corral.errors import NotFound
from corral.validation import validate_name


def _spec(name: str, body: PoolBody) -> PoolSpec:
    return PoolSpec(name=validate_name(name, "pool"), type=body.type, id=body.id,
                    path=body.path, ceph_conf=body.ceph_conf, ceph_pool=body.ceph_pool)


def router(state_dir: Path, storage_root: Path, hv: Hypervisor) -> APIRouter:
    """Routes of the pools under ``state_dir/pools``; the agent's own image and VM-disk
    directories under ``storage_root`` are never a pool's."""
    pools = host_registry(state_dir, storage_root)
    disks = DiskOps(hv)
    r = APIRouter()

    @r.post("/v1/pools/{name}/check")
    def check_pool(name: str, body: PoolBody) -> Ok:
        pools.check(_spec(name, body))
        return Ok()

    @r.put("/v1/pools/{name}")
    def ensure_pool(name: str, body: PoolBody) -> PoolSetup:
        return pools.ensure(_spec(name, body), body.marker)

    @r.get("/v1/pools/{name}")
    def pool_stats(name: str) -> PoolStats:
        return pools.get(name).stats()

    @r.delete("/v1/pools/{name}")
    def forget_pool(name: str) -> Deleted:
        return Deleted(deleted=pools.forget(name))

    @r.get("/v1/pools/{name}/volumes")
    def list_volumes(name: str) -> list[VolumeInfo]:
        return pools.get(name).volumes()

    @r.get("/v1/pools/{name}/volumes/{volume}")
    def get_volume(name: str, volume: str) -> VolumeInfo:
        info = pools.get(name).volume(volume)
        if info is None:
            raise NotFound(f"volume {volume} not found in pool {name}")
        return info

    @r.put("/v1/pools/{name}/volumes/{volume}")
    def create_volume(name: str, volume: str, body: VolumeBody) -> VolumeInfo:
        return pools.get(name).create_volume(volume, body.size, body.format)

    @r.post("/v1/pools/{name}/volumes/{volume}/resize")
    def resize_volume(name: str, volume: str, body: ResizeBody) -> VolumeInfo:
        return pools.get(name).resize_volume(volume, body.size)

    @r.delete("/v1/pools/{name}/volumes/{volume}")
    def delete_volume(name: str, volume: str) -> Deleted:
        return Deleted(deleted=pools.get(name).delete_volume(volume))

    # Storage fencing (HA): blocklist the Ceph clients of a volume or of a VM's root disk.
    @r.post("/v1/pools/{name}/volumes/{volume}/fence")
    def fence_volume(name: str, volume: str, body: FenceBody) -> Fenced:
        pool = rbd_fence.rbd_pool(pools.get(name))
        return rbd_fence.fence(pool, rbd_fence.volume_image(pool, volume), body.expire_s)

    @r.post("/v1/pools/{name}/roots/{vm}/fence")
    def fence_root(name: str, vm: str, body: FenceBody) -> Fenced:
        pool = rbd_fence.rbd_pool(pools.get(name))
        return rbd_fence.fence(pool, rbd_fence.root_image(pool, vm), body.expire_s)

    @r.get("/v1/domains/{name}/disks")
    def domain_disks(name: str) -> list[DomainDisk]:
        return [DomainDisk.model_validate(d) for d in disks.list(name)]

    @r.post("/v1/domains/{name}/disks/attach")
    def attach(name: str, body: AttachBody) -> DiskAttached:
        return DiskAttached.model_validate(disks.attach(name, body.xml, body.controller_xml))

    @r.post("/v1/domains/{name}/disks/detach")
    def detach(name: str, body: DetachBody) -> DiskDetached:
        return DiskDetached.model_validate(disks.detach(name, body.source))

    @r.post("/v1/domains/{name}/disks/resize")
    def block_resize(name: str, body: BlockResizeBody) -> DiskResized:
        return DiskResized.model_validate(disks.resize(name, body.target, body.size))

    return r
