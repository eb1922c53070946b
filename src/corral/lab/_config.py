"""The private /etc/libvirt of a lab host: a copy of the machine's, with lab settings.

The copy keeps the machine's configuration files (so every file libvirt expects exists) but
none of the machine's libvirt *state*: no domain, pool, secret or node-device definitions,
and no autostart links (libvirt-daemon-system defines a ``default`` network on virbr0 /
192.168.122.0/24 whose dnsmasq a lab host must not start). ``libvirtd.conf`` and
``qemu.conf`` are then written whole by :func:`write_lab_configs`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

# Top-level directories of /etc/libvirt that hold definitions (state), not configuration.
_STATE_DIRS = frozenset({"storage", "secrets", "nodedev", "lxc", "bhyve", "ch"})


def _ignore(src_root: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(src_root)
        if rel == Path("."):
            return {n for n in names if n in _STATE_DIRS}
        if rel == Path("qemu"):
            # Domain definitions, their autostart links, snapshots, checkpoints: keep only
            # the network definitions (the package's ``default`` network, inactive).
            return {n for n in names if n != "networks"}
        if rel == Path("qemu/networks"):
            return {n for n in names if n != "default.xml"}
        return set()

    return ignore


def copy_etc(src: Path, dst: Path) -> None:
    """Copy the machine's /etc/libvirt to ``dst`` (once: a later start keeps the copy).

    Keeping the copy across stop/start keeps what was defined persistently in the lab host.
    """
    if dst.exists():
        return
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True, ignore=_ignore(src))
    else:
        dst.mkdir(parents=True)
    # Never autostart a network in a lab host (see the module docstring).
    autostart = dst / "qemu" / "networks" / "autostart"
    shutil.rmtree(autostart, ignore_errors=True)
    autostart.mkdir(parents=True, exist_ok=True)


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def _listen_conf(address: str, pki: Path | None) -> str:
    if pki is None:
        return f"""\
# TCP without authentication on the lab host's own address: for live migration between lab
# hosts (qemu+tcp://{address}/system). The address lives in the lab host's network namespace
# and is reachable only over the lab's veth from this machine. Needs `libvirtd --listen`.
listen_tls = 0
listen_tcp = 1
listen_addr = "{address}"
auth_tcp = "none"
"""
    return f"""\
# TLS only, on the lab host's own address, with the certificate its agent got at its join
# (corral.agent.migration_pki): peers' libvirtds reach it as qemu+tls://{address}/system and
# must show a certificate of the same CA. No plain TCP port. Needs `libvirtd --listen` (once
# the agent has written the files: libvirtd does not start without them).
listen_tls = 1
listen_tcp = 0
listen_addr = "{address}"
ca_file = "{pki / 'cacert.pem'}"
cert_file = "{pki / 'servercert.pem'}"
key_file = "{pki / 'serverkey.pem'}"
tls_no_verify_certificate = 0
"""


def _migrate_tls_conf(pki: Path | None) -> str:
    if pki is None:
        return ""
    return f"""
# QEMU's migration stream over TLS (when the migration asks for it: VIR_MIGRATE_TLS), with
# the same certificates; the peer must show one of the same CA.
migrate_tls_x509_cert_dir = "{pki}"
migrate_tls_x509_verify = 1
"""


def _lock_manager_conf(lockspace: Path | None) -> str:
    if lockspace is None:
        return ""
    return """
# Disk leases (docs/ha.md "Disk leases"): QEMU opens a disk only while virtlockd holds a lease
# on it, in a lockspace every lab host shares (qemu-lockd.conf): a second QEMU on the same
# disk, on any host, is refused. virtlockd must run before libvirtd.
lock_manager = "lockd"
"""


def write_lockd_conf(etc: Path, lockspace: Path) -> None:
    """qemu-lockd.conf: leases of every writable disk (by path, hashed) in ``lockspace``."""
    _write(etc / "qemu-lockd.conf", f"""\
# qemu-lockd.conf of a corral lab host, written by corral.lab (replaces the machine's).
# Every writable disk gets a lease automatically (read-only and shareable disks are not
# leased exclusively), kept as a file named after the disk path's sha256 in a directory on
# storage all hosts share; a disk without a lease is never opened.
auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "{lockspace}"
""", 0o644)


def write_lab_configs(etc: Path, *, name: str, address: str, host_uuid: str,
                      pki: Path | None = None, lockspace: Path | None = None) -> None:
    """Write libvirtd.conf and qemu.conf of the lab host (the machine's copies are replaced).
    ``pki``: the certificates of a lab host whose agent joined a cluster (TLS only); None: a
    lab host on its own (plain TCP, for tests of the lab host itself). ``lockspace``: the
    shared lease directory of a lab with shared storage (lock manager lockd); None: no lock
    manager (nothing else sees this host's disks, and QEMU's own image locks already refuse
    a second writer on one host)."""
    libvirtd_conf = f"""\
# libvirtd.conf of corral lab host {name!r}, written by corral.lab (replaces the machine's).
#
{_listen_conf(address, pki)}
# Every lab host must look like a different host to libvirt, or a migration between two of
# them is refused as a migration "to the same host" (the machine's UUID is shared).
host_uuid = "{host_uuid}"

# Warnings and errors of this daemon, into the lab host's private /var/log/libvirt.
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""
    qemu_conf = f"""\
# qemu.conf of corral lab host {name!r}, written by corral.lab (replaces the machine's).
#
# No cgroups. `ip netns exec` mounts a fresh sysfs on /sys, so /sys/fs/cgroup is empty inside
# a lab host anyway; and several lab libvirtds sharing this machine's cgroup hierarchies
# would give their guests clashing cgroup names (machine/qemu-1-NAME). Guests run fine
# without; cgroup-only tuning and statistics (blkiotune, cpu cgroup stats) are unavailable.
cgroup_controllers = [ ]

# The address a migration source is told to connect to when this host is the destination.
migration_host = "{address}"
{_migrate_tls_conf(pki)}{_lock_manager_conf(lockspace)}"""
    _write(etc / "libvirtd.conf", libvirtd_conf, 0o644)
    _write(etc / "qemu.conf", qemu_conf, 0o600)
    if lockspace is not None:
        write_lockd_conf(etc, lockspace)
