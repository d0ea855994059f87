"""Overlay networks with the fake host network and a store on SQLite: VNIs allocated
by the store (lowest free, a given one in use refused), each member's tunnel plan
(from its address to every other online member's), the MTU the encapsulation leaves,
the bridge table that keeps the gateway and DHCP on each member, and refusals that
leave nothing."""

from __future__ import annotations

from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from cumulo.domain.acl import SecurityGroup
from cumulo.domain.models import Image, Instance, Network, Nic
from cumulo.errors import ConflictError, InvalidInputError, UnsupportedError
from cumulo.net.fake import FakeNetwork
from cumulo.net.firewall import ruleset
from cumulo.services.host import _network_sync
from cumulo.services.networks import NetworkService
from cumulo.services.overlays import Overlays, overlay_mtu, plan
from cumulo.store.firewall import FirewallStore
from cumulo.store.repo import Store

ADDRS = {"m1": "10.0.0.1", "m2": "10.0.0.2", "m3": "10.0.0.3"}


@pytest.fixture
def member(tmp_path: Path) -> tuple[NetworkService, FakeNetwork, dict[str, str]]:
    """Member m1 of a cluster whose online members are ``addrs`` (change it to move them)."""
    store = Store(f"sqlite:///{tmp_path / 'db'}")
    host = FakeNetwork([IPv4Interface("10.0.0.1/24")])
    addrs = dict(ADDRS)
    return NetworkService(store, host, overlays=Overlays(store, host, lambda: "m1",
                                                         lambda: addrs)), host, addrs


def test_vnis_come_from_the_store(member: tuple[NetworkService, FakeNetwork, dict[str, str]]
                                  ) -> None:
    svc, _, _ = member
    a = svc.create("default", "a", type="overlay")
    b = svc.create("default", "b", type="overlay", vni=7)
    c = svc.create("default", "c", type="overlay")
    assert (a.vni, b.vni, c.vni) == (1, 7, 2)
    with pytest.raises(ConflictError, match="VNI 7 is already used by network 'b'"):
        svc.create("default", "d", type="overlay", vni=7)
    with pytest.raises(InvalidInputError, match="invalid VNI 0"):
        svc.create("default", "d", type="overlay", vni=0)
    assert [n.name for n in svc.list_in("default")] == ["a", "b", "c"]
    svc.delete("default", "a")
    assert svc.create("default", "e", type="overlay").vni == 1   # freed


def test_a_member_floods_to_every_other_online_member(
        member: tuple[NetworkService, FakeNetwork, dict[str, str]]) -> None:
    svc, host, addrs = member
    net = svc.create("default", "ov", type="overlay")
    p = host.tunnels[net.bridge]
    assert (p.vni, p.local, p.peers, p.mtu) == (net.vni, "10.0.0.1", ("10.0.0.2", "10.0.0.3"),
                                                1450)
    assert [(t.member, t.state, t.peers) for t in svc.tunnels("default", "ov")] == [
        ("m1", "up", ("10.0.0.2", "10.0.0.3"))]
    del addrs["m3"]   # offline: out of the floods at the next sync
    assert svc.overlays is not None
    svc.overlays.sync()
    assert host.tunnels[net.bridge].peers == ("10.0.0.2",)
    assert plan(net, "m2", ADDRS).peers == ("10.0.0.1", "10.0.0.3")
    svc.delete("default", "ov")
    assert host.tunnels == {} and host.bridges == {}


def test_the_gateway_and_dhcp_stay_on_each_member(
        member: tuple[NetworkService, FakeNetwork, dict[str, str]]) -> None:
    svc, host, _ = member
    net = svc.create("default", "ov", type="overlay")
    assert host.firewall.tunnels == ["cu-x" + net.bridge[4:]]
    cmds = ruleset("t", host.firewall)["nftables"]
    bridge_rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})
                    and c["add"]["rule"]["family"] == "bridge"]
    assert [r["chain"] for r in bridge_rules] == ["out", "fwd"]
    assert host.dns[net.bridge][0].mtu == 1450
    svc.delete("default", "ov")
    assert host.firewall.tunnels == []


def test_the_mtu_fits_the_encapsulation() -> None:
    assert overlay_mtu(1500, None) == 1450
    assert overlay_mtu(9000, 1500) == 1500
    with pytest.raises(InvalidInputError, match="at most 1450"):
        overlay_mtu(1500, 1451)
    with pytest.raises(InvalidInputError, match="too small"):
        overlay_mtu(1500, 500)
    with pytest.raises(UnsupportedError, match="below 576"):
        overlay_mtu(600, None)


def test_no_overlay_outside_a_cluster(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db'}")
    host = FakeNetwork()
    for svc in (NetworkService(store, host),
                NetworkService(store, host, overlays=Overlays(store, host, lambda: None, dict))):
        with pytest.raises(UnsupportedError, match="this host is in no cluster"):
            svc.create("default", "ov", type="overlay")
    with pytest.raises(InvalidInputError, match="--vni and --mtu are for --type overlay"):
        NetworkService(store, host).create("default", "x", vni=3)
    assert store.list_networks() == [] and host.bridges == {}
    with pytest.raises(ConflictError, match="no overlay"):
        plan(Network("default", "n", "10.1.0.0/24", "10.1.0.1", "cu-b1"), "m1", ADDRS)


def test_the_sync_goes_on_after_another_member_deleted_a_project(
        member: tuple[NetworkService, FakeNetwork, dict[str, str]]) -> None:
    """An overlay with a NIC, in a project another member then empties and deletes:
    the heartbeat's sync forgets it, and a security group made through another member
    afterwards still reaches this member's firewall (a failing step once kept every
    later sync from the firewall, and the sync failed at every heartbeat)."""
    svc, host, _ = member
    store = svc.store
    store.projects.create("other")
    svc.create("other", "ov", type="overlay", subnet="10.9.0.0/24")
    store.put_image(Image(fingerprint="f" * 64))
    store.add_instance(Instance(project="other", name="a", type="container", image="f" * 64,
                                nics=[Nic(network="ov", index=0, mac="0a:ce:00:00:00:01",
                                          ip="10.9.0.2")]))
    sync = _network_sync(store, svc)
    store.delete_instance("other", "a")   # all through another member
    store.delete_network("other", "ov")
    store.projects.delete("other")
    FirewallStore(store.db).add_group(SecurityGroup(project="default", name="g"))
    sync()
    assert "default/g" in host.firewall.groups and host.bridges == {}
    sync()   # and again: nothing left to fail on
