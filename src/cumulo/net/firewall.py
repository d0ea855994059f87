"""The whole firewall of one daemon as data, compiled to one nftables transaction.

`Firewall` holds what the store says: networks (bridge, subnet, NAT or not),
NICs (address, MAC, security groups), security groups (rules) and port
forwards. `ruleset` turns it into the JSON input of ``nft -j -f -`` that
deletes and recreates the daemon's own ``inet cumulo_<tag>`` table in one
atomic step, so a change applies live and established connections keep their
conntrack state.

Bridged traffic between two NICs of one network passes the inet ``forward``
hook through br_netfilter (``net.bridge.bridge-nf-call-iptables``), with
conntrack, so security groups are plain ip rules on the NIC's address:

- networks never reach each other; an isolated network has no traffic in or
  out; a NAT network goes out masqueraded, and in only as replies or forwards;
- a NIC without security groups takes ingress from its own network only; with
  groups, only what their ingress rules allow (and replies); egress is free
  unless a group has egress rules, then only what they allow;
- a forward DNATs ``listen:port`` on the host to an instance's address (for
  packets from outside in ``prerouting``, from the host itself in ``output``).

A network whose subnet another project's has too (net/l3ns.py) has addresses that
are not unique on the host, so its NICs' security groups are matched by their host
end (port) in the ``bridge cumulo_<tag>`` table instead (same rules, same sets):
its bridged frames are tracked in a conntrack zone of its own, and the inet
``forward`` hook marks those of a known connection (``REPLY_MARK``) for the bridge
table, which has no conntrack of its own on this kernel.

Overlay networks add a ``bridge cumulo_<tag>`` table: every member has the same
gateway (address and MAC) and dnsmasq on its bridge, so nothing the bridge itself
sends (ARP and DHCP answers, DNS) and no DHCP request crosses a tunnel (each member
answers its own instances; the instances of one network are one segment otherwise).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from cumulo.domain.acl import AclRule

FAMILY = "inet"
# a bridged frame of a known connection, in a network with its own namespace: set by
# the inet forward hook (br_netfilter), read and cleared by the bridge table's
REPLY_MARK = 0x00400000
ALL_BITS = 0xFFFFFFFF


@dataclass(frozen=True)
class FwNetwork:
    bridge: str
    subnet: IPv4Network
    nat: bool = False


@dataclass(frozen=True)
class FwNic:
    ip: IPv4Address
    bridge: str
    groups: tuple[str, ...] = ()
    port: str = ""   # its host end, when its network has its own namespace: the key


@dataclass(frozen=True)
class FwForward:
    listen: IPv4Address
    port: int
    protocol: str            # tcp or udp
    target: IPv4Address
    target_port: int


@dataclass(frozen=True)
class FwInside:
    """The table in a network's own namespace (net/l3ns.py): NAT out, forwards in
    (``listen``: the namespace's uplink address, where this host's table DNATs to)."""

    nat: bool
    forwards: tuple[FwForward, ...] = ()


@dataclass
class Firewall:
    networks: list[FwNetwork] = field(default_factory=list)
    nics: list[FwNic] = field(default_factory=list)
    groups: dict[str, tuple[AclRule, ...]] = field(default_factory=dict)
    forwards: list[FwForward] = field(default_factory=list)
    tunnels: list[str] = field(default_factory=list)   # overlays' VXLAN devices
    # networks with a namespace of their own (net/l3ns.py): their bridges, which only
    # bridge, and their gateway legs (ports of those bridges)
    apart: list[str] = field(default_factory=list)
    legs: list[str] = field(default_factory=list)
    insides: dict[str, FwInside] = field(default_factory=dict)   # by bridge
    zones: dict[str, int] = field(default_factory=dict)    # their conntrack zones, by bridge
    gateways: dict[str, IPv4Address] = field(default_factory=dict)   # by leg

    def empty(self) -> bool:
        return not self.networks and not self.forwards and not self.tunnels \
            and not self.apart

    def needs_forwarding(self) -> bool:
        """IP forwarding on: a NAT network routes out, a forward routes in."""
        return any(n.nat for n in self.networks) or bool(self.forwards)


# --- nft JSON expressions ------------------------------------------------------
def _meta(key: str, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}}


def _payload(proto: str, name: str, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": name}},
                      "right": right}}


def _ip(name: str, net: IPv4Network | str, op: str = "==") -> dict[str, Any]:
    n = IPv4Network(net)
    right: Any = str(n.network_address) if n.prefixlen == 32 else {
        "prefix": {"addr": str(n.network_address), "len": n.prefixlen}}
    return _payload("ip", name, right, op)


def _ct(key: str, values: list[str]) -> dict[str, Any]:
    return {"match": {"op": "in", "left": {"ct": {"key": key}}, "right": {"set": values}}}


def _l4(rule_protocol: str, ports: tuple[int, int] | None) -> list[dict[str, Any]]:
    if rule_protocol == "any":
        return []
    proto = "icmp" if rule_protocol == "icmp" else rule_protocol
    out = [_meta("l4proto", proto)]
    if ports is not None:
        right: Any = ports[0] if ports[0] == ports[1] else {"range": list(ports)}
        out.append({"match": {"op": "==", "left": {"payload": {"protocol": "th",
                                                                "field": "dport"}},
                              "right": right}})
    return out


class _Builder:
    def __init__(self, table: str, family: str = FAMILY) -> None:
        self.table, self.family = table, family
        self.cmds: list[dict[str, Any]] = []

    def chain(self, name: str, **hook: Any) -> None:
        self.cmds.append({"add": {"chain": {"family": self.family, "table": self.table,
                                            "name": name, **hook}}})

    def rule(self, chain: str, expr: list[dict[str, Any]], comment: str | None = None) -> None:
        body: dict[str, Any] = {"family": self.family, "table": self.table, "chain": chain,
                                "expr": expr}
        if comment:
            body["comment"] = comment[:120]
        self.cmds.append({"add": {"rule": body}})

    def set(self, name: str, addrs: list[str]) -> None:
        body: dict[str, Any] = {"family": self.family, "table": self.table, "name": name,
                                "type": "ipv4_addr", "flags": ["interval"]}
        if addrs:
            body["elem"] = sorted(addrs)
        self.cmds.append({"add": {"set": body}})


def _group_set(group: str) -> str:
    """A set name for ``project/group`` (nft names are short and plain)."""
    return "g_" + hashlib.sha256(group.encode()).hexdigest()[:16]


def _peer(rule: AclRule, field_name: str) -> list[dict[str, Any]]:
    if rule.group is not None:
        return [_payload("ip", field_name, f"@{_group_set(rule.group)}")]
    if rule.cidr is not None:
        return [_ip(field_name, rule.cidr)]
    return []


def _mark(op: str, bits: int) -> dict[str, Any]:
    """``meta mark set meta mark <op> bits``."""
    mark = {"meta": {"key": "mark"}}
    return {"mangle": {"key": mark, "value": {op: [mark, bits]}}}


def _group_sets(b: _Builder, fw: Firewall) -> None:
    """A set of the member addresses of each group a rule names as its peer."""
    for name in sorted({r.group for rules in fw.groups.values() for r in rules if r.group}):
        b.set(_group_set(name), sorted({str(n.ip) for n in fw.nics if name in n.groups}))


Key = str | dict[str, Any]   # a vmap element's key: an address, or port . address


def _nic_chains(b: _Builder, nics: list[tuple[Key, FwNic]],
                groups: dict[str, tuple[AclRule, ...]]
                ) -> tuple[list[tuple[Key, str]], list[tuple[Key, str]]]:
    """A chain per NIC in groups for what may come in, and one for what may go out if a
    group has egress rules; (key, chain) pairs for the ingress and the egress vmap."""
    ingress: list[tuple[Key, str]] = []
    egress: list[tuple[Key, str]] = []
    for i, (key, nic) in enumerate(nics):
        if not nic.groups:
            continue
        who = f"{nic.port} {nic.ip}" if nic.port else str(nic.ip)
        rules = [r for g in nic.groups for r in groups.get(g, ())]
        for direction, chain, peer, out, verb in (
                ("ingress", f"in_{i}", "saddr", ingress, "in"),
                ("egress", f"out_{i}", "daddr", egress, "out")):
            mine = [r for r in rules if r.direction == direction]
            if direction == "egress" and not mine:
                continue   # egress is free unless a group limits it
            b.chain(chain)
            out.append((key, chain))
            for r in mine:
                b.rule(chain, [*_peer(r, peer), *_l4(r.protocol, r.ports),
                               {"counter": None}, {"accept": None}], r.describe())
            b.rule(chain, [{"counter": None}, {"drop": None}], f"{who}: not allowed {verb}")
    return ingress, egress


def _dispatch(b: _Builder, chain: str, key: dict[str, Any],
              chains: list[tuple[Key, str]]) -> None:
    if chains:
        b.rule(chain, [{"vmap": {"key": key, "data": {"set": [
            [k, {"jump": {"target": c}}] for k, c in chains]}}}])


def _ip_key(field_name: str, port_key: str | None = None) -> dict[str, Any]:
    ip = {"payload": {"protocol": "ip", "field": field_name}}
    return ip if port_key is None else {"concat": [{"meta": {"key": port_key}}, ip]}


def ruleset(tag: str, fw: Firewall) -> dict[str, Any]:
    """The nft JSON that replaces table ``inet cumulo_<tag>`` with ``fw``."""
    table = f"cumulo_{tag}"
    b = _Builder(table)
    t = {"family": FAMILY, "name": table}
    b.cmds += [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
    b.chain("forward", type="filter", hook="forward", prio=0, policy="accept")
    bridges = sorted(n.bridge for n in fw.networks)

    # 0. a bridge of a network with its own namespace only bridges: this host has no
    #    address there (its ARP is off, net/l3ns.py) and takes nothing in from it
    if fw.apart:   # (what it bridges passes these hooks through br_netfilter: its
        #             own conntrack zone, kept out of this host's NAT, or the NAT of an
        #             overlapping subnet would take it)
        b.chain("raw", type="filter", hook="prerouting", prio=-300, policy="accept")
        for br in sorted(fw.apart):
            zone = fw.zones.get(br)
            b.rule("raw", [_meta("iifname", br), {"notrack": None} if zone is None else
                           {"mangle": {"key": {"ct": {"key": "zone"}}, "value": zone}}],
                   "bridged only: its own conntrack")
        b.chain("input", type="filter", hook="input", prio=0, policy="accept")
        b.rule("input", [_meta("iifname", {"set": sorted(fw.apart)}), {"counter": None},
                         {"drop": None}], "no address of this host's there")
    ported = any(n.port and n.groups for n in fw.nics)
    for br in sorted(fw.apart):
        if ported:   # the bridge table's security groups let a known connection pass
            b.rule("forward", [_meta("iifname", br), _meta("oifname", br),
                               _ct("state", ["established", "related"]),
                               _mark("|", REPLY_MARK), {"accept": None}],
                   f"known connection in {br}: for the bridge table")
        b.rule("forward", [_meta("iifname", br), _meta("oifname", br), {"accept": None}],
               f"bridged in {br}")
        b.rule("forward", [_meta("iifname", br), {"counter": None}, {"drop": None}],
               f"never routed from {br}")

    # 1. networks never reach each other, whatever else is allowed
    for br in bridges:
        others = [o for o in bridges if o != br]
        if others:
            b.rule("forward", [_meta("iifname", br), _meta("oifname", {"set": others}),
                               {"counter": None}, {"drop": None}], f"isolate {br}")
    # 2. replies, and what a forward let in
    b.rule("forward", [_ct("state", ["established", "related"]), {"accept": None}])
    b.rule("forward", [_ct("status", ["dnat"]), {"accept": None}], "port forwards")
    # 3. in and out of a network
    for n in sorted(fw.networks, key=lambda n: n.bridge):
        b.rule("forward", [_meta("oifname", n.bridge), _meta("iifname", n.bridge, "!="),
                           {"counter": None}, {"drop": None}], f"nothing into {n.bridge}")
        if not n.nat:
            b.rule("forward", [_meta("iifname", n.bridge), _meta("oifname", n.bridge, "!="),
                               {"counter": None}, {"drop": None}], f"isolated {n.bridge}")
    # 4. security groups: per-NIC chains by the NIC's address (one with a port: in the
    #    bridge table)
    _group_sets(b, fw)
    by_ip = sorted((n for n in fw.nics if not n.port), key=lambda n: int(n.ip))
    ingress, egress = _nic_chains(b, [(str(n.ip), n) for n in by_ip], fw.groups)
    _dispatch(b, "forward", _ip_key("daddr"), ingress)
    _dispatch(b, "forward", _ip_key("saddr"), egress)
    # 5. NAT out, forwards in
    if any(n.nat for n in fw.networks):
        b.chain("postrouting", type="nat", hook="postrouting", prio=100, policy="accept")
        if fw.apart:
            b.rule("postrouting", [_meta("oifname", {"set": sorted(fw.apart)}),
                                   {"accept": None}], "bridged only: not NATed here")
        for n in fw.networks:
            if n.nat:
                b.rule("postrouting", [_ip("saddr", n.subnet), _ip("daddr", n.subnet, "!="),
                                       _meta("oifname", n.bridge, "!="), {"masquerade": None}],
                       f"nat {n.bridge}")
    if fw.forwards:
        b.chain("prerouting", type="nat", hook="prerouting", prio=-100, policy="accept")
        b.chain("output", type="nat", hook="output", prio=-100, policy="accept")
        if fw.apart:
            b.rule("prerouting", [_meta("iifname", {"set": sorted(fw.apart)}),
                                  {"accept": None}], "bridged only: not NATed here")
        for f in fw.forwards:
            for chain in ("prerouting", "output"):
                b.rule(chain, [_ip("daddr", f"{f.listen}/32"), _meta("l4proto", f.protocol),
                               _payload("th", "dport", f.port),
                               {"dnat": {"family": "ip", "addr": str(f.target),
                                         "port": f.target_port}}],
                       f"forward {f.protocol} {f.listen}:{f.port}")
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *b.cmds,
                         *bridge_rules(table, fw)]}


def bridge_rules(table: str, fw: Firewall | None = None) -> list[dict[str, Any]]:
    """Table ``bridge <table>``: the gateway and DHCP stay on each member's own side
    of an overlay, whether the bridge or a gateway leg (net/l3ns.py) holds the gateway;
    the security groups of NICs matched by port (none of either, or no ``fw``: the
    table goes)."""
    t = {"family": "bridge", "name": table}
    cmds: list[dict[str, Any]] = [{"add": {"table": t}}, {"delete": {"table": t}}]
    ported = [] if fw is None else sorted((n for n in fw.nics if n.port and n.groups),
                                          key=lambda n: n.port)
    if fw is None or (not fw.tunnels and not ported):
        return cmds
    b = _Builder(table, "bridge")
    b.cmds.append({"add": {"table": t}})
    if fw.tunnels:
        devices = {"set": sorted(fw.tunnels)}
        b.chain("out", type="filter", hook="output", prio=0, policy="accept")
        b.rule("out", [_meta("oifname", devices), {"counter": None}, {"drop": None}],
               "the gateway answers on its own member")
        b.chain("fwd", type="filter", hook="forward", prio=0, policy="accept")
        b.rule("fwd", [_meta("oifname", devices), _meta("l4proto", "udp"),
                       _payload("udp", "dport", {"set": [67, 68]}), {"counter": None},
                       {"drop": None}], "DHCP stays on its member")
        if fw.legs:
            b.rule("fwd", [_meta("iifname", {"set": sorted(fw.legs)}),
                           _meta("oifname", devices), {"counter": None}, {"drop": None}],
                   "the gateway answers on its own member")
    if ported:
        _port_groups(b, fw, ported)
    return cmds + b.cmds


def _port_groups(b: _Builder, fw: Firewall, nics: list[FwNic]) -> None:
    """Security groups by port, after br_netfilter's inet hooks (priority 0) marked
    what belongs to a known connection. What comes from a gateway leg is a reply, a
    forward or the gateway itself (the network's namespace lets nothing else in), and
    what goes to the gateway itself is the host's on a plain network: neither is
    filtered, as on a plain network, where neither passes the forward hook."""
    b.chain("groups", type="filter", hook="forward", prio=100, policy="accept")
    mark = {"meta": {"key": "mark"}}
    b.rule("groups", [{"match": {"op": "==", "left": {"&": [mark, REPLY_MARK]},
                                 "right": REPLY_MARK}},
                      _mark("&", ALL_BITS ^ REPLY_MARK), {"accept": None}],
           "a known connection")
    if fw.legs:
        b.rule("groups", [_meta("iifname", {"set": sorted(fw.legs)}), {"accept": None}],
               "from the gateway")
    for leg, gateway in sorted(fw.gateways.items()):
        b.rule("groups", [_meta("oifname", leg),
                          _payload("ip", "daddr", {"set": [str(gateway), "255.255.255.255"]}),
                          {"accept": None}], "to the gateway itself")
    _group_sets(b, fw)
    ingress, egress = _nic_chains(
        b, [({"concat": [n.port, str(n.ip)]}, n) for n in nics], fw.groups)
    _dispatch(b, "groups", _ip_key("daddr", "oifname"), ingress)
    _dispatch(b, "groups", _ip_key("saddr", "iifname"), egress)


def inside_ruleset(gateway_link: str, uplink: str, inside: FwInside) -> dict[str, Any]:
    """Table ``inet cumulo`` in a network's own namespace (net/l3ns.py): a NAT network
    goes out over ``uplink`` masqueraded, and comes in only as replies; an isolated one
    neither; a forward comes in over ``uplink`` to its instance."""
    table = "cumulo"
    b = _Builder(table)
    t = {"family": FAMILY, "name": table}
    b.cmds += [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
    b.chain("forward", type="filter", hook="forward", prio=0, policy="drop")
    b.rule("forward", [_ct("state", ["established", "related"]), {"accept": None}])
    if inside.nat:
        b.rule("forward", [_meta("iifname", gateway_link), _meta("oifname", uplink),
                           {"accept": None}], "nat out")
        b.chain("postrouting", type="nat", hook="postrouting", prio=100, policy="accept")
        b.rule("postrouting", [_meta("oifname", uplink), {"masquerade": None}], "nat out")
    if inside.forwards:
        b.rule("forward", [_ct("status", ["dnat"]), {"accept": None}], "port forwards")
        b.chain("prerouting", type="nat", hook="prerouting", prio=-100, policy="accept")
        for f in inside.forwards:
            b.rule("prerouting", [_meta("iifname", uplink), _ip("daddr", f"{f.listen}/32"),
                                  _meta("l4proto", f.protocol), _payload("th", "dport", f.port),
                                  {"dnat": {"family": "ip", "addr": str(f.target),
                                            "port": f.target_port}}],
                   f"forward {f.protocol} {f.port}")
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *b.cmds]}
