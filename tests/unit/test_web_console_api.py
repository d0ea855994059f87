"""The web console's server side: its files need no token, everything else still does;
a browser's token rides in a websocket subprotocol; `cumulo ui`'s session tokens expire;
benchmark reports are listed and served, and nothing outside their folder is."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cumulo.api import web_auth
from cumulo.api.app import create_app
from cumulo.api.web_routes import console_url
from cumulo.services.host import Services
from tests.unit.conftest import launch
from tests.unit.test_api import read_exec


@pytest.fixture
def tcp(svc: Services, tmp_path: Path) -> Iterator[TestClient]:
    """The app as the daemon builds it: TestClient requests count as TCP (they have a
    client address), so each needs a token."""
    reports = tmp_path / "reports"
    reports.mkdir()
    app = create_app(svc, tcp_auth=True, listen="0.0.0.0:8443", reports=reports)
    with TestClient(app) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_console_files_need_no_token_but_the_api_does(tcp: TestClient) -> None:
    page = tcp.get("/ui/")
    assert page.status_code == 200 and '<script type="module" src="js/app.js">' in page.text
    assert tcp.get("/ui/js/api.js").status_code == 200
    assert tcp.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    features = tcp.get("/ui/features.json").json()
    assert set(features) == {"xterm", "projects"} and features["projects"] is False
    assert tcp.get("/1.0/instances").status_code == 401


def test_a_session_token_signs_in_until_it_expires(tcp: TestClient, svc: Services,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = svc.migrations.issue_token("admin")
    session = tcp.post("/1.0/ui-sessions", headers=bearer(token)).json()
    assert session["url"] == f"http://127.0.0.1:8443/ui/#token={session['token']}"
    assert tcp.get("/1.0/instances", headers=bearer(session["token"])).status_code == 200
    later = time.time() + web_auth.SESSION_TTL + 1
    monkeypatch.setattr(web_auth.time, "time", lambda: later)
    assert tcp.get("/1.0/instances", headers=bearer(session["token"])).status_code == 401
    assert tcp.get("/1.0/instances", headers=bearer(token)).status_code == 200


def test_a_browser_token_rides_in_a_websocket_subprotocol(tcp: TestClient,
                                                          svc: Services) -> None:
    _, token = svc.migrations.issue_token("browser")
    with tcp.websocket_connect("/1.0/events", subprotocols=["cumulo", f"bearer.{token}"]
                               ) as ws:
        assert ws.accepted_subprotocol == "cumulo"   # a browser drops the socket otherwise
    with pytest.raises(WebSocketDisconnect) as refused, tcp.websocket_connect(
            "/1.0/events", subprotocols=["cumulo", "bearer.wrong"]) as ws:
        ws.receive_text()
    assert refused.value.code == 4401


def test_exec_over_a_browser_websocket(api: TestClient) -> None:
    launch(api, "web", networks=[])
    with api.websocket_connect("/1.0/instances/web/exec-ws", subprotocols=["cumulo"]) as ws:
        assert ws.accepted_subprotocol == "cumulo"
        ws.send_text(json.dumps({"command": ["echo", "hi"]}))
        assert read_exec(ws) == (b"hi\n", 0)


def test_reports_are_listed_and_served_from_their_folder_only(
        tcp: TestClient, svc: Services, tmp_path: Path) -> None:
    _, token = svc.migrations.issue_token("r")
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
        assert r.status_code == 404, (bad, r.text)


def test_console_url_of_a_listen_address() -> None:
    assert console_url(None) is None
    assert console_url("127.0.0.1:8443") == "http://127.0.0.1:8443/ui/"
    assert console_url("0.0.0.0:80") == "http://127.0.0.1:80/ui/"
    assert console_url("[::]:8443") == "http://[::1]:8443/ui/"
    assert console_url("10.0.0.2:9000") == "http://10.0.0.2:9000/ui/"
