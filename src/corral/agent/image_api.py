"""The agent's image routes; long work runs as jobs (corral.agent.jobs): import, customize.

    POST   /v1/images/{name}/import      ImageImportBody  -> job (corral.agent.image_import)
    POST   /v1/images/{name}/customize   GuestCustomize   -> job (corral.agent.customize)
    POST   /v1/disks/{vm}/customize      GuestCustomize   -> job, the VM must be stopped
    POST   /v1/images/{name}/build-tiny                   -> ImageInfo (the tiny guest)
    GET    /v1/images/{name}                              -> ImageDetail
    DELETE /v1/images/{name}                              -> Deleted (409 while a job runs on it)
    GET|PUT /v1/images/{name}/files[/{kind}]              -> copies between hosts (image_files)

Models: corral.agent_api.images. A job route answers at once with the job; bad input is
refused before the job starts (4xx).
``?op=OPERATION_ID`` makes a repeated request (an engine that restarted) return the job of the
first one instead of doing the work twice (corral.agent.jobs).

The work (httpx and the download stack, libguestfs, corral.api's models) is imported by the
route on its first call, not at agent start (see corral.agent.app): most hosts never import
or customize an image, and an idle agent should not carry them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body

from corral.agent import image_files
from corral.agent.jobs import JobReporter, JobRunner
from corral.agent_api import Deleted
from corral.agent_api.images import (
    BuildTinyBody,
    Customized,
    ImageDetail,
    ImageImportBody,
    ImageInfo,
)
from corral.agent_api.jobs import JobInfo
from corral.errors import Conflict, InvalidInput, NotFound, WrongState
from corral.httpserve import validated
from corral.validation import validate_name, validate_vm_name

if TYPE_CHECKING:
    from corral.agent.app import Agent
    from corral.agent.customize import Spec


def _customize_spec(body: object) -> Spec:
    """The body as corral.api.GuestCustomize (the same 422s as a body declared with it), then
    as the customization's own spec (validated again)."""
    from corral.agent.customize import Spec
    from corral.api import GuestCustomize

    return Spec.from_request(validated(GuestCustomize, body).model_dump())


def router(agent: Agent, runner: JobRunner) -> APIRouter:
    r = APIRouter()
    storage = agent.storage
    build_dir = storage.root / "build"

    def tcg() -> bool:
        return agent.virt.type.value != "kvm"

    @r.post("/v1/images/{name}/import")
    def import_image(name: str, body: ImageImportBody, op: str | None = None) -> JobInfo:
        from corral.agent.image_import import Importer

        importer = Importer(storage, name, body.source, body.format, body.checksum,
                            paths=agent.path_policy(), urls=agent.url_policy)
        job = runner.submit("image.import", f"image:{name}", importer.run,
                            message=f"importing {body.source}", token=op)
        return job.info()

    @r.post("/v1/images/{name}/customize")
    def customize_image(name: str, body: Any = Body(), op: str | None = None) -> JobInfo:
        spec = _customize_spec(body)
        disk = storage.image_path(name)
        if not disk.exists() and storage.iso_path(name).exists():
            raise InvalidInput(f"image {name} is an ISO: there is no guest disk to customize",
                               field="image")
        if not disk.exists():
            raise NotFound(f"image {name} not found on this host")

        def work(report: JobReporter) -> Customized:
            users = storage.disk_in_use_by(name)
            if users:
                raise Conflict(f"image {name} is the base of VM disks ({', '.join(users)}): "
                               "changing it would corrupt them; customize the VMs instead")
            from corral.agent.customize import customize_disk

            return Customized.model_validate(customize_disk(
                disk, spec, build_dir, tcg=tcg(), report=report, free_bytes=storage.free_bytes))

        return runner.submit("image.customize", f"image:{name}", work,
                             message="customizing", token=op).info()

    @r.post("/v1/disks/{vm}/customize")
    def customize_vm_disk(vm: str, body: Any = Body(), op: str | None = None) -> JobInfo:
        spec = _customize_spec(body)
        disk = storage.disk_path(validate_vm_name(vm, "vm"))
        if not disk.exists():
            raise NotFound(f"the disk of VM {vm} is not on this host")

        def work(report: JobReporter) -> Customized:
            try:
                state = agent.hv.get(vm).state
            except NotFound:
                state = "stopped"
            if state not in ("stopped", "crashed"):
                raise WrongState(f"cannot customize VM {vm}: it is {state}; stop it first")
            from corral.agent.customize import customize_disk

            return Customized.model_validate(customize_disk(
                disk, spec, build_dir, tcg=tcg(), report=report, free_bytes=storage.free_bytes))

        return runner.submit("disk.customize", f"disk:{vm}", work,
                             message="customizing", token=op).info()

    @r.post("/v1/images/{name}/build-tiny")
    def build_tiny(name: str, body: BuildTinyBody | None = None) -> ImageInfo:
        return storage.build_tiny(name, guest_agent=body is not None and body.guest_agent)

    @r.get("/v1/images/{name}")
    def image(name: str) -> ImageDetail:
        return ImageDetail.model_validate({**storage.describe(name).model_dump(),
                                           "users": storage.disk_in_use_by(name)})

    @r.delete("/v1/images/{name}")
    def delete_image(name: str) -> Deleted:
        job = runner.running(f"image:{validate_name(name, 'image')}")
        if job is not None:
            raise Conflict(f"image {name} is busy: {job.kind} job {job.id} runs on it")
        storage.delete_image(name)
        return Deleted(deleted=True)

    # Reading and writing an image's files one by one: copies from host to host.
    r.include_router(image_files.router(storage, runner))
    return r
