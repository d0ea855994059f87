"""Network use cases: create, list, delete networks; plan, wire and unwire instance NICs.

The store holds networks and every NIC's MAC and IP; the host side (bridges,
veth pairs, the netns, nftables) is redone from the store, so it can be
recreated after a reboot and an instance keeps its addresses across restarts.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from cumulo import faults
from cumulo.domain.models import Instance, Network, Nic, Tunnel
from cumulo.domain.units import validate_name
from cumulo.errors import (
    ConflictError,
    CumuloError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from cumulo.net import ipam, l3ns, tc
from cumulo.net.base import INSIDE_PREFIX, HostNetwork, NicCounters, NicPlan, OwnNetns
from cumulo.net.dnsmasq import DEFAULT_DOMAIN, DnsHost, DnsSettings, check_domain
from cumulo.services.firewall import FirewallService, no_cluster
from cumulo.services.overlays import BRIDGE, OVERLAY, TYPES, Overlays
from cumulo.store.repo import DEFAULT_PROJECT, Store

log = logging.getLogger(__name__)
DEFAULT_NETWORK = "default"   # made on the first start; instances without --network join it


@dataclass(frozen=True)
class NicRequest:
    network: str
    ip: str | None = None
    limit_ingress: str | None = None     # e.g. 20Mbit: what the instance receives
    limit_egress: str | None = None      # what it sends
    limit_burst: str | None = None       # e.g. 64k


def parse_bandwidth(ingress: str | None, egress: str | None,
                    burst: str | None) -> dict[str, int]:
    """Checked limits; a key left out stays as it is, "" or "none" lifts it (0)."""
    out: dict[str, int] = {}
    for key, text, parse in (("ingress", ingress, tc.parse_rate),
                             ("egress", egress, tc.parse_rate),
                             ("burst", burst, tc.parse_burst)):
        if text is None:
            continue
        out[key] = 0 if text.strip().lower() in ("", "none", "0") else parse(text)
    return out


class NetworkService:
    def __init__(self, store: Store, host_net: HostNetwork,
                 subnet_pool: str = ipam.DEFAULT_POOL, overlays: Overlays | None = None
                 ) -> None:
        self.store, self.host_net = store, host_net
        self.overlays = overlays   # None: no overlay networks (not built for a cluster)
        self.subnet_pool = str(ipam.parse_subnet(subnet_pool))  # where automatic subnets come from
        # one change at a time: subnets, and addresses from plan_nics to the stored NIC
        self.lock = threading.RLock()
        self.firewall = FirewallService(store, host_net, self.lock,
                                        overlays.members if overlays else no_cluster)

    # networks
    def list_in(self, project: str) -> list[Network]:
        return self.store.list_networks(project)

    def get(self, project: str, name: str) -> Network:
        return self.store.get_network(project, name)

    def users(self, project: str, name: str) -> list[str]:
        return self.store.network_users(project, name)

    def tunnels(self, project: str, name: str) -> list[Tunnel]:
        """An overlay's side on each member (none for a bridge network)."""
        network = self.store.get_network(project, name)
        if network.type != OVERLAY or self.overlays is None:
            return []
        return self.overlays.tunnels(network)

    def create(self, project: str, name: str, subnet: str | None = None,
               dns_domain: str | None = None, nat: bool = False, type: str = BRIDGE,
               vni: int | None = None, mtu: int | None = None) -> Network:
        """Validate, record, then build the bridge and its dnsmasq (an overlay: and its
        tunnel; the other members follow); a failure leaves nothing."""
        validate_name(name)
        domain = check_domain(dns_domain) if dns_domain is not None else DEFAULT_DOMAIN
        if type not in TYPES:
            raise InvalidInputError(f"unknown network type {type!r}: use {' or '.join(TYPES)}")
        if type == BRIDGE and (vni is not None or mtu is not None):
            raise InvalidInputError("--vni and --mtu are for --type overlay")
        if type == OVERLAY:
            if self.overlays is None:
                raise UnsupportedError("an overlay network spans a cluster: this host is"
                                       " in no cluster (`cumulo cluster enable` first)")
            mtu = self.overlays.check_new(vni, mtu)
        with self.lock:
            all_networks = self.store.list_networks()
            others = {f"{n.project}/{n.name}": IPv4Network(n.subnet) for n in all_networks}
            if any(n.name == name for n in self.store.list_networks(project)):
                raise ConflictError(f"network {name!r} already exists")
            host = [a for a in self.host_net.addresses()
                    if not any(a.ip in net for net in others.values())]
            own_netns = False
            if subnet is None:
                net = ipam.pick_subnet(others.values(), host, pool=self.subnet_pool)
            else:
                net = ipam.parse_subnet(subnet)
                # another project's subnet is fine: this network's gateway, DHCP/DNS and
                # NAT then live in a namespace of its own on every host (net/l3ns.py)
                own_netns = any(n.project != project and net.overlaps(IPv4Network(n.subnet))
                                for n in all_networks)
                ipam.check_free(net, {k: v for k, v in others.items()
                                      if k.split("/", 1)[0] == project}, host)
            gateway = ipam.gateway_of(net)
            network = self.store.add_network(Network(
                project=project, name=name, subnet=str(net), gateway=str(gateway),
                bridge=self._new_bridge(all_networks), isolated=not nat, dns_domain=domain,
                type=type, vni=vni, mtu=mtu, own_netns=own_netns))
            try:
                self._ensure_bridge(network)
                faults.point("network.create.after_bridge")
                if self.overlays is not None and network.type == OVERLAY:
                    self.overlays.ensure(network)
                self._isolate()
                self.host_net.ensure_dns(self._dns_settings(network), [])
            except BaseException:
                self.store.delete_network(project, name)
                self._stop_dns(network.bridge)
                self._isolate_quietly()
                self._remove_bridge(network.bridge)
                raise
            return network

    @staticmethod
    def _new_bridge(networks: list[Network]) -> str:
        """A bridge name whose namespace link (net/l3ns.py) no other network has."""
        taken = {l3ns.link_net(n.bridge) for n in networks}
        while True:
            name = f"cu-b{secrets.token_hex(4)}"
            if l3ns.link_net(name) not in taken:
                return name

    def own_netns(self, network: Network) -> OwnNetns | None:
        if not network.own_netns:
            return None
        return OwnNetns(inside=self.firewall.inside(network), mtu=network.mtu)

    def _ensure_bridge(self, network: Network) -> None:
        prefix = IPv4Network(network.subnet).prefixlen
        self.host_net.ensure_bridge(network.bridge,
                                    IPv4Interface(f"{network.gateway}/{prefix}"),
                                    self.own_netns(network))

    def delete(self, project: str, name: str) -> None:
        with self.lock:
            network = self.store.get_network(project, name)
            users = self.store.network_users(project, name)
            if users:
                raise ConflictError(
                    f"cannot delete network {name!r}: it is used by {', '.join(users)}")
            self.store.delete_network(project, name)
            faults.point("network.delete.after_record")
            self._isolate()
            self.host_net.stop_dns(network.bridge)
            self.host_net.remove_bridge(network.bridge)

    def _isolate(self) -> None:
        self.firewall.apply()

    def forget(self, bridge: str) -> None:
        """A network deleted through another member: its dnsmasq, bridge and tunnel go."""
        with self.lock:
            self._stop_dns(bridge)
            self._remove_bridge(bridge)

    def _remove_bridge(self, bridge: str) -> None:
        try:
            self.host_net.remove_bridge(bridge)
        except CumuloError as err:
            log.error("cannot remove bridge %s: %s", bridge, err)

    def ensure_default(self, marker: Path) -> None:
        """The NAT network ``default`` on the first start (never again once deleted)."""
        if marker.exists():
            return
        if not self.store.list_networks():
            try:
                net = self.create(DEFAULT_PROJECT, DEFAULT_NETWORK, nat=True)
                log.info("created network %s %s (NAT)", net.name, net.subnet)
            except CumuloError as err:
                log.error("cannot create the default network: %s", err)
                return
        marker.touch()

    # NICs
    def plan_nics(self, project: str, host_id: str, requests: list[NicRequest]) -> list[Nic]:
        """MAC and IP for each requested NIC, checked now so bad input changes nothing.

        Hold ``lock`` until the NICs are stored, or two instances may get one address.
        """
        nics: list[Nic] = []
        taken: dict[str, list[IPv4Address]] = {}
        for index, req in enumerate(requests):
            network = self.store.get_network(project, req.network)
            net = IPv4Network(network.subnet)
            used = taken.setdefault(req.network, [
                IPv4Address(a) for a in self.store.network_addresses(project, req.network)])
            if req.ip is not None:
                addr = ipam.parse_address(req.ip)
                ipam.check_address(net, addr, used)
            else:
                addr = ipam.next_free(net, used)
            used.append(addr)
            bandwidth = {k: v for k, v in parse_bandwidth(
                req.limit_ingress, req.limit_egress, req.limit_burst).items() if v}
            nics.append(Nic(network=req.network, index=index, ip=str(addr), bandwidth=bandwidth,
                            mac=ipam.mac_for(f"{host_id}/{index}/{secrets.token_hex(4)}"
                                             .encode()),
                            host_name=f"cu-v{secrets.token_hex(4)}"))
        if len({n.network for n in nics}) != len(nics):
            raise InvalidInputError("give each network at most once")
        return nics

    def _plans(self, inst: Instance) -> list[NicPlan]:
        return [self.nic_plan(inst.project, nic) for nic in inst.nics]

    def nic_plan(self, project: str, nic: Nic) -> NicPlan:
        """How to wire ``nic``, its network's bridge made sure of."""
        network = self.store.get_network(project, nic.network)
        prefix = IPv4Network(network.subnet).prefixlen
        self._ensure_bridge(network)
        return NicPlan(
            host_name=nic.host_name, inside_name=f"{INSIDE_PREFIX}{nic.index}",
            bridge=network.bridge, mac=nic.mac,
            address=IPv4Interface(f"{nic.ip}/{prefix}"),
            gateway=IPv4Address(network.gateway), mtu=network.mtu)

    def attach_taps(self, inst: Instance) -> None:
        """A VM's NICs as taps on their bridges, with their caps, before QEMU starts."""
        if not inst.nics:
            return
        self.host_net.attach_taps(self._plans(inst))
        try:
            for nic in inst.nics:
                if nic.bandwidth:
                    self._shape(nic.host_name, nic.bandwidth)
        except BaseException:
            self.detach(inst)
            raise

    def attach(self, inst: Instance, pid: int) -> None:
        """Wire the instance's NICs into the netns of its PID 1 (created, not yet running)."""
        if not inst.nics:
            return
        plans = self._plans(inst)
        self.host_net.attach(Path(f"/proc/{pid}/ns/net"), plans)
        for nic in inst.nics:
            if nic.bandwidth:
                self._shape(nic.host_name, nic.bandwidth)

    def _shape(self, host_name: str, bw: dict[str, int]) -> None:
        self.host_net.shape(host_name, bw.get("ingress"), bw.get("egress"), bw.get("burst"))

    def set_bandwidth(self, project: str, instance: str, network: str | None,
                      ingress: str | None, egress: str | None, burst: str | None) -> Instance:
        """Change a NIC's limits; a running instance gets them at once."""
        change = parse_bandwidth(ingress, egress, burst)
        if not change:
            raise InvalidInputError("give --ingress, --egress or --burst")
        with self.lock:
            inst = self.store.get_instance(project, instance)
            if not inst.nics:
                raise InvalidInputError(f"instance {instance!r} has no NIC")
            fw = self.firewall.fw
            fw.set_nic_bandwidth(project, instance, network, change)
            after = self.store.get_instance(project, instance)
            try:
                for nic in after.nics:
                    if network in (None, nic.network) and self.host_net.counters(
                            nic.host_name) is not None:  # wired: the instance runs
                        self._shape(nic.host_name, nic.bandwidth)
            except BaseException:
                for nic in inst.nics:
                    fw.set_nic_bandwidth(project, instance, nic.network,
                                         {k: nic.bandwidth.get(k, 0)
                                          for k in ("ingress", "egress", "burst")})
                    if self.host_net.counters(nic.host_name) is not None:
                        self._shape(nic.host_name, nic.bandwidth)
                raise
            return after

    def all_counters(self) -> dict[str, NicCounters]:
        """Counters of every link of the host, read at once (see ``counters``)."""
        try:
            return self.host_net.all_counters()
        except CumuloError as err:
            log.warning("cannot read NIC counters: %s", err)
            return {}

    def counters(self, inst: Instance, table: dict[str, NicCounters] | None = None
                 ) -> dict[str, NicCounters]:
        """Live counters by NIC host name, for the NICs that are wired now; from ``table``
        (``all_counters``) when given, else asked of the kernel NIC by NIC."""
        if table is not None:
            return {n.host_name: table[n.host_name] for n in inst.nics if n.host_name in table}
        out: dict[str, NicCounters] = {}
        for nic in inst.nics:
            try:
                found = self.host_net.counters(nic.host_name)
            except CumuloError as err:
                log.warning("cannot read counters of %s: %s", nic.host_name, err)
                continue
            if found is not None:
                out[nic.host_name] = found
        return out

    def detach(self, inst: Instance) -> None:
        if inst.nics:
            self.host_net.detach([n.host_name for n in inst.nics])

    # daemon start
    def reconcile(self) -> None:
        """Bridges and isolation back after a reboot; nothing at all without networks."""
        networks = self.store.list_networks()
        for n in networks:
            self._ensure_bridge(n)
        if self.overlays is not None:
            self.overlays.sync()
        self._isolate()   # none left: the table of a deleted last network goes too
        self.reconcile_dns()

    # DHCP and DNS: one dnsmasq per network (net/dnsmasq.py)
    @staticmethod
    def _dns_settings(network: Network) -> DnsSettings:
        return DnsSettings(bridge=network.bridge, subnet=IPv4Network(network.subnet),
                           gateway=IPv4Address(network.gateway), domain=network.dns_domain,
                           upstream=not network.isolated, mtu=network.mtu,
                           own_netns=network.own_netns)

    def _dns_hosts(self, network: Network) -> list[DnsHost]:
        return [DnsHost(name=inst, mac=nic.mac, ip=IPv4Address(nic.ip))
                for inst, nic in self.store.network_nics(network.project, network.name)]

    def nics_changed(self, project: str, networks: list[str]) -> None:
        """NICs came or went: their addresses in the firewall, DHCP and DNS follow."""
        if not networks:   # none did: nothing to follow
            return
        with self.lock:
            self.firewall.apply_quietly()
            self.refresh_dns(project, networks)

    def refresh_dns(self, project: str, networks: list[str]) -> None:
        """Reload the DHCP and DNS entries of ``networks`` after NICs came or went."""
        with self.lock:
            for name in sorted(set(networks)):
                try:
                    network = self.store.get_network(project, name)
                    self.host_net.ensure_dns(self._dns_settings(network),
                                             self._dns_hosts(network))
                except NotFoundError:   # deleted meanwhile (through another member)
                    log.info("network %s is gone: no DHCP and DNS to reload", name)
                except CumuloError as err:
                    log.error("cannot reload DHCP and DNS of network %s: %s", name, err)

    def reconcile_dns(self) -> None:
        """Every network's dnsmasq runs (found again, or started); none for deleted ones."""
        networks = self.store.list_networks()
        for n in networks:
            try:
                self.host_net.ensure_dns(self._dns_settings(n), self._dns_hosts(n))
            except NotFoundError:   # deleted since the list (through another member)
                log.info("network %s is gone: no DHCP and DNS to start", n.name)
            except CumuloError as err:
                log.error("cannot start DHCP and DNS of network %s: %s", n.name, err)
        known = {n.bridge for n in networks}
        for bridge in sorted({*self.host_net.dns_bridges(), *self.host_net.netns_bridges()}):
            if bridge not in known:
                log.warning("removing deleted bridge %s and its dnsmasq", bridge)
                self._stop_dns(bridge)
                self._remove_bridge(bridge)

    def revive_dns(self) -> list[Network]:
        """Start again every network's dnsmasq that died on its own; returns those networks."""
        revived = []
        here = set(self.host_net.dns_bridges())   # (in a cluster, one made elsewhere a
        for n in self.store.list_networks():      # moment ago has not started here yet)
            if n.bridge not in here or self.host_net.dns_running(n.bridge):
                continue
            with self.lock:
                try:
                    self.store.get_network(n.project, n.name)   # not deleted meanwhile
                    self.host_net.ensure_dns(self._dns_settings(n), self._dns_hosts(n))
                except CumuloError as err:
                    log.error("cannot restart DHCP and DNS of network %s: %s", n.name, err)
                    continue
            log.warning("the dnsmasq of network %s had died: started again", n.name)
            revived.append(n)
        return revived

    def resolv_conf(self, inst: Instance) -> str | None:
        """/etc/resolv.conf for an instance: its first network's dnsmasq, on the gateway."""
        if not inst.nics:
            return None
        network = self.store.get_network(inst.project, inst.nics[0].network)
        return f"search {network.dns_domain}\nnameserver {network.gateway}\n"

    def _stop_dns(self, bridge: str) -> None:
        try:
            self.host_net.stop_dns(bridge)
        except CumuloError as err:
            log.error("cannot stop the dnsmasq of %s: %s", bridge, err)

    def _isolate_quietly(self) -> None:
        self.firewall.apply_quietly()
