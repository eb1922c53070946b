"""API types of one host's settings and live state (``/api/v1/hosts/{name}``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from corral.api.models import Host, _Request


class HostMemory(BaseModel):
    """The host's memory now, as its agent reads it."""

    total_mib: int
    available_mib: int
    ksm: bool | None = Field(description="Kernel same-page merging on; null: the kernel "
                             "offers none")
    ksm_saved_mib: int = Field(0, description="Memory KSM's merged pages spare")
    vms_booted_mib: int = Field(0, description="Memory the running VMs were started with")
    vms_balloon_mib: int = Field(0, description="What their balloons leave their guests "
                                 "(less than booted: the balloons took the rest back)")


class HostDetail(Host):
    memory: HostMemory | None = Field(None, description="Live; null when its agent does not "
                                      "answer")


class HostPatch(_Request):
    """Changes to a host; a field left out is left as it is."""

    ksm: bool | None = Field(None, description="Kernel same-page merging: on merges identical "
                             "pages of VMs (memory overcommit), off splits them again")


class HostPower(_Request):
    """``POST /api/v1/hosts/{name}/reboot`` and ``.../shutdown``: empty the host, then reboot
    or power off its machine."""

    force: bool = Field(False, description="As `host maintenance --force`: VMs that cannot "
                        "move stay (and go down with the machine)")
    return_vms: bool = Field(False, description="Reboot only: once the host is back, activate "
                             "it and bring back the VMs that moved off, where the rules allow")
