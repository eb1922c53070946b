"""/api/v1/vms/{name}/migrate: move a VM to another host (live, or offline if stopped)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from corral.api import Operation
from corral.api.migration import VmMigrate
from corral.api.scheduling import Placement
from corral.engine.context import EngineContext
from corral.engine.routes.deps import VmName, authenticated, context, need
from corral.engine.services import vm_migration

router = APIRouter(prefix="/api/v1/vms/{name}", tags=["vms"],
                   dependencies=[Depends(authenticated)])


@router.post("/migrate", dependencies=need("vm.migrate"), status_code=202,
             response_model=Operation, responses={200: {
                 "model": Placement, "description": "explain=true: where it would go, and "
                 "how every other host was judged; nothing moves"}})
def migrate_vm(name: VmName, req: VmMigrate,
               explain: bool = Query(False, description="A dry run: answer the placement "
                                     "explanation (200), move nothing"),
               ctx: EngineContext = Depends(context)) -> Operation | JSONResponse:
    """Live-migrate the running VM to host ``to`` (none: the scheduler picks one). Checked
    before anything moves: a 409 names what stops it (VM not running, target down or full,
    a disk that would need copying...). ``DELETE /api/v1/operations/{id}`` aborts it: the
    VM keeps running where it was. The operation ends with the measured downtime.
    ``offline: true`` moves a stopped VM instead (its files copied, then defined on the
    target and removed from its host; a cancel before the switch leaves it where it was)."""
    if explain:
        return JSONResponse(vm_migration.explain(ctx, name, req.to).model_dump(mode="json"))
    return vm_migration.migrate(ctx, name, req)
