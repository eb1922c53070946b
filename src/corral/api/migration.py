"""API types of live migration (``corral vm migrate``, ``POST /api/v1/vms/{name}/migrate``)."""

from __future__ import annotations

from pydantic import Field

from corral.api.models import Name, _name_field, _Request

__all__ = ["VmMigrate"]


class VmMigrate(_Request):
    """Move a VM to another host: a running one while it runs, a stopped one offline."""

    to: Name | None = Field(None, description="The target host; none: the scheduler picks "
                            "one (every hard rule applies, the VM's own host excluded)")
    max_downtime_ms: int | None = Field(None, ge=1, le=60_000, description="The longest "
                                        "pause of the guest at the switch-over (libvirt's "
                                        "default: 300 ms)")
    bandwidth_mib_s: int | None = Field(None, ge=1, le=1_000_000, description="Cap of the "
                                        "transfer rate, MiB/s (none: unlimited)")
    postcopy: bool = Field(False, description="Switch to post-copy when pre-copy does not "
                           "converge in time (the guest then runs on the target at once)")
    copy_storage: bool = Field(False, description="Copy a root disk on the host's own "
                               "storage to the target while the guest runs (its image base "
                               "is brought there first, only the VM's own layer is copied)")
    offline: bool = Field(False, description="Move a stopped VM: its image, root disk (if "
                          "in the host's own storage), UEFI variables and seed are copied, "
                          "the domain defined on the target, then removed from the source "
                          "(bandwidth_mib_s caps the copy; postcopy and max_downtime_ms do "
                          "not apply)")

    _to = _name_field("to")
