"""A network on the host: a Linux bridge ``cu-b<hex>`` holding the gateway address
(and a MAC derived from it)."""

from __future__ import annotations

from ipaddress import IPv4Interface

from cumulo.net import ipam, netlink


def gateway_mac(gateway: IPv4Interface) -> str:
    """The bridge's MAC, the same for the same subnet on every host: a VM that migrated
    keeps reaching its gateway without waiting for its ARP entry to age out."""
    return ipam.mac_for(f"gateway/{gateway.with_prefixlen}".encode())


def ensure(bridge: str, gateway: IPv4Interface) -> None:
    netlink.create_bridge(bridge, gateway_mac(gateway))
    netlink.set_address(bridge, gateway)


def remove(bridge: str) -> None:
    netlink.delete_link(bridge)
