"""The web console's server side: its files need no token, everything else still does;
`cumulo ui`'s sessions are admin identities that expire (audited, revocable, websockets
too), given over the unix socket only; a browser's token rides in a websocket
subprotocol; benchmark reports are listed and served, and nothing outside their folder
is."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from cumulo.api import web_auth
from cumulo.api.app import create_app
from cumulo.api.web_routes import console_url
from cumulo.services import identities
from cumulo.services.host import Services
from cumulo.store.tables import utcnow
from tests.unit.conftest import launch
from tests.unit.test_api import read_exec
from tests.unit.test_identities import _until_close

FP = "ab" * 32


@pytest.fixture
def tcp(svc: Services, tmp_path: Path) -> Iterator[TestClient]:
    """The app as the daemon builds it: TestClient requests count as TCP (they have a
    client address), so each needs a token."""
    reports = tmp_path / "reports"
    reports.mkdir()
    app = create_app(svc, tcp_auth=True, fingerprint=FP, listen="0.0.0.0:8443",
                     reports=reports)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def unix(svc: Services) -> Iterator[TestClient]:
    """The same services as root over the unix socket (no token asked)."""
    with TestClient(create_app(svc, fingerprint=FP, listen="0.0.0.0:8443")) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_console_files_need_no_token_but_the_api_does(tcp: TestClient) -> None:
    page = tcp.get("/ui/")
    assert page.status_code == 200 and '<script type="module" src="js/app.js">' in page.text
    assert tcp.get("/ui/js/api.js").status_code == 200
    assert tcp.head("/ui/js/api.js").status_code == 200
    assert tcp.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    features = tcp.get("/ui/features.json").json()
    assert set(features) == {"xterm", "projects"}
    assert features["projects"] is True   # the console's project selector and pages use it
    assert tcp.get("/ui/../1.0/instances").status_code in (401, 404)
    assert tcp.get("/1.0/instances").status_code == 401
    assert tcp.post("/ui/").status_code == 401   # only GET is public


def test_a_session_is_an_admin_identity_that_expires(
        tcp: TestClient, unix: TestClient, svc: Services,
        monkeypatch: pytest.MonkeyPatch) -> None:
    session = unix.post("/1.0/ui-sessions").json()
    name, token = session["identity"], session["token"]
    assert session["url"] == f"https://127.0.0.1:8443/ui/#token={token}"
    assert session["fingerprint"] == FP and name.startswith("ui-")
    ident = svc.identities.store.get(name)
    assert ident.admin and ident.expires_at is not None
    assert timedelta(hours=7) < ident.expires_at - utcnow() <= timedelta(hours=8)
    assert tcp.get("/1.0/instances", headers=bearer(token)).status_code == 200
    # what it does is audited under its name
    assert tcp.delete("/1.0/instances/nothing", headers=bearer(token)).status_code == 404
    assert [(e.identity, e.action, e.result) for e in svc.identities.audit.list()] == [
        ("root (unix socket)", "POST /ui-sessions", 201),
        (name, "DELETE /instances/{name}", 404)]
    later = utcnow() + timedelta(hours=8, seconds=1)
    monkeypatch.setattr(identities, "utcnow", lambda: later)
    refused = tcp.get("/1.0/instances", headers=bearer(token))
    assert refused.status_code == 401 and "expired" in refused.json()["error"]
    # the next session deletes the expired one
    monkeypatch.setattr(web_auth, "utcnow", lambda: later)
    second = unix.post("/1.0/ui-sessions").json()
    assert [i.name for i in svc.identities.store.list()] == [second["identity"]]


def test_sessions_only_over_the_unix_socket(tcp: TestClient, svc: Services) -> None:
    for role, project in (("admin", None), ("operator", "default")):
        _, token = svc.identities.create(f"x-{role}", role, project)
        r = tcp.post("/1.0/ui-sessions", headers=bearer(token))
        assert r.status_code == 403, r.text
        assert "unix socket" in r.json()["error"] or "admin" in r.json()["error"]
    assert tcp.post("/1.0/ui-sessions").status_code == 401
    assert [i.name for i in svc.identities.store.list()] == ["x-admin", "x-operator"]


def test_a_browser_token_rides_in_a_websocket_subprotocol(tcp: TestClient,
                                                          svc: Services) -> None:
    _, token = svc.identities.create("browser", "viewer", "default")
    with tcp.websocket_connect("/1.0/events?project=default",
                               subprotocols=["cumulo", f"bearer.{token}"]
                               ) as ws:
        assert ws.accepted_subprotocol == "cumulo"   # a browser drops the socket otherwise
    for protocols in (["cumulo", "bearer.wrong"], ["cumulo"]):
        with pytest.raises(WebSocketDenialResponse) as refused, tcp.websocket_connect(
                "/1.0/events", subprotocols=protocols):
            pass
        assert refused.value.status_code == 401
    # a viewer's token in a subprotocol is still a viewer's: no terminal
    with pytest.raises(WebSocketDenialResponse) as refused, tcp.websocket_connect(
            "/1.0/instances/web/exec-ws", subprotocols=["cumulo", f"bearer.{token}"]):
        pass
    assert refused.value.status_code == 403 and "operate" in refused.value.text
    # on plain HTTP a subprotocol header means nothing
    assert tcp.get("/1.0/instances", headers={
        "Sec-WebSocket-Protocol": f"cumulo, bearer.{token}"}).status_code == 401


def test_revoking_a_session_closes_its_browser_websockets(
        tcp: TestClient, unix: TestClient) -> None:
    session = unix.post("/1.0/ui-sessions").json()
    launch(unix, "web", networks=[])
    with tcp.websocket_connect("/1.0/instances/web/exec-ws", subprotocols=[
            "cumulo", f"bearer.{session['token']}"]) as ws:
        ws.send_json({"command": ["sh", "-c", "echo ready; sleep 60"]})
        assert ws.receive_bytes() == b"\x01ready\n"
        closed: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: closed.append(_until_close(ws)))
        reader.start()
        assert unix.delete(f"/1.0/identities/{session['identity']}").status_code == 204
        reader.join(timeout=30)
        assert closed and closed[0]["code"] == 4401, closed


def test_a_viewer_reads_but_may_not_act(tcp: TestClient, unix: TestClient,
                                        svc: Services) -> None:
    """What the console shows a viewer when it presses Stop: the API's one line."""
    launch(unix, "web", networks=[])
    _, token = svc.identities.create("eve", "viewer", "default")
    assert [i["name"] for i in tcp.get("/1.0/instances", headers=bearer(token)).json()] \
        == ["web"]
    r = tcp.put("/1.0/instances/web/state", headers=bearer(token), json={"action": "stop"})
    assert r.status_code == 403 and "needs the right 'operate'" in r.json()["error"]


def test_exec_over_a_browser_websocket(api: TestClient) -> None:
    launch(api, "web", networks=[])
    with api.websocket_connect("/1.0/instances/web/exec-ws", subprotocols=["cumulo"]) as ws:
        assert ws.accepted_subprotocol == "cumulo"
        ws.send_text(json.dumps({"command": ["echo", "hi"]}))
        assert read_exec(ws) == (b"hi\n", 0)


def test_reports_are_listed_and_served_from_their_folder_only(
        tcp: TestClient, svc: Services, tmp_path: Path) -> None:
    _, token = svc.identities.create("r", "viewer", "default")
    (tmp_path / "reports" / "lab.html").write_text("<h1>lab</h1>")
    (tmp_path / "reports" / "notes.txt").write_text("not a report")
    (tmp_path / "secret.html").write_text("outside")
    listed = tcp.get("/1.0/reports", headers=bearer(token)).json()
    assert [r["name"] for r in listed] == ["lab.html"]
    got = tcp.get("/1.0/reports/lab.html", headers=bearer(token))
    assert got.status_code == 200 and got.text == "<h1>lab</h1>"
    assert got.headers["content-type"].startswith("text/html")
    (tmp_path / "reports" / "lab-cpu.png").write_bytes(b"\x89PNG")
    plot = tcp.get("/1.0/reports/lab-cpu.png", headers=bearer(token))
    assert plot.headers["content-type"] == "image/png" and plot.content == b"\x89PNG"
    for bad in ("notes.txt", "..%2Fsecret.html", "missing.html"):
        r = tcp.get(f"/1.0/reports/{bad}", headers=bearer(token))
        # a path out of the folder matches no route: refused before any file is read
        assert r.status_code in (403, 404) and "outside" not in r.text, (bad, r.text)


def test_console_url_of_a_listen_address() -> None:
    assert console_url(None) is None
    assert console_url("127.0.0.1:8443") == "https://127.0.0.1:8443/ui/"
    assert console_url("0.0.0.0:80", https=False) == "http://127.0.0.1:80/ui/"
    assert console_url("[::]:8443") == "https://[::1]:8443/ui/"
    assert console_url("10.0.0.2:9000") == "https://10.0.0.2:9000/ui/"
