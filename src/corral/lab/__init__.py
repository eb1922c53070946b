"""The multi-host lab: "hosts" on this machine made of namespaces, each with its own libvirtd.

    from corral.lab import LabHost

    with LabHost("h1", 1, Path("/tmp/lab/h1")) as host:
        conn = libvirt.open(host.libvirt_uri())   # from the machine's own namespaces
        host.run(["ip", "addr"])                  # inside the lab host

Used by the integration tests and by ``corral lab up --hosts N``.
"""

from corral.lab.host import LabHost

__all__ = ["LabHost"]
