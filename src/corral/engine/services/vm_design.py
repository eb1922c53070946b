"""The domain a VM's rows design, for the host that is to run it.

Everything host-local in the XML (disk paths under a host's own storage dir, the seed, the
console log) comes from that host's facts, so a domain can be designed for another host
than the VM's own (a migration target: ``domain_xml(..., host_id=TARGET)``, as Nova's
``get_updated_guest_xml`` does). Attached volumes and root disks in pools are the same
wherever the VM runs. The VM services (vms, vm_disks, vm_cloudinit, vm_clones, ova) and the
reconciler build on this module; it builds on none of them, so there is no import cycle.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from corral.api import Hardware
from corral.domainxml import DiskSpec, DomainSpec, design_domain
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, StoragePool, Vm, Volume
from corral.engine.services import vm_nics, vm_placement, volumes
from corral.errors import InvalidInput, NotFound


def pool_disk_spec(pool: StoragePool, source: str, fmt: str, bus: str = "virtio",
                   target: str | None = None) -> DiskSpec:
    """A disk in a pool as the designer's disk: the one way to turn a pool's file or RBD
    image (``CEPH_POOL/IMAGE``: a network disk on the pool's monitors) into a DiskSpec;
    attached volumes and VM root disks both use it."""
    if pool.type == "rbd":
        hosts = tuple((str(h), int(p)) for h, p in (pool.monitors or []))
        return DiskSpec(path=source, format="raw", bus=bus, target=target, protocol="rbd",
                        hosts=hosts)
    return DiskSpec(path=source, format=fmt, bus=bus, target=target)


def volume_spec(pool: StoragePool, vol: Volume) -> DiskSpec:
    """An attached volume as the designer's disk (an RBD image is a network disk)."""
    return pool_disk_spec(pool, volumes.source(pool, vol), vol.format, vol.bus or "virtio",
                          vol.target)


def target_key(target: str | None) -> tuple[str, int, str]:
    """Disk targets in the order a guest sees them: vdb before vdaa."""
    t = target or ""
    return t[:2], len(t), t


def attached_specs(s: Session, vm: Vm) -> list[DiskSpec]:
    """The volumes attached to ``vm``, in target order (after the root disk and seed)."""
    rows = (s.query(Volume, StoragePool).join(StoragePool, Volume.pool_id == StoragePool.id)
            .filter(Volume.vm_id == vm.id, Volume.target.isnot(None)).all())
    rows.sort(key=lambda r: target_key(r[0].target))
    return [volume_spec(pool, vol) for vol, pool in rows]


def root_pool(s: Session, vm: Vm) -> StoragePool | None:
    """The pool of the VM's root disk; None: the host's own storage dir."""
    return s.get(StoragePool, vm.root_pool_id) if vm.root_pool_id else None


def root_source(pool: StoragePool, vm_name: str) -> str:
    """The root disk's file in a pool, or ``CEPH_POOL/IMAGE`` of its RBD image."""
    if pool.type == "rbd":
        return f"{pool.ceph_pool}/vm.{vm_name}"
    return f"{pool.path}/.vms/{vm_name}.qcow2"


def root_path(facts: dict[str, Any], name: str) -> str:
    """A root disk in the host's own storage (corral.agent.storage's layout)."""
    return f"{facts['storage_dir']}/vms/{name}.qcow2"


def root_spec(s: Session, vm: Vm, storage_dir: str) -> DiskSpec:
    pool = root_pool(s, vm)
    if pool is None:
        return DiskSpec(path=root_path({"storage_dir": storage_dir}, vm.name), format="qcow2")
    fmt = "raw" if pool.type == "rbd" else "qcow2"
    return pool_disk_spec(pool, root_source(pool, vm.name), fmt)


def hardware_of(vm: Vm) -> Hardware:
    """The VM's hardware settings (a VM made before they existed has the defaults)."""
    return Hardware.model_validate(vm.hardware or {})


def check_hardware(hw: Hardware, cpus: int, memory_mib: int) -> None:
    """What the request model cannot see alone, for a create and a `vm set` alike: the vCPU
    count and the memory against their hot-plug ceilings, the topology (which spans the
    most vCPUs the VM can run) and the placement settings (vm_placement.check_settings)."""
    if hw.cpu_max is not None and hw.cpu_max < cpus:
        raise InvalidInput(f"{cpus} vCPUs exceed hardware.cpu_max {hw.cpu_max}: raise "
                           "cpu_max too", field="hardware.cpu_max")
    most = vm_placement.most_vcpus(hw, cpus)
    if most % (hw.sockets * hw.threads):
        raise InvalidInput(f"{most} vCPUs do not split into {hw.sockets} sockets of "
                           f"{hw.threads} threads per core", field="hardware.sockets")
    if hw.memory_max is not None and hw.memory_max < memory_mib:
        raise InvalidInput(f"memory {memory_mib} MiB exceeds hardware.memory_max "
                           f"{hw.memory_max} MiB: raise memory_max too",
                           field="hardware.memory_max")
    vm_placement.check_settings(hw, cpus, memory_mib)


def boot_settings(vm: Vm) -> dict[str, Any]:
    """What a domain designed from ``vm``'s rows runs with (``vms.booted`` when it starts)."""
    return {"cpus": vm.cpus, "memory_mib": vm.memory_mib,
            "balloon_mib": vm.memory_target_mib or vm.memory_mib,
            "hardware": hardware_of(vm).model_dump(mode="json")}


def pending(vm: Vm) -> list[str]:
    """The settings of a running or paused VM that its domain does not have yet: they apply
    when it is next started (nothing is known to be pending without ``vms.booted``)."""
    if vm.booted is None or vm.state not in ("running", "paused", "shutting-down"):
        return []
    now, then = boot_settings(vm), vm.booted
    out = [f for f, key in (("cpus", "cpus"), ("memory", "memory_mib")) if now[key] != then.get(key)]
    if vm.memory_target_mib is not None and now["balloon_mib"] != then.get("balloon_mib"):
        out.append("memory_target")
    booted_hw = then.get("hardware") or {}
    out.extend(f"hardware.{k}" for k, v in now["hardware"].items() if booted_hw.get(k, v) != v)
    return out


def nvram_path(facts: dict[str, Any], name: str) -> str:
    """The UEFI variable store of VM ``name``, next to its disk on its host (libvirt makes
    it from the firmware's template at first start and removes it with the domain)."""
    return f"{facts['storage_dir']}/vms/{name}.nvram.fd"


def _platform(hw: Hardware, cpus: int, facts: dict[str, Any], name: str) -> dict[str, Any]:
    """The DomainSpec fields of ``hw``."""
    mode, model = (hw.cpu_model, None) if hw.cpu_model.startswith("host-") \
        else ("custom", hw.cpu_model)
    most = vm_placement.most_vcpus(hw, cpus)
    topology = None if (hw.sockets, hw.threads) == (1, 1) else \
        (hw.sockets, most // (hw.sockets * hw.threads), hw.threads)
    boot = {"disk": "hd", "cdrom": "cdrom", "network": "network"}
    return {
        "machine": "pc" if hw.machine == "i440fx" else None,
        "firmware": hw.firmware, "secure_boot": hw.secure_boot, "tpm": hw.tpm,
        "nvram": nvram_path(facts, name) if hw.firmware == "uefi" else None,
        "boot": tuple(boot[b] for b in hw.boot),
        "cpu_mode": mode, "cpu_model": model, "topology": topology,
        "vnc": hw.graphics == "vnc", "video": hw.video,
        "watchdog": None if hw.watchdog == "none" else hw.watchdog,
        "max_vcpus": most if most > cpus else None,
        "memory_max_mib": hw.memory_max,
    }


def boot_file(facts: dict[str, Any], image: str, kind: str) -> str:
    """A direct-boot file of an image on the host (corral.agent.storage's layout)."""
    return f"{facts['storage_dir']}/images/{image}.{kind}"


def seed_path(facts: dict[str, Any], name: str) -> str:
    """Where the host's agent keeps the seed (corral.agent.storage.Storage.seed_path)."""
    return f"{facts['storage_dir']}/vms/{name}-cidata.iso"


def domain_xml(ctx: EngineContext, vm_id: str,
               host_id: str | None = None) -> tuple[str, str, str]:
    """(vm name, host id, domain XML) for ``host_id`` (default: the VM's host)."""
    with ctx.db.session() as s:
        vm = s.get(Vm, vm_id)
        if vm is None or (vm.host_id is None and host_id is None):
            raise NotFound(f"VM {vm_id} not found")
        host_id = host_id or vm.host_id
        host = s.get(Host, host_id)
        image = s.get(Image, vm.image_id)
        if host is None:
            raise NotFound(f"host {host_id} not found", field="host")
        assert image is not None
        facts = host.facts
        disks = [root_spec(s, vm, str(facts["storage_dir"]))]  # dir, shared or rbd
        if vm.cloud_init is not None:  # the NoCloud seed: a CD-ROM on virtio-scsi (the Debian
            # cloud kernel, of cloud images and the tiny guest, has no AHCI driver for sata)
            disks.append(DiskSpec(path=seed_path(facts, vm.name), format="raw",
                                  device="cdrom", bus="scsi", readonly=True))
        disks.extend(attached_specs(s, vm))
        if image.format == "iso":  # an install: the blank disk does not boot, the CD-ROM does
            disks.append(DiskSpec(path=f"{facts['storage_dir']}/images/{image.name}.iso",
                                  format="raw", device="cdrom", bus="sata", readonly=True))
        hw = hardware_of(vm)
        spec = DomainSpec(
            name=vm.name, uuid=vm.id, vm_id=vm.id, vcpus=vm.cpus, memory_mib=vm.memory_mib,
            virt_type=str(facts.get("virt_type", "qemu")),
            disks=disks,
            nics=vm_nics.nic_specs(s, vm),  # every NIC (vm nic add), in order
            console_log=f"{facts['console_dir']}/{vm.name}.log",
            # Direct boot: the files beside the image on this host (copied with it).
            kernel=boot_file(facts, image.name, "vmlinuz") if image.kernel else None,
            initrd=boot_file(facts, image.name, "initrd") if image.initrd else None,
            cmdline=image.cmdline,
            current_memory_mib=vm.memory_target_mib,
            **_platform(hw, vm.cpus, facts, vm.name),
            # pinning `auto` and the NUMA cells' host nodes: from this host's facts
            **vm_placement.resolve(hw, vm.cpus, facts, host.name).spec_fields(),
        )
        return vm.name, host.id, design_domain(spec).to_xml()
