"""A stopped VM's own files on its host, read and written whole, for an offline migration
(``/v1/vms/{vm}/files``): its root disk in the host's storage dir (``vms/VM.qcow2``, a qcow2
overlay over the image) and its UEFI variable store (``vms/VM.nvram.fd``).

The engine relays them as it relays image copies (agents accept only the engine's
certificate): ``GET .../files?digest=true`` on the source, ``GET .../files/{kind}`` streamed
into ``PUT .../files/{kind}?size=N&sha256=HEX[&image=NAME]`` on the target, which keeps a
file only when size and digest match, never over a file it has, and points a root disk's
backing file at its own copy of image ``NAME``.
"""

from __future__ import annotations

from typing import Literal

from corral.agent_api import Answer

VmFileKind = Literal["root", "nvram"]
VM_FILE_KINDS: tuple[VmFileKind, ...] = ("root", "nvram")


class VmFile(Answer):
    kind: VmFileKind
    size: int  # bytes of the file (not the disk's virtual size)
    sha256: str | None = None  # hex; None when not asked for (``digest=false``)
    # root: the qcow2 backing file (the image's path on this host; None: a disk of its own)
    backing: str | None = None


class VmFiles(Answer):
    """The VM's files on the host (none: an empty list)."""

    files: list[VmFile]
