"""Linked and full clones of VM disks, frozen bases and templates, with the real qemu-img
(corral.agent.clones): data is checked by reading the guest-visible bytes back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from corral.agent import clones
from corral.agent.jobs import JobCancelled
from corral.agent.storage import Storage, qemu_img_info
from corral.errors import Conflict, HostError, InvalidInput, NotFound

MIB = 1 << 20


def _write(path: Path, offset: int, data: bytes) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x{data[0]:02x} {offset} "
                    f"{len(data)}", str(path)], check=True, capture_output=True)


def _byte(path: Path, offset: int) -> int:
    raw = path.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(raw)], check=True)
    with raw.open("rb") as f:
        f.seek(offset)
        value = f.read(1)[0]
    raw.unlink()
    return value


def _check(path: Path) -> None:
    proc = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    st = Storage(tmp_path / "storage")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(st.image_path("img")),
                    str(8 * MIB)], check=True)
    _write(st.image_path("img"), 0, b"\x11" * 512)
    st.create_disk("src", "img", None)
    _write(st.disk_path("src"), MIB, b"\x22" * 512)
    return st


def test_linked_clone_freezes_the_source_and_both_stay_independent(storage: Storage) -> None:
    res = clones.linked_clone(storage, "src", "c1")
    assert res["created"]
    base = Path(res["base"])
    assert base.parent.name == "bases"
    for vm in ("src", "c1"):
        assert qemu_img_info(storage.disk_path(vm))["backing-filename"] == str(base)
        assert _byte(storage.disk_path(vm), MIB) == 0x22  # the source's data, via the base
        assert _byte(storage.disk_path(vm), 0) == 0x11  # and the image's
    _write(storage.disk_path("src"), MIB, b"\x33" * 512)  # the source writes on...
    assert _byte(storage.disk_path("c1"), MIB) == 0x22  # ...the clone does not see it
    assert clones.linked_clone(storage, "src", "c1")["created"] is False  # idempotent
    for p in (base, storage.disk_path("src"), storage.disk_path("c1")):
        _check(p)


def test_linked_clone_resumes_after_a_crash_between_steps(storage: Storage) -> None:
    base = clones.bases_dir(storage) / "src@c2.qcow2"
    storage.disk_path("src").rename(base)  # crashed right after the freeze
    clones.linked_clone(storage, "src", "c2")
    assert _byte(storage.disk_path("src"), MIB) == 0x22
    assert _byte(storage.disk_path("c2"), MIB) == 0x22


def test_bases_are_collected_with_their_last_user(storage: Storage) -> None:
    clones.linked_clone(storage, "src", "c1")
    clones.linked_clone(storage, "src", "c2")  # chain: src -> src@c2 -> src@c1 -> image
    bases = sorted(p.name for p in clones.bases_dir(storage).iterdir())
    assert bases == ["src@c1.qcow2", "src@c2.qcow2"]
    assert clones.collect_bases(storage) == []
    storage.delete_disk("src")  # deleting the source is fine: the clones keep the bases
    assert clones.collect_bases(storage) == []
    assert _byte(storage.disk_path("c1"), MIB) == 0x22
    storage.delete_disk("c2")
    assert clones.collect_bases(storage) == ["src@c2.qcow2"]
    storage.delete_disk("c1")
    assert clones.collect_bases(storage) == ["src@c1.qcow2"]
    assert not list(clones.bases_dir(storage).iterdir())
    assert storage.image_path("img").exists()  # images are never collected


def test_linked_clone_refuses_a_source_with_snapshots(storage: Storage) -> None:
    subprocess.run(["qemu-img", "snapshot", "-c", "s1", str(storage.disk_path("src"))],
                   check=True)
    with pytest.raises(Conflict, match="has snapshots"):
        clones.linked_clone(storage, "src", "c1")
    assert not storage.disk_path("c1").exists()
    assert not list(clones.bases_dir(storage).iterdir())  # nothing moved


def test_full_clone_from_a_snapshot_copies_the_disk_as_it_was(storage: Storage) -> None:
    subprocess.run(["qemu-img", "snapshot", "-c", "s1", str(storage.disk_path("src"))],
                   check=True)
    _write(storage.disk_path("src"), MIB, b"\x44" * 512)
    clones.full_clone(storage, "src", "now", None, None)
    clones.full_clone(storage, "src", "then", "s1", None)
    assert _byte(storage.disk_path("now"), MIB) == 0x44
    assert _byte(storage.disk_path("then"), MIB) == 0x22
    for vm in ("now", "then"):
        info = qemu_img_info(storage.disk_path(vm))
        assert "backing-filename" not in info  # independent of the image
        assert _byte(storage.disk_path(vm), 0) == 0x11
    with pytest.raises(NotFound, match="no snapshot"):
        clones.full_clone(storage, "src", "x", "nope", None)
    assert not storage.disk_path("x").exists()


def test_a_failed_or_cancelled_copy_leaves_no_file(storage: Storage, tmp_path: Path) -> None:
    bad = tmp_path / "broken.qcow2"  # its backing file is gone
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b",
                    str(tmp_path / "gone.qcow2"), str(bad), "1M"], check=True)
    target = tmp_path / "out.qcow2"
    with pytest.raises(HostError):
        clones.convert(bad, target, None)
    assert not target.exists() and not target.with_suffix(".part").exists()

    def cancel(_percent: int, _message: str) -> None:
        raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        clones.convert(storage.disk_path("src"), target, cancel)
    assert not target.exists() and not target.with_suffix(".part").exists()


def test_template_flattens_a_disk_with_the_boot_files(storage: Storage) -> None:
    storage.image_path("img").with_suffix(".vmlinuz").write_bytes(b"kernel")
    info = clones.template(storage, "src", "tpl", "img", None)
    assert info["format"] == "qcow2" and info["virtual_size"] == 8 * MIB
    assert info["kernel"] and Path(info["kernel"]).read_bytes() == b"kernel"
    assert "backing-filename" not in qemu_img_info(storage.image_path("tpl"))
    assert _byte(storage.image_path("tpl"), MIB) == 0x22


def test_names_cannot_leave_the_storage_dir(storage: Storage) -> None:
    for bad in ("../etc", "a/b", ".hidden", ""):
        with pytest.raises(InvalidInput):
            clones.linked_clone(storage, "src", bad)
        with pytest.raises(InvalidInput):
            clones.full_clone(storage, bad, "ok", None, None)
