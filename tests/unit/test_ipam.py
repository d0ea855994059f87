"""IP address management: what a user would see when choosing subnets and addresses."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from cumulo.errors import ConflictError, InvalidInputError
from cumulo.net import ipam


@pytest.mark.parametrize("text, message", [
    ("10.0.0.0", "give a prefix length"),
    ("banana", "use IPv4 CIDR notation"),
    ("10.0.0.300/24", "use IPv4 CIDR notation"),
    ("10.0.0.5/24", "did you mean 10.0.0.0/24"),
    ("fd00::/64", "only IPv4"),
    ("10.0.0.0/30", "prefix length must be"),
    ("127.0.0.0/8", "not a unicast range"),
])
def test_bad_subnets_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ipam.parse_subnet(text)


def test_gateway_is_first_host_and_allocation_skips_it() -> None:
    net = ipam.parse_subnet("10.9.8.0/24")
    assert ipam.gateway_of(net) == IPv4Address("10.9.8.1")
    assert ipam.next_free(net, []) == IPv4Address("10.9.8.2")
    used = [IPv4Address("10.9.8.2"), IPv4Address("10.9.8.4")]
    assert ipam.next_free(net, used) == IPv4Address("10.9.8.3")


def test_full_subnet_is_a_conflict() -> None:
    net = ipam.parse_subnet("10.9.8.0/29")  # hosts .1-.6, .1 is the gateway
    used = [IPv4Address(f"10.9.8.{i}") for i in range(2, 7)]
    with pytest.raises(ConflictError, match="no free address"):
        ipam.next_free(net, used)


def test_overlaps_with_networks_and_host_addresses() -> None:
    net = ipam.parse_subnet("10.1.0.0/16")
    with pytest.raises(ConflictError, match="network 'blue'"):
        ipam.check_free(net, {"blue": IPv4Network("10.1.2.0/24")}, [])
    with pytest.raises(ConflictError, match="in use on this host"):
        ipam.check_free(net, {}, [IPv4Interface("10.1.200.7/24")])
    ipam.check_free(net, {"red": IPv4Network("10.2.0.0/24")},
                    [IPv4Interface("127.0.0.1/8"), IPv4Interface("192.168.1.5/24")])


def test_pool_skips_taken_subnets() -> None:
    taken = [IPv4Network("10.210.0.0/24"), IPv4Network("10.210.2.0/24")]
    host = [IPv4Interface("10.210.1.9/24")]
    assert ipam.pick_subnet(taken, host) == IPv4Network("10.210.3.0/24")
    with pytest.raises(ConflictError, match="no free /24"):
        ipam.pick_subnet([IPv4Network("10.210.0.0/16")], [])


def test_static_address_checks() -> None:
    net = ipam.parse_subnet("10.5.0.0/24")
    ipam.check_address(net, IPv4Address("10.5.0.9"), [])
    with pytest.raises(InvalidInputError, match="not a usable host"):
        ipam.check_address(net, IPv4Address("10.6.0.9"), [])
    with pytest.raises(InvalidInputError, match="gateway"):
        ipam.check_address(net, IPv4Address("10.5.0.1"), [])
    with pytest.raises(ConflictError, match="already used"):
        ipam.check_address(net, IPv4Address("10.5.0.9"), [IPv4Address("10.5.0.9")])
    with pytest.raises(InvalidInputError, match="invalid IP address"):
        ipam.parse_address("10.5.0")


def test_mac_is_stable_local_unicast() -> None:
    mac = ipam.mac_for(b"default_web/0")
    assert mac == ipam.mac_for(b"default_web/0") != ipam.mac_for(b"default_db/0")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01


@pytest.mark.parametrize("text, bits", [
    ("20Mbit", 20_000_000), ("500kbit", 500_000), ("1G", 10**9), ("1.5mbit", 1_500_000)])
def test_rates_parse_to_bits(text: str, bits: int) -> None:
    from cumulo.net import tc

    assert tc.parse_rate(text) == bits


@pytest.mark.parametrize("text", ["fast", "20MB", "1bit", "100Gbit"])
def test_bad_rates_are_refused(text: str) -> None:
    from cumulo.net import tc

    with pytest.raises(InvalidInputError, match="rate"):
        tc.parse_rate(text)
