"""A container NIC: a veth pair, host end on the bridge, inside end in the instance's netns."""

from __future__ import annotations

from pathlib import Path

from cumulo.net import netlink
from cumulo.net.base import NicPlan

# Unprivileged containers do not own their netns: let any group use ICMP echo sockets.
PING_GROUPS = ("net.ipv4.ping_group_range", "0 2147483647")


def attach(netns: Path, nics: list[NicPlan]) -> None:
    fresh = not netlink.netns_exists(netns)
    netlink.create_netns(netns)
    try:
        if fresh:
            netlink.set_sysctl(netns, *PING_GROUPS)
        for nic in nics:
            netlink.create_veth_into(nic.host_name, nic.bridge, netns, nic.inside_name, nic.mac)
            netlink.configure_nic(netns, nic.inside_name, nic.address, nic.gateway)
    except BaseException:
        if fresh:
            detach(netns, [n.host_name for n in nics])
        raise


def detach(netns: Path, host_names: list[str]) -> None:
    for name in host_names:
        netlink.delete_link(name)
    netlink.remove_netns(netns)
