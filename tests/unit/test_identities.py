"""Identities and roles over the API: what each role may do in its project, tokens that
expire or are revoked (open websockets too), and the audit log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from cumulo.api.app import create_app
from cumulo.errors import InvalidInputError, StoreError
from cumulo.services.host import Services
from cumulo.store.db import Database
from cumulo.store.identities import AuditStore
from cumulo.store.tables import utcnow

P = {"project": "beta"}


class Caller:
    """A TestClient speaking as one identity (every request counts as over TCP)."""

    def __init__(self, api: TestClient, token: str) -> None:
        self.api, self.h = api, {"Authorization": f"Bearer {token}"}

    def __call__(self, method: str, path: str, **kw: Any) -> Any:
        params = {**P, **kw.pop("params", {})}
        return self.api.request(method, "/1.0" + path, params=params, headers=self.h, **kw)

    def done(self, resp: Any) -> dict[str, Any]:
        assert resp.status_code == 202, resp.text
        op = resp.json()
        return self("GET", f"/operations/{op['id']}", params={"wait": 10}).json()  # type: ignore[no-any-return]


@pytest.fixture
def tcp(svc: Services) -> Iterator[tuple[TestClient, dict[str, Caller]]]:
    svc.store.ensure_project("beta")
    with TestClient(create_app(svc, tcp_auth=True)) as api:
        who = {role: Caller(api, svc.identities.create(f"b-{role}", role, "beta")[1])
               for role in ("viewer", "user", "operator")}
        who["admin"] = Caller(api, svc.identities.create("boss", "admin")[1])
        op = who["operator"].done(who["operator"]("POST", "/instances", json={
            "name": "web", "image": "testimg", "start": True}))
        assert op["status"] == "success", op
        yield api, who


def test_viewer_reads_only(tcp: Any) -> None:
    _, who = tcp
    v = who["viewer"]
    assert [i["name"] for i in v("GET", "/instances").json()] == ["web"]
    for method, path, body, right in (
            ("POST", "/instances", {"name": "x", "image": "testimg"}, "manage"),
            ("POST", "/instances/web/exec", {"command": ["true"]}, "operate"),
            ("PUT", "/instances/web/state", {"action": "stop"}, "operate")):
        r = v(method, path, json=body)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == (f"identity 'b-viewer' (viewer in project 'beta') may not"
                                     f" do this: it needs the right '{right}'")
    with pytest.raises(WebSocketDenialResponse) as denied, \
            v.api.websocket_connect("/1.0/instances/web/exec-ws?project=beta", headers=v.h):
        pass
    assert denied.value.status_code == 403 and "'operate'" in denied.value.text


def test_user_runs_but_does_not_delete(tcp: Any) -> None:
    _, who = tcp
    u = who["user"]
    r = u("POST", "/instances/web/exec", json={"command": ["echo", "hi"]})
    assert r.status_code == 200 and r.json()["stdout"] == "hi\n"
    assert u.done(u("PUT", "/instances/web/state", json={"action": "stop"}))["status"] \
        == "success"
    r = u("DELETE", "/instances/web")
    assert r.status_code == 403 and "needs the right 'manage'" in r.json()["error"]
    assert u("GET", "/instances/web").json()["state"] == "stopped"


def test_operator_manages_its_project_only(tcp: Any) -> None:
    _, who = tcp
    o = who["operator"]
    assert o("POST", "/networks", json={"name": "n1", "subnet": "10.67.0.0/24"}
             ).status_code == 201
    assert o("GET", "/instances", params={"project": "default"}).status_code == 404
    for method, path in (("GET", "/identities"), ("GET", "/metrics"), ("POST", "/tokens"),
                         ("GET", "/remotes"), ("GET", "/audit"), ("POST", "/projects"),
                         ("PATCH", "/projects/beta")):   # not its own quotas either
        r = o(method, path, json={})
        assert r.status_code == 403 and "needs the right 'admin'" in r.json()["error"], path
    r = o("POST", "/images", json={"builder": "busybox"})   # beta uses default's images
    assert r.status_code == 403 and "needs the right 'manage' in project 'default'" in \
        r.json()["error"]
    r = o("POST", "/instances/web/checkpoint", json={"file": "/etc/cron.d/x"})
    assert r.status_code == 403 and "a checkpoint file on the host" in r.json()["error"]
    assert o.done(o("DELETE", "/instances/web", params={"force": True}))["status"] \
        == "success"


def test_no_wrong_expired_or_revoked_token_gets_401(svc: Services, tcp: Any) -> None:
    api, who = tcp
    assert api.get("/1.0/instances").status_code == 401
    assert api.get("/1.0/instances", headers={"Authorization": "Bearer nope"}
                   ).json()["error"] == "this token is not known here (wrong or revoked)"
    ident, token = svc.identities.create("short", "viewer", "beta", expires="1h")
    late = Caller(api, token)
    assert late("GET", "/instances").status_code == 200
    svc.identities.store.revoke("short")   # the same identity, expired an hour ago
    svc.identities.store.add("short", "client", token, roles={"beta": "viewer"},
                             expires_at=utcnow() - timedelta(hours=1))
    r = late("GET", "/instances")
    assert r.status_code == 401 and "expired" in r.json()["error"]
    assert who["admin"]("DELETE", "/identities/b-viewer").status_code == 204
    assert who["viewer"]("GET", "/instances").status_code == 401


def test_identity_list_shows_no_secrets(svc: Services, tcp: Any) -> None:
    _, who = tcp
    who["viewer"]("GET", "/instances")
    listed = {i["name"]: i for i in who["admin"]("GET", "/identities").json()}
    assert listed["b-viewer"]["roles"] == {"beta": "viewer"}
    assert listed["b-viewer"]["last_used_at"] is not None
    assert listed["boss"]["admin"] is True
    text = str(listed)
    for ident in svc.identities.store.list():
        assert ident.name in text
    assert "token" not in text and "sha256" not in text


def test_create_refuses_bad_input(svc: Services) -> None:
    for args, msg in ((("x", "god"), "unknown role"), (("x", "viewer", None), "give one"),
                      (("x", "viewer", "p", "3 days"), "invalid duration"),
                      (("X!", "viewer"), "invalid identity name")):
        with pytest.raises(InvalidInputError, match=msg):
            svc.identities.create(*args)
    assert svc.identities.store.list() == []


def test_revoked_identity_loses_its_websocket(tcp: Any) -> None:
    api, who = tcp
    u = who["user"]
    with api.websocket_connect("/1.0/instances/web/exec-ws?project=beta", headers=u.h) as ws:
        ws.send_json({"command": ["sh", "-c", "echo ready; sleep 60"]})
        assert ws.receive_bytes() == b"\x01ready\n"   # the command runs
        closed: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: closed.append(_until_close(ws)))
        reader.start()
        assert who["admin"]("DELETE", "/identities/b-user").status_code == 204
        reader.join(timeout=30)
        assert closed and closed[0]["code"] == 4401, closed


def _until_close(ws: Any) -> dict[str, Any]:
    for _ in range(1000):
        msg = ws.receive()
        if msg["type"] == "websocket.close":
            return msg  # type: ignore[no-any-return]
    raise AssertionError("never closed")


def test_audit_records_mutations(tcp: Any) -> None:
    _, who = tcp
    who["viewer"]("DELETE", "/instances/web")
    who["user"]("PUT", "/instances/web/state", json={"action": "stop"})
    who["viewer"]("GET", "/instances")   # reads are not recorded
    rows = who["admin"]("GET", "/audit", params={"project": "beta"}).json()
    got = [(r["identity"], r["action"], r["object"], r["result"]) for r in rows]
    assert got == [
        ("b-operator", "POST /instances", "instances", 202),
        ("b-viewer", "DELETE /instances/{name}", "instances/web", 403),
        ("b-user", "PUT /instances/{name}/state", "instances/web/state", 202)]
    assert all(r["project"] == "beta" and r["at"] for r in rows)


def test_an_exec_websocket_is_audited_once_as_it_starts(tcp: Any) -> None:
    """Recorded while the session starts (not before it, so exec does not wait for the
    store write): once, with 101, even though the command ran on after it."""
    api, who = tcp
    with api.websocket_connect("/1.0/instances/web/exec-ws?project=beta",
                               headers=who["user"].h) as ws:
        ws.send_json({"command": ["sh", "-c", "echo ready"]})
        assert ws.receive_bytes() == b"\x01ready\n"
        _until_close(ws)
    rows = who["admin"]("GET", "/audit", params={"project": "beta"}).json()
    got = [(r["identity"], r["action"], r["object"], r["result"]) for r in rows]
    assert got == [("b-operator", "POST /instances", "instances", 202),
                   ("b-user", "WS /instances/{name}/exec-ws", "instances/web/exec-ws", 101)]


def test_audit_records_queued_are_written_in_order_before_a_read_and_at_close(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A request does not wait for its record: ``record_later`` queues it; ``list``
    waits for the queue, ``close`` writes it; after ``close`` a record is written at once,
    and one the store refuses goes to the log (the request was answered already)."""
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    audit = AuditStore(db)
    for n in range(50):
        audit.record_later("root", "p", "POST /instances", f"instances/{n}", 202)
    assert [e.object for e in audit.list(limit=100)] == [f"instances/{n}" for n in range(50)]
    gate = threading.Event()
    real = audit._write

    def slow(entries: list[dict[str, Any]]) -> None:
        gate.wait(10)
        real(entries)

    audit._write = slow   # type: ignore[method-assign]
    audit.record_later("root", None, "DELETE /instances/{name}", "instances/a", 202)
    audit.record_later("root", None, "DELETE /instances/{name}", "instances/b", 202)
    gate.set()
    audit.close()
    audit._write = real   # type: ignore[method-assign]
    assert [e.object for e in audit.list()][-2:] == ["instances/a", "instances/b"]
    audit.record_later("root", None, "DELETE /instances/{name}", "instances/c", 202)
    assert audit.list()[-1].object == "instances/c"

    def refused(entries: list[dict[str, Any]]) -> None:
        raise StoreError("database error: the disk is full")

    audit._write = refused   # type: ignore[method-assign]
    audit.record_later("root", None, "DELETE /instances/{name}", "instances/d", 202)
    assert "1 audit record(s) not written: database error: the disk is full" in caplog.text
    db.close()


def test_websocket_ends_when_its_identity_goes_elsewhere(
        svc: Services, tcp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Revoked through another daemon on the same store (no local revoke call), or
    expired: the periodic check closes the websocket."""
    monkeypatch.setattr("cumulo.api.auth.RECHECK", 0.2)
    api, who = tcp
    u = who["user"]
    with api.websocket_connect("/1.0/instances/web/exec-ws?project=beta", headers=u.h) as ws:
        ws.send_json({"command": ["sh", "-c", "echo ready; sleep 60"]})
        assert ws.receive_bytes() == b"\x01ready\n"
        svc.identities.store.revoke("b-user")   # the store only: as another daemon would
        assert _until_close(ws)["code"] == 4401


def test_grant_and_ungrant_a_project(svc: Services, tcp: Any) -> None:
    svc.store.ensure_project("gamma")
    _, who = tcp
    a, v = who["admin"], who["viewer"]
    assert v("GET", "/instances", params={"project": "gamma"}).status_code == 404
    r = a("PUT", "/identities/b-viewer/roles/gamma", json={"role": "operator"})
    assert r.json()["roles"] == {"beta": "viewer", "gamma": "operator"}
    assert v("GET", "/instances", params={"project": "gamma"}).status_code == 200
    assert a("PUT", "/identities/b-viewer/roles/gamma", json={"role": "admin"}
             ).status_code == 400   # admin is server-wide, not a project role
    assert a("DELETE", "/identities/b-viewer/roles/gamma").json()["roles"] == {"beta": "viewer"}
    assert v("GET", "/instances", params={"project": "gamma"}).status_code == 404
