"""The agent's routes that copy an image's files between hosts (corral.agent.image_files):
the listing with SHA-256 digests, a streamed read, and a streamed write kept only when its
size and digest are the ones announced, leaving nothing behind otherwise."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent import image_files
from corral.agent.jobs import JobRunner
from corral.agent.storage import IMAGE_MODE, Storage
from corral.httpserve import install_error_handlers

BIG = os.urandom((5 << 20) // 2)  # 2.5 MiB: more than one chunk each way


@pytest.fixture()
def agent(tmp_path: Path) -> Iterator[tuple[TestClient, Storage]]:
    storage = Storage(tmp_path / "storage")
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(image_files.router(storage, JobRunner()))
    with TestClient(app) as client:
        yield client, storage


def _leftovers(storage: Storage) -> list[str]:
    return sorted(p.name for p in storage.images.iterdir() if p.name.endswith(".part"))


def test_the_listing_gives_each_file_with_its_digest_the_image_file_last(
        agent: tuple[TestClient, Storage]) -> None:
    client, storage = agent
    (storage.images / "tiny.qcow2").write_bytes(BIG)
    (storage.images / "tiny.vmlinuz").write_bytes(b"kernel")
    files = client.get("/v1/images/tiny/files", params={"digest": "true"}).json()["files"]
    assert files == [
        {"kind": "vmlinuz", "size": 6, "sha256": hashlib.sha256(b"kernel").hexdigest()},
        {"kind": "qcow2", "size": len(BIG), "sha256": hashlib.sha256(BIG).hexdigest()}]
    plain = client.get("/v1/images/tiny/files").json()["files"]
    assert [f["sha256"] for f in plain] == [None, None]  # digests only when asked for
    only = client.get("/v1/images/tiny/files?digest=true&kind=vmlinuz&kind=initrd").json()
    assert [f["kind"] for f in only["files"]] == ["vmlinuz"]  # the disk is not read through


def test_an_image_that_is_not_here_is_a_404_and_bad_names_a_422(
        agent: tuple[TestClient, Storage]) -> None:
    client, _ = agent
    r = client.get("/v1/images/ghost/files")
    assert r.status_code == 404 and r.json()["error"]["field"] == "image"
    assert client.get("/v1/images/ghost/files/qcow2").status_code == 404
    assert client.get("/v1/images/tiny/files/passwd").status_code == 422  # not a file kind
    assert client.get("/v1/images/..%2Fetc/files").status_code in (404, 422)


def test_a_read_streams_the_whole_file(agent: tuple[TestClient, Storage]) -> None:
    client, storage = agent
    (storage.images / "tiny.qcow2").write_bytes(BIG)
    with client.stream("GET", "/v1/images/tiny/files/qcow2") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-length"] == str(len(BIG))
        got = b"".join(resp.iter_bytes())
    assert got == BIG


def _put(client: TestClient, data: bytes, sha: str | None = None, size: int | None = None,
         kind: str = "qcow2") -> tuple[int, dict[str, object]]:
    def chunks() -> Iterator[bytes]:  # a streamed body, as the engine relays it
        for i in range(0, len(data), 300_000):
            yield data[i:i + 300_000]

    r = client.put(f"/v1/images/tiny/files/{kind}", content=chunks(), params={
        "size": len(data) if size is None else size,
        "sha256": sha or hashlib.sha256(data).hexdigest()})
    return r.status_code, r.json()


def test_a_write_with_the_right_digest_is_kept_private(agent: tuple[TestClient, Storage]) -> None:
    client, storage = agent
    status, body = _put(client, BIG)
    assert status == 200 and body["size"] == len(BIG)
    path = storage.images / "tiny.qcow2"
    assert path.read_bytes() == BIG
    assert path.stat().st_mode & 0o777 == IMAGE_MODE
    assert _leftovers(storage) == []


@pytest.mark.parametrize(("sha", "size", "field"), [
    ("0" * 64, None, "sha256"),  # bytes that are not the source's
    (None, len(BIG) + 10, "size"),  # cut short
    (None, len(BIG) - 10, "size"),  # longer than announced
    ("xyz", None, "sha256"),  # not a digest
])
def test_a_write_that_does_not_match_leaves_nothing(
        agent: tuple[TestClient, Storage], sha: str | None, size: int | None,
        field: str) -> None:
    client, storage = agent
    status, body = _put(client, BIG, sha=sha, size=size)
    assert status == 422
    assert body["error"]["field"] == field  # type: ignore[index]
    assert not (storage.images / "tiny.qcow2").exists()
    assert _leftovers(storage) == []


def test_a_bad_write_keeps_the_file_that_was_there(agent: tuple[TestClient, Storage]) -> None:
    client, storage = agent
    (storage.images / "tiny.vmlinuz").write_bytes(b"old kernel")
    status, _ = _put(client, b"new kernel", sha="0" * 64, kind="vmlinuz")
    assert status == 422
    assert (storage.images / "tiny.vmlinuz").read_bytes() == b"old kernel"


def test_an_image_under_vm_disks_is_never_replaced(agent: tuple[TestClient, Storage],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client, storage = agent
    (storage.images / "tiny.qcow2").write_bytes(b"base")
    monkeypatch.setattr(storage, "disk_in_use_by", lambda name: ["web"])
    status, body = _put(client, BIG)
    assert status == 409 and "web" in body["error"]["message"]  # type: ignore[index]
    assert (storage.images / "tiny.qcow2").read_bytes() == b"base"
