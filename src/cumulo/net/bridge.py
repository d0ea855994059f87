"""A network on the host: a Linux bridge ``cu-b<hex>`` holding the gateway address."""

from __future__ import annotations

from ipaddress import IPv4Interface

from cumulo.net import netlink


def ensure(bridge: str, gateway: IPv4Interface) -> None:
    netlink.create_bridge(bridge)
    netlink.set_address(bridge, gateway)


def remove(bridge: str) -> None:
    netlink.delete_link(bridge)
