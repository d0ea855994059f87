"""The ``cluster.evacuate`` instance option: set at launch, changed later, checked, never
seen by a driver."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cumulo.domain import evacuation_mode
from cumulo.services.host import Services
from tests.unit.conftest import launch


def test_default_and_driver_options() -> None:
    assert evacuation_mode.of({}) == "auto"
    assert evacuation_mode.of({"cluster.evacuate": "stop"}) == "stop"
    assert evacuation_mode.driver_options({"accel": "tcg", "cluster.evacuate": "stop"}) == {
        "accel": "tcg"}


def test_set_at_launch_and_changed(api: TestClient, svc: Services) -> None:
    launch(api, "ev", options={"cluster.evacuate": "stop"})
    assert api.get("/1.0/instances/ev").json()["options"] == {"cluster.evacuate": "stop"}
    assert svc.instances._spec(svc.instances.get("default", "ev")).options == {}
    r = api.patch("/1.0/instances/ev", json={"options": {"cluster.evacuate": "migrate"}})
    assert r.status_code == 200, r.text
    assert r.json()["options"] == {"cluster.evacuate": "migrate"}
    r = api.patch("/1.0/instances/ev", json={"options": {"cluster.evacuate": None}})
    assert r.json()["options"] == {}


def test_bad_values_refused(api: TestClient) -> None:
    r = api.post("/1.0/instances", json={"name": "bad", "image": "testimg",
                                         "options": {"cluster.evacuate": "teleport"}})
    assert r.status_code == 400
    assert r.json()["error"] == ("invalid cluster.evacuate 'teleport': use one of auto,"
                                 " live-migrate, migrate, stop")
    assert api.get("/1.0/instances/bad").status_code == 404
    launch(api, "ok")
    r = api.patch("/1.0/instances/ok", json={"options": {"cluster.evacuate": "later"}})
    assert r.status_code == 400 and "invalid cluster.evacuate 'later'" in r.json()["error"]
    r = api.patch("/1.0/instances/ok", json={"options": {"accel": "tcg"}})
    assert r.status_code == 400
    assert r.json()["error"] == ("option 'accel' is fixed at creation: only"
                                 " cluster.evacuate can change")
    assert api.get("/1.0/instances/ok").json()["options"] == {}
