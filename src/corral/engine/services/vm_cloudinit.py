"""cloud-init of VMs: the engine renders the seed's files (policy), the agent writes the ISO.

The VM row keeps the settings as given (``api.CloudInit``) plus a ``revision`` that counts
changes: the instance id is the VM id, then ``ID.N`` after N changes, so that cloud-init in
the guest applies changed settings again (it runs users, keys and runcmd once per instance
id). ``PATCH /api/v1/vms/{name}`` changes them while the VM is stopped
(corral.engine.services.vm_settings: the seed is rebuilt and the domain defined again, a
seed added or removed adds or removes the CD-ROM).

The user-data and the password hash are write-only: a VM's show and list hide them
(``api.CloudInitShown``); only ``GET /api/v1/vms/{name}/cloud-init`` returns them, to callers
with ``vm.secrets``. No operation parameter, event or log line carries them for longer than
the operation that writes them runs (see vm_settings).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from corral import cloudinit
from corral.api import CloudInit, CloudInitShown
from corral.api.models import CLOUD_INIT_SECRETS
from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.db.models import Nic, Vm
from corral.engine.projects import bare_name
from corral.engine.services.vm_lookup import find_vm
from corral.errors import NotFound


def stored(ci: CloudInit | None, revision: int = 0) -> dict[str, Any] | None:
    """The JSON kept on the VM row (None: no seed)."""
    if ci is None:
        return None
    return {**ci.model_dump(mode="json", exclude_none=True), "revision": revision}


def from_row(data: dict[str, Any] | None) -> CloudInit | None:
    """The settings of a row, as they were checked when written: not validated again (a read
    never parses the user-data, see corral.cloudinit.validate)."""
    if data is None:
        return None
    return CloudInit.model_construct(**{k: v for k, v in data.items()
                                        if k in CloudInit.model_fields})


def shown(data: dict[str, Any] | None) -> CloudInitShown | None:
    """The settings of a row as a VM's show and list give them: secrets hidden."""
    ci = from_row(data)
    return None if ci is None else CloudInitShown.of(ci)


def settings(ctx: EngineContext, name: str) -> CloudInit:
    """The whole settings of a VM, secrets included (``GET .../cloud-init``, vm.secrets);
    404 for a VM without a seed."""
    with ctx.db.session() as s:
        ci = from_row(find_vm(s, name).cloud_init)
    if ci is None:
        raise NotFound(f"VM {name} has no cloud-init settings", field="name")
    return ci


def scrubbed(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """Stored settings without their secrets' values (what an operation keeps once done)."""
    if data is None:
        return None
    return {k: "(removed)" if k in CLOUD_INIT_SECRETS and v is not None else v
            for k, v in data.items()}


def check(ci: CloudInit | None, name: str) -> None:
    """Render the seed once (placeholder instance id): what the renderer refuses (YAML that is
    not a mapping, anchors, too large or too deep) is a 422 now, not a failed operation."""
    if ci is not None:
        cloudinit.render(
            instance="check", hostname=ci.hostname or cloudinit.default_hostname(name),
            user=ci.user, ssh_authorized_keys=ci.ssh_authorized_keys,
            password_hash=ci.password_hash, user_data=ci.user_data,
            network_config=ci.network_config,
        )


def seed_files(vm_id: str, name: str, mac: str | None, data: dict[str, Any]) -> dict[str, str]:
    ci = from_row(data)
    assert ci is not None
    files = cloudinit.render(
        instance=cloudinit.instance_id(vm_id, int(data.get("revision", 0))),
        hostname=ci.hostname or cloudinit.default_hostname(bare_name(name)),
        user=ci.user, ssh_authorized_keys=ci.ssh_authorized_keys, password_hash=ci.password_hash,
        user_data=ci.user_data, network_config=ci.network_config, mac=mac,
    )
    return files.as_dict()


def first_mac(s: Session, vm: Vm) -> str | None:
    """The MAC cloud-init's default network config matches: the VM's first NIC's."""
    row = s.query(Nic).filter_by(vm_id=vm.id).order_by(Nic.idx).first()
    return row.mac if row is not None else None


def push_seed(ctx: EngineContext, agent: AgentClient, vm_id: str) -> bool:
    """Write the VM's seed on its host from the row; False (and nothing written) without one."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None:
            raise NotFound(f"VM {vm_id} not found")
        if vm.cloud_init is None:
            return False
        name = vm.name
        files = seed_files(vm.id, vm.name, first_mac(s, vm), vm.cloud_init)
    agent.write_seed(name, files)
    return True
