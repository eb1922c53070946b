"""The watchdog and the video card: designed as asked, read back from libvirt's XML, and
refused (422 naming the field) when libvirt would not know them."""

from __future__ import annotations

import dataclasses

import pytest
from domainxml_specs import KVM_FULL, QEMU_TINY, WATCHDOG_VIDEO

from corral.domainxml import Domain, Watchdog, design_domain
from corral.domainxml.spec import VIDEO_MODELS, WATCHDOG_ACTIONS
from corral.errors import InvalidInput


def test_no_watchdog_and_a_vga_card_by_default() -> None:
    devices = design_domain(KVM_FULL).devices
    assert devices.watchdogs == []
    assert [v.model_type for v in devices.videos] == ["vga"]


@pytest.mark.parametrize("action", WATCHDOG_ACTIONS)
def test_the_watchdog_is_an_i6300esb_with_the_action_asked(action: str) -> None:
    (watchdog,) = design_domain(dataclasses.replace(KVM_FULL, watchdog=action)).devices.watchdogs
    assert (watchdog.model, watchdog.action) == ("i6300esb", action)


@pytest.mark.parametrize("model", VIDEO_MODELS)
def test_the_video_card_is_the_model_asked(model: str) -> None:
    (video,) = design_domain(dataclasses.replace(KVM_FULL, video=model)).devices.videos
    assert video.model_type == model


def test_no_display_no_video_card_whatever_the_model() -> None:
    dom = design_domain(dataclasses.replace(QEMU_TINY, video="virtio", watchdog="poweroff"))
    assert dom.devices.videos == [] and dom.devices.graphics == []
    assert [w.action for w in dom.devices.watchdogs] == ["poweroff"]


def test_a_watchdog_libvirt_wrote_reads_back_and_changes() -> None:
    xml = ("<domain type='kvm'><name>x</name><devices>"
           "<watchdog model='i6300esb' action='reset'><alias name='watchdog0'/>"
           "<address type='pci' domain='0x0000' bus='0x10' slot='0x01' function='0x0'/>"
           "</watchdog></devices></domain>")
    dom = Domain.from_xml(xml)
    (watchdog,) = dom.devices.watchdogs
    assert (watchdog.alias, watchdog.address_type) == ("watchdog0", "pci")
    watchdog.action = "pause"
    assert "action=\"pause\"" in dom.to_xml() and "<address" in dom.to_xml()
    dom.devices.remove(watchdog)
    assert "<watchdog" not in dom.to_xml()
    added = Watchdog()
    added.model, added.action = "i6300esb", "dump"
    dom.devices.add(added)
    assert [w.action for w in Domain.from_xml(dom.to_xml()).devices.watchdogs] == ["dump"]


@pytest.mark.parametrize(("changes", "field"), [
    ({"watchdog": "explode"}, "watchdog"),
    ({"watchdog": "none"}, "watchdog"),  # no watchdog is None, not libvirt's action none
    ({"watchdog": ""}, "watchdog"),
    ({"video": "cirrus9000"}, "video"),
    ({"video": None}, "video"),
])
def test_unknown_watchdog_actions_and_video_models_are_refused(changes: dict[str, object],
                                                               field: str) -> None:
    spec = dataclasses.replace(WATCHDOG_VIDEO, **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as info:
        design_domain(spec)
    assert (info.value.field, info.value.status) == (field, 422)
