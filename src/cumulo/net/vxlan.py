"""An overlay network's tunnel on one member: a kernel VXLAN device on the network's
bridge, sending from the member's cluster address, with one all-zero FDB entry per
other member (unicast head-end replication: no multicast in the underlay).

Learning is off: floods go to every peer and the bridge learns where MACs are, so a
migrated instance is found again as soon as it sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from cumulo.net import netlink

PORT = 4789          # IANA's VXLAN port
OVERHEAD = 50        # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
MIN_MTU = 576        # what IPv4 hosts must take


@dataclass(frozen=True)
class TunnelPlan:
    """What one member's side of an overlay must be."""

    bridge: str
    vni: int
    local: str                 # this member's cluster address
    peers: tuple[str, ...]     # the other members' cluster addresses
    mtu: int


PREFIX = "cu-x"


def device_name(bridge: str) -> str:
    """``cu-b1234abcd`` -> ``cu-x1234abcd``: the tunnel goes with its bridge."""
    return PREFIX + bridge.removeprefix("cu-b")


def ensure(plan: TunnelPlan) -> None:
    """The tunnel as planned. A tunnel of ours with the same VNI is a deleted network's
    (the store gives a VNI to one network at a time) whose removal here has not come yet
    (the sync after a heartbeat): it goes, instead of failing with "File exists"."""
    dev = device_name(plan.bridge)
    netlink.create_vxlan(dev, plan.vni, plan.local, PORT, plan.bridge, plan.mtu,
                         stale=PREFIX)
    netlink.set_flood_peers(dev, list(plan.peers))


def peers(bridge: str) -> list[str] | None:
    """The members this side floods to; None: no tunnel here."""
    return netlink.flood_peers(device_name(bridge))


def remove(bridge: str) -> None:
    """The tunnel goes (its FDB entries with it)."""
    netlink.delete_link(device_name(bridge))
