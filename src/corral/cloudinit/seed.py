"""NoCloud seeds: the three files cloud-init reads, and the ISO 9660 volume that carries them.

Pure functions, no I/O: the engine renders the files (policy), the agent turns them into
an ISO next to the VM's disk (:func:`build_iso`), attached as a read-only CD-ROM.

The files follow cloud-init's NoCloud format, so real cloud images work unchanged:

- ``meta-data``: ``instance-id`` and ``local-hostname`` (and ``public-keys`` when the
  user-data is not ``#cloud-config``, see below);
- ``user-data``: ``#cloud-config`` YAML. corral's settings become ``hostname``;
  ``ssh_authorized_keys`` (the image's default user: ``debian``, ``ubuntu``, root on the
  tiny guest) or, with a user name, a ``users`` entry (with ``sudo`` and the keys) after
  ``default``; a password hash goes to that user (``hashed_passwd``), or to root through
  ``chpasswd`` when no user is named.
  A user-data file given by the user that starts with ``#cloud-config`` is merged: its keys
  win for single values (``hostname``), lists are joined (``ssh_authorized_keys``,
  ``users``); anything else (a ``#!`` script, MIME multipart, ``#include``) is used as is,
  byte for byte: then the SSH keys go into the meta-data's ``public-keys`` (which
  cloud-init gives the default user) and a user name or password hash is refused, since
  there is nothing to merge them into.
- ``network-config``: version 2, DHCP on the NIC matched by its MAC address, unless the user
  gives one (version 1 or 2), which is used as it is (re-written in corral's YAML shape).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pycdlib

from corral.cloudinit import yamlout
from corral.cloudinit.validate import MAX_DOC, is_cloud_config, network_document
from corral.errors import InvalidInput

LABEL = "cidata"
SUDO_ALL = "ALL=(ALL) NOPASSWD:ALL"
# (name in the seed, ISO 9660 level-3 name): the Rock Ridge and Joliet names are the real ones.
FILES = (
    ("meta-data", "/META_DATA.;1"),
    ("user-data", "/USER_DATA.;1"),
    ("network-config", "/NETWORK_CONFIG.;1"),
)


@dataclass(frozen=True)
class SeedFiles:
    meta_data: str
    user_data: str
    network_config: str | None = None

    def as_dict(self) -> dict[str, str]:
        files = {"meta-data": self.meta_data, "user-data": self.user_data}
        if self.network_config is not None:
            files["network-config"] = self.network_config
        return files


def default_hostname(vm_name: str) -> str:
    """A host name from a VM name (which may hold '_', which host names may not)."""
    return vm_name.replace("_", "-").strip("-")[:63].strip("-") or "vm"


def instance_id(vm_id: str, revision: int = 0) -> str:
    """The VM id; ``ID.N`` once the seed was changed N times, so cloud-init applies it again.

    (cloud-init runs its per-instance modules, users, keys and runcmd, only for an
    instance id it has not seen.)
    """
    return vm_id if revision == 0 else f"{vm_id}.{revision}"


def _join(first: Any, second: list[Any]) -> list[Any]:
    out = list(first) if isinstance(first, list) else ([] if first is None else [first])
    for item in second:
        if item not in out:
            out.append(item)
    return out


def render_user_data(
    *, hostname: str, user: str | None, ssh_authorized_keys: Sequence[str],
    password_hash: str | None, user_data: str | None,
) -> str:
    if user_data is not None and not is_cloud_config(user_data):
        if user is not None or password_hash is not None:
            raise InvalidInput(
                "user and password_hash can only be merged into #cloud-config user-data; "
                "this user-data is used as is: set them in it instead",
                field="cloud_init.user_data",
            )
        return user_data
    if user_data is not None and len(user_data.encode()) > MAX_DOC:
        raise InvalidInput(f"cloud_init.user_data is larger than {MAX_DOC // 1024} KiB",
                           field="cloud_init.user_data")
    base = yamlout.load_mapping(user_data, "cloud_init.user_data", "#cloud-config user-data") \
        if user_data is not None else {}
    cfg: dict[str, Any] = {"hostname": hostname, **base}
    keys = list(ssh_authorized_keys)
    if user is None:
        if keys:
            cfg["ssh_authorized_keys"] = _join(base.get("ssh_authorized_keys"), keys)
        if password_hash is not None:
            chpasswd = dict(base.get("chpasswd") or {})
            chpasswd.setdefault("expire", False)
            chpasswd["users"] = _join(chpasswd.get("users"),
                                      [{"name": "root", "password": password_hash, "type": "hash"}])
            cfg["chpasswd"] = chpasswd
            cfg.setdefault("ssh_pwauth", True)
    else:
        entry: dict[str, Any] = {"name": user, "shell": "/bin/bash", "sudo": SUDO_ALL}
        if keys:
            entry["ssh_authorized_keys"] = keys
        if password_hash is not None:
            entry["lock_passwd"] = False
            entry["hashed_passwd"] = password_hash
        cfg["users"] = _join(base.get("users", ["default"]), [entry])
        if user == "root":
            cfg.setdefault("disable_root", False)
    return yamlout.dump(cfg, header="#cloud-config")


def render_network_config(network_config: str | None, mac: str | None) -> str | None:
    if network_config is not None:
        return yamlout.dump(network_document(network_config, "cloud_init.network_config"))
    if mac is None:
        return None
    return yamlout.dump({"version": 2, "ethernets": {
        "nic0": {"match": {"macaddress": mac.lower()}, "dhcp4": True},
    }})


def render(
    *, instance: str, hostname: str, user: str | None = None,
    ssh_authorized_keys: Sequence[str] = (), password_hash: str | None = None,
    user_data: str | None = None, network_config: str | None = None, mac: str | None = None,
) -> SeedFiles:
    """The seed's files; raises InvalidInput when the settings cannot be combined."""
    meta: dict[str, Any] = {"instance-id": instance, "local-hostname": hostname}
    raw_user_data = user_data is not None and not is_cloud_config(user_data)
    if raw_user_data and ssh_authorized_keys:
        meta["public-keys"] = list(ssh_authorized_keys)
    return SeedFiles(
        meta_data=yamlout.dump(meta),
        user_data=render_user_data(
            hostname=hostname, user=user, ssh_authorized_keys=ssh_authorized_keys,
            password_hash=password_hash, user_data=user_data,
        ),
        network_config=render_network_config(network_config, mac),
    )


def build_iso(files: dict[str, str]) -> bytes:
    """The ``cidata`` ISO 9660 volume (Joliet + Rock Ridge) holding the seed's files."""
    unknown = set(files) - {name for name, _ in FILES}
    if unknown or "meta-data" not in files or "user-data" not in files:
        raise InvalidInput(f"a seed holds meta-data, user-data and optionally network-config, "
                           f"not {sorted(files)}", field="files")
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL, sys_ident="LINUX")
    try:
        for name, iso_path in FILES:
            if name not in files:
                continue
            data = files[name].encode()
            iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def read_iso(data: bytes) -> tuple[str, dict[str, str]]:
    """(volume label, Rock Ridge name -> text) of a seed ISO: the reverse of build_iso."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, str] = {}
        for child in iso.list_children(rr_path="/"):
            if child is None or child.is_dot() or child.is_dotdot():
                continue
            name = iso.full_path_from_dirrecord(child, rockridge=True).lstrip("/")
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            files[name] = buf.getvalue().decode()
    finally:
        iso.close()
    return label, files
