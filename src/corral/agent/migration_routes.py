"""The agent's live migration route: ``POST /v1/domains/{name}/migrate`` starts a job
(corral.agent.jobs) that moves the running domain to another host's libvirtd, with
progress from libvirt's job statistics; ``DELETE /v1/jobs/{id}`` aborts it (the guest keeps
running here). See :mod:`corral.agent.hypervisor.migration`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from corral.agent.hypervisor import Hypervisor
from corral.agent.hypervisor.migration import migrate
from corral.agent.jobs import JobReporter, JobRunner
from corral.agent.migration_pki import pki_dir
from corral.agent_api.jobs import JobInfo
from corral.agent_api.migration import MigrateBody, Migrated
from corral.validation import validate_vm_name


def router(hv: Hypervisor, jobs: JobRunner, state_dir: Path) -> APIRouter:
    r = APIRouter()
    pki = pki_dir(state_dir)  # this host's certificates for qemu+tls (migration_pki)

    @r.post("/v1/domains/{name}/migrate")
    def start_migration(name: str, body: MigrateBody, op: str | None = None) -> JobInfo:
        validate_vm_name(name, "name")
        hv.get(name)  # 404 at once for no such domain, not a failed job

        def work(report: JobReporter) -> Migrated:
            return migrate(hv, name, body, report, pki)

        # Key domain:NAME: a second request while one runs attaches to it (an engine that
        # restarted mid-migration follows the same one).
        return jobs.submit("vm.migrate", f"domain:{name}", work, message="migrating",
                           token=op).info()

    return r
