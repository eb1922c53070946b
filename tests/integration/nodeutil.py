"""Helpers of the integration tests: a corral node inside a lab host, and bounded waits.

The lab host is a network + mount namespace with its own libvirtd (corral.lab.host), so
the tests never touch this machine's libvirt or networks. The CLI and the SDK talk to the
node from the root namespace over the lab host's veth address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.client import Client
from corral.lab.guest_console import ConsoleAnswer, console_run
from corral.lab.host import LabHost

REPO = Path(__file__).resolve().parents[2]
CORRAL = [sys.executable, "-m", "corral.cli.main"]
PORT = 8443


def import_args(data_dir: Path, temp_dirs: tuple[Path, ...] = ()) -> list[str]:
    """What the tests import from, allowed explicitly (corral.safepaths, corral.safeurls:
    both refused by default): files in pytest's temp dirs (``temp_dirs``, default the
    system's) and beside the data dir (OVAs), URLs of the file server on the lab host's own
    loopback (corral.lab.fileserver)."""
    dirs = [*(temp_dirs or (Path(tempfile.gettempdir()),)), data_dir.parent]
    return [*(a for d in dirs for a in ("--import-dir", str(d))),
            "--import-allow-cidr", "127.0.0.0/8"]


@dataclass
class Node:
    host: LabHost
    data_dir: Path
    url: str
    temp_dirs: tuple[Path, ...] = ()  # pytest's basetemp: tests import files from there
    _sdk: Client | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        cfg = json.loads((self.data_dir / "client.json").read_text())
        return {**os.environ, "CORRAL_DATA_DIR": str(self.data_dir), "CORRAL_URL": self.url,
                "CORRAL_TOKEN": cfg["token"], "CORRAL_CA": cfg["ca"], "COLUMNS": "200"}

    def cli(self, *args: str, check: bool = True, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*CORRAL, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def cli_json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "--output", "json").stdout)

    def client(self) -> Client:
        cfg = json.loads((self.data_dir / "client.json").read_text())
        return Client(self.url, cfg["token"], cfg["ca"])

    def console_log(self, vm: str) -> str:
        """What VM printed on its serial console (the SDK: tests poll it often, and a CLI
        process per poll would take the CPU the TCG guests need)."""
        if self._sdk is None:
            self._sdk = self.client()
        return self._sdk.console_log(vm)

    def console_run(self, vm: str, command: str, timeout: float = 30) -> ConsoleAnswer:
        """Type ``command`` on VM's serial console; its exit status and output."""
        cfg = json.loads((self.data_dir / "client.json").read_text())
        return console_run(self.url, cfg["token"], cfg["ca"], vm, command, timeout)

    def up(self) -> None:
        self.host.run([*CORRAL, "up", "--detach", "--data-dir", str(self.data_dir),
                       "--port", str(PORT), *import_args(self.data_dir, self.temp_dirs)], timeout=180)

    def down(self) -> None:
        self.host.run([*CORRAL, "down", "--data-dir", str(self.data_dir)], timeout=60,
                      check=False)

    def pid(self, which: str) -> int:
        return int((self.data_dir / f"{which}.pid").read_text())

    def virsh(self, *args: str) -> str:
        proc = subprocess.run(["virsh", "-c", self.host.libvirt_uri(), *args], capture_output=True,
                              text=True, timeout=60, check=False)
        return proc.stdout.strip()

    def disk_exists(self, vm: str) -> bool:
        return (self.data_dir / "agent" / "storage" / "vms" / f"{vm}.qcow2").exists()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120,
             every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
