"""Host tags over the API: added and removed (idempotent), shown with the host, validated
(lowercase a-z, 0-9, '-', '_', '.', at most 63), and required by a VM create."""

from __future__ import annotations

from pathlib import Path

import pytest
from sched_seed import engine


def test_tags_are_added_removed_and_listed(tmp_path: Path) -> None:
    with engine(tmp_path, [{}, {}]) as e:
        for tag in ("ssd", "gpu", "ssd"):  # a tag it has already: no error, no double
            resp = e.client.put(f"/api/v1/hosts/h2/tags/{tag}")
            assert resp.status_code == 200, resp.text
        assert resp.json()["tags"] == ["gpu", "ssd"]
        listed = {h["name"]: h["tags"] for h in e.client.get("/api/v1/hosts").json()}
        assert listed == {"h1": [], "h2": ["gpu", "ssd"]}
        assert e.create("fast", host_tags=["ssd"]).status_code == 202
        assert e.placed()["fast"] == "h2"
        gone = e.client.delete("/api/v1/hosts/h2/tags/ssd")
        assert gone.status_code == 200 and gone.json()["tags"] == ["gpu"]
        assert e.client.delete("/api/v1/hosts/h2/tags/ssd").json()["tags"] == ["gpu"]
        assert e.create("fast2", host_tags=["ssd"]).status_code == 409
        assert e.placed()["fast"] == "h2"  # a VM stays where it is when a tag goes


@pytest.mark.parametrize("tag", ["SSD", "s%20d", "x" * 64, "ü"])
def test_a_bad_tag_is_a_422_naming_the_tag(tmp_path: Path, tag: str) -> None:
    with engine(tmp_path, [{}]) as e:
        resp = e.client.put(f"/api/v1/hosts/h1/tags/{tag}")
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "tag"
        assert e.client.get("/api/v1/hosts").json()[0]["tags"] == []


def test_a_tag_on_a_host_that_does_not_exist_is_a_404(tmp_path: Path) -> None:
    with engine(tmp_path, [{}]) as e:
        assert e.client.put("/api/v1/hosts/nope/tags/ssd").status_code == 404
