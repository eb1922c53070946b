"""Helpers of the cluster tests on a `corral lab`: the lab's engine through its SDK (console
reads, typed console commands), where a VM runs, what a lab host holds on its disk."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labutil import LabCli
from nodeutil import wait_for

from corral.client import Client
from corral.images.tiny import BOOT_MARKER
from corral.lab.guest_console import ConsoleAnswer, console_run

IP_LINE = re.compile(r"CORRAL-TINY-IP eth0 (\d+\.\d+\.\d+\.\d+)/\d+")


@dataclass
class LabEngine:
    """The lab's engine as the tests read it (the SDK: a CLI process per poll would take
    the CPU the TCG guests need)."""

    lab: LabCli
    _sdk: Client | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return Path(self.lab.state()["engine"]["data_dir"])

    def config(self) -> dict[str, str]:
        cfg: dict[str, str] = json.loads((self.data_dir / "client.json").read_text())
        return cfg

    @property
    def url(self) -> str:
        return self.config()["url"]

    def sdk(self) -> Client:
        if self._sdk is None:
            self._sdk = Client.from_config(self.data_dir)
        return self._sdk

    def console_log(self, vm: str) -> str:
        return self.sdk().console_log(vm)

    def console_run(self, vm: str, command: str, timeout: float = 30) -> ConsoleAnswer:
        cfg = self.config()
        return console_run(cfg["url"], cfg["token"], cfg["ca"], vm, command, timeout)

    def vm(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.lab.json("vm", "show", name)
        return data

    def host_states(self) -> dict[str, str]:
        return {h.name: h.status for h in self.sdk().list_hosts()}

    def wait_booted(self, vm: str, timeout: float = 180) -> str:
        """Until VM printed the tiny guest's boot marker and its DHCP address; the address."""
        seen: list[str] = []

        def booted() -> bool:
            log = self.console_log(vm)
            seen[:] = IP_LINE.findall(log)
            return BOOT_MARKER in log and bool(seen)

        wait_for(f"{vm} to boot and get an address", booted, timeout=timeout, every=1)
        return seen[-1]


def lab_engine(lab: LabCli) -> Iterator[LabEngine]:
    """A module's view of the lab's engine (``yield from`` it in a fixture); its SDK
    connection closed at the end."""
    eng = LabEngine(lab)
    yield eng
    if eng._sdk is not None:
        eng._sdk.close()


def host(lab: LabCli, n: int) -> str:
    """The name of the lab's n-th host."""
    return f"{lab.prefix}{n}"


def host_has_image(lab: LabCli, host: str, image: str) -> bool:
    """The lab host's agent holds the image file (its storage dir, as the agent keeps it)."""
    root = Path(lab.state()["hosts"][host]["root_dir"])
    return (root / "agent" / "storage" / "images" / f"{image}.qcow2").exists()
