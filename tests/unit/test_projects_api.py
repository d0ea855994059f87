"""Projects through the API: their routes, scoping (another project's object is a 404
exactly like a missing one), restrictions and defaults."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cumulo.domain.models import Image
from cumulo.services.host import Services
from tests.unit.conftest import LOOP, launch, wait_op

B = {"project": "b"}


def test_project_routes(api: TestClient) -> None:
    r = api.post("/1.0/projects", json={"name": "b", "description": "team b",
                                         "config": {"limits.memory": "1GiB"}})
    assert r.status_code == 201, r.text
    assert r.json()["config"] == {"limits.memory": str(1 << 30), "features.images": "false",
                                  "restricted.containers.privilege": "unprivileged"}
    assert [p["name"] for p in api.get("/1.0/projects").json()] == ["b", "default"]
    assert api.post("/1.0/projects", json={"name": "b"}).status_code == 409
    assert api.post("/1.0/projects", json={"name": "B!"}).status_code == 400
    r = api.post("/1.0/projects", json={"name": "c", "config": {"limits.bogus": "1"}})
    assert r.status_code == 400 and "unknown project setting 'limits.bogus'" in r.json()["error"]
    r = api.patch("/1.0/projects/b", json={"config": {"limits.instances": "3",
                                                      "limits.memory": None}})
    assert r.json()["config"]["limits.instances"] == "3"
    assert "limits.memory" not in r.json()["config"]
    r = api.put("/1.0/projects/b", json={"config": {"limits.cpu": "1.5"}})
    assert r.json()["config"] == {"limits.cpu": "1.5"} and r.json()["description"] == "team b"
    state = api.get("/1.0/projects/b/state").json()
    assert state["cpu"] == {"limit": 1.5, "usage": 0.0}
    assert state["instances"] == {"limit": None, "usage": 0}
    r = api.delete("/1.0/projects/default")
    assert r.status_code == 400 and r.json()["error"] == \
        "the project 'default' cannot be deleted"
    assert api.delete("/1.0/projects/b").status_code == 204
    assert api.get("/1.0/projects/b").status_code == 404
    assert api.get("/1.0/instances", params=B).json()["error"] == "project 'b' not found"


def test_another_projects_objects_are_not_found(api: TestClient, svc: Services) -> None:
    """Every route that names an object of default answers from project b exactly as for
    a name that exists nowhere."""
    api.post("/1.0/projects", json={"name": "b"})
    op = launch(api, "web")
    assert api.post("/1.0/networks", json={"name": "net"}).status_code == 201
    assert api.post("/1.0/security-groups", json={"name": "sg"}).status_code == 201
    probes = [
        ("GET", "/1.0/instances/{}", None, "instance"),
        ("GET", "/1.0/instances/{}/history", None, "instance"),
        ("PATCH", "/1.0/instances/{}", {"limits": {"cpu": 1}}, "instance"),
        ("PUT", "/1.0/instances/{}/state", {"action": "stop"}, "instance"),
        ("POST", "/1.0/instances/{}/exec", {"command": ["true"]}, "instance"),
        ("GET", "/1.0/instances/{}/console", None, "instance"),
        ("GET", "/1.0/instances/{}/snapshots", None, "instance"),
        ("POST", "/1.0/instances/{}/publish", {"alias": "x"}, "instance"),
        ("POST", "/1.0/instances/{}/migrate", {"remote": "r"}, "instance"),
        ("DELETE", "/1.0/instances/{}", None, "instance"),
        ("GET", "/1.0/networks/{}", None, "network"),
        ("GET", "/1.0/networks/{}/forwards", None, "network"),
        ("DELETE", "/1.0/networks/{}", None, "network"),
        ("GET", "/1.0/security-groups/{}", None, "security group"),
        ("DELETE", "/1.0/security-groups/{}", None, "security group"),
        ("GET", "/1.0/operations/{}", None, "operation"),
    ]
    names = {"instance": "web", "network": "net", "security group": "sg",
             "operation": str(op["id"])}
    for method, path, body, kind in probes:
        name = names[kind]
        there = api.request(method, path.format(name), params=B, json=body)
        nowhere = api.request(method, path.format("nosuch"), params=B, json=body)
        assert there.status_code == 404, (method, path, there.text)
        assert there.json() == {**nowhere.json(), "error": nowhere.json()["error"].replace(
            "nosuch", name)}, (method, path)
    for path in ("/1.0/instances", "/1.0/networks", "/1.0/security-groups", "/1.0/operations"):
        assert api.get(path, params=B).json() == [], path
    assert api.get("/1.0/instances/web").json()["state"] == "running"   # all still there
    svc.instances.get("default", "web")


def test_a_new_project_denies_privileged_containers(api: TestClient) -> None:
    api.post("/1.0/projects", json={"name": "b"})
    r = api.post("/1.0/instances", params=B, json={"name": "p", "image": "testimg",
                                                    "privileged": True})
    assert r.status_code == 403 and r.json() == {
        "error": "project 'b' does not allow privileged containers"
                 " (restricted.containers.privilege=unprivileged)",
        "type": "RestrictedError"}
    assert api.get("/1.0/instances", params=B).json() == []
    api.patch("/1.0/projects/b", json={"config": {"restricted.containers.privilege": "allow"}})
    op = wait_op(api, api.post("/1.0/instances", params=B, json={
        "name": "p", "image": "testimg", "privileged": True}))
    assert op["status"] == "success" and op["project"] == "b"
    assert api.get("/1.0/operations", params=B).json()[0]["id"] == op["id"]
    assert op["id"] not in [o["id"] for o in api.get("/1.0/operations").json()]


def test_defaults_fill_what_a_quota_counts(api: TestClient) -> None:
    api.post("/1.0/projects", json={"name": "b", "config": {"limits.memory": "1GiB"}})
    r = api.post("/1.0/instances", params=B, json={"name": "x", "image": "testimg"})
    assert r.status_code == 403 and "must declare memory" in r.json()["error"]
    api.patch("/1.0/projects/b", json={"config": {"default.memory": "256MiB"}})
    wait_op(api, api.post("/1.0/instances", params=B, json={"name": "x", "image": "testimg"}))
    assert api.get("/1.0/instances/x", params=B).json()["limits"]["memory"] == 256 << 20
    r = api.post("/1.0/instances", params=B, json={"name": "y", "image": "testimg",
                                                    "limits": {"memory": "800MiB"}})
    assert r.status_code == 403 and r.json()["error"] == (
        "project 'b' is over quota: limits.memory=1.0GiB, in use 256.0MiB,"
        " this needs 800.0MiB more")
    assert api.get("/1.0/projects/b/state").json()["memory"] == {
        "limit": 1 << 30, "usage": 256 << 20}


def test_websockets_are_scoped(api: TestClient) -> None:
    api.post("/1.0/projects", json={"name": "b"})
    launch(api, "web")
    with api.websocket_connect("/1.0/instances/web/exec-ws?project=b") as ws:
        ws.send_text('{"command": ["true"]}')
        assert ws.receive_json() == {"error": "instance 'web' not found",
                                     "type": "NotFoundError", "status": 404}
    with api.websocket_connect("/1.0/instances/web/console-ws?project=b") as ws:
        assert ws.receive_json()["status"] == 404
    with api.websocket_connect("/1.0/events?project=ghost") as ws:
        assert ws.receive_json()["error"] == "project 'ghost' not found"
    with api.websocket_connect("/1.0/events?project=b&type=lifecycle") as ws:
        launch(api, "other")                                  # in default: not seen
        wait_op(api, api.post("/1.0/instances", params=B, json={"name": "mine",
                                                                "image": "testimg"}))
        event = ws.receive_json()
        assert (event["project"], event["metadata"]["name"]) == ("b", "mine")


def test_images_shared_from_default_or_private(api: TestClient, svc: Services) -> None:
    """features.images=false: the project sees (and launches) default's images;
    true: only its own, which default does not see."""
    api.post("/1.0/projects", json={"name": "b"})
    api.post("/1.0/projects", json={"name": "c", "config": {"features.images": "true"}})
    assert [i["aliases"] for i in api.get("/1.0/images", params=B).json()] == [["testimg"]]
    wait_op(api, api.post("/1.0/instances", params=B, json={"name": "x", "image": "testimg"}))
    C = {"project": "c"}
    assert api.get("/1.0/images", params=C).json() == []
    r = api.post("/1.0/instances", params=C, json={"name": "x", "image": "testimg"})
    assert r.status_code == 404 and r.json()["error"] == "image 'testimg' not found"
    svc.store.put_image(Image(fingerprint="a" * 64, command=LOOP, aliases=["mine"]), "c")
    assert api.get("/1.0/images/mine", params=C).json()["fingerprint"] == "a" * 64
    assert api.get("/1.0/images/mine").status_code == 404            # not default's
    op = wait_op(api, api.post("/1.0/instances", params=C, json={"name": "x", "image": "mine"}))
    assert op["status"] == "success", op
    r = api.patch("/1.0/projects/c", json={"config": {"features.images": "false"}})
    assert r.status_code == 409 and "features.images" in r.json()["error"]
    wait_op(api, api.delete("/1.0/instances/x", params=C))
    r = api.delete("/1.0/projects/c")
    assert r.status_code == 409 and r.json()["error"] == \
        "project 'c' is not empty: it holds 1 image"
    assert api.delete("/1.0/images/mine", params=C).status_code == 204
    assert svc.images.files.payload("a" * 64).exists()   # default's image keeps the files
    assert api.delete("/1.0/projects/c").status_code == 204


def test_migration_targets_can_be_denied(api: TestClient) -> None:
    api.post("/1.0/projects", json={"name": "b", "config": {
        "restricted.migration.targets": "east"}})
    wait_op(api, api.post("/1.0/instances", params=B, json={"name": "x", "image": "testimg"}))
    r = api.post("/1.0/instances/x/migrate", params=B, json={"remote": "west"})
    assert r.status_code == 403 and r.json()["error"] == (
        "project 'b' may migrate only to east (restricted.migration.targets), not to 'west'")
    r = api.post("/1.0/instances/x/migrate", params=B, json={"remote": "east"})
    assert r.status_code != 403, r.text   # allowed there (it fails later: no such remote)
