"""Power fencing of a lab host for real: `corral lab up` gives the host the fence method
fence_corral_lab; the lab's engine runs it (in its own namespaces) to read the host's power,
power it off (every process of the host gone) and on again (its agent back, the host up).
One 1-host lab without an image, brought down at the end even when the test fails."""

from __future__ import annotations

import json

import pytest
from clusterutil import host
from labutil import lab_session
from nodeutil import wait_for

pytestmark = pytest.mark.integration


def test_the_lab_engine_fences_a_lab_host_off_and_powers_it_on() -> None:
    with lab_session(1, "none", 300, "lf") as lab:
        name = host(lab, 1)
        methods = lab.json("host", "fence", "show", name)
        assert [(m["agent"], m["options"]["plug"]) for m in methods] == [
            ("fence_corral_lab", name)]
        assert lab.json("host", "fence", "test", name)["checks"][0]["power"] == "on"

        lab.run("host", "power", name, "off", timeout=120)
        assert lab.lab_host(name).processes() == []  # its libvirtd and agent are gone
        off = lab.run("host", "power", name, "status", "-o", "json", check=False)
        assert off.returncode == 0, off.stderr
        assert json.loads(off.stdout)["checks"][0]["power"] == "off"

        lab.run("host", "power", name, "on", timeout=120)
        assert lab.lab_host(name).processes() != []
        wait_for(f"{name} up again", lambda: lab.json("host", "show", name)["status"] == "up",
                 timeout=90, every=1)
