"""The web UI, served by the engine at ``/`` (the API stays under /api/v1): pages in
routes.py, what they show in views.py, the login session and CSRF in session.py. Its
browser files are ours (static/) and npm's, copied into static/vendor by `make
node_modules` from the locked package.json (never a CDN)."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from corral.engine.ui.routes import router

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    if not (STATIC / "vendor" / "htmx.min.js").is_file():
        log.warning("web UI: %s/vendor/htmx.min.js is missing (`make node_modules` copies it "
                    "from npm): pages work, without their live parts", STATIC)
    from corral.engine.ui import (  # after routes.py: they use its helpers
        admin,
        admin_access_forms,  # projects, quotas, roles, assignments; /users/{name}
        admin_network_forms,  # networks, security groups and their rules
        admin_storage_forms,  # pools, volumes, images: their actions
        consoles,
        graphs,
        portal,
    )

    # first: /vms/new before routes.py's /vms/{name}
    app.include_router(portal.router)
    # the admin pages' actions, before admin.py's own routes
    app.include_router(admin_storage_forms.router)
    app.include_router(admin_access_forms.router)
    app.include_router(admin_network_forms.router)
    app.include_router(admin.router)
    app.include_router(router)
    app.include_router(consoles.router)
    app.include_router(graphs.router)  # the live graphs' data (/ui/*/stats)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
