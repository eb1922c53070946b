"""The agent's routes of VM root disks in pools (``/v1/pools/POOL/roots/VM``): create (a job:
an import into Ceph may take a while), delete, linked and full clones, and templates made
from them. See :mod:`corral.agent.pools.roots`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from corral.agent.clones import template
from corral.agent.jobs import JobReporter, JobRunner
from corral.agent.pools import host_registry
from corral.agent.pools.roots import RootDisks
from corral.agent.storage import Storage
from corral.agent_api.image_files import ImageInPool
from corral.agent_api.jobs import JobInfo
from corral.agent_api.pools import (
    ResizeBody,
    RootBody,
    RootDeleted,
    RootDisk,
    RootGrown,
    RootTemplateBody,
)
from corral.agent_api.snapshots import CloneBody
from corral.validation import validate_name, validate_vm_name


def router(state_dir: Path, storage: Storage, jobs: JobRunner) -> APIRouter:
    roots = RootDisks(host_registry(state_dir, storage.root), storage)
    r = APIRouter()

    @r.post("/v1/pools/{pool}/roots/{vm}")
    def create_root(pool: str, vm: str, body: RootBody, op: str | None = None) -> JobInfo:
        validate_vm_name(vm, "vm")
        validate_name(body.image, "image")

        def work(report: JobReporter) -> dict[str, Any]:
            return roots.create(pool, vm, body.image, body.size, report)

        return jobs.submit("root.create", f"disk:{vm}", work, message="creating root disk",
                           token=op).info()

    @r.get("/v1/pools/{pool}/bases/{image}")
    def base(pool: str, image: str) -> ImageInPool:
        return ImageInPool(present=roots.has_base(pool, image))

    @r.delete("/v1/pools/{pool}/roots/{vm}")
    def delete_root(pool: str, vm: str) -> RootDeleted:
        return RootDeleted.model_validate(roots.delete(pool, vm))

    @r.post("/v1/pools/{pool}/roots/{vm}/grow")
    def grow_root(pool: str, vm: str, body: ResizeBody) -> RootGrown:
        return RootGrown(capacity=roots.grow(pool, vm, body.size))

    @r.put("/v1/pools/{pool}/roots/{vm}/linked-clone")
    def linked(pool: str, vm: str, body: CloneBody) -> RootDisk:
        return RootDisk.model_validate(roots.linked_clone(pool, body.source, vm))

    @r.post("/v1/pools/{pool}/roots/{vm}/full-clone")
    def full(pool: str, vm: str, body: CloneBody, op: str | None = None) -> JobInfo:
        validate_vm_name(vm, "vm")
        validate_vm_name(body.source, "source")

        def work(report: JobReporter) -> dict[str, Any]:
            return roots.full_clone(pool, body.source, vm, body.snapshot, report)

        return jobs.submit("disk.clone", f"disk:{vm}", work, message="copying",
                           token=op).info()

    @r.post("/v1/pools/{pool}/roots/{vm}/template")
    def make_template(pool: str, vm: str, body: RootTemplateBody,
                      op: str | None = None) -> JobInfo:
        validate_name(body.name, "image")
        source = roots.qemu_source(pool, vm)

        def work(report: JobReporter) -> dict[str, Any]:
            return template(storage, vm, body.name, body.boot_from, report, source)

        return jobs.submit("image.template", f"image:{body.name}", work,
                           message="flattening", token=op).info()

    return r
