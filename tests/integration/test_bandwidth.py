"""Per-NIC bandwidth caps, both ways, measured with iperf3 between two containers.

iperf3 is the host's binary run inside each container's network namespace
(nsenter), so the traffic crosses the real veth, bridge, htb and ifb. The daemon
runs in a namespace made for the test; nothing leaves it.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.helpers import container_skip_reason
from tests.integration.test_networks import NetDaemon, netd, nic

__all__ = ["netd"]  # the fixture, used by name

pytestmark = [pytest.mark.root, pytest.mark.runtime]
if (_reason := container_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))
if shutil.which("iperf3") is None:
    pytestmark.append(pytest.mark.skip(reason="needs iperf3 (scripts/install.sh installs it)"))


def pid(d: NetDaemon, name: str) -> int:
    return int(json.loads(d.cli("info", name, "--format", "json").stdout)["pid"])


def goodput(d: NetDaemon, client: str, server: str, reverse: bool = False) -> float:
    """TCP payload bit/s from ``client`` to ``server`` (``reverse``: server to client), 4 s."""
    ip = str(nic(d, server)["ip"])
    srv = subprocess.Popen(["nsenter", f"--net=/proc/{pid(d, server)}/ns/net", "iperf3", "-s",
                            "-1", "-B", ip, "-p", "5201"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # the server listens within a moment
            r = subprocess.run(["nsenter", f"--net=/proc/{pid(d, client)}/ns/net", "timeout",
                                "30", "iperf3", "-c", ip, "-p", "5201", "-t", "4", "-O", "1",
                                "-J", *(["-R"] if reverse else [])],
                               capture_output=True, text=True, timeout=40)
            if r.returncode == 0:
                return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"])
            if "Connection refused" not in r.stdout + r.stderr:
                raise AssertionError(r.stdout + r.stderr)
        raise AssertionError("iperf3 server did not start")
    finally:
        srv.kill()
        srv.wait(10)


def near(bits: float, cap: float) -> bool:
    """TCP payload under a cap on whole frames: ~4% below it (headers), within 10%."""
    return 0.9 * cap <= bits < cap


def test_egress_and_ingress_caps_apply_and_change_live(netd: NetDaemon) -> None:
    d = netd
    d.cli("image", "build", "busybox")
    d.cli("network", "create", "blue")
    d.cli("launch", "busybox", "a", "--network", "blue", "--limit-egress", "20Mbit")
    d.cli("launch", "busybox", "b", "--network", "blue")
    assert nic(d, "a")["bandwidth"] == {"egress": 20_000_000}
    assert "egress 20Mbit/s" in d.cli("info", "a").stdout

    sent = goodput(d, "a", "b")
    assert near(sent, 20e6), f"{sent / 1e6:.2f} Mbit/s for a 20 Mbit/s egress cap"

    # live: lift the egress cap, cap what a receives instead
    d.cli("network", "limit", "a", "--egress", "none", "--ingress", "10Mbit")
    assert nic(d, "a")["bandwidth"] == {"ingress": 10_000_000}
    free = goodput(d, "a", "b")
    assert free > 5 * sent, f"{free / 1e6:.1f} Mbit/s without a cap"
    received = goodput(d, "a", "b", reverse=True)
    assert near(received, 10e6), f"{received / 1e6:.2f} Mbit/s for a 10 Mbit/s ingress cap"

    # caps survive a restart (they live in the store), bad input changes nothing
    d.cli("restart", "a", "--timeout", "1")
    assert near(goodput(d, "a", "b", reverse=True), 10e6)
    for args, words in [
        (("network", "limit", "a", "--ingress", "fast"), "invalid rate"),
        (("network", "limit", "a", "--burst", "1"), "burst"),
        (("network", "limit", "a"), "give --ingress"),
        (("network", "limit", "a", "--network", "red", "--ingress", "1Mbit"), "not found"),
        (("launch", "busybox", "c", "--limit-egress", "1Mbit"), "need a --network"),
    ]:
        r = d.cli(*args, check=False)
        assert r.returncode != 0 and words in r.stderr, (args, r.stderr)
    assert nic(d, "a")["bandwidth"] == {"ingress": 10_000_000}

    # the ifb of an egress cap goes with the NIC
    d.cli("network", "limit", "a", "--egress", "30Mbit")
    host_end = str(nic(d, "a")["host_name"])
    ifb = "cu-i" + host_end[4:]
    assert {host_end, ifb} <= set(d.links())
    d.cli("delete", "--force", "a")
    assert not {host_end, ifb} & set(d.links()), d.links()
    d.cli("delete", "--force", "b")
