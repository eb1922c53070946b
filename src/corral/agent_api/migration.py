"""Live migration of a running domain to another host (``POST /v1/domains/{name}/migrate``,
a job: corral.agent_api.jobs). The agent of the SOURCE host runs it; its libvirtd connects
to ``destination`` itself (peer to peer), so the engine never talks to libvirt."""

from __future__ import annotations

from pydantic import Field, field_validator

from corral.agent_api import Answer, Body

# libvirt transports a destination may be reached by: TCP (a trusted migration network, the
# lab) or TLS (certificates of corral's CA in the hosts' libvirt PKI directories).
URI_SCHEMES = ("qemu+tcp", "qemu+tls")


class MigrateBody(Body):
    """What the engine asks of one live migration."""

    destination: str = Field(description="libvirt URI of the target's libvirtd: "
                             "qemu+tcp://ADDR/system or qemu+tls://NAME/system (the source's "
                             "agent adds its own certificates' pkipath to a qemu+tls one)")
    # Where QEMU sends the guest's memory (and disks): the target's address on the
    # cluster's migration network; None: where the target's libvirtd says.
    migrate_uri: str | None = Field(None, description="tcp://ADDR of the target for the "
                                    "migration stream (the cluster's migration network)")
    tls: bool = Field(False, description="encrypt the migration stream with QEMU's native "
                      "TLS (both hosts' certificates from corral's CA)")
    tls_hostname: str | None = Field(None, max_length=253, description="with tls: the name "
                                     "the target's certificate must carry (its host name: "
                                     "migrate_uri is an address)")
    # The domain as the target runs it (its disk, kernel and console paths) and keeps it
    # defined; None: the source's (same paths on both hosts).
    dest_xml: str | None = None
    persist_xml: str | None = None
    live: bool = True
    persist: bool = Field(True, description="define it on the target and undefine it on the "
                          "source once it runs there")
    auto_converge: bool = True
    max_downtime_ms: int | None = Field(None, ge=1, le=60_000)
    bandwidth_mib_s: int | None = Field(None, ge=1, le=1_000_000)
    postcopy: bool = Field(False, description="allow switching to post-copy when pre-copy "
                           "does not converge within converge_timeout_s")
    converge_timeout_s: int = Field(600, ge=5, le=86_400, description="past this, switch to "
                                    "post-copy (if allowed) or abort with the reason")
    copy_storage: bool = Field(False, description="copy the disks that are not shared "
                               "(the target's disks must exist, with the same size and "
                               "base: only their own layer is copied)")
    copy_disks: list[str] = Field([], description="with copy_storage: the target devices "
                                  "(vda) to copy; the others are shared")
    # The engine checked that every disk is in a pool every host reaches (shared dir pools
    # are verified on each host by their marker, rbd is Ceph): libvirt then need not guess.
    # It knows NFS, GFS2, CephFS... but not a directory the hosts share by other means (a
    # cluster mount it does not recognize, the lab's one directory), which it calls unsafe.
    shared_storage: bool = False

    @field_validator("destination")
    @classmethod
    def _uri(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in URI_SCHEMES or not rest.split("/", 1)[0]:
            raise ValueError(f"a libvirt URI {' or '.join(s + '://HOST/system' for s in URI_SCHEMES)}")
        return value

    @field_validator("migrate_uri")
    @classmethod
    def _stream_uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme, sep, rest = value.partition("://")
        if scheme != "tcp" or not sep or not rest or "/" in rest or "?" in rest:
            raise ValueError("tcp://ADDRESS (an IPv6 address in brackets)")
        return value


class Migrated(Answer):
    """The result of a migration job that succeeded."""

    destination: str
    downtime_ms: int | None = None  # libvirt's measure of the guest's pause (None: unknown)
    total_ms: int  # from the call to the guest running on the target
    memory_bytes: int | None = None  # memory transferred
    iterations: int | None = None
    postcopy: bool = False  # it switched to post-copy
    tls: bool = False  # the stream was encrypted (QEMU's TLS)
