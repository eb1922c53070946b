"""The agent's side of the QEMU guest agent, on libvirt's test driver (which has no guest
agent in its guests: every path here is the one of a guest without one) and on the pieces
that read what libvirt and the guest agent hand back.

The guest agent answering for real (exec, time sync, shutdown through it) is
tests/integration/test_guest_agent.py, with qemu-ga in the tiny guest.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_node import private_node_uri

from corral.agent.hypervisor import Hypervisor, guest_agent
from corral.domainxml import DiskSpec, DomainSpec, design_domain
from corral.errors import Conflict, WrongState


@pytest.fixture
def hv(tmp_path: Path) -> Iterator[Hypervisor]:
    yield Hypervisor(private_node_uri(tmp_path))


def _running(hv: Hypervisor, name: str = "web", vnc: bool = True) -> str:
    spec = DomainSpec(name=name, uuid=str(uuid.uuid4()), vm_id=f"vm-{name}", vcpus=1,
                      memory_mib=128, virt_type="qemu", disks=[DiskSpec(f"/srv/{name}.qcow2")],
                      nics=[], vnc=vnc)
    info = hv.define(design_domain(spec).to_xml())
    hv.start(info.name)
    return info.name


def test_a_guest_without_an_agent_does_not_answer(hv: Hypervisor) -> None:
    name = _running(hv)
    assert hv.guest_agent_answers(name) is False
    hv.suspend(name)
    assert hv.guest_agent_answers(name) is False  # a paused guest answers nothing
    assert hv.resume(name).state == "running"  # no agent: no time sync, and no error


def test_exec_without_an_agent_is_a_409_that_says_what_is_missing(hv: Hypervisor) -> None:
    name = _running(hv)
    with pytest.raises(Conflict) as info:
        hv.guest_exec(name, ["true"], None, 5)
    assert info.value.status == 409
    assert "qemu-guest-agent is not running in the guest" in info.value.message


def test_the_display_of_a_running_domain(hv: Hypervisor) -> None:
    name = _running(hv)
    (shown,) = hv.graphics(name)
    assert (shown["type"], shown["listen"]) == ("vnc", "127.0.0.1")
    tiny = _running(hv, "tiny", vnc=False)
    assert hv.graphics(tiny) == []
    hv.destroy(name)
    with pytest.raises(WrongState):
        hv.graphics(name)


@pytest.mark.parametrize(("state", "connected"), [
    (' state="connected"', True), (' state="disconnected"', False), ("", True)])
def test_the_channel_state_in_the_live_xml(state: str, connected: bool) -> None:
    xml = (f'<domain><devices><channel type="unix"><target type="virtio" '
           f'name="org.qemu.guest_agent.0"{state}/></channel></devices></domain>')
    assert guest_agent.channel_connected(xml) is connected
    assert guest_agent.channel_connected("<domain><devices/></domain>") is False


def test_output_is_decoded_and_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest_agent, "OUTPUT_MAX", 4)
    reply = {"out-data": base64.b64encode(b"hello\n").decode(),
             "err-data": base64.b64encode(b"\xffok").decode(), "err-truncated": False}
    assert guest_agent._decoded(reply, "out") == ("hell", True)
    assert guest_agent._decoded(reply, "err") == ("\ufffdok", False)  # not UTF-8: replaced
    assert guest_agent._decoded({"out-truncated": True}, "out") == ("", True)  # the agent cut it
