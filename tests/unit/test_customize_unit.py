"""Offline customization without booting libguestfs: validation, the command line, errors.

The real libguestfs runs are in tests/integration/test_image_customize.py.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from corral.agent import customize
from corral.api import GuestCustomize, ImageImport
from corral.errors import HostError, InvalidInput, Unavailable


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def request(**kw: Any) -> dict[str, Any]:
    return GuestCustomize(**kw).model_dump(mode="json")


def test_api_types_refuse_bad_input_naming_the_field() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "nothing to do"),
        ({"hostname": "bad host"}, "not a valid host name"),
        ({"passwords": [{"user": "Root!", "password": "x"}]}, "not a valid user name"),
        ({"passwords": [{"user": "root", "password": "a\nb"}]}, "single line"),
        ({"files": [{"path": "etc/x", "content": b64(b"x")}]}, "absolute file path"),
        ({"files": [{"path": "/etc/../x", "content": b64(b"x")}]}, "must not contain '..'"),
        ({"files": [{"path": "/x", "content": "not base64!"}]}, "base64"),
        ({"files": [{"path": "/x", "content": b64(b"x"), "mode": "999"}]}, "octal mode"),
        ({"files": [{"path": "/x", "content": b64(bytes(2 << 20))}]}, "at most"),
        ({"files": [{"path": f"/{i}", "content": b64(bytes(600 << 10))} for i in range(2)]},
         "more than"),
        ({"commands": ["  "]}, "must not be empty"),
        ({"hostname": "ok", "unknown": 1}, "Extra inputs"),
    ]
    for body, message in cases:
        with pytest.raises(ValidationError, match=message):
            GuestCustomize(**body)
    ok = GuestCustomize(hostname="web-1.example", commands=["true"],
                        files=[{"path": "/root/a b.txt", "content": b64(b"hi"), "mode": "600"}])
    assert ok.files[0].mode == "0600"


def test_image_import_request_checks_source_format_and_checksum() -> None:
    ImageImport(name="deb", source="https://example.org/debian.qcow2",
                checksum="sha256:" + "a" * 64, format="vmdk")
    ImageImport(name="deb", source="/srv/images/deb.raw", format="iso")
    for body, message in [
        ({"source": "ftp://example.org/x"}, "http"),
        ({"source": "relative.qcow2"}, "absolute path"),
        ({"source": "http:///nohost"}, "no host"),
        ({"source": "/x", "format": "zip"}, "pattern"),
        ({"source": "/x", "checksum": "md5:abc"}, "pattern"),
    ]:
        with pytest.raises(ValidationError, match=message):
            ImageImport(name="deb", **body)


def test_command_line_keeps_secrets_in_files_and_the_order(tmp_path: Path) -> None:
    spec = customize.Spec.from_request(request(
        hostname="guest1",
        files=[{"path": "/etc/motd", "content": b64(b"welcome\n"), "mode": "0640"}],
        passwords=[{"user": "root", "password": "s3cret-pw"}],
        commands=["echo hi > /root/hi"],
    ))
    argv = customize.build_argv(Path("/d.qcow2"), spec, tmp_path)
    assert argv[:5] == ["virt-customize", "--format", "qcow2", "-a", "/d.qcow2"]
    assert "--no-network" in argv
    assert not any("s3cret-pw" in a for a in argv)  # never on a command line (ps shows those)
    order = [a for a in argv if a in ("--hostname", "--upload", "--password", "--run-command")]
    assert order == ["--hostname", "--upload", "--password", "--run-command"]
    upload = argv[argv.index("--upload") + 1]
    local, guest = upload.split(":", 1)
    assert guest == "/etc/motd" and Path(local).read_bytes() == b"welcome\n"
    assert Path(local).stat().st_mode & 0o777 == 0o640  # --upload keeps the mode
    assert argv[argv.index("--upload") - 1] == "/etc"  # --mkdir of the parent
    secret = argv[argv.index("--password") + 1]
    user, how, path = secret.split(":", 2)
    assert (user, how) == ("root", "file")
    assert Path(path).read_text() == "s3cret-pw\n" and Path(path).stat().st_mode & 0o777 == 0o600
    with pytest.raises(InvalidInput, match="host name"):
        customize.Spec.from_request({"hostname": "-bad-"})


def test_missing_libguestfs_is_reported_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    monkeypatch.setattr(customize.shutil, "which", lambda _tool: None)
    spec = customize.Spec.from_request(request(hostname="x"))
    with pytest.raises(Unavailable, match=r"libguestfs is missing: virt-customize is not "
                                          r"installed; install it with `apt-get install"):
        customize.customize_disk(disk, spec, tmp_path / "build", tcg=True,
                                 report=lambda _p, _m: None)
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.qcow2"]


def _sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_output_becomes_progress_warnings_and_errors() -> None:
    spec = customize.Spec.from_request(request(hostname="x"))
    seen: list[tuple[int, str]] = []
    lines = customize.run_virt_customize(_sh(
        "echo '[   0.0] Examining the guest ...'; "
        "echo 'virt-customize: warning: random seed could not be set for this type of guest'; "
        "echo '[  20.1] Setting the hostname: x'; echo '[  21.0] Finishing off'"),
        {}, spec, lambda p, m: seen.append((p, m)))
    assert [m for _, m in seen] == ["Examining the guest ...", "Setting the hostname: x",
                                    "Finishing off"]
    assert [p for p, _ in seen] == sorted(p for p, _ in seen) and len(lines) == 4

    with pytest.raises(InvalidInput, match=r"nothing was changed.*hostname could not be set"):
        customize.run_virt_customize(_sh(
            "echo 'virt-customize: warning: hostname could not be set for this type of guest'"),
            {}, spec, lambda _p, _m: None)
    with pytest.raises(InvalidInput, match="no operating system"):
        customize.run_virt_customize(_sh(
            "echo 'virt-customize: error: no operating systems were found in the guest image' >&2;"
            " exit 1"), {}, spec, lambda _p, _m: None)
    with pytest.raises(Unavailable, match=r"libguestfs is not working here: .*supermin"):
        customize.run_virt_customize(_sh(
            "echo 'virt-customize: error: libguestfs error: /usr/bin/supermin exited with error "
            "status 1' >&2; exit 1"), {}, spec, lambda _p, _m: None)
    with pytest.raises(HostError, match=r"virt-customize failed: .*command 'false' failed"):
        customize.run_virt_customize(_sh(
            "echo \"virt-customize: error: libguestfs error: command 'false' failed\" >&2; exit 1"),
            {}, spec, lambda _p, _m: None)
