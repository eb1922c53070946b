"""Snapshots of a domain: libvirt *internal* snapshots, kept inside the qcow2 disk.

Why internal: libvirt 9 cannot revert external snapshots, while internal ones give trees
(any snapshot can be reverted to and a new branch taken from there), memory state, revert
and delete without any backing chain to merge (qcow2 refcounts the clusters: deleting a
snapshot only drops references, children stay valid).

* ``memory=True`` on a running (or paused) VM: a checkpoint of disk and memory; reverting
  resumes the VM where it was.
* ``memory=False`` on a stopped VM: a disk snapshot (libvirt runs ``qemu-img snapshot``).
* ``memory=False`` on a running VM: libvirt 9 refuses internal disk-only snapshots of running
  domains, so the snapshot is taken as a checkpoint and marked disk-only; reverting to it
  loads it paused and powers the VM off, so the VM comes back stopped with the disk as it
  was (crash-consistent, or file-system consistent with ``quiesce``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import libvirt
from lxml import etree

from corral.agent.hypervisor import guest_agent
from corral.agent.hypervisor.libvirt_host import Hypervisor, _mapped
from corral.errors import Conflict, NotFound, WrongState

DISK_ONLY_TAG = "[corral:disk-only]"


def _snapshot_xml(name: str, memory: str, description: str | None) -> str:
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = name
    if description:
        etree.SubElement(root, "description").text = description
    etree.SubElement(root, "memory", snapshot=memory)
    return etree.tostring(root, encoding="unicode")


def _describe(snap: Any) -> dict[str, Any]:
    root = etree.fromstring(snap.getXMLDesc(0).encode())
    state = root.findtext("state") or "shutoff"
    description = root.findtext("description")
    disk_only = description is not None and description.startswith(DISK_ONLY_TAG)
    if disk_only and description is not None:
        description = description.removeprefix(DISK_ONLY_TAG).strip() or None
    memory = state in ("running", "paused") and not disk_only
    return {
        "name": root.findtext("name"),
        "parent": root.findtext("parent/name"),
        "created_at": datetime.fromtimestamp(int(root.findtext("creationTime") or 0), UTC),
        "state": {"shutoff": "stopped"}.get(state, state),
        "memory": memory,
        "current": bool(snap.isCurrent(0)),
        "description": description,
        "disk_only": disk_only,
    }


class SnapshotOps:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv

    def _snap(self, dom: Any, vm: str, name: str) -> Any:
        try:
            return dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                raise NotFound(f"VM {vm} has no snapshot {name}") from exc
            raise

    def list(self, vm: str) -> list[dict[str, Any]]:
        dom = self.hv._domain(vm)
        with _mapped(f"snapshots of {vm}"):
            snaps = [_describe(s) for s in dom.listAllSnapshots(0)]
        return sorted(snaps, key=lambda s: (s["created_at"], s["name"]))

    def get(self, vm: str, name: str) -> dict[str, Any]:
        dom = self.hv._domain(vm)
        with _mapped(f"snapshot {name} of {vm}"):
            return _describe(self._snap(dom, vm, name))

    def create(self, vm: str, name: str, memory: bool, quiesce: bool,
               description: str | None) -> dict[str, Any]:
        """Take a snapshot; idempotent (an existing snapshot of that name is returned)."""
        dom = self.hv._domain(vm)
        with _mapped(f"snapshot {name} of {vm}"):
            names = dom.snapshotListNames(0)
            if name in names:
                return _describe(self._snap(dom, vm, name))
            active = bool(dom.isActive())
            if memory and not active:
                raise WrongState(f"VM {vm} is not running: there is no memory to save "
                                 "(take a disk snapshot without --memory)")
            desc = description
            if active and not memory:
                desc = f"{DISK_ONLY_TAG} {description or ''}".strip()
            xml = _snapshot_xml(name, "internal" if active else "no", desc)
            frozen = False
            if quiesce and active:
                try:
                    dom.fsFreeze(None, 0)
                except libvirt.libvirtError as exc:
                    raise Conflict(
                        f"cannot quiesce VM {vm}: {exc.get_error_message()} (quiesce needs the "
                        "QEMU guest agent running in the guest)", field="quiesce") from exc
                frozen = True
            try:
                snap = dom.snapshotCreateXML(xml, 0)
            finally:
                if frozen:
                    dom.fsThaw(None, 0)
            return _describe(snap)

    def revert(self, vm: str, name: str) -> dict[str, Any]:
        """Revert disk (and memory: the VM resumes as it was); returns the domain's info."""
        dom = self.hv._domain(vm)
        with _mapped(f"revert {vm} to {name}"):
            snap = self._snap(dom, vm, name)
            info = _describe(snap)
            if info["disk_only"]:
                dom.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED)
                if dom.isActive():
                    dom.destroy()
            else:
                self.hv.start_gate()  # a memory snapshot runs the domain again
                # A guest whose agent answers now most likely has one in the snapshot too:
                # wait for it to answer again (only then), its clock is back at the snapshot's.
                had_agent = dom.isActive() and guest_agent.answers(dom)
                dom.revertToSnapshot(snap, 0)
                if dom.isActive():
                    guest_agent.sync_time(dom, guest_agent.SYNC_WAIT_S if had_agent else 0.0)
        return self.hv.get(vm).model_dump()

    def delete(self, vm: str, name: str) -> bool:
        """Delete one snapshot (its children are re-parented); False when absent."""
        dom = self.hv._domain(vm)
        with _mapped(f"delete snapshot {name} of {vm}"):
            try:
                snap = self._snap(dom, vm, name)
            except NotFound:
                return False
            snap.delete(0)
        return True
