"""Which power action is valid in which state: wrong-state actions are a 409, never a hang."""

from __future__ import annotations

import pytest

from corral.api import PowerAction, VmState
from corral.engine.services.vm_states import ALLOWED, check_action, check_delete
from corral.errors import WrongState


@pytest.mark.parametrize(("state", "action"), [(s, a) for a in PowerAction for s in sorted(ALLOWED[a])])
def test_allowed(state: VmState, action: PowerAction) -> None:
    check_action("vm1", state, action)


@pytest.mark.parametrize(
    ("state", "action"),
    [(VmState.RUNNING, PowerAction.START), (VmState.STOPPED, PowerAction.STOP),
     (VmState.STOPPED, PowerAction.PAUSE), (VmState.RUNNING, PowerAction.RESUME),
     (VmState.PAUSED, PowerAction.REBOOT), (VmState.CREATING, PowerAction.START),
     (VmState.DELETING, PowerAction.STOP)],
)
def test_refused_with_clear_message(state: VmState, action: PowerAction) -> None:
    with pytest.raises(WrongState) as exc:
        check_action("vm1", state, action)
    assert exc.value.status == 409
    assert f"cannot {action.value} VM vm1: it is {state.value}" in exc.value.message


def test_delete_running_needs_force() -> None:
    with pytest.raises(WrongState, match="stop it first"):
        check_delete("vm1", VmState.RUNNING, force=False)
    check_delete("vm1", VmState.RUNNING, force=True)
    check_delete("vm1", VmState.STOPPED, force=False)
