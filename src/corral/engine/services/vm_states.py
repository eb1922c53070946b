"""Which power action is valid in which VM state (Firecracker's lesson: explicit, never a hang)."""

from __future__ import annotations

from corral.api import PowerAction, VmState
from corral.errors import WrongState

ALLOWED: dict[PowerAction, frozenset[VmState]] = {
    PowerAction.START: frozenset({VmState.STOPPED, VmState.CRASHED}),
    PowerAction.STOP: frozenset({VmState.RUNNING, VmState.PAUSED, VmState.SHUTTING_DOWN}),
    PowerAction.REBOOT: frozenset({VmState.RUNNING}),
    PowerAction.PAUSE: frozenset({VmState.RUNNING}),
    PowerAction.RESUME: frozenset({VmState.PAUSED}),
}

# Desired power after each action succeeds.
DESIRED: dict[PowerAction, str] = {
    PowerAction.START: "running",
    PowerAction.STOP: "stopped",
    PowerAction.REBOOT: "running",
    PowerAction.PAUSE: "paused",
    PowerAction.RESUME: "running",
}

DELETABLE = frozenset({VmState.STOPPED, VmState.CRASHED, VmState.ERROR, VmState.UNKNOWN})


def check_action(name: str, state: VmState, action: PowerAction) -> None:
    if state not in ALLOWED[action]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED[action]))
        raise WrongState(
            f"cannot {action.value} VM {name}: it is {state.value} "
            f"({action.value} needs the VM to be {allowed})",
            state=state.value,
        )


def check_delete(name: str, state: VmState, force: bool) -> None:
    if state in DELETABLE or force:
        return
    raise WrongState(
        f"cannot delete VM {name}: it is {state.value}; stop it first or delete with force",
        state=state.value,
    )
