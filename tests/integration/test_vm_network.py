"""A VM joins a network through a tap: DHCP gives it its stored address, it reaches a
container by IP and by name, and its tap goes when it stops (TCG on these hosts).

The daemon runs in a namespace made for the test; nothing leaves it.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import container_skip_reason
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
