"""Authorization across every route, generated from docs/openapi.json: callers of project
beta (each role) try every route and method on project alpha's objects; nothing
succeeds and nothing of alpha shows in any answer. A route missing from the rights
table fails here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from cumulo.api import rights
from cumulo.api.app import create_app
from cumulo.services.host import Services
from tests.unit.conftest import wait_op

OPENAPI = Path(__file__).parents[2] / "docs" / "openapi.json"
DOCS = {("GET", p) for p in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")}
UI = {("GET", p) for p in ("/ui", "/ui/", "/ui/{file}")}   # the web console's files
ROLES = ("viewer", "user", "operator")
SECRET = "alpha"   # every object of project alpha has it in its name


def http_routes() -> set[tuple[str, str]]:
    doc = json.loads(OPENAPI.read_text())
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}


def ws_routes(app: Any) -> set[tuple[str, str]]:
    return {("WS", r.path) for r in app.routes if isinstance(r, APIWebSocketRoute)}


@pytest.fixture
def world(svc: Services) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """An app that treats every caller as coming over TCP; project alpha with objects;
    tokens of each role in beta, of an admin and of another host."""
    app = create_app(svc, tcp_auth=True)
    _, root = svc.identities.create("root-admin", "admin")
    tokens = {role: svc.identities.create(f"beta-{role}", role, "beta")[1] for role in ROLES}
    tokens["admin"] = root
    tokens["remote"] = svc.identities.issue_remote("other-host")
    svc.identities.create(f"{SECRET}-op", "operator", SECRET)
    for p in (SECRET, "beta"):
        svc.store.ensure_project(p)
    with TestClient(app) as api:
        h = {"Authorization": f"Bearer {root}"}
        q = {"project": SECRET}
        op = api.post("/1.0/instances", params={**q, "wait": 10}, headers=h, json={
            "name": f"{SECRET}-web", "image": "testimg", "start": True}).json()
        assert wait_op(_Auth(api, h), _Resp(op))["status"] == "success"
        for path, body in (("/1.0/networks", {"name": f"{SECRET}net",
                                              "subnet": "10.66.0.0/24"}),
                           ("/1.0/security-groups", {"name": f"{SECRET}-sg"})):
            r = api.post(path, params=q, headers=h, json=body)
            assert r.status_code == 201, r.text
        names = {"op_id": op["id"]}
        yield api, tokens, names


class _Resp:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data, self.status_code = data, 202

    def json(self) -> dict[str, Any]:
        return self.data


class _Auth:
    """A TestClient whose requests carry a token (for conftest's wait_op)."""

    def __init__(self, api: TestClient, headers: dict[str, str]) -> None:
        self.api, self.headers = api, headers

    def get(self, url: str, **kw: Any) -> Any:
        return self.api.get(url, headers=self.headers, **kw)


def concrete(template: str, names: dict[str, str]) -> str:
    """Alpha's objects in ``template``'s path parameters."""
    values = {"name": f"{SECRET}-web", "instance": f"{SECRET}-web", "snap": f"{SECRET}-snap",
              "ref": "testimg", "part": "memory", "index": "0", "protocol": "tcp",
              "address": "127.0.0.1", "port": "8080", "project": SECRET,
              "fingerprint": "0" * 64, "network": f"{SECRET}net", **names}
    if template.startswith("/1.0/networks/"):
        values["name"] = f"{SECRET}net"
    elif template.startswith("/1.0/security-groups/"):
        values["name"] = f"{SECRET}-sg"
    elif template.startswith("/1.0/volumes/"):
        values["name"] = f"{SECRET}-vol"
    elif template.startswith("/1.0/projects/"):
        values["name"] = SECRET
    elif template.startswith(("/1.0/storage-pools/", "/1.0/image-aliases/",
                              "/1.0/cluster/")):   # server-wide names
        values["name"] = "default"
    elif template.startswith("/1.0/reports/"):
        values["name"] = "lab.html"
    elif template.startswith(("/1.0/identities/", "/1.0/tokens/")):
        values["name"] = f"{SECRET}-op"
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def test_every_route_has_a_rule(svc: Services) -> None:
    """The rights table covers exactly the app's routes: a new route without a rule
    fails here (and is refused over TCP, even to an admin)."""
    app = create_app(svc)
    table = {(m, rights.plain(p)) for m, p in rights.RULES}
    assert http_routes() | ws_routes(app) | DOCS | UI == table


def test_route_without_a_rule_is_refused(svc: Services) -> None:
    app = create_app(svc, tcp_auth=True)

    @app.get("/1.0/brand-new")
    def brand_new() -> dict[str, str]:
        return {"secret": "x"}

    _, token = svc.identities.create("boss", "admin")
    with TestClient(app) as api:
        r = api.get("/1.0/brand-new", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and "not in the rights table" in r.json()["error"]


def test_beta_callers_get_nothing_of_alpha(world: Any, svc: Services) -> None:
    api, tokens, names = world
    routes = sorted(http_routes() | ws_routes(api.app) | DOCS)
    assert len(routes) > 60
    for role in (*ROLES, "remote"):
        h = {"Authorization": f"Bearer {tokens[role]}"}
        for method, template in routes:
            rule = rights.lookup(method, template.replace("{ref}", "x/y"))
            assert rule is not None, (method, template)
            path = concrete(template, names)
            params = {"project": SECRET, "name": "x", "filename": "x.tar.gz"}
            if method == "WS":
                with pytest.raises(WebSocketDenialResponse) as denied, \
                        api.websocket_connect(path + f"?project={SECRET}", headers=h):
                    pass
                status, text = denied.value.status_code, denied.value.text
            else:
                r = api.request(method, path, params=params, headers=h, json={})
                status, text = r.status_code, r.text
            where = f"{role}: {method} {path}"
            shared = rule[1].scope == rights.S and rule[1].right == "read"
            if role == "remote" and rule[1].also == "migrate":
                # it may see whether an image is there before it migrates an instance
                assert status in (200, 404), f"{where}: {status} {text}"
            elif role == "remote" and rule[1].right == "migrate":
                # another host may migrate into any project: but not touch what is there
                assert status in (400, 404, 409), f"{where}: {status} {text}"
                continue
            elif shared:   # images, pools, the server: shared by all
                assert status < 500, where
            elif rule[1].scope in (rights.P, "events", "object"):
                assert status == 404, f"{where}: {status} {text}"
            else:
                assert status == 403, f"{where}: {status} {text}"
            assert SECRET not in text.replace(f"project '{SECRET}'", ""), f"{where}: {text}"
    # and alpha is as it was
    root = {"Authorization": f"Bearer {tokens['admin']}"}
    got = api.get(f"/1.0/instances/{SECRET}-web", params={"project": SECRET}, headers=root)
    assert got.json()["state"] == "running"
    assert api.get(f"/1.0/networks/{SECRET}net", params={"project": SECRET},
                   headers=root).status_code == 200
    assert api.get(f"/1.0/security-groups/{SECRET}-sg", params={"project": SECRET},
                   headers=root).status_code == 200
    assert [i["name"] for i in api.get("/1.0/identities", headers=root).json()
            if i["name"].startswith(SECRET)] == [f"{SECRET}-op"]


def test_a_project_without_a_role_looks_like_no_project(world: Any) -> None:
    """The same answer for alpha (exists) and for a project that does not exist."""
    api, tokens, _ = world
    h = {"Authorization": f"Bearer {tokens['operator']}"}
    answers = [api.get(f"/1.0/instances/{SECRET}-web", params={"project": p}, headers=h)
               for p in (SECRET, "nowhere")]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].json()["error"].replace(SECRET, "P") == \
        answers[1].json()["error"].replace("nowhere", "P")


def test_a_project_in_the_path(svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Routes like /projects/{name} take the project from the path (for the projects
    routes): a role there lets in, none answers 404."""
    rules = {**rights.RULES, ("GET", "/1.0/things/{project}"): rights.Rule(
        "read", rights.P, path_project="project")}
    monkeypatch.setattr(rights, "_BY_METHOD", {})
    for (method, template), rule in rules.items():
        rights._BY_METHOD.setdefault(method, []).append((rights._regex(template), template,
                                                         rule))
    app = create_app(svc, tcp_auth=True)

    @app.get("/1.0/things/{project}")
    def things(project: str) -> dict[str, str]:
        return {"project": project}

    token = svc.identities.create("v", "viewer", "beta")[1]
    with TestClient(app) as api:
        h = {"Authorization": f"Bearer {token}"}
        assert api.get("/1.0/things/beta", headers=h).json() == {"project": "beta"}
        assert api.get("/1.0/things/alpha", headers=h, params={"project": "beta"}
                       ).status_code == 404
