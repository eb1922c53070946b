"""The engine's FastAPI application: wiring of context, services, routes and background loops."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import corral
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.session import migrate
from corral.engine.reconciler import Reconciler
from corral.engine.routes import customize as customize_routes
from corral.engine.routes import events, hosts, images, networks, operations, vms
from corral.engine.routes import pools as pool_routes
from corral.engine.routes import security_groups as sg_routes
from corral.engine.routes import vm_disks as vm_disk_routes
from corral.engine.routes import vm_nics as vm_nic_routes
from corral.engine.routes import vm_snapshots as vm_snapshot_routes
from corral.engine.routes import volumes as volume_routes
from corral.engine.services import customize as customize_service
from corral.engine.services import images as image_service
from corral.engine.services import networks as network_service
from corral.engine.services import ova as ova_service
from corral.engine.services import pools as pool_service
from corral.engine.services import vm_clones as vm_clone_service
from corral.engine.services import vm_disks as vm_disk_service
from corral.engine.services import vm_nics as vm_nic_service
from corral.engine.services import vm_snapshots as vm_snapshot_service
from corral.engine.services import vms as vm_service
from corral.engine.services import volumes as volume_service
from corral.httpserve import install_error_handlers


def build_context(settings: EngineSettings) -> EngineContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url)
    db_file = settings.data_dir / "corral.db"
    if db_file.exists():
        db_file.chmod(0o600)  # holds agent tokens
    ctx = EngineContext.build(settings)
    vm_service.register(ctx)
    image_service.register(ctx)
    customize_service.register(ctx)
    network_service.register(ctx)
    for storage in (pool_service, volume_service, vm_disk_service):
        storage.register(ctx)
    vm_snapshot_service.register(ctx)
    vm_clone_service.register(ctx)
    ova_service.register(ctx)
    vm_nic_service.register(ctx)
    return ctx


def create_app(ctx: EngineContext) -> FastAPI:
    reconciler = Reconciler(ctx)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ctx.ops.resume_interrupted()
        reconciler.start()
        yield
        reconciler.stop()
        ctx.ops.shutdown()

    app = FastAPI(
        title="corral",
        version=corral.__version__,
        description="Virtual machines on your own hosts: REST API of the corral engine.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    install_error_handlers(app)

    @app.get("/api/v1/health", tags=["status"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": corral.__version__}

    for module in (vms, images, operations, events, hosts, networks):
        app.include_router(module.router)
    app.include_router(customize_routes.router)
    for storage_routes in (pool_routes, volume_routes, vm_disk_routes):
        app.include_router(storage_routes.router)
    app.include_router(vm_snapshot_routes.router)
    app.include_router(vm_nic_routes.router)
    app.include_router(sg_routes.router)
    return app
