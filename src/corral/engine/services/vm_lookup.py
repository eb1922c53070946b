"""Finding a VM by name, and the guard of every device change (disks, NICs)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from corral.api import VmState
from corral.engine.db.models import Vm
from corral.errors import NotFound, WrongState

# Devices change on stopped VMs (their definition) and running ones (hot-plug as well).
DEVICE_CHANGEABLE = (VmState.STOPPED, VmState.RUNNING)


def find_vm(s: Session, name: str) -> Vm:
    """The VM called ``name`` (404 when there is none)."""
    vm = s.query(Vm).filter_by(name=name).one_or_none()
    if vm is None:
        raise NotFound(f"VM {name} not found")
    return vm


def check_device_change(vm: Vm, what: str, devices: str) -> VmState:
    """Refuse (409) a change of ``devices`` on a VM that is neither stopped nor running, or
    on no host; ``what`` says the change ("add a NIC to")."""
    state = VmState(vm.state)
    if state not in DEVICE_CHANGEABLE:
        raise WrongState(f"cannot {what} VM {vm.name}: it is {state.value} ({devices} change "
                         "on stopped or running VMs)")
    if vm.host_id is None:
        raise WrongState(f"VM {vm.name} is on no host")
    return state
