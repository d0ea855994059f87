"""Networks through the API with the fake host network: validation, IPAM, in-use refusal."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cumulo.errors import CumuloError, InvalidInputError, NotFoundError
from cumulo.net.fake import FakeNetwork
from cumulo.services.host import Services
from cumulo.services.networks import NetworkService
from tests.unit.conftest import launch, wait_op


def fake(svc: Services) -> FakeNetwork:
    net = svc.networks.host_net
    assert isinstance(net, FakeNetwork)
    return net


def test_create_list_and_isolate(api: TestClient, svc: Services) -> None:
    r = api.post("/1.0/networks", json={"name": "blue"})
    assert r.status_code == 201, r.text
    blue = r.json()
    assert (blue["subnet"], blue["gateway"]) == ("10.210.0.0/24", "10.210.0.1")
    assert blue["bridge"].startswith("cu-b") and len(blue["bridge"]) <= 15
    red = api.post("/1.0/networks", json={"name": "red", "subnet": "10.30.0.0/16"}).json()
    assert [n["name"] for n in api.get("/1.0/networks").json()] == ["blue", "red"]
    bridges = sorted(n.bridge for n in fake(svc).firewall.networks)
    assert bridges == sorted([blue["bridge"], red["bridge"]])


def test_bad_input_changes_nothing(api: TestClient, svc: Services) -> None:
    api.post("/1.0/networks", json={"name": "blue", "subnet": "10.40.0.0/24"})
    cases = [
        ({"name": "x", "subnet": "10.40.0.300/24"}, 400, "invalid subnet"),
        ({"name": "x", "subnet": "10.40.0.0/23"}, 409, "overlaps 10.40.0.0/24 of network"),
        ({"name": "blue"}, 409, "already exists"),
        ({"name": "Bad Name"}, 400, "invalid"),
    ]
    for body, status, message in cases:
        r = api.post("/1.0/networks", json=body)
        assert r.status_code == status, r.text
        assert message in r.json()["error"]
    assert [n["name"] for n in api.get("/1.0/networks").json()] == ["blue"]
    assert len(fake(svc).bridges) == 1


def test_host_addresses_are_avoided(api: TestClient, svc: Services) -> None:
    from ipaddress import IPv4Interface

    fake(svc).host.append(IPv4Interface("10.210.0.5/24"))
    assert api.post("/1.0/networks", json={"name": "a"}).json()["subnet"] == "10.210.1.0/24"
    r = api.post("/1.0/networks", json={"name": "b", "subnet": "10.210.0.0/25"})
    assert r.status_code == 409 and "in use on this host" in r.json()["error"]


def test_nics_get_addresses_and_block_network_delete(api: TestClient, svc: Services) -> None:
    api.post("/1.0/networks", json={"name": "blue", "subnet": "10.50.0.0/24"})
    launch(api, "a", networks=[{"network": "blue"}])
    launch(api, "b", networks=[{"network": "blue", "ip": "10.50.0.77"}])
    a = api.get("/1.0/instances/a").json()["nics"][0]
    b = api.get("/1.0/instances/b").json()["nics"][0]
    assert (a["ip"], b["ip"]) == ("10.50.0.2", "10.50.0.77")
    assert a.pop("counters")["rx_bytes"] == 0  # wired: the fake counts nothing
    assert a["mac"] != b["mac"]
    assert {p.host_name for _, p in fake(svc).nics.values()} == {a["host_name"], b["host_name"]}
    assert {str(ns) for ns, _ in fake(svc).nics.values()} == {
        f"/proc/{api.get('/1.0/instances/' + n).json()['pid']}/ns/net" for n in "ab"}
    r = api.delete("/1.0/networks/blue")
    assert r.status_code == 409 and "used by a, b" in r.json()["error"]
    assert api.get("/1.0/networks/blue").json()["used_by"] == ["a", "b"]
    # restart keeps MAC and IP
    wait_op(api, api.put("/1.0/instances/a/state", json={"action": "restart", "timeout": 2}))
    assert {k: v for k, v in api.get("/1.0/instances/a").json()["nics"][0].items()
            if k != "counters"} == a
    for name in ("a", "b"):
        wait_op(api, api.delete("/1.0/instances/" + name, params={"force": True}))
    assert fake(svc).nics == {}
    assert api.delete("/1.0/networks/blue").status_code == 204
    assert fake(svc).bridges == {} and fake(svc).firewall.empty()


def test_bad_nic_requests_change_nothing(api: TestClient, svc: Services) -> None:
    api.post("/1.0/networks", json={"name": "blue", "subnet": "10.60.0.0/24"})
    launch(api, "a", networks=[{"network": "blue", "ip": "10.60.0.9"}])
    cases = [
        ([{"network": "nope"}], 404, "network 'nope' not found"),
        ([{"network": "blue", "ip": "10.61.0.9"}], 400, "not a usable host address"),
        ([{"network": "blue", "ip": "10.60.0.1"}], 400, "gateway"),
        ([{"network": "blue", "ip": "10.60.0.9"}], 409, "already used"),
        ([{"network": "blue", "ip": "ten"}], 400, "invalid IP address"),
    ]
    for nics, status, message in cases:
        r = api.post("/1.0/instances", json={"name": "b", "image": "testimg", "networks": nics})
        assert r.status_code == status, r.text
        assert message in r.json()["error"]
    assert [i["name"] for i in api.get("/1.0/instances").json()] == ["a"]


def test_no_network_means_no_netns(api: TestClient, svc: Services) -> None:
    launch(api, "plain")
    assert api.get("/1.0/instances/plain").json()["nics"] == []
    assert fake(svc).nics == {}


def test_concurrent_launches_get_distinct_addresses(api: TestClient, svc: Services) -> None:
    from concurrent.futures import ThreadPoolExecutor

    api.post("/1.0/networks", json={"name": "blue", "subnet": "10.70.0.0/24"})

    def create(i: int) -> int:
        return api.post("/1.0/instances", json={
            "name": f"c{i}", "image": "testimg", "networks": [{"network": "blue"}]}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(create, range(16))) == {202}
    ips = [api.get(f"/1.0/instances/c{i}").json()["nics"][0]["ip"] for i in range(16)]
    assert len(set(ips)) == 16


def test_subnet_pool_is_configurable_and_checked(svc: Services) -> None:
    nets = NetworkService(svc.store, FakeNetwork(), subnet_pool="172.31.0.0/22")
    assert [nets.create("default", f"n{i}").subnet for i in range(4)] == \
        [f"172.31.{i}.0/24" for i in range(4)]
    with pytest.raises(CumuloError, match="free"):
        nets.create("default", "n4")
    with pytest.raises(InvalidInputError, match="invalid subnet"):
        NetworkService(svc.store, FakeNetwork(), subnet_pool="10.0.0.0/33")


def test_a_project_uses_only_its_own_networks(api: TestClient, svc: Services) -> None:
    svc.store.ensure_project("team2")
    r = api.post("/1.0/networks", params={"project": "team2"}, json={"name": "private"})
    assert r.status_code == 201, r.text
    assert [n["name"] for n in api.get("/1.0/networks").json()] == []  # not in default
    r = api.post("/1.0/instances", json={
        "name": "x", "image": "testimg", "start": True, "networks": [{"network": "private"}]})
    assert r.status_code == 404 and r.json()["error"] == "network 'private' not found"
    assert api.get("/1.0/instances").json() == []
    r = api.delete("/1.0/networks/private")          # nor can default delete it
    assert r.status_code == 404
    assert api.get("/1.0/networks", params={"project": "team2"}).json()[0]["name"] == "private"


def test_firewall_is_written_only_when_it_changes(api: TestClient, svc: Services) -> None:
    """An nft run costs ~15 ms of every launch and delete: none for an instance without
    NICs, and none when the wanted table is the one already written."""
    api.post("/1.0/networks", json={"name": "blue", "subnet": "10.60.0.0/24"})
    writes = fake(svc).firewall_writes
    launch(api, "plain", networks=[])
    wait_op(api, api.delete("/1.0/instances/plain", params={"force": True}))
    assert fake(svc).firewall_writes == writes
    svc.networks.firewall.apply()           # nothing changed since the last write
    assert fake(svc).firewall_writes == writes
    launch(api, "wired", networks=[{"network": "blue"}])
    assert fake(svc).firewall_writes == writes + 1   # its address joined the table
    assert [str(n.ip) for n in fake(svc).firewall.nics] == ["10.60.0.2"]


def test_another_projects_subnet_gets_a_namespace_of_its_own(api: TestClient, svc: Services
                                                              ) -> None:
    """A subnet another project's network has is taken: that network's gateway, DHCP/DNS
    and NAT go into a namespace of its own (no address of the host's); one of the same
    project is still refused, and a subnet nobody has stays on the plain path."""
    api.post("/1.0/networks", json={"name": "mine", "subnet": "10.41.0.0/24"})
    assert api.post("/1.0/projects", json={"name": "other"}).status_code == 201
    r = api.post("/1.0/networks?project=other", json={"name": "theirs",
                                                       "subnet": "10.41.0.0/24", "nat": True})
    assert r.status_code == 201, r.text
    theirs = svc.networks.get("other", "theirs")
    assert theirs.own_netns and not svc.networks.get("default", "mine").own_netns
    net = fake(svc)
    assert list(net.bridges) == [svc.networks.get("default", "mine").bridge]
    assert net.apart[theirs.bridge][1].inside.nat
    assert net.dns[theirs.bridge][0].own_netns
    assert theirs.bridge in net.firewall.apart   # seen as its uplink by the host's table
    assert "cu-u" + theirs.bridge[4:] in [n.bridge for n in net.firewall.networks]
    r = api.post("/1.0/networks?project=other", json={"name": "x", "subnet": "10.41.0.128/25"})
    assert r.status_code == 409 and "overlaps 10.41.0.0/24 of network 'other/theirs'" \
        in r.json()["error"], r.text
    r = api.post("/1.0/networks?project=other", json={"name": "y", "subnet": "10.42.0.0/24"})
    assert r.status_code == 201 and not svc.networks.get("other", "y").own_netns
    assert api.delete("/1.0/networks/theirs?project=other").status_code in (200, 204)
    assert theirs.bridge not in net.apart and theirs.bridge not in net.dns


def test_a_network_deleted_during_the_dns_reconcile_is_no_error(
        svc: Services, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Listed, then deleted through another member before its NICs were read (CI saw
    "cannot start DHCP and DNS of network green: network 'green' not found" as an ERROR
    on a member): it is passed over, and the next network still gets its dnsmasq."""
    svc.networks.create("default", "green", subnet="10.61.0.0/24")
    svc.networks.create("default", "blue", subnet="10.62.0.0/24")
    nics = svc.store.network_nics

    def gone(project: str, name: str) -> Any:
        if name == "green":
            raise NotFoundError("network", name)
        return nics(project, name)

    monkeypatch.setattr(svc.store, "network_nics", gone)
    started: list[str] = []
    monkeypatch.setattr(svc.networks.host_net, "ensure_dns",
                        lambda settings, hosts: started.append(settings.bridge))
    with caplog.at_level(logging.INFO, logger="cumulo.services.networks"):
        svc.networks.reconcile_dns()
        svc.networks.refresh_dns("default", ["green", "blue"])
    assert [r.levelname for r in caplog.records if "green" in r.getMessage()] == ["INFO"] * 2
    blue = svc.networks.get("default", "blue").bridge
    assert started == [blue, blue]
