"""A migrating VM's NICs on two hosts with the fake host network: the destination gets the
same network, MAC, IP and security groups, refuses what differs, and undoes what it made."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cumulo.api.app import create_app
from cumulo.errors import ConflictError, NotFoundError
from cumulo.net.bridge import gateway_mac
from cumulo.services import migration_nics
from cumulo.services.host import Services
from tests.unit.conftest import fake_services, launch


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Services]:
    with fake_services(tmp_path / "b") as services:
        yield services


def source_desc(api: TestClient, svc: Services) -> dict[str, object]:
    api.post("/1.0/networks", json={"name": "blue", "subnet": "10.50.0.0/24",
                                    "dns_domain": "lab"})
    fw = svc.networks.firewall
    fw.create_group("default", "peers")
    fw.create_group("default", "web", "the web tier")
    fw.add_rule("default", "web", "ingress", "tcp", "7000", None, "peers")
    launch(api, "a", networks=[{"network": "blue", "ip": "10.50.0.7"}])
    fw.attach("default", "web", "a", None)
    return migration_nics.describe(svc.networks, svc.store.get_instance("default", "a"))


def test_the_destination_gets_the_same_nics(api: TestClient, svc: Services,
                                            dest: Services) -> None:
    desc = source_desc(api, svc)
    nic = svc.store.get_instance("default", "a").nics[0]
    with dest.networks.lock:
        made = migration_nics.receive(dest.networks, "default", desc)
    assert made.networks == ["blue"] and sorted(made.groups) == ["peers", "web"]
    [got] = made.nics
    assert (got.network, got.mac, got.ip, got.groups) == ("blue", nic.mac, "10.50.0.7", ["web"])
    assert got.host_name != nic.host_name and got.host_name.startswith("cu-v")
    blue = dest.networks.get("default", "blue")
    assert (blue.subnet, blue.dns_domain, blue.isolated) == ("10.50.0.0/24", "lab", True)
    web = dest.networks.firewall.get_group("default", "web")
    assert web.rules == svc.networks.firewall.get_group("default", "web").rules
    assert web.description == "the web tier"

    # abandoned: the network and groups made for it go again
    migration_nics.release(dest.networks, "default", made)
    assert dest.networks.list_in("default") == []
    assert dest.networks.firewall.list_groups("default") == []


def test_what_differs_is_refused_and_nothing_is_left(api: TestClient, svc: Services,
                                                    dest: Services) -> None:
    desc = source_desc(api, svc)
    dest.networks.create("default", "blue", subnet="10.60.0.0/24")
    with pytest.raises(ConflictError, match="10.60.0.0/24 on the destination"):
        migration_nics.receive(dest.networks, "default", desc)
    assert dest.networks.firewall.list_groups("default") == []
    dest.networks.delete("default", "blue")

    # the address is taken there: the network made for it is removed again
    dest.networks.create("default", "blue", subnet="10.50.0.0/24")
    with TestClient(create_app(dest)) as api_b:
        launch(api_b, "other", networks=[{"network": "blue", "ip": "10.50.0.7"}])
    with pytest.raises(ConflictError, match="10.50.0.7 is already used"):
        migration_nics.receive(dest.networks, "default", desc)
    assert dest.networks.firewall.list_groups("default") == []

    # a group of that name with other rules
    dest.networks.firewall.create_group("default", "web")
    desc["nics"][0]["ip"] = "10.50.0.8"  # type: ignore[index]
    with pytest.raises(ConflictError, match="group 'web' has other rules"):
        migration_nics.receive(dest.networks, "default", desc)
    with pytest.raises(NotFoundError):
        dest.networks.firewall.get_group("default", "peers")


def test_the_gateway_mac_is_the_same_for_the_same_subnet() -> None:
    a = gateway_mac(IPv4Interface("10.50.0.1/24"))
    assert a == gateway_mac(IPv4Interface("10.50.0.1/24"))
    assert a != gateway_mac(IPv4Interface("10.51.0.1/24"))
    assert int(a.split(":")[0], 16) & 0b11 == 0b10   # locally administered, unicast
