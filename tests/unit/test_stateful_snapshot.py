"""Stateful snapshots through the API with the fake driver: the refusals, nothing made."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.conftest import launch


def test_stateful_snapshot_of_a_container_is_refused(api: TestClient) -> None:
    launch(api, "c1")
    r = api.post("/1.0/instances/c1/snapshots", json={"name": "s1", "stateful": True})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert "container" in err and "CRIU" in err and "without --stateful" in err
    snaps = api.get("/1.0/instances/c1/snapshots").json()
    assert snaps == []


def test_stateful_snapshot_bad_input(api: TestClient) -> None:
    r = api.post("/1.0/instances/nosuch/snapshots", json={"name": "s1", "stateful": True})
    assert r.status_code == 404, r.text
    r = api.post("/1.0/instances/nosuch/snapshots", json={"name": "s1", "stateful": "x"})
    assert r.status_code in (400, 422), r.text
