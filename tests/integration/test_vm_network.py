"""A VM joins a network through a tap: DHCP gives it its stored address, it reaches a
container by IP and by name, and its tap goes when it stops (TCG on these hosts).

The daemon runs in a namespace made for the test; nothing leaves it.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import container_skip_reason
from tests.integration.test_firewall import WEB2, body, get_script
from tests.integration.test_networks import NetDaemon, netd, nic

__all__ = ["netd"]  # the fixture, used by name

pytestmark = [pytest.mark.root, pytest.mark.runtime, pytest.mark.qemu, pytest.mark.slow]
if (_reason := container_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))


def vm_ip(d: NetDaemon, name: str, timeout: float = 120) -> str:
    """eth0's address as the guest sees it, once DHCP configured it."""
    deadline = time.monotonic() + timeout
    while True:
        r = d.cli("exec", name, "--", "ip", "-4", "-o", "addr", "show", "eth0", check=False,
                  timeout=150)
        if r.returncode == 0 and " inet " in r.stdout:
            return r.stdout.split()[3].split("/")[0]
        assert time.monotonic() < deadline, (r.stdout, r.stderr)
        time.sleep(1)


@pytest.mark.parametrize("io", ["paravirt", "emulated"])
def test_vm_on_a_network_reaches_a_container(netd: NetDaemon, io: str) -> None:
    d = netd
    d.cli("image", "build", "busybox")
    d.cli("network", "create", "blue", "--dns-domain", "lab.example")
    d.cli("launch", "busybox", "ct", "--network", "blue")
    d.cli("launch", "busybox", "vm", "--type", "vm", "--machine", "pc", "--io", io,
          "--memory", "128MiB", "--network", "blue", "--ip", "10.210.0.40")
    tap = str(nic(d, "vm")["host_name"])
    assert tap in d.links()
    assert vm_ip(d, "vm") == "10.210.0.40"
    driver = "virtio_net" if io == "paravirt" else "e1000"
    link = d.cli("exec", "vm", "--", "readlink", "/sys/class/net/eth0/device/driver").stdout
    assert link.strip().endswith(driver), link

    ct_ip = str(nic(d, "ct")["ip"])
    assert d.cli("exec", "vm", "--", "ping", "-c", "1", "-W", "3", ct_ip,
                 check=False).returncode == 0
    assert d.ping("ct", "10.210.0.40")
    out = d.cli("exec", "vm", "--", "nslookup", "ct.lab.example").stdout
    assert f"Address: {ct_ip}" in out, out
    mac = d.cli("exec", "vm", "--", "cat", "/sys/class/net/eth0/address").stdout.strip()
    assert mac == nic(d, "vm")["mac"]

    d.cli("stop", "vm", "--force")
    assert tap not in d.links()
    d.cli("delete", "--force", "vm")
    d.cli("delete", "--force", "ct")
    d.cli("network", "delete", "blue")
    assert d.links() == []
    assert json.loads(d.cli("list", "--format", "json").stdout) == []


def test_a_vm_in_a_security_group_on_a_shared_subnet(netd: NetDaemon) -> None:
    """A VM of project other and a container of default at the same address, on two
    networks with one subnet: other's group opens one port of the VM (its tap is the
    key), live, and the container at the same address keeps both ports open."""
    d = netd
    d.cli("image", "build", "busybox")
    d.cli("project", "create", "other")
    d.cli("network", "create", "mine", "--subnet", "10.214.0.0/24")
    d.cli("--project", "other", "network", "create", "theirs", "--subnet", "10.214.0.0/24")
    d.cli("launch", "busybox", "a", "--network", "mine", "--ip", "10.214.0.40")
    d.cli("exec", "a", "--", "sh", "-c", WEB2)
    d.cli("--project", "other", "launch", "busybox", "vm", "--type", "vm", "--machine", "pc",
          "--memory", "128MiB", "--network", "theirs", "--ip", "10.214.0.40", "--", "sh",
          "-c", WEB2 + " && sleep 100000")
    for project, net, client in (("default", "mine", "ac"), ("other", "theirs", "bc")):
        d.cli("--project", project, "launch", "busybox", client, "--network", net, "--ip",
              "10.214.0.20")

    def seen() -> tuple[str | None, ...]:
        """a's and the VM's ports 8080 and 9090, from their own network's client."""
        return tuple(body(d.cli("--project", project, "exec", client, "--",
                                *get_script("10.214.0.40", port), check=False).stdout)
                     for project, client in (("default", "ac"), ("other", "bc"))
                     for port in (8080, 9090))

    deadline = time.monotonic() + 180   # the guest boots (TCG) and starts its servers
    while seen() != ("hello-a", "hello-a", "hello-vm", "hello-vm"):
        assert time.monotonic() < deadline, seen()
        time.sleep(2)
    d.cli("--project", "other", "network", "acl", "create", "web")
    d.cli("--project", "other", "network", "acl", "rule", "add", "web", "--protocol", "tcp",
          "--port", "8080")
    d.cli("--project", "other", "network", "acl", "attach", "web", "vm")
    assert seen() == ("hello-a", "hello-a", "hello-vm", None)
    d.cli("--project", "other", "network", "acl", "rule", "remove", "web", "1")
    assert seen() == ("hello-a", "hello-a", None, None)
    tap = str(json.loads(d.cli("--project", "other", "info", "vm", "--format", "json"
                               ).stdout)["nics"][0]["host_name"])
    assert tap in d.inside("nft", "list", "table", "bridge", d.tables()[0]).stdout

    for project, name in (("default", "a"), ("default", "ac"), ("other", "vm"),
                          ("other", "bc")):
        d.cli("--project", project, "delete", "--force", name)
    d.cli("--project", "other", "network", "acl", "delete", "web")
    d.cli("--project", "other", "network", "delete", "theirs")
    d.cli("network", "delete", "mine")
    assert d.links() == [] and d.tables() == []
