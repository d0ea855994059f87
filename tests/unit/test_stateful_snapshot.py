"""Stateful snapshots through the API with the fake driver: the refusals, nothing made."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cumulo.domain.lifecycle import State
from cumulo.drivers.base import ExecRequest
from cumulo.services.host import Services
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


def test_exec_looks_at_the_host_when_the_store_says_paused(api: TestClient,
                                                          svc: Services) -> None:
    """A watchdog round that read QEMU's state in the middle of a stateful snapshot (its
    vCPUs stopped while the state is saved) wrote "paused"; the snapshot's end resumed the
    guest. An exec right after must look at the host, not refuse from the store's word."""
    launch(api, "v1")
    svc.store.update_instance("default", "v1", state=State.PAUSED)
    session = svc.instances.exec("default", "v1", ExecRequest(["true"]))
    session.kill()
    assert svc.store.get_instance("default", "v1").state == State.RUNNING
