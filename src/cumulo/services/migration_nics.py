"""A migrating VM's NICs: the same network, MAC, IP and security groups on the destination.

The source describes what the NICs need (``describe``): each network's name, subnet,
NAT and DNS domain; each NIC's MAC, IP, groups and caps; the security groups they are in
(and the groups those rules name). The destination (``receive``) makes what is missing
(a network with the same subnet, a group with the same rules), refuses what differs (a
network of that name on another subnet, a group of that name with other rules, an IP
taken there) with a clear error, and gives the NICs fresh tap names. The NICs are then
stored with the instance, so the network's dnsmasq hands the same static lease to the
same MAC and the firewall puts the IP in the same groups. ``release`` undoes what
``receive`` made when the migration is abandoned.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from cumulo.domain.acl import AclRule, SecurityGroup
from cumulo.domain.models import Instance, Nic
from cumulo.errors import ConflictError, CumuloError, NotFoundError
from cumulo.net import ipam
from cumulo.services.networks import NetworkService

log = logging.getLogger(__name__)


@dataclass
class Received:
    """The NICs to store with the incoming instance, and what was made here for them."""

    nics: list[Nic]
    networks: list[str] = field(default_factory=list)   # created for this migration
    groups: list[str] = field(default_factory=list)


def _rule_dict(r: AclRule) -> dict[str, Any]:
    return {**asdict(r), "ports": list(r.ports) if r.ports else None}


def _rule(d: dict[str, Any]) -> AclRule:
    ports = d.get("ports")
    return AclRule(direction=str(d["direction"]), protocol=str(d["protocol"]),
                   ports=(int(ports[0]), int(ports[1])) if ports else None,
                   cidr=d.get("cidr"), group=d.get("group"))


def describe(networks: NetworkService, inst: Instance) -> dict[str, Any]:
    """What the destination needs to give ``inst`` the same NICs (JSON-ready)."""
    nets: dict[str, dict[str, Any]] = {}
    for nic in inst.nics:
        n = networks.get(inst.project, nic.network)
        nets[n.name] = {"subnet": n.subnet, "nat": not n.isolated, "dns_domain": n.dns_domain}
    fw = networks.firewall
    todo = sorted({g for nic in inst.nics for g in nic.groups})
    groups: dict[str, SecurityGroup] = {}
    while todo:   # the NICs' groups and every group their rules name
        name = todo.pop()
        if name not in groups:
            groups[name] = g = fw.get_group(inst.project, name)
            todo += [r.group for r in g.rules if r.group and r.group not in groups]
    return {
        "networks": nets,
        "nics": [{"network": n.network, "index": n.index, "mac": n.mac, "ip": n.ip,
                  "groups": list(n.groups), "bandwidth": dict(n.bandwidth)}
                 for n in inst.nics],
        "groups": [{"name": g.name, "description": g.description,
                    "rules": [_rule_dict(r) for r in g.rules]}
                   for g in sorted(groups.values(), key=lambda g: g.name)],
    }


def receive(networks: NetworkService, project: str, desc: dict[str, Any]) -> Received:
    """Check and make what the NICs need here; a failure leaves nothing made.

    Call it holding ``networks.lock`` until the instance with these NICs is stored, or
    another instance could take one of the addresses in between.
    """
    out = Received(nics=[])
    try:
        _networks(networks, project, dict(desc.get("networks") or {}), out)
        _groups(networks, project, list(desc.get("groups") or []), out)
        for d in desc.get("nics") or []:
            net = networks.get(project, str(d["network"]))
            addr = ipam.parse_address(str(d["ip"]))
            used = [IPv4Address(a) for a in networks.store.network_addresses(project, net.name)]
            try:
                ipam.check_address(IPv4Network(net.subnet), addr, used)
            except ConflictError:
                raise ConflictError(f"address {addr} is already used on network {net.name!r}"
                                    " of the destination: the VM cannot keep it") from None
            out.nics.append(Nic(network=net.name, index=int(d["index"]), mac=str(d["mac"]),
                                ip=str(addr), host_name=f"cu-v{secrets.token_hex(4)}",
                                groups=[str(g) for g in d.get("groups") or []],
                                bandwidth={k: int(v) for k, v in
                                           dict(d.get("bandwidth") or {}).items()}))
    except BaseException:
        release(networks, project, out)
        raise
    return out


def _networks(networks: NetworkService, project: str, wanted: dict[str, dict[str, Any]],
              out: Received) -> None:
    for name, w in sorted(wanted.items()):
        subnet = str(w["subnet"])
        try:
            have = networks.get(project, name)
        except NotFoundError:
            networks.create(project, name, subnet=subnet, dns_domain=w.get("dns_domain"),
                            nat=bool(w.get("nat")))
            out.networks.append(name)
            continue
        if IPv4Network(have.subnet) != IPv4Network(subnet):
            raise ConflictError(f"network {name!r} is {have.subnet} on the destination and"
                                f" {subnet} here: the VM could not keep its address (use a"
                                " network with the same subnet on both hosts)")


def _groups(networks: NetworkService, project: str, wanted: list[dict[str, Any]],
            out: Received) -> None:
    fw = networks.firewall
    missing: list[tuple[str, list[AclRule]]] = []
    for w in wanted:
        name, rules = str(w["name"]), [_rule(r) for r in w.get("rules") or []]
        try:
            have = fw.get_group(project, name)
        except NotFoundError:
            fw.create_group(project, name, str(w.get("description") or ""))
            out.groups.append(name)
            missing.append((name, rules))
            continue
        if list(have.rules) != rules:
            raise ConflictError(f"security group {name!r} has other rules on the destination:"
                                " make them the same, or detach it, before migrating")
    for name, rules in missing:   # all exist now: rules may name each other
        fw.fw.set_rules(project, name, rules)


def release(networks: NetworkService, project: str, made: Received) -> None:
    """Remove what ``receive`` made (after the incoming instance is gone from the store)."""
    fw = networks.firewall
    for name in made.groups:
        with contextlib.suppress(NotFoundError):
            fw.fw.set_rules(project, name, [])
    for name in made.groups:
        _remove("security group", fw.delete_group, project, name)
    for name in made.networks:
        _remove("network", networks.delete, project, name)


def _remove(what: str, delete: Callable[[str, str], object], project: str, name: str) -> None:
    """Delete what a migration made; gone already is fine, a failure is logged, not raised."""
    try:
        delete(project, name)
    except NotFoundError:
        pass
    except CumuloError as err:
        log.error("cannot remove %s %s made for a migration: %s", what, name, err)

