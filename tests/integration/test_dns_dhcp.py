"""DHCP and DNS on a network: one dnsmasq per network, in the daemon's own netns.

The daemon runs in a namespace made for the test (the ``netd`` fixture); the
DHCP client runs in another namespace the test makes, wired to the network's
bridge like a VM's NIC would be. Nothing leaves those namespaces.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from tests.helpers import container_skip_reason
from tests.integration.test_networks import NetDaemon, dnsmasq_pids, netd, nic, sh

__all__ = ["netd"]  # the fixture, used by name

pytestmark = [pytest.mark.root, pytest.mark.runtime]
if (_reason := container_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))


def network(d: NetDaemon, name: str) -> dict[str, object]:
    return json.loads(d.cli("network", "info", name, "--format", "json").stdout)  # type: ignore[no-any-return]


def dns_dir(d: NetDaemon, bridge: str) -> Path:
    return d.state_dir / "run" / "dnsmasq" / bridge


def dnsmasq_pid(d: NetDaemon, bridge: str) -> int:
    pids = dnsmasq_pids(d.state_dir)
    assert len(pids) == 1, pids
    assert (dns_dir(d, bridge) / "pid").read_text().strip() == str(pids[0])
    return pids[0]


def udhcpc(d: NetDaemon, bridge: str, mac: str, tries: int = 5) -> str | None:
    """The address a DHCP client with ``mac`` on ``bridge`` leases (in its own netns)."""
    client = f"cu-t-dh-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", client)
    try:
        d.inside("ip", "link", "add", "dhtest0", "type", "veth", "peer", "name", "eth0",
                 "address", mac, "netns", client)
        d.inside("ip", "link", "set", "dhtest0", "master", bridge, "up")
        sh("ip", "-n", client, "link", "set", "eth0", "up")
        r = sh("ip", "netns", "exec", client, "busybox", "udhcpc", "-i", "eth0", "-f", "-q",
               "-n", "-t", str(tries), "-T", "1", "-s", "/bin/true", check=False)
        m = re.search(r"lease of (\S+) obtained", r.stdout + r.stderr)
        return m.group(1) if m else None
    finally:
        sh("ip", "netns", "del", client, check=False)
        d.inside("ip", "link", "del", "dhtest0", check=False)


def test_dhcp_and_dns_by_name(netd: NetDaemon) -> None:
    d = netd
    d.cli("image", "build", "busybox")
    r = d.cli("network", "create", "blue", "--dns-domain", "lab.example")
    assert "domain lab.example" in r.stderr
    blue = network(d, "blue")
    bridge, gw = str(blue["bridge"]), str(blue["gateway"])

    # bad input: a clear one-line error, and nothing changes
    before = d.cli("network", "list", "--format", "json").stdout
    for domain in ("bad_domain", "-x.example", "a..b", "x" * 64, "lab.123"):
        r = d.cli("network", "create", "x", "--dns-domain", domain, check=False)
        assert r.returncode == 1 and "invalid DNS domain" in r.stderr, (domain, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert d.cli("network", "list", "--format", "json").stdout == before
    assert len(dnsmasq_pids(d.state_dir)) == 1

    # dnsmasq listens on the bridge only: never on lo or any other link
    pid = dnsmasq_pid(d, bridge)
    conf = (dns_dir(d, bridge) / "dnsmasq.conf").read_text()
    assert f"interface={bridge}\n" in conf and "except-interface=lo\n" in conf
    assert "user=dnsmasq\n" in conf  # the state dir is searchable: it drops root
    sockets = d.inside("ss", "-Hlnup").stdout + d.inside("ss", "-Hlntp").stdout
    ours = [line.split()[3] for line in sockets.splitlines() if f"pid={pid}," in line]
    assert ours and all(a.startswith(f"{gw}:") or f"%{bridge}:" in a for a in ours), ours

    d.cli("launch", "busybox", "a", "--network", "blue")
    d.cli("launch", "busybox", "b", "--network", "blue")
    b_ip = str(nic(d, "b")["ip"])
    resolv = d.cli("exec", "a", "--", "cat", "/etc/resolv.conf").stdout
    assert resolv == f"search lab.example\nnameserver {gw}\n"
    for name in ("b", "b.lab.example"):
        assert d.ping("a", name), name
        out = d.cli("exec", "a", "--", "nslookup", name).stdout
        assert f"Address: {b_ip}" in out, out
    assert not d.ping("a", "nosuch")

    # DHCP: a client with a MAC the store knows gets the address IPAM gave it
    d.cli("create", "busybox", "c", "--network", "blue", "--ip", "10.210.0.77")
    c = nic(d, "c")
    assert udhcpc(d, bridge, str(c["mac"])) == "10.210.0.77"
    assert "10.210.0.77" in (dns_dir(d, bridge) / "leases").read_text()
    assert "Address: 10.210.0.77" in d.cli("exec", "a", "--", "nslookup", "c").stdout
    assert udhcpc(d, bridge, "0a:ce:00:00:00:01", tries=2) is None  # unknown MAC: nothing

    # restarts keep MAC, IP and name; a new daemon finds the same dnsmasq again
    a_nic = nic(d, "a")
    d.cli("restart", "a", "--timeout", "1")
    assert nic(d, "a")["mac"] == a_nic["mac"] and nic(d, "a")["ip"] == a_nic["ip"]
    assert d.ping("a", "b") and d.ping("b", "a")
    d.stop()
    d.start()
    assert dnsmasq_pid(d, bridge) == pid
    assert d.ping("a", "b.lab.example")

    # a deleted instance's name goes at once; the network's delete leaves nothing
    d.cli("delete", "--force", "b")
    assert "b.lab.example" not in (dns_dir(d, bridge) / "hosts").read_text()
    assert not d.ping("a", "b")
    for name in ("a", "c"):
        d.cli("delete", "--force", name)
    d.cli("network", "delete", "blue")
    assert dnsmasq_pids(d.state_dir) == []
    assert not dns_dir(d, bridge).exists()
    assert d.links() == [] and d.tables() == []
