"""The REST API in process, over the fake driver: what a client sees."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from cumulo.api.app import create_app
from cumulo.services.host import Services, build_services
from tests.unit.conftest import HOST, add_test_image, launch, wait_op


def read_exec(ws: WebSocketTestSession) -> tuple[bytes, int]:
    """All output of an exec stream and its exit code."""
    out = b""
    while True:
        msg = ws.receive()
        if msg.get("bytes"):
            out += msg["bytes"][1:]
        elif msg.get("text"):
            return out, int(json.loads(msg["text"])["exit_code"])


def state(api: TestClient, name: str) -> str:
    return api.get(f"/1.0/instances/{name}").json()["state"]  # type: ignore[no-any-return]


def test_server_and_host(api: TestClient) -> None:
    assert api.get("/1.0").json()["instance_types"] == ["container"]
    assert api.get("/1.0/host").json()["cgroup_version"] == 2


def test_launch_list_info(api: TestClient) -> None:
    launch(api, "web", limits={"memory": "64MiB", "cpu": 0.5})
    rows = api.get("/1.0/instances").json()
    assert [(r["name"], r["state"]) for r in rows] == [("web", "running")]
    info = api.get("/1.0/instances/web").json()
    assert info["pid"] > 0 and info["limits"] == {"memory": 64 << 20, "cpu": 0.5}
    assert info["usage"]["pids"] >= 1 and info["usage"]["memory_bytes"] > 0


def test_create_without_start_then_start(api: TestClient) -> None:
    op = wait_op(api, api.post("/1.0/instances", json={"name": "c1", "image": "testimg"}))
    assert op["status"] == "success"
    assert state(api, "c1") == "stopped"
    assert wait_op(api, api.put("/1.0/instances/c1/state",
                                json={"action": "start"}))["status"] == "success"
    assert state(api, "c1") == "running"


def test_launch_with_wait_answers_once_it_runs(api: TestClient) -> None:
    r = api.post("/1.0/instances", params={"wait": 30},
                 json={"name": "quick", "image": "testimg", "start": True})
    assert r.status_code == 202 and r.headers["location"] == f"/1.0/operations/{r.json()['id']}"
    assert (r.json()["status"], r.json()["progress"]) == ("success", 1.0)
    assert state(api, "quick") == "running"
    bad = api.post("/1.0/instances", params={"wait": 30},
                   json={"name": "bad", "image": "testimg", "start": True,
                         "command": ["/no/such/program"]})
    assert bad.json()["status"] == "failure" and bad.json()["error"]
    assert api.get("/1.0/instances/bad").status_code == 404


def test_exec_in_an_instance_that_stopped_on_its_own(api: TestClient) -> None:
    launch(api, "gone", command=["sh", "-c", "exit 3"])
    r = api.post("/1.0/instances/gone/exec", json={"command": ["true"]})
    for _ in range(100):   # until PID 1's exit is seen (the store may still say running)
        if r.status_code != 200:
            break
        time.sleep(0.05)
        r = api.post("/1.0/instances/gone/exec", json={"command": ["true"]})
    assert r.status_code == 409
    assert r.json()["error"] == "cannot exec instance 'gone': it is stopped"
    info = api.get("/1.0/instances/gone").json()
    assert (info["state"], info["exit_code"]) == ("stopped", 3)


def test_exec_collects_output_and_exit_code(api: TestClient) -> None:
    launch(api, "x")
    r = api.post("/1.0/instances/x/exec",
                 json={"command": ["sh", "-c", "echo out; echo err >&2; exit 7"]})
    assert r.json() == {"exit_code": 7, "stdout": "out\n", "stderr": "err\n"}
    r = api.post("/1.0/instances/x/exec", json={"command": ["cat"], "stdin": "piped"})
    assert r.json()["stdout"] == "piped"


def test_exec_websocket_streams_stdin_and_exit(api: TestClient) -> None:
    launch(api, "ws")
    with api.websocket_connect("/1.0/instances/ws/exec-ws") as ws:
        ws.send_text(json.dumps({"command": ["sh", "-c", "read l; echo got $l; exit 3"]}))
        ws.send_bytes(b"hello\n")
        ws.send_text(json.dumps({"eof": True}))
        out, code = read_exec(ws)
    assert out == b"got hello\n" and code == 3


def test_exec_websocket_tty(api: TestClient) -> None:
    launch(api, "tty")
    with api.websocket_connect("/1.0/instances/tty/exec-ws") as ws:
        ws.send_text(json.dumps({"command": ["sh", "-c", "tty -s && echo isatty"],
                                 "tty": True}))
        out, code = read_exec(ws)
    assert b"isatty" in out and code == 0


def test_exec_websocket_error_on_stopped(api: TestClient) -> None:
    wait_op(api, api.post("/1.0/instances", json={"name": "s", "image": "testimg"}))
    with api.websocket_connect("/1.0/instances/s/exec-ws") as ws:
        ws.send_text(json.dumps({"command": ["true"]}))
        msg = json.loads(ws.receive_text())
    assert msg["status"] == 409 and "it is stopped" in msg["error"]


def test_console(api: TestClient) -> None:
    launch(api, "log")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = api.get("/1.0/instances/log/console")
        if b"started" in r.content:
            break
        time.sleep(0.05)
    assert r.content == b"started\n"
    assert int(r.headers["x-cumulo-offset"]) == len(b"started\n")
    assert api.get("/1.0/instances/log/console", params={"offset": 8}).content == b""


def test_lifecycle(api: TestClient) -> None:
    launch(api, "lc")
    for action, expected in [("pause", "paused"), ("resume", "running"),
                             ("restart", "running"), ("stop", "stopped"), ("start", "running")]:
        op = wait_op(api, api.put("/1.0/instances/lc/state", json={"action": action}))
        assert op["status"] == "success", (action, op)
        assert state(api, "lc") == expected, action
    wait_op(api, api.put("/1.0/instances/lc/state", json={"action": "stop", "force": True}))
    assert api.get("/1.0/instances/lc").json()["exit_code"] == 137


def test_pid1_exiting_is_noticed(api: TestClient) -> None:
    launch(api, "short", command=["sh", "-c", "exit 4"])
    deadline = time.monotonic() + 5
    while state(api, "short") == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    info = api.get("/1.0/instances/short").json()
    assert (info["state"], info["exit_code"]) == ("stopped", 4)


def test_limits_change_live(api: TestClient) -> None:
    launch(api, "lim", limits={"memory": "64MiB"})
    r = api.patch("/1.0/instances/lim", json={"limits": {"memory": "128MiB", "pids": 10}})
    assert r.status_code == 200, r.text
    assert r.json()["limits"] == {"memory": 128 << 20, "pids": 10}
    r = api.patch("/1.0/instances/lim", json={"limits": {"memory": None}})
    assert r.json()["limits"] == {"pids": 10}


def test_delete(api: TestClient, svc: Services) -> None:
    launch(api, "del")
    r = api.delete("/1.0/instances/del")
    assert r.status_code == 409 and "cannot delete" in r.json()["error"]
    assert state(api, "del") == "running"
    assert wait_op(api, api.delete("/1.0/instances/del",
                                   params={"force": True}))["status"] == "success"
    assert api.get("/1.0/instances/del").status_code == 404
    assert not (svc.instances.instances_dir / "default_del").exists()
    assert svc.instances.drivers["container"].list_host_ids() == []


def test_bad_input_gets_clear_4xx_and_creates_nothing(api: TestClient, svc: Services) -> None:
    cases = [
        ({"name": "Bad_Name", "image": "testimg"}, 400, "invalid instance name"),
        ({"name": "../etc", "image": "testimg"}, 400, "invalid instance name"),
        ({"name": "ok", "image": "nope"}, 404, "image 'nope' not found"),
        ({"name": "ok", "image": "testimg", "limits": {"memory": "12XB"}}, 400,
         "invalid size '12XB'"),
        ({"name": "ok", "image": "testimg", "limits": {"cpu": 64}}, 400, "exceeds"),
        ({"name": "ok", "image": "testimg", "limits": {"memory": "1TiB"}}, 400, "exceeds"),
        ({"name": "ok", "image": "testimg", "limits": {"io_weight": 100}}, 422,
         "io_weight cannot be enforced"),
        ({"name": "ok", "image": "testimg", "type": "vm"}, 400, "unknown instance type"),
        ({"name": "ok", "image": "testimg", "bogus": 1}, 400, "invalid request"),
        ({"image": "testimg"}, 400, "invalid request: name"),
    ]
    for body, status, text in cases:
        r = api.post("/1.0/instances", json=body)
        assert r.status_code == status, (body, r.text)
        assert text in r.json()["error"], (body, r.text)
        assert "Traceback" not in r.text and "\n" not in r.json()["error"]
    assert api.get("/1.0/instances").json() == []
    assert svc.instances.drivers["container"].list_host_ids() == []
    assert list(svc.instances.instances_dir.iterdir()) == []


def test_state_conflicts(api: TestClient) -> None:
    launch(api, "st")
    r = api.put("/1.0/instances/st/state", json={"action": "start"})
    assert r.status_code == 409 and r.json()["error"] == \
        "cannot start instance 'st': it is running"
    assert api.post("/1.0/instances", json={"name": "st", "image": "testimg"}).status_code == 409
    wait_op(api, api.put("/1.0/instances/st/state", json={"action": "stop", "timeout": 1}))
    r = api.post("/1.0/instances/st/exec", json={"command": ["true"]})
    assert r.status_code == 409 and "cannot exec" in r.json()["error"]
    r = api.put("/1.0/instances/st/state", json={"action": "dance"})
    assert r.status_code == 400
    assert api.get("/1.0/instances/none").status_code == 404
    assert api.get("/1.0/operations/nope").status_code == 404


def test_launch_failure_rolls_back(api: TestClient, svc: Services) -> None:
    op = wait_op(api, api.post("/1.0/instances", json={
        "name": "broken", "image": "testimg", "start": True,
        "command": ["/nonexistent/binary"]}))
    assert op["status"] == "failure" and "/nonexistent/binary" in op["error"]
    assert api.get("/1.0/instances/broken").status_code == 404
    assert not (svc.instances.instances_dir / "default_broken").exists()


def test_images_and_aliases(api: TestClient) -> None:
    imgs = api.get("/1.0/images").json()
    assert imgs[0]["aliases"] == ["testimg"]
    fp = imgs[0]["fingerprint"]
    assert api.post("/1.0/image-aliases", json={"name": "debian/12", "target": fp}).json()[
        "aliases"] == ["debian/12", "testimg"]
    assert api.get("/1.0/images/debian/12").json()["fingerprint"] == fp
    assert api.delete("/1.0/image-aliases/debian/12").status_code == 204
    assert api.post("/1.0/image-aliases", json={"name": "Bad Alias", "target": fp}
                    ).status_code == 400
    assert api.post("/1.0/images", json={"builder": "windows"}).status_code == 400
    launch(api, "user")
    r = api.delete("/1.0/images/testimg")
    assert r.status_code == 409 and "used by default/user" in r.json()["error"]


def test_projects_are_separate(api: TestClient, svc: Services) -> None:
    svc.store.ensure_project("team")
    launch(api, "same")
    op = wait_op(api, api.post("/1.0/instances", params={"project": "team"},
                               json={"name": "same", "image": "testimg"}))
    assert op["status"] == "success"
    assert [i["name"] for i in api.get("/1.0/instances", params={"project": "team"}).json()
            ] == ["same"]
    assert api.get("/1.0/instances", params={"project": "ghost"}).status_code == 404


def test_protocol_errors_use_the_error_format(api: TestClient) -> None:
    r = api.get("/1.0/nothing-here")
    assert r.status_code == 404 and r.json() == {"error": "Not Found", "type": "HTTPError"}
    r = api.patch("/1.0/instances")
    assert r.status_code == 405 and r.json()["type"] == "HTTPError"
    r = api.post("/1.0/instances", content=b"{not json", headers={"content-type":
                                                                  "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("invalid request")
    r = api.get("/1.0/operations/x", params={"wait": "soon"})
    assert r.status_code == 400 and "wait" in r.json()["error"]


def test_no_user_namespaces_means_explicit_privileged(api: TestClient, svc: Services) -> None:
    svc.instances.host = dataclasses.replace(svc.instances.host, userns=False)
    r = api.post("/1.0/instances", json={"name": "u", "image": "testimg"})
    assert r.status_code == 422 and "--privileged" in r.json()["error"]
    assert api.get("/1.0/instances").json() == []
    op = wait_op(api, api.post("/1.0/instances", json={"name": "u", "image": "testimg",
                                                       "privileged": True}))
    assert op["status"] == "success"


def test_options_are_per_type(tmp_path: Path) -> None:
    svc = build_services(tmp_path / "state", tmp_path / "run", HOST,
                         driver_kinds={"container": "fake", "vm": "vm"})
    add_test_image(svc)
    try:
        with TestClient(create_app(svc)) as api:
            cases = [
                ({"type": "container", "options": {"accel": "tcg"}}, "does not apply to a"
                 " container"),
                ({"type": "vm", "options": {"accel": "warp"}}, "invalid accel 'warp'"),
                ({"type": "vm", "options": {"disk": "/etc/shadow"}}, "option 'disk' does not"
                 " apply to a vm"),
                ({"type": "vm", "options": {"machine": "isapc"}}, "use one of pc, q35, microvm"),
            ]
            for extra, message in cases:
                r = api.post("/1.0/instances", json={"name": "o", "image": "testimg", **extra})
                assert r.status_code == 400 and message in r.json()["error"], r.text
            assert api.get("/1.0/instances").json() == []
            op = wait_op(api, api.post("/1.0/instances", json={
                "name": "o", "image": "testimg", "type": "container"}))
            assert op["status"] == "success"
            assert api.get("/1.0/instances/o").json()["options"] == {}
    finally:
        svc.close()


def test_app_images_take_only_static_programs_and_containers_have_no_console(
        api: TestClient) -> None:
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        pytest.skip("busybox-static is not installed")
    r = api.post("/1.0/images/app", params={"name": "busybox"}, content=busybox.read_bytes(),
                 headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    img = r.json()
    assert img["kind"] == "app" and img["command"] == ["/bin/busybox"] and img["aliases"] == []
    again = api.post("/1.0/images/app", params={"name": "busybox"},
                     content=busybox.read_bytes()).json()
    assert again["fingerprint"] == img["fingerprint"]          # same bytes, same image
    r = api.post("/1.0/images/app", params={"name": "x.sh"}, content=b"#!/bin/sh\n")
    assert r.status_code == 400 and "not an ELF" in r.json()["error"]
    launch(api, "box")
    with api.websocket_connect("/1.0/instances/box/console-ws") as ws:
        err = json.loads(ws.receive_text())
    assert "no interactive console" in err["error"] and err["type"] == "UnsupportedError"
