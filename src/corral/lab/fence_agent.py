"""`fence_corral_lab`: the lab's fence agent, speaking the ClusterLabs fence-agent protocol
(options as ``key=value`` lines on stdin; exit 0 done / on, 1 error, 2 off for ``status``), so
the engine fences a lab host exactly as it fences a real one through fence_ipmilan.

Options: ``root=LAB_ROOT`` (the lab's directory), ``plug=HOST`` (``port=`` and ``nodename=``
are taken too), ``action=off|on|reboot|status|monitor|metadata``. ``off`` is the lab's
power-off of the host (every process of it killed, as a power loss), ``on`` its power-on,
``status`` whether any process of it runs. It runs where the engine runs (the lab engine's
namespaces: the machine's mounts), never inside a lab host.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from corral.errors import CorralError
from corral.lab.cluster import Lab
from corral.lab.host import LabHost

EXIT_OK, EXIT_ERROR, EXIT_OFF = 0, 1, 2
ACTIONS = ("off", "on", "reboot", "status", "monitor", "metadata", "validate-all")
METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_corral_lab" shortdesc="Fence agent for corral's lab hosts">
<longdesc>Powers a host of `corral lab` off and on (off: every process of it killed, as a
power loss; on: its libvirtd and agent started again).</longdesc>
<parameters>
\t<parameter name="action" unique="0" required="1">
\t\t<content type="string" default="reboot" />
\t\t<shortdesc lang="en">Fencing action</shortdesc>
\t</parameter>
\t<parameter name="root" unique="0" required="1">
\t\t<content type="string" />
\t\t<shortdesc lang="en">The lab's root directory</shortdesc>
\t</parameter>
\t<parameter name="plug" unique="0" required="1" obsoletes="port">
\t\t<content type="string" />
\t\t<shortdesc lang="en">The lab host's name</shortdesc>
\t</parameter>
</parameters>
<actions>
\t<action name="on" />
\t<action name="off" />
\t<action name="reboot" />
\t<action name="status" />
\t<action name="monitor" />
\t<action name="metadata" />
\t<action name="validate-all" />
</actions>
</resource-agent>
"""


def parse(lines: list[str]) -> dict[str, str]:
    """``key=value`` lines; blank lines and ``#`` comments skipped."""
    options: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            options[key.strip()] = value.strip()
    return options


@contextlib.contextmanager
def _quiet_fds() -> Iterator[int]:
    """Standard output and error on /dev/null while the work runs (a libvirtd it starts
    must not keep the engine's pipes open, or the engine would wait for it); yields a copy
    of the real stdout to answer on."""
    sys.stdout.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        yield saved_out
    finally:
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (null, saved_out, saved_err):
            os.close(fd)


def _is_on(host: LabHost) -> bool:
    return bool(host.processes())


def act(action: str, root: Path, plug: str) -> tuple[int, str]:
    """(exit status, message) of ``action`` on lab host ``plug`` of the lab at ``root``."""
    lab = Lab(root)
    st = lab.state()
    rec = st.hosts.get(plug)
    if rec is None:
        return EXIT_ERROR, f"Failed: no lab host {plug!r} in {root} ({', '.join(st.hosts)})"
    host = LabHost(rec.name, rec.index, Path(rec.root_dir))
    if action in ("monitor", "validate-all"):
        return EXIT_OK, "Success: the lab answers"
    if action == "status":
        on = _is_on(host)
        return (EXIT_OK, "Status: ON") if on else (EXIT_OFF, "Status: OFF")
    if action in ("off", "reboot"):
        said = "Success: Already OFF"
        if _is_on(host):
            said = "Success: " + lab.fault(plug, "power-off")
        if action == "off":
            return EXIT_OK, said
    if _is_on(host):
        return EXIT_OK, "Success: Already ON"
    return EXIT_OK, "Success: " + lab.fault(plug, "power-on", wait=False)


def main() -> None:
    options = parse(sys.stdin.read().splitlines() if not sys.stdin.isatty() else [])
    action = options.get("action", "reboot")
    if action == "metadata":
        sys.stdout.write(METADATA)
        sys.exit(EXIT_OK)
    if action not in ACTIONS:
        print(f"Failed: action {action!r}: one of {', '.join(ACTIONS)}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    plug = options.get("plug") or options.get("port") or options.get("nodename")
    root = options.get("root")
    if not plug or not root:
        print("Failed: options root= (the lab's directory) and plug= (the host) are needed",
              file=sys.stderr)
        sys.exit(EXIT_ERROR)
    with _quiet_fds() as answer:
        try:
            code, message = act(action, Path(root), plug)
        except (CorralError, OSError) as e:
            code, message = EXIT_ERROR, f"Failed: {e}"
        os.write(answer, (message + "\n").encode())
    sys.exit(code)


if __name__ == "__main__":
    main()
