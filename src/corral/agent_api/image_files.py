"""An image's files on a host, one by one, for copying an image from host to host:
``/v1/images/{name}/files``.

The engine relays a copy (agents accept only the engine's certificate, so they never talk
to each other): it lists the source's files with their SHA-256 (``GET .../files?digest=true``),
streams each one out of the source (``GET .../files/{kind}``) into the target
(``PUT .../files/{kind}?size=N&sha256=HEX``, the raw bytes as the body), which keeps it only
when size and digest match. The image file (``qcow2`` or ``iso``) goes last: a host that has
it has the whole image.
"""

from __future__ import annotations

from typing import Literal

from corral.agent_api import Answer

# The files of image NAME in the host's images/ dir, NAME.KIND; the first two are the image
# itself (one or the other), the others travel with a direct-boot image.
FileKind = Literal["qcow2", "iso", "vmlinuz", "initrd", "cmdline"]
MAIN_KINDS: tuple[FileKind, ...] = ("qcow2", "iso")
BOOT_KINDS: tuple[FileKind, ...] = ("vmlinuz", "initrd", "cmdline")


class ImageFile(Answer):
    kind: FileKind
    size: int  # bytes
    sha256: str | None = None  # hex; None when not asked for (``digest=false``)


class ImageFiles(Answer):
    """The files of an image on a host (none: 404); the image file last."""

    files: list[ImageFile]


class ImageInPool(Answer):
    """``GET /v1/pools/{pool}/bases/{image}``: whether a shared or rbd pool already holds
    the image's base (``.bases/img.IMAGE.qcow2``, Ceph ``img.IMAGE``), from which a root
    disk is made without the image in the host's own images/ dir."""

    present: bool
