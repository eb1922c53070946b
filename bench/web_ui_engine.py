"""The engine bench/web_ui.py measures: `corral up --no-local-agent` as it runs
(corral.node.up.run_up, unchanged: uvicorn over HTTPS with the engine's TLS), in this process,
plus one thread standing in for the reconciler of the SSE fan-out: when bench/web_ui.py writes
``DATA_DIR/bench-flip`` (a state, then the VMs' full names, one a line), it sets each VM's row
to that state with ``vm_define.set_fields`` — the reconciler's and the operations' own write,
which publishes the ``vm`` event — and removes the file. No agent: the VMs are rows.

Usage: python bench/web_ui_engine.py DATA_DIR PORT (stopped with SIGTERM, as `corral down`).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from corral.engine.context import EngineContext
from corral.engine.db.models import Vm
from corral.engine.services import vm_define
from corral.node import up

FLIP = "bench-flip"


def flipper(served: list[EngineContext], data_dir: Path) -> None:
    """Apply each flip file the benchmark writes (polled every 10 ms)."""
    flip = data_dir / FLIP
    while True:
        time.sleep(0.01)
        if not served or not flip.exists():
            continue
        state, *names = flip.read_text().split()
        ctx = served[0]
        with ctx.db.session() as s:
            ids = [vm_id for (vm_id,) in s.query(Vm.id).filter(Vm.name.in_(names))]
        for vm_id in ids:
            vm_define.set_fields(ctx, vm_id, state=state)
        flip.unlink()


def main() -> None:
    data_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    served: list[EngineContext] = []
    real = up.create_app

    def create_app(ctx: EngineContext) -> Any:
        served.append(ctx)  # the context the server publishes on
        return real(ctx)

    up.create_app = create_app  # type: ignore[assignment]
    threading.Thread(target=flipper, args=(served, data_dir), daemon=True).start()
    up.run_up(up.UpOptions(data_dir=data_dir, listen="127.0.0.1", port=port,
                           local_agent=False,  # the admin's, written by bench/web_ui.py
                           admin_password_file=data_dir / "admin-password"))


if __name__ == "__main__":
    main()
