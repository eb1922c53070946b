"""Commands in a network namespace only (the machine's mount namespace): the lab engine's.

The lab's engine, and its Ceph cluster (``corral lab up --storage rbd``), run in
``corral-<prefix>0``: reachable from every lab host over the lab's router, while their files
stay the machine's (the lab root, seen at the same path by every lab host).
"""

from __future__ import annotations

import subprocess
from typing import Any

from corral.errors import HostError


class NetnsPlace:
    def __init__(self, netns: str, address: str) -> None:
        self.netns = netns
        self.address = address

    def _prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60,
            check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` in the namespace; with ``check``, a failure or timeout is a HostError."""
        try:
            return subprocess.run(self._prefix() + argv, env=env, timeout=timeout, check=check,
                                  input=input, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            raise HostError(f"{' '.join(argv)} failed in {self.netns} (exit {exc.returncode}): "
                            f"{(exc.stderr or '').strip()}", argv=argv,
                            returncode=exc.returncode) from exc
        except subprocess.TimeoutExpired as exc:
            raise HostError(f"{' '.join(argv)} did not finish in {timeout} s in {self.netns}",
                            argv=argv) from exc

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        kwargs.setdefault("text", True)
        proc: subprocess.Popen[str] = subprocess.Popen(self._prefix() + argv, **kwargs)
        return proc
