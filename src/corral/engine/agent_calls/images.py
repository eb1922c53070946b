"""Calls of images, customizations, snapshots, clones, templates and OVA export/import
(``corral.agent_api.images``, ``.snapshots``), and of the agent's jobs (``JobCalls``).

Methods ending in ``_job`` send nothing: they name a job-starting route for
corral.engine.agent_jobs.run_job (see corral.engine.agent_calls.jobs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.agent_api import Deleted
from corral.agent_api.domains import DomainInfo
from corral.agent_api.images import (
    BuildTinyBody,
    Customized,
    ImageDetail,
    ImageImportBody,
    ImageImported,
    ImageInfo,
    OvaExportBody,
    OvaExported,
    OvaFillBody,
    OvaImportBody,
    OvaImported,
    VolumeFilled,
)
from corral.agent_api.snapshots import (
    BasesRemoved,
    CloneBody,
    ClonedDisk,
    SnapshotBody,
    SnapshotInfo,
    TemplateBody,
)
from corral.engine.agent_calls.image_files import ImageFileCalls
from corral.engine.agent_calls.jobs import JobCalls, JobStart

if TYPE_CHECKING:
    from corral.api import GuestCustomize


class ImageCalls(JobCalls, ImageFileCalls):  # ImageFileCalls: copies between hosts
    # -- images ----------------------------------------------------------------------------
    def image(self, name: str) -> ImageDetail:
        return self._send("GET", f"/v1/images/{name}", ImageDetail, timeout=30)

    def delete_image(self, name: str) -> Deleted:
        """Idempotent; 409 while a job of the agent works on the image."""
        return self._send("DELETE", f"/v1/images/{name}", Deleted, timeout=60)

    def build_tiny(self, name: str, guest_agent: bool = False) -> ImageInfo:
        # Not a job: downloads a kernel and busybox, then builds; minutes at worst.
        return self._send("POST", f"/v1/images/{name}/build-tiny", ImageInfo,
                          BuildTinyBody(guest_agent=guest_agent), timeout=3600)

    def import_image_job(self, name: str, body: ImageImportBody) -> JobStart[ImageImported]:
        return JobStart(f"/v1/images/{name}/import", body, ImageImported)

    def customize_image_job(self, name: str, spec: GuestCustomize) -> JobStart[Customized]:
        return JobStart(f"/v1/images/{name}/customize", spec, Customized)

    def customize_disk_job(self, vm: str, spec: GuestCustomize) -> JobStart[Customized]:
        """The VM's root disk in the storage dir (the VM stopped)."""
        return JobStart(f"/v1/disks/{vm}/customize", spec, Customized)

    # -- snapshots -------------------------------------------------------------------------
    def snapshots(self, vm: str) -> list[SnapshotInfo]:
        return self._send_list("GET", f"/v1/domains/{vm}/snapshots", SnapshotInfo, timeout=30)

    def create_snapshot(self, vm: str, body: SnapshotBody) -> SnapshotInfo:
        # A memory snapshot writes the guest's RAM out: minutes for a big VM.
        return self._send("POST", f"/v1/domains/{vm}/snapshots", SnapshotInfo, body,
                          timeout=600)

    def revert_snapshot(self, vm: str, name: str) -> DomainInfo:
        """The domain as the revert left it (running, paused or stopped)."""
        return self._send("POST", f"/v1/domains/{vm}/snapshots/{name}/revert", DomainInfo,
                          timeout=600)

    def delete_snapshot(self, vm: str, name: str) -> Deleted:
        return self._send("DELETE", f"/v1/domains/{vm}/snapshots/{name}", Deleted,
                          timeout=600)

    # -- clones and templates (disks in the storage dir) -----------------------------------
    def linked_clone_disk(self, vm: str, source: str) -> ClonedDisk:
        return self._send("PUT", f"/v1/disks/{vm}/linked-clone", ClonedDisk,
                          CloneBody(source=source), timeout=300)

    def full_clone_disk_job(self, vm: str, body: CloneBody) -> JobStart[ClonedDisk]:
        return JobStart(f"/v1/disks/{vm}/full-clone", body, ClonedDisk)

    def template_job(self, name: str, body: TemplateBody) -> JobStart[ImageInfo]:
        """Image NAME flattened from a stopped VM's disk."""
        return JobStart(f"/v1/images/{name}/from-disk", body, ImageInfo)

    def collect_bases(self) -> BasesRemoved:
        return self._send("POST", "/v1/disks/collect-bases", BasesRemoved, timeout=300)

    # -- OVA -------------------------------------------------------------------------------
    def export_ova_job(self, vm: str, body: OvaExportBody) -> JobStart[OvaExported]:
        return JobStart(f"/v1/disks/{vm}/export-ova", body, OvaExported)

    def import_ova_job(self, name: str, body: OvaImportBody) -> JobStart[OvaImported]:
        return JobStart(f"/v1/images/{name}/import-ova", body, OvaImported)

    def fill_volume_job(self, pool: str, volume: str,
                        body: OvaFillBody) -> JobStart[VolumeFilled]:
        return JobStart(f"/v1/pools/{pool}/volumes/{volume}/import-ova", body, VolumeFilled)
