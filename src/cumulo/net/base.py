"""The host-network contract the services use, and the plan of one NIC.

``LinuxNetwork`` (net/linux.py) does it on the kernel; ``FakeNetwork``
(net/fake.py) only records, for unit tests without root.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Protocol

from cumulo.net.dnsmasq import DnsHost, DnsSettings
from cumulo.net.firewall import Firewall, FwInside
from cumulo.net.vxlan import TunnelPlan

INSIDE_PREFIX = "eth"


@dataclass(frozen=True)
class NicPlan:
    """One NIC of an instance: a veth from ``bridge`` into the instance's namespace."""

    host_name: str             # the host end, cu-v<hex>
    inside_name: str           # eth0, eth1, ...
    bridge: str
    mac: str
    address: IPv4Interface     # the instance's address with the network's prefix
    gateway: IPv4Address
    mtu: int | None = None     # an overlay's (smaller than the links' 1500)


@dataclass(frozen=True)
class OwnNetns:
    """A network whose gateway, DHCP/DNS and NAT live in a namespace of its own
    (net/l3ns.py): its subnet overlaps another project's network."""

    inside: FwInside       # its table in there
    mtu: int | None = None


@dataclass(frozen=True)
class NicCounters:
    """Traffic as the instance sees it (what it received, what it sent)."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0


class HostNetwork(Protocol):
    """Bridges, isolation and NICs on this host. Every call is idempotent."""

    def addresses(self) -> list[IPv4Interface]:
        """IPv4 addresses already on the host's links (subnets must not overlap them)."""

    def ensure_bridge(self, bridge: str, gateway: IPv4Interface,
                      own: OwnNetns | None = None) -> None:
        """The bridge with the gateway; ``own``: the gateway in the network's namespace."""

    def remove_bridge(self, bridge: str) -> None:
        """The bridge goes, and an overlay's tunnel on it, and the network's namespace."""

    # overlays (net/vxlan.py)
    def ensure_tunnel(self, plan: TunnelPlan) -> None:
        """The overlay's VXLAN device on its bridge, flooding to exactly ``plan.peers``."""

    def tunnel_peers(self, bridge: str) -> list[str] | None:
        """Where the tunnel on ``bridge`` floods to; None: no tunnel."""

    def underlay_mtu(self, address: str) -> int | None:
        """The MTU of the link holding ``address`` (None: no link has it)."""

    def apply_firewall(self, fw: Firewall) -> None:
        """Enforce ``fw`` (isolation, NAT, security groups, forwards); empty removes it."""

    def attach(self, netns: Path, nics: list[NicPlan]) -> None:
        """Wire every NIC into the existing namespace ``netns`` (a /proc/PID/ns/net path)."""

    def attach_taps(self, nics: list[NicPlan]) -> None:
        """A tap per NIC on its bridge, for a VM (address and gateway come by DHCP)."""

    def detach(self, host_names: list[str]) -> None:
        """Remove the NICs' host ends (gone already is fine)."""

    def shape(self, host_name: str, ingress: int | None, egress: int | None,
              burst: int | None) -> None:
        """Cap what a wired NIC's instance receives and sends (bit/s); None lifts a cap."""

    def counters(self, host_name: str) -> NicCounters | None:
        """Counters of a NIC by its host end; None while it is not wired."""

    def all_counters(self) -> dict[str, NicCounters]:
        """Counters of every link by name, in one read (for scrapes of many instances)."""

    # DHCP and DNS, one dnsmasq per network (net/dnsmasq.py)
    def ensure_dns(self, settings: DnsSettings, hosts: list[DnsHost]) -> None:
        """The network's dnsmasq runs and serves ``hosts`` (started, or reloaded)."""

    def stop_dns(self, bridge: str) -> None:
        """No dnsmasq and none of its files left for ``bridge``."""

    def dns_bridges(self) -> list[str]:
        """Bridges that have dnsmasq state here (to find leftovers of deleted networks)."""

    def dns_running(self, bridge: str) -> bool:
        """Whether the network's dnsmasq is alive (it may have died on its own)."""

    def netns_bridges(self) -> list[str]:
        """Bridges of the networks that have a namespace of their own here."""
