"""``HostNetwork`` on the real kernel: netlink for links, nftables for isolation."""

from __future__ import annotations

from ipaddress import IPv4Interface
from pathlib import Path

from cumulo.net import bridge, l3ns, netdev, netlink, nft, nic, shaping, sysctl, vxlan
from cumulo.net.base import NicCounters, NicPlan, OwnNetns
from cumulo.net.dnsmasq import DnsHost, Dnsmasq, DnsSettings
from cumulo.net.firewall import Firewall
from cumulo.net.vxlan import TunnelPlan


def as_seen_inside(st: dict[str, int]) -> NicCounters:
    """The host end receives what the instance sends, and the other way round."""
    return NicCounters(rx_bytes=st["tx_bytes"], tx_bytes=st["rx_bytes"],
                       rx_packets=st["tx_packets"], tx_packets=st["rx_packets"],
                       rx_dropped=st["tx_dropped"], tx_dropped=st["rx_dropped"])


class LinuxNetwork:
    def __init__(self, tag: str, dns_dir: Path | None = None) -> None:
        self.tag = tag  # names this daemon's nftables table: cumulo_<tag>
        self.dnsmasq = Dnsmasq(dns_dir or Path("/run/cumulo/dnsmasq"))

    def addresses(self) -> list[IPv4Interface]:
        return netlink.host_addresses()

    def ensure_bridge(self, bridge_name: str, gateway: IPv4Interface,
                      own: OwnNetns | None = None) -> None:
        if own is None:
            bridge.ensure(bridge_name, gateway)
        else:
            l3ns.ensure(self.tag, bridge_name, gateway, own.inside, own.mtu)

    def remove_bridge(self, bridge_name: str) -> None:
        vxlan.remove(bridge_name)
        l3ns.remove(self.tag, bridge_name)
        bridge.remove(bridge_name)

    def ensure_tunnel(self, plan: TunnelPlan) -> None:
        vxlan.ensure(plan)

    def tunnel_peers(self, bridge_name: str) -> list[str] | None:
        return vxlan.peers(bridge_name)

    def underlay_mtu(self, address: str) -> int | None:
        return netlink.mtu_of_address(address)

    def apply_firewall(self, fw: Firewall) -> None:
        if fw.needs_forwarding():
            sysctl.enable("net/ipv4/ip_forward")
        if any(n.groups for n in fw.nics):  # bridged traffic through the inet hooks
            sysctl.enable("net/bridge/bridge-nf-call-iptables", module="br_netfilter")
        nft.apply(self.tag, fw)
        for bridge_name, inside in sorted(fw.insides.items()):
            l3ns.apply_inside(self.tag, bridge_name, inside)

    def attach(self, netns: Path, nics: list[NicPlan]) -> None:
        nic.attach(netns, nics)

    def attach_taps(self, nics: list[NicPlan]) -> None:
        nic.attach_taps(nics)

    def detach(self, host_names: list[str]) -> None:
        nic.detach(host_names)

    def shape(self, host_name: str, ingress: int | None, egress: int | None,
              burst: int | None) -> None:
        shaping.shape(host_name, ingress, egress, burst)

    def counters(self, host_name: str) -> NicCounters | None:
        st = netlink.link_stats(host_name)
        return None if st is None else as_seen_inside(st)

    def all_counters(self) -> dict[str, NicCounters]:
        return {name: as_seen_inside(st) for name, st in netdev.read_all().items()}

    # DHCP and DNS
    def ensure_dns(self, settings: DnsSettings, hosts: list[DnsHost]) -> None:
        if settings.own_netns:   # on the gateway's leg, in the network's namespace
            self.dnsmasq.ensure(settings, hosts, netns=l3ns.netns_path(self.tag, settings.bridge),
                                interface=l3ns.GATEWAY_LINK)
        else:
            self.dnsmasq.ensure(settings, hosts)

    def stop_dns(self, bridge_name: str) -> None:
        self.dnsmasq.stop(bridge_name)

    def dns_bridges(self) -> list[str]:
        return self.dnsmasq.bridges()

    def dns_running(self, bridge: str) -> bool:
        return self.dnsmasq.pid(bridge) is not None

    def netns_bridges(self) -> list[str]:
        return l3ns.bridges(self.tag)
