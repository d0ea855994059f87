"""A network's layer 3 in a network namespace of its own, for a network whose subnet
overlaps another project's: two gateways, dnsmasqs and NATs with the same addresses
then live side by side on one host, each in its namespace.

The bridge (the instances' veths and taps, an overlay's VXLAN device) stays in the
daemon's namespace with no address. The namespace ``cumulo-<tag>-<hex>`` holds:

- ``gw``, a veth whose other end ``cu-g<hex>`` is a port of the bridge: the gateway's
  address and MAC (the same on every member, like a bridge's in the plain case);
- ``up``, a veth to ``cu-u<hex>`` in the daemon's namespace, on a /30 of
  169.254.0.0/16 chosen from the bridge's name (``link_net``), and the default route:
  a NAT network's traffic is masqueraded as ``up``'s address in there, then again by
  the daemon's table as that of any NAT network;
- the network's dnsmasq (on ``gw``) and a table ``inet cumulo`` (NAT out, or nothing).

On the host its bridged frames are tracked in a conntrack zone of its own
(``conntrack_zone``), and its NICs' security groups are matched by their host end
(net/firewall.py).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from cumulo.net import bridge, ipam, netlink, nft, sysctl
from cumulo.net.firewall import FwInside

GATEWAY_LINK, UPLINK = "gw", "up"
LINK_POOL = IPv4Network("169.254.0.0/16")
METADATA = IPv4Address("169.254.169.254")   # (clouds' metadata address: not a link's)


def _hex(bridge_name: str) -> str:
    return bridge_name.removeprefix("cu-b")


def netns_name(tag: str, bridge_name: str) -> str:
    """Per daemon (``tag``): members of a test cluster share one /run/netns."""
    return f"cumulo-{tag}-{_hex(bridge_name)}"


def netns_path(tag: str, bridge_name: str) -> Path:
    return netlink.netns_path(netns_name(tag, bridge_name))


def leg_name(bridge_name: str) -> str:
    return "cu-g" + _hex(bridge_name)


def uplink_name(bridge_name: str) -> str:
    return "cu-u" + _hex(bridge_name)


def link_net(bridge_name: str) -> IPv4Network:
    """The /30 between the daemon's namespace and the network's: the same for the same
    bridge on every host (the firewall is built from the store alone)."""
    count = LINK_POOL.num_addresses // 4
    i = int(_hex(bridge_name), 16) % count
    net = IPv4Network((int(LINK_POOL.network_address) + 4 * i, 30))
    if METADATA in net or i == 0:
        net = IPv4Network((int(net.network_address) + 4, 30))
    return net


def conntrack_zone(bridge_name: str) -> int:
    """The zone its bridged frames are tracked in on the host (its addresses are another
    network's too): the number of its /30, unique on the host as the /30 is, never 0."""
    return (int(link_net(bridge_name).network_address) - int(LINK_POOL.network_address)) // 4


def inner_address(bridge_name: str) -> IPv4Address:
    """The namespace's end of the /30 (where this host's table DNATs forwards to)."""
    return list(link_net(bridge_name).hosts())[1]


def ensure(tag: str, bridge_name: str, gateway: IPv4Interface, inside: FwInside,
           mtu: int | None) -> None:
    """The bridge without an address, the namespace with its two legs, routes and table."""
    netlink.create_bridge(bridge_name, ipam.mac_for(f"bridge/{bridge_name}".encode()))
    # no ARP answers for the host's addresses (another network's gateway among them),
    # no IPv6 address: the host is not on this segment (its table drops the rest)
    sysctl.enable(f"net/ipv4/conf/{bridge_name}/arp_ignore", value="8")
    sysctl.enable(f"net/ipv6/conf/{bridge_name}/disable_ipv6")
    path = netlink.create_netns(netns_name(tag, bridge_name))
    leg, uplink = leg_name(bridge_name), uplink_name(bridge_name)
    for host_end, peer, br, mac in ((leg, GATEWAY_LINK, bridge_name,
                                     bridge.gateway_mac(gateway)),
                                    (uplink, UPLINK, None, None)):
        if netlink.link_exists(host_end) and not netlink.link_exists(peer, path):
            netlink.delete_link(host_end)   # the other end went with an older namespace
        if not netlink.link_exists(host_end):
            netlink.create_veth_into(host_end, br, path, peer, mac)
    outer, inner = list(link_net(bridge_name).hosts())
    netlink.set_address(uplink, IPv4Interface(f"{outer}/30"))
    netlink.link_up("lo", path)
    netlink.configure_nic(path, UPLINK, IPv4Interface(f"{inner}/30"), outer)
    netlink.set_address(GATEWAY_LINK, gateway, path)
    if mtu is not None:
        netlink.set_mtu(leg, mtu)
        netlink.set_mtu(GATEWAY_LINK, mtu, path)
    netlink.link_up(GATEWAY_LINK, path)
    if inside.nat or inside.forwards:
        sysctl.enable_in(path, "net/ipv4/ip_forward")
    nft.apply_inside(path, GATEWAY_LINK, UPLINK, inside)


def apply_inside(tag: str, bridge_name: str, inside: FwInside) -> None:
    """The namespace's table, if the namespace is there (``ensure`` makes it later)."""
    path = netns_path(tag, bridge_name)
    if path.exists():
        if inside.forwards:
            sysctl.enable_in(path, "net/ipv4/ip_forward")
        nft.apply_inside(path, GATEWAY_LINK, UPLINK, inside)


def remove(tag: str, bridge_name: str) -> None:
    """The namespace goes, and both legs with it (its dnsmasq must be stopped first)."""
    netlink.remove_netns(netns_name(tag, bridge_name))
    netlink.delete_link(leg_name(bridge_name))
    netlink.delete_link(uplink_name(bridge_name))


def bridges(tag: str) -> list[str]:
    """Bridges of the networks that have a namespace of this daemon's here."""
    prefix = f"cumulo-{tag}-"
    return ["cu-b" + n.removeprefix(prefix) for n in netlink.list_netns(prefix)]
