"""Placement groups through the API: create, list, info, delete; bad input is one clear
error and stores nothing; a group with instances in it cannot be deleted."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cumulo.cluster.placement import PlacementGroup, Request, Resources
from cumulo.services.host import Services
from cumulo.store.members import MemberRecord


def test_create_list_info_delete(api: TestClient, svc: Services) -> None:
    r = api.post("/1.0/placement-groups", json={"name": "web", "policy": "spread",
                                                "strict": True})
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "web", "project": "default", "policy": "spread",
                        "strict": True, "used_by": []}
    api.post("/1.0/placement-groups", json={"name": "db", "policy": "compact"})
    assert [(g["name"], g["policy"], g["strict"]) for g in
            api.get("/1.0/placement-groups").json()] == [("db", "compact", False),
                                                         ("web", "spread", True)]
    # an instance placed in it: shown, and the group cannot go
    svc.scheduler.members.add(MemberRecord(name="m1", capacity=Resources(4, 1 << 33)))
    assert svc.scheduler.allocate("default", "w1", Request(
        Resources(1, 1 << 30), placement_group=PlacementGroup("web", strict=True))) == "m1"
    assert api.get("/1.0/placement-groups/web").json()["used_by"] == ["m1/w1"]
    r = api.delete("/1.0/placement-groups/web")
    assert r.status_code == 409 and "used by w1" in r.json()["error"], r.text
    assert api.delete("/1.0/placement-groups/db").status_code == 204
    assert api.get("/1.0/placement-groups/db").status_code == 404


def test_bad_input_stores_nothing(api: TestClient) -> None:
    for body, status, words in [
        ({"name": "x", "policy": "random"}, 400, "unknown placement policy 'random'"),
        ({"name": "Bad Name"}, 400, "invalid"),
        ({"name": "x", "colour": "red"}, 400, "colour: Extra inputs are not permitted"),
    ]:
        r = api.post("/1.0/placement-groups", json=body)
        assert r.status_code == status and words in r.text, (body, r.text)
    api.post("/1.0/placement-groups", json={"name": "web"})
    r = api.post("/1.0/placement-groups", json={"name": "web"})
    assert r.status_code == 409 and "already exists" in r.text
    assert [g["name"] for g in api.get("/1.0/placement-groups").json()] == ["web"]
    assert api.get("/1.0/placement-groups", params={"project": "nope"}).status_code == 404
