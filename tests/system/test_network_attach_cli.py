"""``cumulo network attach/detach``: a NIC added to and removed from a running container
and a running VM (QMP hot-plug, TCG), and from stopped ones for their next start.

The daemon runs in a namespace made for the test; nothing leaves it. After a detach
nothing of the NIC is left: no veth or tap, no firewall entry, no DNS name, no lease.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import container_skip_reason
from tests.integration.test_networks import NetDaemon, netd

__all__ = ["netd"]  # the fixture, used by name

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]
if (_reason := container_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))


def nics(d: NetDaemon, name: str) -> dict[str, dict[str, object]]:
    out = json.loads(d.cli("info", name, "--format", "json").stdout)["nics"]
    return {str(n["network"]): {k: v for k, v in n.items() if k != "counters"} for n in out}


def dns_dir(d: NetDaemon, network: str) -> str:
    bridge = json.loads(d.cli("network", "info", network, "--format", "json").stdout)["bridge"]
    return str(d.state_dir / "run" / "dnsmasq" / bridge)


def traces(d: NetDaemon, network: str, nic: dict[str, object]) -> list[str]:
    """What of ``nic`` the host still has: its link, its address in nftables, its DNS
    name and DHCP host entry, its lease."""
    found = [str(nic["host_name"])] if nic["host_name"] in d.links() else []
    rules = d.inside("nft", "list", "ruleset").stdout
    if str(nic["ip"]) in rules or str(nic["host_name"]) in rules:
        found.append("nft")
    for f in ("hosts", "dhcp-hosts", "leases"):
        d.inside("touch", f"{dns_dir(d, network)}/{f}")
        text = d.inside("cat", f"{dns_dir(d, network)}/{f}").stdout
        if str(nic["ip"]) in text or str(nic["mac"]) in text:
            found.append(f)
    return found


def test_attach_and_detach_a_running_container(netd: NetDaemon) -> None:
    d = netd
    d.cli("image", "build", "busybox")
    d.cli("network", "create", "blue")
    d.cli("network", "create", "red")
    d.cli("launch", "busybox", "c1", "--network", "blue")
    d.cli("launch", "busybox", "c2", "--network", "red")

    r = d.cli("network", "attach", "red", "c1", "--name", "eth3", "--ip", "10.210.1.30")
    assert "Attached c1 to red: eth3 red 10.210.1.30" in r.stderr, r.stderr
    nic = nics(d, "c1")["red"]
    out = d.cli("exec", "c1", "--", "ip", "-4", "-o", "addr", "show", "eth3").stdout
    assert "inet 10.210.1.30/24" in out, out
    assert d.ping("c2", "c1")   # by name: the DNS entry
    assert d.ping("c1", str(nics(d, "c2")["red"]["ip"]))
    assert d.cli("exec", "c1", "--", "cat", "/sys/class/net/eth3/address"
                 ).stdout.strip() == nic["mac"]
    assert {str(nic["host_name"]), "hosts", "dhcp-hosts"} <= set(traces(d, "red", nic))

    # bad input: one line, non-zero, nothing changes
    before = nics(d, "c1")
    for args, msg in [(("red", "c1"), "already has a NIC on network 'red'"),
                      (("nope", "c1"), "network 'nope' not found"),
                      (("blue", "c2", "--name", "eth0"), "already has a NIC eth0"),
                      (("blue", "c2", "--name", "veth9"), "invalid NIC name 'veth9'"),
                      (("blue", "c2", "--ip", "10.210.0.2"), "already used"),
                      (("blue", "c2", "--ip", "10.9.9.9"), "not a usable host address"),
                      (("blue", "ghost"), "instance 'ghost' not found")]:
        r = d.cli("network", "attach", *args, check=False)
        assert r.returncode == 1 and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert nics(d, "c1") == before and len(nics(d, "c2")) == 1
    r = d.cli("network", "detach", "blue", "c2", check=False)
    assert r.returncode == 1 and "'c2' has no NIC on network 'blue'" in r.stderr, r.stderr

    d.cli("network", "detach", "red", "c1")
    assert list(nics(d, "c1")) == ["blue"]
    out = d.cli("exec", "c1", "--", "ls", "/sys/class/net").stdout.split()
    assert out == ["eth0", "lo"], out
    assert traces(d, "red", nic) == []
    assert not d.ping("c2", "10.210.1.30")

    # stopped: only the config; the next start wires it
    d.cli("stop", "c2", "--force")
    d.cli("network", "attach", "blue", "c2")
    assert d.links().count(str(nics(d, "c2")["blue"]["host_name"])) == 0
    d.cli("start", "c2")
    assert d.ping("c2", str(nics(d, "c1")["blue"]["ip"]))
    d.cli("stop", "c2", "--force")
    d.cli("network", "detach", "red", "c2")
    d.cli("start", "c2")
    out = d.cli("exec", "c2", "--", "ls", "/sys/class/net").stdout.split()
    assert out == ["eth1", "lo"], out   # the blue NIC stays eth1 after eth0 went


def guest_lease(d: NetDaemon, vm: str, nic: str) -> str:
    """The address the guest's DHCP client gets on ``nic`` (polled: the NIC may still be
    appearing in the guest)."""
    script = (f"n=0; while [ ! -e /sys/class/net/{nic} ] && [ $n -lt 100 ]; do sleep 0.1;"
              f" n=$((n+1)); done; ip link set {nic} up;"
              f" udhcpc -i {nic} -n -q -t 5 -T 1 -s /bin/true 2>&1")
    out = d.cli("exec", vm, "--", "sh", "-c", script, timeout=150).stdout
    words = out.split("lease of ")
    return words[1].split()[0] if len(words) > 1 else out


@pytest.mark.qemu
@pytest.mark.slow
def test_attach_and_detach_a_running_vm(netd: NetDaemon) -> None:
    d = netd
    d.cli("image", "build", "busybox")
    d.cli("network", "create", "blue")
    d.cli("network", "create", "red")
    d.cli("launch", "busybox", "vm", "--type", "vm", "--machine", "pc", "--memory", "128MiB",
          "--network", "blue")
    d.cli("network", "attach", "red", "vm", "--ip", "10.210.1.40")
    nic = nics(d, "vm")["red"]
    assert str(nic["host_name"]) in d.links()
    assert guest_lease(d, "vm", "eth1") == "10.210.1.40"   # DHCP knows the new MAC
    mac = d.cli("exec", "vm", "--", "cat", "/sys/class/net/eth1/address").stdout.strip()
    assert mac == nic["mac"]
    assert {str(nic["host_name"]), "hosts", "dhcp-hosts", "leases"} <= set(
        traces(d, "red", nic))

    d.cli("network", "detach", "red", "vm")   # device_del: the guest lets it go first
    deadline = time.monotonic() + 30
    while "eth1" in d.cli("exec", "vm", "--", "ls", "/sys/class/net").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert traces(d, "red", nic) == []
    assert list(nics(d, "vm")) == ["blue"]

    # stopped: the next boot has it (cold-plugged, configured by DHCP at boot)
    d.cli("stop", "vm", "--force")
    d.cli("network", "attach", "red", "vm", "--ip", "10.210.1.41")
    d.cli("start", "vm")
    deadline = time.monotonic() + 120
    while "10.210.1.41/24" not in (out := d.cli("exec", "vm", "--", "ip", "-4", "-o", "addr",
                                                 check=False, timeout=150).stdout):
        assert time.monotonic() < deadline, out
        time.sleep(1)
    d.cli("delete", "--force", "vm")
    d.cli("network", "delete", "red")
    d.cli("network", "delete", "blue")
    assert d.links() == []
