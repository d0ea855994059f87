"""Requests a cluster member forwards: it authenticates as itself (an identity of kind
``member``) and names the caller it speaks for; the receiving member authorizes that
caller, never the member. Only member identities may set the forwarding headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cumulo.api.app import create_app
from cumulo.cluster.membership import FORWARDED, ON_BEHALF, ROOT_CALLER, identity_name
from cumulo.services.host import Services
from cumulo.store.identities import MEMBER


@pytest.fixture
def api(svc: Services) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """Every caller as over TCP; project alpha with an instance; tokens of an operator
    of alpha, a viewer of beta, an admin and a member."""
    svc.store.ensure_project("alpha")
    svc.store.ensure_project("beta")
    tokens = {"ops": svc.identities.create("ops", "operator", "alpha")[1],
              "eve": svc.identities.create("eve", "viewer", "beta")[1],
              "admin": svc.identities.create("boss", "admin")[1],
              "member": "m2-secret-token"}
    svc.identities.store.add(identity_name("m2"), MEMBER, tokens["member"])
    with TestClient(create_app(svc, tcp_auth=True)) as client:
        r = client.post("/1.0/instances", params={"project": "alpha"},
                        headers={"Authorization": f"Bearer {tokens['admin']}"},
                        json={"name": "web", "image": "testimg"})
        assert r.status_code == 202, r.text
        yield client, tokens


def _as(tokens: dict[str, str], who: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}", **extra}


def _names(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [i["name"] for i in r.json()]


@pytest.mark.parametrize("header", [FORWARDED, ON_BEHALF])
@pytest.mark.parametrize("who", ["ops", "eve", "admin"])
def test_only_members_may_set_the_forwarding_headers(
        api: tuple[TestClient, dict[str, str]], header: str, who: str) -> None:
    client, tokens = api
    value = "ops" if header == ON_BEHALF else "m1"
    r = client.get("/1.0/instances", params={"project": "alpha"},
                   headers=_as(tokens, who, **{header: value}))
    assert r.status_code == 403, r.text
    assert "only cluster members forward requests" in r.json()["error"]
    # and a change is refused the same way (and not carried out)
    r = client.delete("/1.0/instances/web", params={"project": "alpha"},
                      headers=_as(tokens, who, **{header: value}))
    assert r.status_code == 403, r.text
    assert client.get("/1.0/instances/web", params={"project": "alpha"},
                      headers=_as(tokens, "admin")).status_code == 200


def test_a_member_is_authorized_as_the_caller_it_speaks_for(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    q = {"project": "alpha"}
    # as itself a member has no role in any project
    r = client.get("/1.0/instances", params=q, headers=_as(tokens, "member"))
    assert r.status_code == 404, r.text
    fwd = {FORWARDED: "m1"}
    assert _names(client.get("/1.0/instances", params=q, headers=_as(
        tokens, "member", **fwd, **{ON_BEHALF: "ops"}))) == ["web"]
    assert _names(client.get("/1.0/instances", params=q, headers=_as(
        tokens, "member", **fwd, **{ON_BEHALF: ROOT_CALLER}))) == ["web"]
    # a viewer of beta, forwarded, sees nothing of alpha and may not change beta
    r = client.get("/1.0/instances", params=q,
                   headers=_as(tokens, "member", **fwd, **{ON_BEHALF: "eve"}))
    assert r.status_code == 404, r.text
    r = client.post("/1.0/networks", params={"project": "beta"}, json={"name": "n1"},
                    headers=_as(tokens, "member", **fwd, **{ON_BEHALF: "eve"}))
    assert r.status_code == 403, r.text
    assert "identity 'eve' (viewer in project 'beta')" in r.json()["error"]
    assert "'manage'" in r.json()["error"]
    # an identity that is not there (revoked between the two members' checks)
    r = client.get("/1.0/instances", params=q,
                   headers=_as(tokens, "member", **fwd, **{ON_BEHALF: "gone"}))
    assert r.status_code == 401, r.text
    assert "'gone'" in r.json()["error"]


def test_a_member_cannot_administer_the_cluster_as_itself(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    for method, path in (("POST", "/1.0/cluster/join-tokens"),
                         ("POST", "/1.0/cluster/members/m1/evacuate"),
                         ("POST", "/1.0/identities")):
        r = client.request(method, path, json={"name": "x"}, headers=_as(tokens, "member"))
        assert r.status_code == 403, (path, r.text)
        assert "'admin'" in r.json()["error"]
    for who in ("ops", "eve"):
        r = client.post("/1.0/cluster/join-tokens", json={"name": "x"},
                        headers=_as(tokens, who))
        assert r.status_code == 403, r.text
