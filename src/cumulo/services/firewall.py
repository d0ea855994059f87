"""Security groups, port forwards and NIC bandwidth: checked, stored, then applied live.

Every change rebuilds the daemon's whole nftables table from the store in one
transaction (net/firewall.py), so what is enforced is always what is stored;
if applying fails, the stored change is undone and the old table stays.

In a cluster, a forward of a member's cluster address follows its instance: only
the member the instance runs on DNATs it, on its own cluster address (the reply
leaves through that member's gateway, so no other member could answer it). After a
move the old member's table loses the rule at its next rebuild (at the latest after
the next heartbeat) and the new member's gains it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from typing import TypeVar

from cumulo.domain.acl import SecurityGroup, make_rule
from cumulo.domain.models import Network
from cumulo.domain.units import validate_name
from cumulo.errors import (
    ConflictError,
    CumuloError,
    InvalidInputError,
    NotFoundError,
)
from cumulo.net import l3ns, vxlan
from cumulo.net.base import HostNetwork
from cumulo.net.firewall import Firewall, FwForward, FwInside, FwNetwork, FwNic
from cumulo.store.firewall import FirewallStore, Forward
from cumulo.store.repo import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
Members = Callable[[], tuple[str | None, dict[str, str]]]  # this member, member -> address


def no_cluster() -> tuple[str | None, dict[str, str]]:
    return None, {}


def follows(f: Forward, where: dict[str, str]) -> bool:
    """A forward of a member's cluster address: it answers where its instance runs."""
    return f.listen_address in where.values()


def placed(f: Forward, where: dict[str, str]) -> Forward:
    """``f`` as it answers now: a following forward on its instance's member's address."""
    if follows(f, where) and f.location in where:
        return replace(f, listen_address=where[f.location])
    return f


class FirewallService:
    def __init__(self, store: Store, host_net: HostNetwork, lock: threading.RLock,
                 members: Members = no_cluster) -> None:
        self.store, self.host_net, self.lock = store, host_net, lock
        self.members = members   # every member's cluster address, offline ones too
        self.fw = FirewallStore(store.db)
        self._applied: Firewall | None = None   # what the host table holds, as last written

    # --- the whole table ---
    def desired(self) -> Firewall:
        networks = self.store.list_networks()
        by_key = {(n.project, n.name): n for n in networks}
        nics = [FwNic(ip=IPv4Address(nic.ip), bridge=n.bridge,
                      groups=tuple(f"{n.project}/{g}" for g in nic.groups),
                      port=nic.host_name if n.own_netns else "")   # (addresses not unique)
                for n in networks for _, nic in self.store.network_nics(n.project, n.name)
                if nic.host_name or not n.own_netns]
        groups = {f"{g.project}/{g.name}": tuple(
            replace(r, group=f"{g.project}/{r.group}") if r.group else r for r in g.rules)
            for g in self.fw.list_groups()}
        forwards: list[FwForward] = []
        insides = {n.bridge: FwInside(nat=not n.isolated) for n in networks if n.own_netns}
        for f in self._forwards_here():
            fwd = FwForward(listen=IPv4Address(f.listen_address), port=f.listen_port,
                            protocol=f.protocol, target=IPv4Address(f.target_ip),
                            target_port=f.target_port)
            net = by_key.get((f.project, f.network))
            if net is not None and net.own_netns:   # DNATed twice: to the namespace, then in
                inner = replace(fwd, listen=l3ns.inner_address(net.bridge))
                inside = insides[net.bridge]
                insides[net.bridge] = replace(inside, forwards=(*inside.forwards, inner))
                fwd = replace(fwd, target=inner.listen, target_port=fwd.port)
            forwards.append(fwd)
        apart = [n.bridge for n in networks if n.own_netns]
        return Firewall(   # a network with its own namespace is seen as its uplink here
            networks=[FwNetwork(bridge=l3ns.uplink_name(n.bridge), subnet=l3ns.link_net(n.bridge),
                                nat=not n.isolated) if n.own_netns else
                      FwNetwork(bridge=n.bridge, subnet=IPv4Network(n.subnet),
                                nat=not n.isolated) for n in networks],
            apart=apart, legs=[l3ns.leg_name(b) for b in apart], insides=insides,
            zones={b: l3ns.conntrack_zone(b) for b in apart},
            gateways={l3ns.leg_name(n.bridge): IPv4Address(n.gateway)
                      for n in networks if n.own_netns},
            nics=nics, groups=groups, forwards=forwards,
            tunnels=[vxlan.device_name(n.bridge) for n in networks if n.type == "overlay"])

    def inside(self, network: Network) -> FwInside:
        """The table of ``network``'s own namespace (net/l3ns.py) as it must be now."""
        return self.desired().insides.get(network.bridge, FwInside(nat=not network.isolated))

    def apply(self) -> None:
        """Write the table, unless it already holds exactly this (an nft run is ~15 ms,
        paid at every launch and delete otherwise)."""
        fw = self.desired()
        if fw == self._applied:
            return
        self._applied = None   # unknown until the write succeeded
        self.host_net.apply_firewall(fw)
        self._applied = fw

    def apply_quietly(self) -> None:
        try:
            self.apply()
        except CumuloError as err:
            log.error("cannot update the firewall: %s", err)

    def _change(self, do: Callable[[], T], undo: Callable[[], object]) -> T:
        """Store a change, apply it; if applying fails, undo the stored change."""
        with self.lock:
            result = do()
            try:
                self.apply()
            except BaseException:
                undo()
                self.apply_quietly()
                raise
            return result

    # --- security groups ---
    def list_groups(self, project: str) -> list[SecurityGroup]:
        return self.fw.list_groups(project)

    def get_group(self, project: str, name: str) -> SecurityGroup:
        return self.fw.get_group(project, name)

    def users(self, project: str, name: str) -> list[str]:
        return self.fw.group_users(project, name)

    def create_group(self, project: str, name: str, description: str = "") -> SecurityGroup:
        validate_name(name)
        if len(description) > 255:
            raise InvalidInputError("description is longer than 255 characters")
        return self.fw.add_group(SecurityGroup(project=project, name=name,
                                               description=description))

    def delete_group(self, project: str, name: str) -> None:
        with self.lock:
            self.fw.get_group(project, name)
            if users := self.fw.group_users(project, name):
                raise ConflictError(f"cannot delete security group {name!r}: it is attached to"
                                    f" {', '.join(users)}")
            if refs := [g.name for g in self.fw.list_groups(project)
                        if g.name != name and any(r.group == name for r in g.rules)]:
                raise ConflictError(f"cannot delete security group {name!r}: rules of"
                                    f" {', '.join(refs)} name it")
            self.fw.delete_group(project, name)

    def add_rule(self, project: str, name: str, direction: str, protocol: str,
                 ports: str | None, cidr: str | None, group: str | None) -> SecurityGroup:
        rule = make_rule(direction, protocol, ports, cidr, group)
        with self.lock:
            old = self.fw.get_group(project, name)
            if group is not None:
                self.fw.get_group(project, group)  # NotFoundError for an unknown group
            if rule in old.rules:
                raise ConflictError(f"security group {name!r} already has the rule"
                                    f" {rule.describe()}")
            return self._change(lambda: self.fw.set_rules(project, name, [*old.rules, rule]),
                                lambda: self.fw.set_rules(project, name, old.rules))

    def remove_rule(self, project: str, name: str, index: int) -> SecurityGroup:
        with self.lock:
            old = self.fw.get_group(project, name)
            if not 1 <= index <= len(old.rules):
                raise InvalidInputError(f"security group {name!r} has no rule {index} (it has"
                                        f" {len(old.rules)}; see acl info)")
            rules = [r for i, r in enumerate(old.rules, 1) if i != index]
            return self._change(lambda: self.fw.set_rules(project, name, rules),
                                lambda: self.fw.set_rules(project, name, old.rules))

    def attach(self, project: str, name: str, instance: str, network: str | None) -> None:
        with self.lock:
            self.fw.get_group(project, name)
            if not self._change(
                    lambda: self.fw.set_nic_groups(project, instance, network, add=name),
                    lambda: self.fw.set_nic_groups(project, instance, network, remove=name)):
                if not self.store.get_instance(project, instance).nics:
                    raise InvalidInputError(f"instance {instance!r} has no NIC")
                raise ConflictError(f"security group {name!r} is already attached there")

    def detach(self, project: str, name: str, instance: str, network: str | None) -> None:
        with self.lock:
            if not self._change(
                    lambda: self.fw.set_nic_groups(project, instance, network, remove=name),
                    lambda: self.fw.set_nic_groups(project, instance, network, add=name)):
                raise NotFoundError("security group on instance", f"{name} on {instance}")

    # --- port forwards ---
    def _forwards_here(self) -> list[Forward]:
        """The forwards this host DNATs: in a cluster, a following one only where its
        instance runs (on that member's address)."""
        found = self.fw.list_forwards()
        if not found:   # (this runs after every heartbeat: no member query for nothing)
            return found
        me, where = self.members()
        if me is None:
            return found
        return [placed(f, where) for f in found if not follows(f, where) or f.location == me]

    def list_forwards(self, project: str, network: str) -> list[Forward]:
        self.store.get_network(project, network)
        where = self.members()[1]
        return [placed(f, where) for f in self.fw.list_forwards(project, network)]

    def add_forward(self, project: str, network: str, listen: str, port: int, protocol: str,
                    instance: str, target_port: int) -> Forward:
        if protocol not in ("tcp", "udp"):
            raise InvalidInputError(f"invalid protocol {protocol!r}: use tcp or udp")
        for p in (port, target_port):
            if not 1 <= p <= 65535:
                raise InvalidInputError(f"invalid port {p}: ports are 1 to 65535")
        try:
            addr = IPv4Address(listen)
        except ValueError:
            raise InvalidInputError(f"invalid listen address {listen!r}") from None
        with self.lock:
            net = self.store.get_network(project, network)
            if net.own_netns:
                self._port_once(net, protocol, port)
            host = [a.ip for a in self.host_net.addresses()]
            where = self.members()[1]
            if (addr not in host and str(addr) not in where.values()) \
                    or addr == IPv4Address(net.gateway):
                raise InvalidInputError(
                    f"{addr} is not an address of this host's own links: forward from one of"
                    f" {', '.join(sorted({str(a) for a in host if not a.is_loopback}))}")
            if str(addr) in where.values():
                self._check_following(protocol, port, where)
            f = Forward(project=project, network=network, listen_address=str(addr),
                        listen_port=port, protocol=protocol, instance=instance,
                        target_port=target_port)
            self._change(lambda: self.fw.add_forward(f),
                         lambda: self.fw.delete_forward(project, network, str(addr), port,
                                                        protocol))
            return placed(next(x for x in self.fw.list_forwards(project, network)
                               if (x.listen_address, x.listen_port, x.protocol)
                               == (str(addr), port, protocol)), where)

    def _port_once(self, net: Network, protocol: str, port: int) -> None:
        """A network with its own namespace takes each port once: its forwards all come
        to one address of its namespace (net/l3ns.py)."""
        for f in self.fw.list_forwards(net.project, net.name):
            if (f.protocol, f.listen_port) == (protocol, port):
                raise ConflictError(
                    f"network {net.name!r} already forwards {protocol} port {port} (from"
                    f" {f.listen_address}): a network that shares its subnet with another"
                    " project's takes each port once")

    def _check_following(self, protocol: str, port: int, where: dict[str, str]) -> None:
        """A following forward may land on any member: its port must be free on all."""
        for f in self.fw.list_forwards():
            if follows(f, where) and (f.protocol, f.listen_port) == (protocol, port):
                raise ConflictError(
                    f"{protocol} port {port} of the members' cluster addresses is already"
                    f" forwarded to {f.instance!r} (network {f.network!r}), which may run on"
                    " any member: use another port")

    def delete_forward(self, project: str, network: str, listen: str, port: int,
                       protocol: str) -> None:
        """Remove a forward, named by its stored address or (a following one) by the
        address it answers on now."""
        with self.lock:
            where = self.members()[1]
            old = [f for f in self.fw.list_forwards(project, network)
                   if (f.listen_port, f.protocol) == (port, protocol)
                   and listen in (f.listen_address, placed(f, where).listen_address)]
            if not old:
                raise NotFoundError("forward", f"{protocol} {listen}:{port}")
            stored = old[0].listen_address
            self._change(lambda: self.fw.delete_forward(project, network, stored, port,
                                                        protocol),
                         lambda: self.fw.add_forward(old[0]))
