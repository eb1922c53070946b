"""The agent's routes of a stopped VM's own files (corral.agent.vm_files), the two ends of an
offline migration: the listing (with the root disk's backing file), a streamed read refused
while the VM runs, a streamed write kept only when size and SHA-256 match and never over a
file that is there, whose root disk is pointed at this host's copy of its image, and the
delete. Real qcow2 files (qemu-img), one storage dir per host."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent import vm_files
from corral.agent.storage import Storage
from corral.httpserve import install_error_handlers

NVRAM = os.urandom((3 << 20) // 2)  # 1.5 MiB: more than one chunk


@dataclass
class Host:
    storage: Storage
    client: TestClient
    states: dict[str, str] = field(default_factory=dict)  # domain name -> state


def _host(root: Path) -> Host:
    storage = Storage(root)
    states: dict[str, str] = {}
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(vm_files.router(storage, states.get))
    return Host(storage, TestClient(app), states)


@pytest.fixture()
def hosts(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    a, b = _host(tmp_path / "a"), _host(tmp_path / "b")
    for h in (a, b):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        str(h.storage.image_path("tiny")), "64M"], check=True, timeout=30)
    a.storage.create_disk("web", "tiny", None)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 1M", str(a.storage.disk_path("web"))],
                   check=True, capture_output=True, timeout=30)
    (a.storage.vms / "web.nvram.fd").write_bytes(NVRAM)
    with a.client, b.client:
        yield a, b


def _info(path: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    info: dict[str, object] = json.loads(out)
    return info


def _copy(src: Host, dst: Host, kind: str, image: str | None = "tiny",
          sha: str | None = None, cut: int | None = None) -> tuple[int, dict[str, object]]:
    listed = {f["kind"]: f for f in
              src.client.get("/v1/vms/web/files", params={"digest": "true"}).json()["files"]}
    with src.client.stream("GET", f"/v1/vms/web/files/{kind}") as resp:
        assert resp.status_code == 200
        data = b"".join(resp.iter_bytes())
    body = data[:cut] if cut is not None else data

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 400_000):
            yield body[i:i + 400_000]

    params: dict[str, str | int] = {"size": len(data), "sha256": sha or listed[kind]["sha256"]}
    if image is not None:
        params["image"] = image
    r = dst.client.put(f"/v1/vms/web/files/{kind}", params=params, content=chunks())
    return r.status_code, r.json()


def _parts(h: Host) -> list[str]:
    return sorted(p.name for p in h.storage.vms.iterdir() if p.name.endswith(".part"))


def test_the_listing_names_each_file_with_digest_and_the_disks_backing(
        hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    files = a.client.get("/v1/vms/web/files", params={"digest": "true"}).json()["files"]
    disk = a.storage.disk_path("web")
    assert files == [
        {"kind": "root", "size": disk.stat().st_size,
         "sha256": hashlib.sha256(disk.read_bytes()).hexdigest(),
         "backing": str(a.storage.image_path("tiny"))},
        {"kind": "nvram", "size": len(NVRAM), "sha256": hashlib.sha256(NVRAM).hexdigest(),
         "backing": None}]
    assert [f["sha256"] for f in a.client.get("/v1/vms/web/files").json()["files"]] == \
        [None, None]  # digests only when asked for
    assert b.client.get("/v1/vms/web/files").json() == {"files": []}
    assert a.client.get("/v1/vms/web/files/passwd").status_code == 422  # not a file kind
    assert a.client.get("/v1/vms/..%2Fx/files").status_code in (404, 422)


def test_a_root_disk_arrives_whole_over_the_targets_own_image(
        hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    status, body = _copy(a, b, "root")
    assert status == 200, body
    there = b.storage.disk_path("web")
    assert body["backing"] == str(b.storage.image_path("tiny")) != str(
        a.storage.image_path("tiny"))
    info = _info(there)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(
        b.storage.image_path("tiny"))
    # The guest's data came along: what was written reads back the same on the target.
    check = subprocess.run(["qemu-io", "-c", "read -P 0x5a 0 1M", str(there)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "Pattern verification failed" not in check.stdout
    assert oct(there.stat().st_mode & 0o777) == "0o640" and not _parts(b)


def test_nvram_is_copied_byte_for_byte(hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    status, body = _copy(a, b, "nvram", image=None)
    assert status == 200, body
    assert (b.storage.vms / "web.nvram.fd").read_bytes() == NVRAM


def test_a_file_that_is_there_is_never_replaced(hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    (b.storage.vms / "web.nvram.fd").write_bytes(b"mine")
    status, body = _copy(a, b, "nvram", image=None)
    assert status == 409 and "already has a nvram file" in str(body)
    assert (b.storage.vms / "web.nvram.fd").read_bytes() == b"mine" and not _parts(b)


def test_a_bad_digest_a_cut_copy_or_a_missing_image_leave_nothing(
        hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    status, body = _copy(a, b, "root", sha="0" * 64)
    assert status == 422 and json.dumps(body).count("checksum mismatch") == 1
    status, body = _copy(a, b, "root", cut=1000)
    assert status == 422 and "cut short" in str(body)
    b.storage.delete_image("tiny")
    status, body = _copy(a, b, "root")
    assert status == 404 and "image tiny is not on this host" in str(body)
    status, body = _copy(a, b, "root", image=None)
    assert status == 422 and "name the image" in str(body)
    assert not b.storage.disk_path("web").exists() and not _parts(b)


def test_a_running_vms_files_are_not_read_nor_deleted(hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    a.states["web"] = "running"
    r = a.client.get("/v1/vms/web/files/root")
    assert r.status_code == 409 and "read only while it is stopped" in r.json()["error"]["message"]
    assert a.client.delete("/v1/vms/web/files/root").status_code == 409
    a.states["web"] = "stopped"
    assert a.client.delete("/v1/vms/web/files/nvram").json() == {"deleted": True}
    assert a.client.delete("/v1/vms/web/files/nvram").json() == {"deleted": False}
    assert a.client.get("/v1/vms/web/files/nvram").status_code == 404
