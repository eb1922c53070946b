"""Build the tiny test guest and boot it under plain QEMU (TCG, no libvirt).

The .debs are cached across test runs (``CORRAL_TINY_CACHE``, else next to pytest's own
temporary directories), so only the first run needs the apt mirror. The guest's NIC uses
``-netdev user,restrict=on``: no traffic leaves QEMU.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.images.tiny import (
    BOOT_MARKER,
    DISK_SIZE_MIB,
    ERROR_MARKER,
    IP_MARKER,
    TinyImage,
    build_tiny_image,
)

pytestmark = pytest.mark.integration

BOOT_TIMEOUT_S = 120.0
POWERDOWN_TIMEOUT_S = 30.0
QEMU = "qemu-system-x86_64"


class Guest:
    """A QEMU process whose serial console (stdio) is read by a thread."""

    def __init__(self, args: list[str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._output = bytearray()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            with self._cond:
                self._output += chunk
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return self._output.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float, *, start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in the console output after ``start``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.MULTILINE)
        with self._cond:
            while True:
                text = self._output.decode("utf-8", "replace")
                match = regex.search(text, start)
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{pattern!r} not on the console after {timeout:.0f} s "
                        f"(qemu exit status {self.proc.poll()}); console:\n{text[-3000:]}"
                    )
                self._cond.wait(min(left, 0.5))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def qmp(path: Path, command: str) -> dict[str, object]:
    """Run one QMP command on QEMU's unix socket and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        reader = sock.makefile("rb")

        def reply() -> dict[str, object]:
            while True:
                message: dict[str, object] = json.loads(reader.readline())
                if "return" in message or "error" in message:
                    return message

        json.loads(reader.readline())  # greeting
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        reply()
        sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        return reply()


@contextlib.contextmanager
def boot(
    image: TinyImage, workdir: Path, *, with_disk: bool = True, extra_cmdline: str = ""
) -> Iterator[tuple[Guest, Path]]:
    """Boot the image on a throwaway overlay; QEMU is killed on the way out, whatever happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    overlay = workdir / "overlay.qcow2"
    monitor = workdir / "qmp.sock"
    args = [
        QEMU, "-machine", "accel=tcg", "-m", "256", "-nographic", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", f"{image.cmdline} {extra_cmdline}".strip(),
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
        "-qmp", f"unix:{monitor},server=on,wait=off",
    ]  # fmt: skip
    if with_disk:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
             "-b", str(image.disk), str(overlay)],
            check=True,
        )  # fmt: skip
        args += ["-drive", f"file={overlay},if=virtio"]
    guest = Guest(args)
    try:
        yield guest, overlay
    finally:
        guest.kill()


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> TinyImage:
    for tool in (QEMU, "qemu-img"):
        assert shutil.which(tool), f"{tool} is not installed: run scripts/install-deps.sh"
    cache = tiny_cache
    out = tmp_path_factory.mktemp("tiny-image")
    steps: list[tuple[int, str]] = []
    started = time.monotonic()
    image = build_tiny_image(out, cache_dir=cache, progress=lambda pct, msg: steps.append((pct, msg)))
    print(f"\ntiny image built in {time.monotonic() - started:.1f} s into {out}")
    assert steps[0][0] == 0 and steps[-1][0] == 100
    assert [pct for pct, _ in steps] == sorted(pct for pct, _ in steps)
    return image


def test_image_files(tiny_image: TinyImage) -> None:
    assert tiny_image.kernel.stat().st_size > 1_000_000
    assert tiny_image.initrd.read_bytes()[:2] == b"\x1f\x8b"
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(tiny_image.disk)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == DISK_SIZE_MIB * 1024 * 1024
    assert 64 * 1024 * 1024 <= info["virtual-size"] <= 256 * 1024 * 1024
    assert "console=ttyS0" in tiny_image.cmdline and "root=/dev/vda" in tiny_image.cmdline


def test_boot_shell_dhcp_and_acpi_powerdown(tiny_image: TinyImage, tmp_path: Path) -> None:
    with boot(tiny_image, tmp_path) as (guest, overlay):
        guest.wait_for(rf"^{BOOT_MARKER}\r?$", BOOT_TIMEOUT_S)
        booted = time.monotonic() - guest.started
        print(f"\ntiny guest booted (marker) in {booted:.1f} s")

        # DHCP from QEMU's user-mode network (which answers even with restrict=on).
        guest.wait_for(rf"{IP_MARKER} eth0 10\.0\.2\.15/24", 30)

        # A root shell on the console.
        mark = len(guest.output)
        guest.send("echo tiny-$((6*7)) $(id -u) $(hostname)\n")
        guest.wait_for(r"tiny-42 0 tiny", 30, start=mark)

        # Graceful shutdown through the ACPI power button: QEMU exits by itself.
        powerdown = time.monotonic()
        assert "return" in qmp(tmp_path / "qmp.sock", "system_powerdown")
        try:
            status = guest.proc.wait(timeout=POWERDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"QEMU still running {POWERDOWN_TIMEOUT_S:.0f} s after system_powerdown; "
                f"console:\n{guest.output[-3000:]}"
            )
        print(f"tiny guest powered off {time.monotonic() - powerdown:.1f} s after the button")
        assert status == 0
        assert "tiny: shutting down (poweroff)" in guest.output

    # The guest unmounted its root filesystem: it is clean, no journal to replay.
    if shutil.which("dumpe2fs") or Path("/sbin/dumpe2fs").exists():
        raw = tmp_path / "after.raw"
        subprocess.run(
            ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(overlay), str(raw)],
            check=True,
        )
        header = subprocess.run(
            [shutil.which("dumpe2fs") or "/sbin/dumpe2fs", "-h", str(raw)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert re.search(r"^Filesystem state:\s+clean$", header, re.MULTILINE), header
        assert "needs_recovery" not in header


def test_missing_root_disk_gives_rescue_shell(tiny_image: TinyImage, tmp_path: Path) -> None:
    with boot(tiny_image, tmp_path, with_disk=False, extra_cmdline="rootwait=2") as (guest, _):
        guest.wait_for(rf"{ERROR_MARKER}: root disk /dev/vda not found", BOOT_TIMEOUT_S)
        mark = len(guest.output)
        guest.send("echo rescue-$((6*7))\n")
        guest.wait_for(r"rescue-42", 30, start=mark)
        assert BOOT_MARKER not in guest.output
