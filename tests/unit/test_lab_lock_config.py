"""A lab host's libvirt configuration for disk leases (corral.lab._config): lockd with the
lab's shared lockspace, or no lock manager at all in a lab without shared storage."""

from __future__ import annotations

from pathlib import Path

from corral.lab import _config


def test_a_lab_with_shared_storage_uses_lockd_with_its_shared_lockspace(tmp_path: Path) -> None:
    lockspace = tmp_path / "lab" / "lockspace"
    _config.write_lab_configs(tmp_path, name="h1", address="10.209.1.2", host_uuid="u",
                              lockspace=lockspace)
    assert 'lock_manager = "lockd"' in (tmp_path / "qemu.conf").read_text()
    lockd = (tmp_path / "qemu-lockd.conf").read_text().splitlines()
    assert "auto_disk_leases = 1" in lockd and "require_lease_for_disks = 1" in lockd
    assert f'file_lockspace_dir = "{lockspace}"' in lockd


def test_without_shared_storage_there_is_no_lock_manager(tmp_path: Path) -> None:
    _config.write_lab_configs(tmp_path, name="h1", address="10.209.1.2", host_uuid="u")
    assert "lock_manager" not in (tmp_path / "qemu.conf").read_text()
    assert not (tmp_path / "qemu-lockd.conf").exists()
