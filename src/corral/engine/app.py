"""The engine's FastAPI application: wiring of context, services, routes and background loops."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import corral
from corral.api import ErrorBody
from corral.engine import body_limit, ui
from corral.engine.audit import AuditLog
from corral.engine.balance_loop import Balancer
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.session import migrate
from corral.engine.ha_loop import HaLoop
from corral.engine.reconciler import Reconciler
from corral.engine.routes import audit as audit_routes
from corral.engine.routes import auth_ldap as ldap_routes
from corral.engine.routes import cluster, events, hosts, images, networks, operations, vms
from corral.engine.routes import cluster_policy as cluster_policy_routes
from corral.engine.routes import cluster_settings as cluster_setting_routes
from corral.engine.routes import customize as customize_routes
from corral.engine.routes import ha as ha_routes
from corral.engine.routes import host_fence as host_fence_routes
from corral.engine.routes import pools as pool_routes
from corral.engine.routes import projects as project_routes
from corral.engine.routes import roles as role_routes
from corral.engine.routes import security_groups as sg_routes
from corral.engine.routes import stats as stats_routes
from corral.engine.routes import users as user_routes
from corral.engine.routes import vm_disks as vm_disk_routes
from corral.engine.routes import vm_groups as vm_group_routes
from corral.engine.routes import vm_guest as vm_guest_routes
from corral.engine.routes import vm_migration as vm_migration_routes
from corral.engine.routes import vm_nics as vm_nic_routes
from corral.engine.routes import vm_snapshots as vm_snapshot_routes
from corral.engine.routes import volumes as volume_routes
from corral.engine.services import customize as customize_service
from corral.engine.services import fencing as fencing_service
from corral.engine.services import host_lifecycle as host_lifecycle_service
from corral.engine.services import host_power as host_power_service
from corral.engine.services import host_settings as host_settings_service
from corral.engine.services import images as image_service
from corral.engine.services import networks as network_service
from corral.engine.services import ova as ova_service
from corral.engine.services import pools as pool_service
from corral.engine.services import vm_clones as vm_clone_service
from corral.engine.services import vm_disks as vm_disk_service
from corral.engine.services import vm_migration as vm_migration_service
from corral.engine.services import vm_nics as vm_nic_service
from corral.engine.services import vm_recovery as vm_recovery_service
from corral.engine.services import vm_root_disk as vm_root_disk_service
from corral.engine.services import vm_snapshots as vm_snapshot_service
from corral.engine.services import vms as vm_service
from corral.engine.services import volumes as volume_service
from corral.httpserve import BodyLimit, install_error_handlers


def build_context(settings: EngineSettings) -> EngineContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url)
    db_file = settings.data_dir / "corral.db"
    if db_file.exists():
        db_file.chmod(0o600)  # holds agent tokens
    ctx = EngineContext.build(settings)
    vm_service.register(ctx)
    host_settings_service.register(ctx)
    host_lifecycle_service.register(ctx)
    host_power_service.register(ctx)
    fencing_service.register(ctx)
    image_service.register(ctx)
    customize_service.register(ctx)
    network_service.register(ctx)
    for storage in (pool_service, volume_service, vm_disk_service,
                    vm_root_disk_service):
        storage.register(ctx)
    vm_snapshot_service.register(ctx)
    vm_clone_service.register(ctx)
    ova_service.register(ctx)
    vm_nic_service.register(ctx)
    vm_migration_service.register(ctx)
    vm_recovery_service.register(ctx)
    return ctx


def freeze_start_heap() -> None:
    """Keep the objects that exist at start out of every later garbage collection.

    A full collection walks every tracked object while holding the GIL, so the event loop
    waits (about 70 ms over the 110,000 objects the engine holds after import). What exists
    at start lives as long as the process; collections then walk only what came after."""
    gc.collect()
    gc.freeze()


def create_app(ctx: EngineContext) -> FastAPI:
    reconciler = Reconciler(ctx)
    balancer = Balancer(ctx)
    ha = HaLoop(ctx, reconciler.last_heard, reconciler.clock, heard=reconciler.ha_heard)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ctx.ops.resume_interrupted()
        reconciler.start()
        balancer.start()
        ha.start()
        freeze_start_heap()
        yield
        gc.unfreeze()
        ha.stop()
        balancer.stop()
        reconciler.stop()
        ctx.ops.shutdown()

    app = FastAPI(
        title="corral",
        version=corral.__version__,
        description="Virtual machines on your own hosts: REST API of the corral engine.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.reconciler = reconciler  # agents' reports go to it (routes/cluster.py)
    app.state.balancer = balancer  # routes/cluster_policy.py
    app.state.ha = ha  # routes/ha.py
    app.add_middleware(BodyLimit, limit=body_limit.DEFAULT, routes=body_limit.ROUTES)
    app.add_middleware(AuditLog)  # outside BodyLimit: a refused body is recorded too
    install_error_handlers(app)

    @app.get("/api/v1/health", tags=["status"], responses=ERRORS)
    async def health() -> dict[str, str]:  # no work: answered on the event loop, no thread hop
        return {"status": "ok", "version": corral.__version__}

    for module in (cluster, vms, images, operations, events, hosts, networks, customize_routes,
                   pool_routes, volume_routes, vm_disk_routes, vm_snapshot_routes,
                   vm_nic_routes, sg_routes, vm_guest_routes, vm_group_routes, user_routes,
                   audit_routes, ldap_routes, project_routes, role_routes,
                   vm_migration_routes, cluster_setting_routes, cluster_policy_routes,
                   ha_routes,
                   host_fence_routes, stats_routes):
        app.include_router(module.router, responses=ERRORS)
    ui.install(app)  # the web UI at / (pages, /static)
    return app


# What any route may answer besides its success, all in one shape (corral.api.ErrorBody):
# declared on every route, so that the OpenAPI document says what clients will get.
ERRORS: dict[int | str, dict[str, Any]] = {
    # content: JSON also where the route's own answer is not (plain text, event streams)
    status: {"model": ErrorBody, "description": why, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for status, why in [
        (400, "The body could not be read"),
        (401, "No token, or not a valid one"),
        (403, "The token's role lacks the permission the route needs"),
        (404, "No such resource"),
        (409, "Conflict: the name is taken, the resource is in use or in the wrong state"),
        (413, "The body is too large"),
        (422, "A field is not valid (``error.field`` names it)"),
        (429, "Too many failed logins: wait (``error.details.retry_after_s``)"),
        (500, "A bug: the engine's log has the details"),
        (502, "A host's agent failed or could not be reached"),
        (503, "A dependency is missing or not running"),
        (504, "A host's agent did not answer in time"),
    ]
}
