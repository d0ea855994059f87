"""``HostNetwork`` that only records what it was asked: unit tests, no root."""

from __future__ import annotations

from ipaddress import IPv4Interface
from pathlib import Path

from cumulo.net.base import NicCounters, NicPlan, OwnNetns
from cumulo.net.dnsmasq import DnsHost, DnsSettings
from cumulo.net.firewall import Firewall
from cumulo.net.vxlan import TunnelPlan


class FakeNetwork:
    def __init__(self, host: list[IPv4Interface] | None = None) -> None:
        self.host = list(host or [])
        self.bridges: dict[str, IPv4Interface] = {}
        self.apart: dict[str, tuple[IPv4Interface, OwnNetns]] = {}   # own namespaces
        self.firewall = Firewall()
        self.firewall_writes = 0   # how often the table was written (an nft run each)
        self.shapes: dict[str, tuple[int | None, int | None, int | None]] = {}
        self.nics: dict[str, tuple[Path, NicPlan]] = {}  # by host name
        self.dns: dict[str, tuple[DnsSettings, list[DnsHost]]] = {}  # by bridge
        self.tunnels: dict[str, TunnelPlan] = {}   # by bridge
        self.mtu = 1500   # of every host link

    def addresses(self) -> list[IPv4Interface]:
        return [*self.host, *self.bridges.values()]

    def ensure_bridge(self, bridge: str, gateway: IPv4Interface,
                      own: OwnNetns | None = None) -> None:
        if own is None:
            self.bridges[bridge] = gateway
        else:   # not an address of the host's
            self.apart[bridge] = (gateway, own)

    def remove_bridge(self, bridge: str) -> None:
        self.bridges.pop(bridge, None)
        self.apart.pop(bridge, None)
        self.tunnels.pop(bridge, None)

    def ensure_tunnel(self, plan: TunnelPlan) -> None:
        self.tunnels[plan.bridge] = plan

    def tunnel_peers(self, bridge: str) -> list[str] | None:
        plan = self.tunnels.get(bridge)
        return None if plan is None else sorted(plan.peers)

    def underlay_mtu(self, address: str) -> int | None:
        return self.mtu if any(str(a.ip) == address for a in self.host) else None

    def apply_firewall(self, fw: Firewall) -> None:
        self.firewall = fw
        self.firewall_writes += 1

    def attach(self, netns: Path, nics: list[NicPlan]) -> None:
        self.nics.update({n.host_name: (netns, n) for n in nics})

    def shape(self, host_name: str, ingress: int | None, egress: int | None,
              burst: int | None) -> None:
        self.shapes[host_name] = (ingress, egress, burst)

    def counters(self, host_name: str) -> NicCounters | None:
        return NicCounters() if host_name in self.nics else None

    def all_counters(self) -> dict[str, NicCounters]:
        return {name: NicCounters() for name in self.nics}

    def attach_taps(self, nics: list[NicPlan]) -> None:
        self.nics.update({n.host_name: (Path("tap"), n) for n in nics})

    def detach(self, host_names: list[str]) -> None:
        for name in host_names:
            self.nics.pop(name, None)

    # DHCP and DNS
    def ensure_dns(self, settings: DnsSettings, hosts: list[DnsHost]) -> None:
        self.dns[settings.bridge] = (settings, sorted(hosts, key=lambda h: h.name))

    def stop_dns(self, bridge: str) -> None:
        self.dns.pop(bridge, None)

    def dns_bridges(self) -> list[str]:
        return sorted(self.dns)

    def dns_running(self, bridge: str) -> bool:
        return bridge in self.dns

    def netns_bridges(self) -> list[str]:
        return sorted(self.apart)
