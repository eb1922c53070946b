"""Affinity groups over the API: made, listed, shown, deleted (not while VMs are in them);
strict anti-affinity keeps members apart and refuses one that cannot be, saying why; soft
anti-affinity prefers apart but allows together; strict affinity keeps them together."""

from __future__ import annotations

from pathlib import Path

from sched_seed import engine


def test_groups_are_made_listed_shown_and_deleted(tmp_path: Path) -> None:
    with engine(tmp_path, [{}]) as e:
        made = e.client.post("/api/v1/vm-groups", json={"name": "web",
                                                        "policy": "anti-affinity"})
        assert made.status_code == 201, made.text
        assert made.json()["strict"] is True and made.json()["members"] == []
        again = e.client.post("/api/v1/vm-groups", json={"name": "web", "policy": "affinity"})
        assert again.status_code == 409 and again.json()["error"]["field"] == "name"
        bad = e.client.post("/api/v1/vm-groups", json={"name": "x", "policy": "apart"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "policy"
        assert e.create("web1", group="web").status_code == 202
        shown = e.client.get("/api/v1/vm-groups/web").json()
        assert shown["members"] == ["web1"] and shown["hosts"] == {"h1": ["web1"]}
        assert e.client.get("/api/v1/vms/web1").json()["group"] == "web"
        assert [g["name"] for g in e.client.get("/api/v1/vm-groups").json()] == ["web"]
        busy = e.client.delete("/api/v1/vm-groups/web")
        assert busy.status_code == 409 and "web1" in busy.json()["error"]["message"]
        missing = e.create("x", group="nope")
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "group"
        e.client.post("/api/v1/vm-groups", json={"name": "empty", "policy": "affinity"})
        assert e.client.delete("/api/v1/vm-groups/empty").status_code == 204
        assert e.client.get("/api/v1/vm-groups/empty").status_code == 404


def test_strict_anti_affinity_refuses_a_member_no_host_can_keep_apart(tmp_path: Path) -> None:
    with engine(tmp_path, [{}, {}], placement="pack") as e:  # pack alone would stack them
        e.client.post("/api/v1/vm-groups", json={"name": "web", "policy": "anti-affinity"})
        assert e.create("web1", group="web").status_code == 202
        assert e.create("web2", group="web").status_code == 202
        assert e.placed() == {"web1": "h1", "web2": "h2"}
        refused = e.create("web3", group="web")
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "insufficient_resources"
        assert "refused by group on 2" in error["message"]
        assert error["details"]["hosts"] == {
            "h1": ["group: anti-affinity web (strict): web1 already here"],
            "h2": ["group: anti-affinity web (strict): web2 already here"]}
        assert set(e.placed()) == {"web1", "web2"}
        assert e.create("other").status_code == 202  # outside the group: no rule


def test_soft_anti_affinity_prefers_apart_and_allows_together(tmp_path: Path) -> None:
    with engine(tmp_path, [{}, {}], placement="pack") as e:
        e.client.post("/api/v1/vm-groups", json={"name": "web", "policy": "anti-affinity",
                                                 "strict": False})
        for i in (1, 2, 3):
            assert e.create(f"web{i}", group="web").status_code == 202
        placed = e.placed()
        assert placed["web1"] != placed["web2"]  # apart while some host allows it
        assert sorted(e.counts().values()) == [1, 2]


def test_strict_affinity_keeps_members_on_one_host(tmp_path: Path) -> None:
    with engine(tmp_path, [{}, {}, {}]) as e:  # spread alone would scatter them
        e.client.post("/api/v1/vm-groups", json={"name": "db", "policy": "affinity"})
        for i in range(3):
            assert e.create(f"db{i}", group="db").status_code == 202
        assert len(set(e.placed().values())) == 1
        where = next(iter(e.placed().values()))
        error = e.create("db9", group="db", memory="1G").json()["error"]  # 512 MiB left
        assert error["code"] == "insufficient_resources"
        others = {h: r for h, r in error["details"]["hosts"].items() if h != where}
        assert all(r == [f"group: affinity db (strict): members are on {where}"]
                   for r in others.values())
