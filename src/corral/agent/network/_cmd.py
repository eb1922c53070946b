"""Running host tools (ip, nft, dnsmasq): argument lists only, errors mapped to corral's tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from corral.errors import HostError, Unavailable

# Which Debian package provides each tool, for the "install it" message.
PACKAGES = {
    "ip": "iproute2", "bridge": "iproute2", "nft": "nftables", "dnsmasq": "dnsmasq-base",
    "ovs-vsctl": "openvswitch-switch", "ovsdb-tool": "openvswitch-switch",
    "ovsdb-server": "openvswitch-switch", "ovs-vswitchd": "openvswitch-switch",
    "ovs-ofctl": "openvswitch-switch", "flock": "util-linux",
}
DEFAULT_TIMEOUT = 30.0
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def which(tool: str) -> str:
    """The absolute path of ``tool``; ``Unavailable`` naming the package when it is missing."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(_SBIN)
    found = shutil.which(tool, path=path)
    if found is None:
        package = PACKAGES.get(tool, tool)
        raise Unavailable(
            f"{tool} is not installed on this host; install it with "
            f"`apt-get install {package}` (or run scripts/install-deps.sh)",
            tool=tool,
            package=package,
        )
    return found


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def run(
    args: list[str],
    *,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (``args[0]`` is looked up with ``which``); ``HostError`` on failure.

    ``env`` adds to (does not replace) this process's environment.
    """
    argv = [which(args[0]), *args[1:]]
    shown = " ".join(args)
    try:
        return subprocess.run(
            argv,
            input=input,
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )
    except subprocess.CalledProcessError as exc:
        stderr = _tail(exc.stderr or exc.stdout or "")
        raise HostError(
            f"`{shown}` failed with exit status {exc.returncode}: {stderr or 'no output'}",
            command=args,
            returncode=exc.returncode,
            stderr=stderr,
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(
            f"`{shown}` did not finish within {timeout:g} s", command=args
        ) from exc
    except OSError as exc:
        raise HostError(f"`{shown}` could not be started: {exc}", command=args) from exc


def run_json(args: list[str], *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Run a tool that prints JSON (``ip -j``, ``nft -j``) and parse its output."""
    out = run(args, timeout=timeout).stdout
    if not out.strip():
        return []
    try:
        return json.loads(out)
    except ValueError as exc:
        raise HostError(
            f"`{' '.join(args)}` printed output that is not JSON: {_tail(out, 200)}",
            command=args,
        ) from exc
