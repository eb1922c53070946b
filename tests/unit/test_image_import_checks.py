"""Image import on a host (corral.agent.image_import): real qemu-img, files served on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from corral.agent import image_import
from corral.agent.download import download
from corral.agent.image_import import Importer, run_qemu_img
from corral.agent.storage import Storage
from corral.errors import Conflict, HostError, InvalidInput
from corral.lab.fileserver import FileServer, serving
from corral.safepaths import PathPolicy
from corral.safeurls import UrlPolicy

MIB = 1 << 20


def qimg(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def make_raw(path: Path, size: int = 16 * MIB) -> Path:
    """A raw "disk": random data at the start and the end, a hole between."""
    with path.open("wb") as f:
        f.write(os.urandom(MIB))
        f.seek(size - MIB)
        f.write(os.urandom(MIB))
    return path


def make_iso(path: Path) -> Path:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident="CORRALTEST")
    body = b"hello from an ISO\n"
    iso.add_fp(io.BytesIO(body), len(body), "/HELLO.TXT;1", joliet_path="/hello.txt")
    iso.write(str(path))
    iso.close()
    return path


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    d = tmp_path / "srv"
    d.mkdir()
    raw = make_raw(d / "disk.raw")
    for fmt in ("qcow2", "vmdk", "vdi"):
        qimg("convert", "-f", "raw", "-O", fmt, str(raw), str(d / f"disk.{fmt}"))
    make_iso(d / "cd.iso")
    (d / "page.html").write_bytes(b"<!DOCTYPE html><html>not found</html>\n" + bytes(474))
    (d / "odd.bin").write_bytes(os.urandom(1000))
    return d


@pytest.fixture()
def server(src: Path) -> Iterator[FileServer]:
    with serving(src) as srv:
        yield srv


@pytest.fixture()
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "store")


def allowed(storage: Storage) -> dict[str, Any]:
    """The test's files (tmp_path) and server (127.0.0.1): both refused by default
    (corral.safepaths, corral.safeurls)."""
    return {"paths": PathPolicy(import_dirs=(storage.root.parent,), protected=(storage.root,)),
            "urls": UrlPolicy.build(["127.0.0.0/8"])}


def run(storage: Storage, name: str, source: str, fmt: str = "auto",
        checksum: str | None = None) -> tuple[dict[str, object], list[tuple[int, str]]]:
    seen: list[tuple[int, str]] = []
    result = Importer(storage, name, source, fmt, checksum, **allowed(storage)).run(
        lambda p, m: seen.append((p, m)))
    return result, seen


def leftovers(storage: Storage) -> list[str]:
    return sorted(p.name for p in storage.images.iterdir())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_content(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", str(a), str(b)], capture_output=True,
                          check=False).returncode == 0


@pytest.mark.parametrize("fmt", ["raw", "vmdk", "vdi"])
def test_url_import_converts_to_qcow2(server: FileServer, src: Path, storage: Storage,
                                      fmt: str) -> None:
    result, seen = run(storage, "img", server.url(f"disk.{fmt}"),
                       checksum=f"sha256:{sha(src / f'disk.{fmt}')}")
    assert result["format"] == "qcow2" and result["source_format"] == fmt
    assert result["virtual_size"] == 16 * MIB
    assert result["sha256"] == sha(src / f"disk.{fmt}")
    assert leftovers(storage) == ["img.qcow2"]
    assert same_content(storage.image_path("img"), src / "disk.raw")
    percents = [p for p, _ in seen]
    assert percents == sorted(percents) and percents[-1] == 99
    assert any("downloading" in m for _, m in seen)
    if fmt == "raw":
        assert any("converting raw to qcow2" in m for _, m in seen)


def test_url_qcow2_is_kept_as_downloaded(server: FileServer, src: Path, storage: Storage) -> None:
    result, _ = run(storage, "img", server.url("disk.qcow2"), "qcow2")
    assert result["format"] == "qcow2"
    assert sha(storage.image_path("img")) == sha(src / "disk.qcow2")


def test_local_files_and_checksums(src: Path, storage: Storage) -> None:
    good = f"sha256:{sha(src / 'disk.vmdk')}"
    result, _ = run(storage, "img", str(src / "disk.vmdk"), "vmdk", good)
    assert result["sha256"] == good.removeprefix("sha256:")
    assert same_content(storage.image_path("img"), src / "disk.raw")
    with pytest.raises(InvalidInput, match="checksum mismatch") as exc:
        run(storage, "img2", str(src / "disk.vmdk"), checksum="sha256:" + "0" * 64)
    assert exc.value.field == "checksum"
    assert leftovers(storage) == ["img.qcow2"]


def test_iso_is_kept_as_an_iso(server: FileServer, src: Path, storage: Storage) -> None:
    result, _ = run(storage, "cd", server.url("cd.iso"))
    assert result["format"] == "iso" and result["source_format"] == "iso"
    assert leftovers(storage) == ["cd.iso"]
    assert sha(storage.iso_path("cd")) == sha(src / "cd.iso")
    assert storage.image_file("cd") == storage.iso_path("cd")
    assert storage.describe("cd").format == "iso"
    with pytest.raises(InvalidInput, match="is an ISO"):
        storage.create_disk("vm1", "cd", None)
    # Asked for explicitly, from a local file.
    result, _ = run(storage, "cd2", str(src / "cd.iso"), "iso")
    assert result["format"] == "iso" and sha(storage.iso_path("cd2")) == sha(src / "cd.iso")
    with pytest.raises(InvalidInput, match="not an ISO 9660 image"):
        run(storage, "cd3", str(src / "disk.raw"), "iso")


@pytest.mark.parametrize(("name", "fmt", "message"), [
    ("page.html", "auto", "not a disk image: it is an HTML page"),
    ("odd.bin", "auto", "not a whole number of 512-byte sectors"),
    ("disk.qcow2", "raw", "the source is qcow2, not raw"),
])
def test_what_is_not_the_image_asked_for_is_refused(server: FileServer, storage: Storage,
                                                     name: str, fmt: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        run(storage, "bad", server.url(name), fmt)
    assert leftovers(storage) == []


def test_images_that_point_at_other_host_files_are_refused(src: Path, storage: Storage,
                                                           tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    qimg("create", "-f", "qcow2", "-F", "raw", "-b", str(src / "disk.raw"), str(overlay))
    with pytest.raises(InvalidInput, match="backing file"):
        run(storage, "bad", str(overlay))
    flat = tmp_path / "flat.vmdk"
    qimg("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(flat), "1M")
    with pytest.raises(InvalidInput, match="extent in another file"):
        run(storage, "bad", str(flat))
    assert leftovers(storage) == []


def test_a_failed_download_leaves_nothing(server: FileServer, storage: Storage,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Every retry still runs, without the real back-off's waits (0.5 s doubling: 15 s).
    monkeypatch.setattr(image_import, "download", functools.partial(download, backoff=0.01))
    with pytest.raises(HostError, match="incomplete"):
        Importer(storage, "bad", server.url("disk.raw", "truncate=5000000"),
                 **allowed(storage)).run(lambda _p, _m: None)
    assert leftovers(storage) == []


def test_leftovers_of_an_interrupted_attempt_are_removed(server: FileServer, storage: Storage) -> None:
    (storage.images / "img.download").write_bytes(b"half")
    (storage.images / "img.part").write_bytes(b"half")
    run(storage, "img", server.url("disk.raw"))
    assert leftovers(storage) == ["img.qcow2"]


def test_an_image_used_by_vm_disks_is_never_replaced(src: Path, storage: Storage) -> None:
    run(storage, "base", str(src / "disk.qcow2"))
    storage.create_disk("vm1", "base", None)
    with pytest.raises(Conflict, match="VM disks use it: vm1"):
        run(storage, "base", str(src / "disk.raw"))
    assert storage.image_path("base").exists()


def test_bad_arguments_are_refused_at_once(storage: Storage) -> None:
    with pytest.raises(InvalidInput, match="format"):
        Importer(storage, "x", "/tmp/x", "zip")
    with pytest.raises(InvalidInput, match="URL or an absolute path"):
        Importer(storage, "x", "relative/path.raw")
    with pytest.raises(InvalidInput, match="sha256"):
        Importer(storage, "x", "/tmp/x", checksum="md5:abc")
    with pytest.raises(InvalidInput):
        Importer(storage, "../etc", "/tmp/x")


def test_qemu_img_progress_is_parsed_and_a_cancel_kills_it(tmp_path: Path) -> None:
    raw = make_raw(tmp_path / "big.raw", 64 * MIB)
    seen: list[float] = []
    run_qemu_img(["qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2", str(raw),
                  str(tmp_path / "out.qcow2")], "convert", seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == 100.0

    class Stop(Exception):
        pass

    def cancel(_pct: float) -> None:
        raise Stop

    with pytest.raises(Stop):
        run_qemu_img(["qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2", str(raw),
                      str(tmp_path / "out2.qcow2")], "convert", cancel)
    with pytest.raises(HostError, match=r"convert: .*No such file"):
        run_qemu_img(["qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2",
                      str(tmp_path / "missing.raw"), str(tmp_path / "out3.qcow2")], "convert",
                     seen.append)
