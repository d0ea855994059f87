"""The firewall as data: a NIC of a network with its own namespace is matched by its
host end in the bridge table, never by its address (another project's NIC has it)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from cumulo.domain.acl import make_rule
from cumulo.net.firewall import REPLY_MARK, Firewall, FwNetwork, FwNic, ruleset

ADDR = IPv4Address("10.0.0.5")


def shared(groups: tuple[str, ...] = ("q/web",)) -> Firewall:
    """Plain network cu-b1 (project p) and cu-b2 with its own namespace (project q), a
    NIC at the same address on each, both in a group."""
    return Firewall(
        networks=[FwNetwork("cu-b1", IPv4Network("10.0.0.0/24"), True),
                  FwNetwork("cu-u2", IPv4Network("169.254.0.8/30"), True)],
        apart=["cu-b2"], legs=["cu-g2"], zones={"cu-b2": 2},
        gateways={"cu-g2": IPv4Address("10.0.0.1")},
        nics=[FwNic(ADDR, "cu-b1", ("p/web",)), FwNic(ADDR, "cu-b2", groups, port="cu-v2")],
        groups={"p/web": (make_rule("ingress", "tcp", "80", None, None),),
                "q/web": (make_rule("ingress", "tcp", "8080", None, None),)})


def rules(fw: Firewall, family: str) -> list[dict[str, Any]]:
    return [c["add"]["rule"] for c in ruleset("t", fw)["nftables"]
            if "rule" in c.get("add", {}) and c["add"]["rule"]["family"] == family]


def vmaps(fw: Firewall, family: str) -> list[list[Any]]:
    return [e["vmap"]["data"]["set"] for r in rules(fw, family) for e in r["expr"]
            if "vmap" in e]


def test_a_shared_subnets_nic_is_keyed_by_its_port() -> None:
    fw = shared()
    assert vmaps(fw, "inet") == [[[str(ADDR), {"jump": {"target": "in_0"}}]]]
    assert vmaps(fw, "bridge") == [[[{"concat": ["cu-v2", str(ADDR)]},
                                     {"jump": {"target": "in_0"}}]]]
    bridge = rules(fw, "bridge")
    assert bridge[0]["chain"] == "groups" and bridge[0]["comment"] == "a known connection"
    ports = [r["comment"] for r in bridge if r["chain"] == "in_0"]
    assert ports == ["ingress tcp port 8080 from anywhere",
                     f"cu-v2 {ADDR}: not allowed in"]
    # its bridged frames: a conntrack zone of their own, out of the host's NAT, and the
    # known connections marked for the bridge table
    inet = rules(fw, "inet")
    raw = [r["expr"] for r in inet if r["chain"] == "raw"]
    assert raw[0][1] == {"mangle": {"key": {"ct": {"key": "zone"}}, "value": 2}}
    marks = [r for r in inet if r["chain"] == "forward" and any(
        "mangle" in e and e["mangle"]["value"] == {"|": [{"meta": {"key": "mark"}},
                                                         REPLY_MARK]} for e in r["expr"])]
    assert len(marks) == 1
    assert [r["comment"] for r in inet if r["chain"] == "postrouting"][0] \
        == "bridged only: not NATed here"


def test_no_group_on_a_shared_subnet_no_bridge_table() -> None:
    fw = shared(groups=())
    cmds = ruleset("t", fw)["nftables"]
    assert not rules(fw, "bridge") and {"delete": {"table": {"family": "bridge",
                                                              "name": "cumulo_t"}}} in cmds
    assert not any("mangle" in e for r in rules(fw, "inet") if r["chain"] == "forward"
                   for e in r["expr"])
