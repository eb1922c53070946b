"""Calls of the agent's live migration (``corral.agent_api.migration``): a job started on the
SOURCE host's agent, followed with corral.engine.agent_jobs.run_job."""

from __future__ import annotations

from corral.agent_api.migration import MigrateBody, Migrated
from corral.engine.agent_calls.jobs import JobCalls, JobStart


class MigrationCalls(JobCalls):
    def migrate_job(self, name: str, body: MigrateBody) -> JobStart[Migrated]:
        return JobStart(f"/v1/domains/{name}/migrate", body, Migrated)
