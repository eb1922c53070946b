"""Image import on a real node: URLs served inside the lab host (its own loopback), local files.

The file server (corral.lab.fileserver) runs inside the lab host, next to the agent that
downloads: traffic stays on the lab host's 127.0.0.1. Its query strings play the bad
servers (a dropped connection, a truncated file, a slow or lying server).
"""

from __future__ import annotations

import hashlib
import io
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pytest
from nodeutil import Node, wait_for

pytestmark = pytest.mark.integration

MIB = 1 << 20


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _images_dir(node: Node) -> Path:
    return node.data_dir / "agent" / "storage" / "images"


def _files_of(node: Node, name: str) -> list[str]:
    return sorted(p.name for p in _images_dir(node).glob(f"{name}.*"))


def _image(node: Node, name: str) -> dict[str, Any] | None:
    images: Any = node.cli_json("image", "list")
    return next((i for i in images if i["name"] == name), None)


@pytest.fixture(scope="module")
def served(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(directory, base URL) of a file server inside the lab host."""
    root = tmp_path_factory.mktemp("served")
    root.chmod(0o755)
    tiny = _images_dir(node) / "tiny.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(tiny),
                    str(root / "disk.raw")], check=True, timeout=120)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vdi", str(root / "disk.raw"),
                    str(root / "disk.vdi")], check=True, timeout=120)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident="CORRALINSTALL")
    body = b"an installer would be here\n"
    iso.add_fp(io.BytesIO(body), len(body), "/README.TXT;1", joliet_path="/readme.txt")
    iso.write(str(root / "install.iso"))
    iso.close()
    (root / "page.html").write_text("<!DOCTYPE html><html><body>Moved</body></html>\n")
    proc = node.host.popen([sys.executable, "-m", "corral.lab.fileserver", str(root)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the file server in the lab host did not start in 30 s"
        port = int(proc.stdout.readline())
        yield root, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_url_import_shows_progress_and_checks_the_checksum(node: Node,
                                                          served: tuple[Path, str]) -> None:
    root, base = served
    checksum = f"sha256:{_sha(root / 'disk.raw')}"
    # A slow server (16 MiB/s for 64 MiB): the operation is seen half-way.
    started: Any = node.cli_json("image", "import", "im-url", f"{base}/disk.raw?rate={16 * MIB}",
                                 "--checksum", checksum, "--no-wait")
    try:
        with node.client() as c:
            seen: list[tuple[int, str | None]] = []

            def done() -> bool:
                op = c.get_operation(started["id"])
                seen.append((op.progress, op.message))
                return op.status.done

            wait_for("the import operation", done, timeout=120, every=0.3)
            op = c.get_operation(started["id"])
        assert op.status.value == "success", op.error
        assert any(0 < p < 60 and m and "downloading" in m for p, m in seen), seen
        assert checksum in (op.message or "")
        img = _image(node, "im-url")
        assert img is not None and img["status"] == "ready" and img["format"] == "qcow2"
        assert img["virtual_size"] == (root / "disk.raw").stat().st_size
        assert _files_of(node, "im-url") == ["im-url.qcow2"]
        same = subprocess.run(["qemu-img", "compare", str(root / "disk.raw"),
                               str(_images_dir(node) / "im-url.qcow2")], capture_output=True,
                              check=False)
        assert same.returncode == 0, same.stdout
    finally:
        node.cli("image", "delete", "im-url", check=False)
    assert _image(node, "im-url") is None and _files_of(node, "im-url") == []


def test_dropped_download_is_resumed(node: Node, served: tuple[Path, str]) -> None:
    root, base = served
    try:
        op: Any = node.cli_json("image", "import", "im-drop", f"{base}/disk.raw?drop={10 * MIB}",
                                "--format", "raw", "--checksum", f"sha256:{_sha(root / 'disk.raw')}")
        assert op["status"] == "success"
        assert "after 1 dropped connection" in op["message"]
        assert f"sha256:{_sha(root / 'disk.raw')}" in op["message"]
    finally:
        node.cli("image", "delete", "im-drop", check=False)


@pytest.mark.parametrize(("what", "source", "extra", "message"), [
    ("404", "{base}/missing.raw", [], "the server answered 404 Not Found"),
    ("truncated", "{base}/disk.raw?truncate=5000000", [], "incomplete after 6 attempts"),
    ("checksum", "{base}/disk.raw", ["--checksum", "sha256:" + "0" * 64], "checksum mismatch"),
    ("not-image", "{base}/page.html", [], "not a disk image: it is an HTML page"),
    ("too-big", "{base}/disk.raw?length=" + str(1 << 50), [], "more than the free space"),
    ("unreachable", "http://127.0.0.1:9/disk.raw", [], "cannot reach http://127.0.0.1:9/"),
])
def test_bad_imports_fail_clearly_and_leave_nothing(node: Node, served: tuple[Path, str],
                                                    what: str, source: str, extra: list[str],
                                                    message: str) -> None:
    _root, base = served
    name = f"im-bad-{what}"
    t0 = time.monotonic()
    proc = node.cli("image", "import", name, source.format(base=base), *extra, check=False,
                    timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 120
    assert _image(node, name) is None
    assert _files_of(node, name) == []
    ops: Any = node.cli_json("operation", "list")
    failed = next(o for o in ops if o["resources"].get("images") == [name])
    assert failed["status"] == "failure" and message in failed["error"]["message"]


def test_iso_and_local_vdi_imports(node: Node, served: tuple[Path, str]) -> None:
    root, base = served
    try:
        node.cli("image", "import", "im-iso", f"{base}/install.iso")
        iso = _image(node, "im-iso")
        assert iso is not None and iso["format"] == "iso" and iso["status"] == "ready"
        assert _files_of(node, "im-iso") == ["im-iso.iso"]
        assert _sha(_images_dir(node) / "im-iso.iso") == _sha(root / "install.iso")

        op: Any = node.cli_json("image", "import", "im-vdi", str(root / "disk.vdi"))
        assert op["status"] == "success" and "(vdi as qcow2" in op["message"]
        vdi = _image(node, "im-vdi")
        assert vdi is not None and vdi["format"] == "qcow2"
        assert _files_of(node, "im-vdi") == ["im-vdi.qcow2"]
    finally:
        node.cli("image", "delete", "im-iso", check=False)
        node.cli("image", "delete", "im-vdi", check=False)
    assert _files_of(node, "im-iso") == [] and _files_of(node, "im-vdi") == []
