"""Images on a host and the long work on them, and OVA export/import: ``/v1/images``,
``/v1/disks/{vm}/customize``, ``/v1/disks/{vm}/export-ova`` and
``/v1/pools/{pool}/volumes/{volume}/import-ova``.

The routes that start work (import, customize, OVA) answer a ``corral.agent_api.jobs.JobInfo``;
the models named ``...Imported``/``Customized``/... here are what such a job's result reads
as. A customization's body is ``corral.api.GuestCustomize`` (the public API's model, with its
checks), which the agent imports on the route's first call: not in this module, so that
importing it stays cheap for the idle agent.
"""

from __future__ import annotations

from pydantic import Field

from corral.agent_api import Answer, Body

# -- images --------------------------------------------------------------------------------


class ImageInfo(Answer):
    """An image file on the host (``GET``, build-tiny, templates, the jobs' results)."""

    format: str  # qcow2 | raw | iso (str: a newer agent's format is still readable)
    virtual_size: int  # bytes
    file_size: int  # bytes
    kernel: str | None = None  # direct-boot files beside it (the tiny guest)
    initrd: str | None = None
    cmdline: str | None = None


class ImageDetail(ImageInfo):
    """``GET /v1/images/{name}``: also the VM disks that have it as their backing file."""

    users: list[str] = Field(default_factory=list)


class BuildTinyBody(Body):
    """``POST /v1/images/{name}/build-tiny``: the tiny guest, optionally with the QEMU guest
    agent (no body: without)."""

    guest_agent: bool = False


class ImageImportBody(Body):
    """``POST /v1/images/{name}/import``: a job; its result is an ``ImageImported``."""

    source: str  # an http(s) URL or an absolute path on the host
    format: str = "auto"
    checksum: str | None = None  # ALGO:HEX, or a URL of a checksum file


class ImageImported(ImageInfo):
    source_format: str | None = None  # what the source was before conversion
    sha256: str | None = None
    resumes: int = 0  # dropped connections the download went on after
    virtual_size_source: int = 0


class Customized(Answer):
    """The result of a customization job (of an image or of a VM's disk)."""

    disk: str
    steps: list[str] = Field(default_factory=list)  # what virt-customize did, in order
    file_size: int


# -- OVA -----------------------------------------------------------------------------------


class OvaNic(Body):
    network: str | None = None
    mac: str | None = None


class VolumeRef(Body):
    pool: str
    name: str


class OvaExportBody(Body):
    """``POST /v1/disks/{vm}/export-ova``: a job; its result is an ``OvaExported``."""

    path: str  # absolute, ending in .ova, on the host
    cpus: int
    memory_mib: int
    nics: list[OvaNic] = Field(default_factory=list)
    # attached volumes, in target order: disk2.vmdk, ...
    volumes: list[VolumeRef] = Field(default_factory=list)


class OvaExported(Answer):
    path: str
    size: int  # bytes
    created: bool  # False: the OVA was there already (a re-run of the same operation)


class OvaImportBody(Body):
    """``POST /v1/images/{name}/import-ova``: a job; its result is an ``OvaImported``."""

    path: str


class OvaDisk(Answer):
    file: str  # the OVA's member holding it
    capacity: int  # bytes


class OvaSystemNic(Answer):
    network: str | None = None
    mac: str | None = None
    model: str | None = None


class OvaSystem(Answer):
    """The hardware the OVA's descriptor asks for."""

    name: str
    cpus: int
    memory_mib: int
    disks: list[OvaDisk]
    nics: list[OvaSystemNic] = Field(default_factory=list)


class OvaImported(ImageInfo):
    """The image made of the OVA's first disk, and the descriptor's hardware (its other disks
    are written over volumes: ``OvaFillBody``)."""

    system: OvaSystem


class OvaFillBody(Body):
    """``POST /v1/pools/{pool}/volumes/{volume}/import-ova``: a job writing the OVA's disk
    number ``disk`` (0-based, descriptor order) over the volume; its result: ``VolumeFilled``."""

    path: str
    disk: int


class VolumeFilled(Answer):
    volume: str  # POOL/NAME
    virtual_size: int  # bytes
