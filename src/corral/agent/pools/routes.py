"""The agent's storage routes: pools and volumes (``/v1/pools``), and the disks of domains
(``/v1/domains/NAME/disks``: hot-plug, hot-unplug, live resize)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from corral.agent.hypervisor import Hypervisor
from corral.agent.hypervisor.disks import DiskOps
from corral.agent.pools import PoolSpec, host_registry
from corral.errors import NotFound
from corral.validation import validate_name


class PoolBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    id: str = ""
    path: str | None = None
    ceph_conf: str | None = None
    ceph_pool: str | None = None
    marker: str = "write"  # shared pools: the first host writes the marker, others verify it


class VolumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int
    format: str = "qcow2"


class ResizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int


class AttachBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    xml: str  # the <disk> the engine designed
    controller_xml: str | None = None  # a virtio-scsi controller, plugged first if missing


class DetachBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str  # file path or POOL/IMAGE


class BlockResizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    size: int


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
    def check_pool(name: str, body: PoolBody) -> dict[str, bool]:
        pools.check(_spec(name, body))
        return {"ok": True}

    @r.put("/v1/pools/{name}")
    def ensure_pool(name: str, body: PoolBody) -> dict[str, Any]:
        return pools.ensure(_spec(name, body), body.marker)

    @r.get("/v1/pools/{name}")
    def pool_stats(name: str) -> dict[str, Any]:
        return pools.get(name).stats().to_dict()

    @r.delete("/v1/pools/{name}")
    def forget_pool(name: str) -> dict[str, bool]:
        return {"deleted": pools.forget(name)}

    @r.get("/v1/pools/{name}/volumes")
    def list_volumes(name: str) -> list[dict[str, Any]]:
        return [v.to_dict() for v in pools.get(name).volumes()]

    @r.get("/v1/pools/{name}/volumes/{volume}")
    def get_volume(name: str, volume: str) -> dict[str, Any]:
        info = pools.get(name).volume(volume)
        if info is None:
            raise NotFound(f"volume {volume} not found in pool {name}")
        return info.to_dict()

    @r.put("/v1/pools/{name}/volumes/{volume}")
    def create_volume(name: str, volume: str, body: VolumeBody) -> dict[str, Any]:
        return pools.get(name).create_volume(volume, body.size, body.format).to_dict()

    @r.post("/v1/pools/{name}/volumes/{volume}/resize")
    def resize_volume(name: str, volume: str, body: ResizeBody) -> dict[str, Any]:
        return pools.get(name).resize_volume(volume, body.size).to_dict()

    @r.delete("/v1/pools/{name}/volumes/{volume}")
    def delete_volume(name: str, volume: str) -> dict[str, bool]:
        return {"deleted": pools.get(name).delete_volume(volume)}

    @r.get("/v1/domains/{name}/disks")
    def domain_disks(name: str) -> list[dict[str, Any]]:
        return disks.list(name)

    @r.post("/v1/domains/{name}/disks/attach")
    def attach(name: str, body: AttachBody) -> dict[str, Any]:
        return disks.attach(name, body.xml, body.controller_xml)

    @r.post("/v1/domains/{name}/disks/detach")
    def detach(name: str, body: DetachBody) -> dict[str, Any]:
        return disks.detach(name, body.source)

    @r.post("/v1/domains/{name}/disks/resize")
    def block_resize(name: str, body: BlockResizeBody) -> dict[str, Any]:
        return disks.resize(name, body.target, body.size)

    return r
