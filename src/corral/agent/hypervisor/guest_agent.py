"""Talking to the QEMU guest agent (qemu-guest-agent in the guest) of a running domain.

Every corral domain has the ``org.qemu.guest_agent.0`` virtio-serial channel; whether a guest
runs an agent on it is another matter. :func:`answers` asks cheaply: the channel's state in
the live XML first (``disconnected`` while no process in the guest holds the port open, as
in a guest without the agent: no round trip), then a ``guest-ping`` with a short timeout.

:func:`run` is ``guest-exec`` + ``guest-exec-status``: the guest starts the command and the
host polls until it has exited, within a bounded wait; its output comes back base64'd and is
cut at :data:`OUTPUT_MAX` bytes a stream. A command that outlives the wait keeps running in
the guest (the agent has no way to kill it): the answer says ``timed_out``.

Functions here take a libvirt domain and are called under ``libvirt_host._mapped``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import libvirt
import libvirt_qemu
from lxml import etree

from corral.domainxml import GUEST_AGENT_CHANNEL
from corral.errors import Conflict

PING_TIMEOUT_S = 2  # an agent that answers does so in milliseconds, even under TCG
COMMAND_TIMEOUT_S = 10  # one agent command (not the guest command it starts)
OUTPUT_MAX = 1 << 20  # bytes of stdout (and of stderr) handed back
POLL_S = (0.05, 0.1, 0.2, 0.5)  # guest-exec-status: quick for quick commands, then 2/s


def not_running_message(vm: str) -> str:
    return (f"the QEMU guest agent of VM {vm} does not answer: qemu-guest-agent is not "
            "running in the guest (install and start it there; the tiny guest has none, "
            "`corral image build-tiny NAME --guest-agent` builds one that has)")


def channel_connected(xml: str) -> bool:
    """Whether a process in the guest holds the agent's port open (live XML); a domain
    whose libvirt does not report the state counts as connected (the ping decides)."""
    root = etree.fromstring(xml.encode())
    for channel in root.iterfind("devices/channel"):
        target = channel.find("target")
        if target is not None and target.get("name") == GUEST_AGENT_CHANNEL:
            return target.get("state", "connected") == "connected"
    return False


def command(dom: Any, execute: str, arguments: dict[str, Any] | None = None,
            timeout: int = COMMAND_TIMEOUT_S) -> Any:
    """One agent command; its ``return`` value (libvirt raises when the agent errs)."""
    request: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        request["arguments"] = arguments
    reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), timeout, 0)
    return json.loads(reply).get("return")


def answers(dom: Any) -> bool:
    """Whether the running domain's guest agent answers a ping now."""
    if not dom.isActive() or dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        return False  # a paused guest answers nothing
    if not channel_connected(dom.XMLDesc(0)):
        return False
    try:
        command(dom, "guest-ping", timeout=PING_TIMEOUT_S)
    except libvirt.libvirtError:
        return False
    return True


SYNC_WAIT_S = 10.0  # after a revert the guest's agent may need a moment to answer again


def sync_time(dom: Any, wait_s: float = 0.0) -> bool:
    """Set the guest's clock from the host's (after a resume or a revert, the guest's
    clock is behind); skipped quietly when no agent answers within ``wait_s`` (a guest
    just restored from a snapshot, on a loaded host, can miss the first pings). Whether it
    was set."""
    deadline = time.monotonic() + wait_s
    while not answers(dom):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    try:
        # with SYNC the guest reads its (running) RTC: the seconds given are ignored
        dom.setTime({"seconds": 0}, libvirt.VIR_DOMAIN_TIME_SYNC)
    except libvirt.libvirtError:
        return False  # e.g. the guest has no hwclock: its clock stays as it was
    return True


def _decoded(reply: dict[str, Any], key: str) -> tuple[str, bool]:
    data = base64.b64decode(reply.get(f"{key}-data") or "")
    cut = len(data) > OUTPUT_MAX or bool(reply.get(f"{key}-truncated"))
    return data[:OUTPUT_MAX].decode("utf-8", "replace"), cut


def run(dom: Any, vm: str, argv: list[str], stdin: str | None, timeout: float) -> dict[str, Any]:
    """Run ``argv`` in the guest (``argv[0]`` searched in the agent's PATH), wait at most
    ``timeout`` seconds for it to exit; exit code and output (see the module docstring)."""
    if not answers(dom):
        raise Conflict(not_running_message(vm), vm=vm)
    arguments: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
    if stdin is not None:
        arguments["input-data"] = base64.b64encode(stdin.encode()).decode()
    try:
        pid = int(command(dom, "guest-exec", arguments)["pid"])
    except libvirt.libvirtError as exc:  # e.g. no such program in the guest
        raise Conflict(f"the guest agent of VM {vm} cannot run {argv[0]}: "
                       f"{exc.get_error_message()}", field="command") from exc
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        status = command(dom, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            break
        if time.monotonic() >= deadline:
            return {"exit_code": None, "signal": None, "stdout": "", "stderr": "",
                    "truncated": False, "timed_out": True, "pid": pid}
        time.sleep(POLL_S[min(polls, len(POLL_S) - 1)])
        polls += 1
    stdout, out_cut = _decoded(status, "out")
    stderr, err_cut = _decoded(status, "err")
    return {"exit_code": status.get("exitcode"), "signal": status.get("signal"),
            "stdout": stdout, "stderr": stderr, "truncated": out_cut or err_cut,
            "timed_out": False, "pid": pid}
