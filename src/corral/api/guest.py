"""API types of what reaches into a running guest: `corral vm exec` (through the QEMU guest
agent) and `corral vm vnc` (where the VM's display listens)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from corral.api.models import _Request

__all__ = ["VmExec", "VmExecResult", "VmVnc"]

EXEC_TIMEOUT_MAX = 300
EXEC_INPUT_MAX = 1 << 20
EXEC_ARG_MAX = 64 << 10  # characters of one argument (a script given to sh -c)


class VmExec(_Request):
    """``POST /api/v1/vms/{name}/exec``: a command run by the guest agent, waited for."""

    command: list[Annotated[str, Field(max_length=EXEC_ARG_MAX)]] = Field(
        min_length=1, max_length=256, description=(
        "The program and its arguments (no shell: give [\"sh\", \"-c\", \"...\"] for one); "
        "the program is looked up in the guest agent's PATH"))
    stdin: str | None = Field(None, max_length=EXEC_INPUT_MAX, description="Text fed to "
                              "its standard input")
    timeout: int = Field(30, ge=1, le=EXEC_TIMEOUT_MAX, description="Seconds to wait for "
                         "it to exit; a command still running then is left running")


class VmExecResult(BaseModel):
    exit_code: int | None = Field(description="None when a signal ended it or it timed out")
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = Field(False, description="Output beyond 1 MiB a stream was cut")
    timed_out: bool = False


class VmVnc(BaseModel):
    """``GET /api/v1/vms/{name}/vnc``: the running VM's VNC display on its host."""

    vm: str
    host: str = Field(description="The host the VM runs on")
    host_address: str = Field(description="The address the engine reaches that host at")
    listen: str = Field(description="The address the display listens on (the host's "
                        "loopback: reach it through an SSH tunnel)")
    port: int
