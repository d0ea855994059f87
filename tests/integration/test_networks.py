"""Virtual networks on the real kernel, through the CLI and a real daemon.

The daemon runs inside a network namespace made for the test (``cu-t-<hex>``),
so its bridges, veth pairs and nftables table never touch the machine's own
network; forwarding is switched on inside that namespace only, so that the
isolation between networks is nftables' doing. A finaliser removes everything
and the test asserts nothing is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import container_skip_reason
from tests.system.conftest import Daemon, leftovers
from tests.system.test_overlay_cli import ECHO_PEER, FETCH

pytestmark = [pytest.mark.root, pytest.mark.runtime]
if (_reason := container_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=20)


class NetDaemon(Daemon):
    netns: str = ""

    def inside(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command in the daemon's network namespace (never the host's)."""
        return sh("ip", "netns", "exec", self.netns, *args, check=check)

    def links(self) -> list[str]:
        out = json.loads(self.inside("ip", "-j", "link").stdout)
        return sorted(i["ifname"] for i in out if i["ifname"].startswith("cu-"))

    def tables(self) -> list[str]:
        out = json.loads(self.inside("nft", "-j", "list", "tables").stdout)
        return [t["table"]["name"] for t in out["nftables"] if "table" in t]

    def ping(self, name: str, ip: str) -> bool:
        r = self.cli("exec", name, "--", "ping", "-c", "1", "-W", "2", ip, check=False)
        return r.returncode == 0


@pytest.fixture
def netd(tmp_path: Path) -> Iterator[NetDaemon]:
    tag = uuid.uuid4().hex[:8]
    ns = f"cu-t-{tag}"
    sh("ip", "netns", "add", ns)
    # a state dir others may search, as /var/lib/cumulo is: dnsmasq drops to its own user
    state = Path(tempfile.mkdtemp(prefix="cumulo-net-"))
    os.chmod(state, 0o711)
    d = NetDaemon(state_dir=state, socket=tmp_path / "cumulo.sock",
                  cgroup_parent=f"cumulo-nettest-{tag}", log=tmp_path / "cumulod.log",
                  wrapper=["nsenter", f"--net=/run/netns/{ns}"])  # keeps /sys/fs/cgroup
    d.netns = ns
    d.env = {**os.environ, "CUMULO_SOCKET": str(d.socket)}
    d.env.pop("CUMULO_URL", None)
    try:
        d.inside("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        d.start()
        yield d
    finally:
        try:
            d.clear()
        finally:
            d.stop()
            leaked = dnsmasq_pids(d.state_dir)
            for pid in leaked:
                os.kill(pid, signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
            for cg in Path("/sys/fs/cgroup").glob(f"*/{d.cgroup_parent}"):
                cg.rmdir()
            shutil.rmtree(d.state_dir, ignore_errors=True)
    assert not leftovers(d.cgroup_parent)
    assert ns not in sh("ip", "netns", "list").stdout
    assert not leaked, f"dnsmasq left running: {leaked}"


def dnsmasq_pids(state_dir: Path) -> list[int]:
    """dnsmasq processes whose config lives under ``state_dir``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dnsmasq") and any(
                str(state_dir).encode() in a for a in argv):
            found.append(int(proc.name))
    return found


def nic(d: NetDaemon, name: str) -> dict[str, object]:
    nics = json.loads(d.cli("info", name, "--format", "json").stdout)["nics"]
    assert len(nics) == 1, nics
    return nics[0]  # type: ignore[no-any-return]


def inside_nic(d: NetDaemon, name: str) -> tuple[str, str]:
    """(MAC, IPv4 address) of eth0 as the container itself sees them."""
    mac = d.cli("exec", name, "--", "cat", "/sys/class/net/eth0/address").stdout.strip()
    out = d.cli("exec", name, "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    return mac, out.split()[3].split("/")[0]


def test_networks_connect_isolate_and_leave_nothing(netd: NetDaemon) -> None:
    d = netd
    d.cli("image", "build", "busybox")
    blue = d.cli("network", "create", "blue")
    assert "10.210.0.0/24" in blue.stderr
    d.cli("network", "create", "red", "--subnet", "10.211.0.0/24")

    # bad input: a clear one-line error, and nothing changes
    before = d.cli("network", "list", "--format", "json").stdout
    for args, message in [
        (["network", "create", "x", "--subnet", "10.9.9.9/33"], "invalid subnet"),
        (["network", "create", "x", "--subnet", "10.211.0.128/25"], "overlaps"),
        (["network", "create", "blue"], "already exists"),
        (["launch", "busybox", "z", "--network", "green"], "network 'green' not found"),
        (["launch", "busybox", "z", "--network", "blue", "--ip", "10.211.0.5"],
         "not a usable host address"),
    ]:
        r = d.cli(*args, check=False)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
    assert d.cli("network", "list", "--format", "json").stdout == before
    assert json.loads(d.cli("list", "--format", "json").stdout) == []

    d.cli("launch", "busybox", "a", "--network", "blue")
    d.cli("launch", "busybox", "b", "--network", "blue", "--ip", "10.210.0.50")
    d.cli("launch", "busybox", "c", "--network", "red")
    d.cli("launch", "busybox", "plain")
    a_ip, c_ip = str(nic(d, "a")["ip"]), str(nic(d, "c")["ip"])
    assert (a_ip, nic(d, "b")["ip"], c_ip) == ("10.210.0.2", "10.210.0.50", "10.211.0.2")
    assert inside_nic(d, "a") == (nic(d, "a")["mac"], a_ip)

    # same network: reachable; another network: dropped by our nftables table
    assert d.ping("b", a_ip)
    assert d.ping("a", "10.210.0.50")
    assert not d.ping("c", a_ip)
    assert not d.ping("a", c_ip)
    counters = nic(d, "a")["counters"]
    assert isinstance(counters, dict)
    assert counters["rx_packets"] >= 1 and counters["tx_packets"] >= 1
    assert "packets" in d.cli("info", "a").stdout
    links = d.cli("exec", "plain", "--", "ls", "/sys/class/net").stdout.split()
    assert links == ["lo"]  # no network given: loopback only, as before

    r = d.cli("network", "delete", "blue", check=False)
    assert r.returncode == 1 and "used by a, b" in r.stderr

    # restart of the instance and of the daemon keep MAC and IP
    mac_ip = inside_nic(d, "a")
    d.cli("restart", "a", "--timeout", "1")
    assert inside_nic(d, "a") == mac_ip
    d.stop()
    d.start()
    assert inside_nic(d, "a") == mac_ip and d.ping("b", a_ip)

    # the isolation really is the table: without it, red reaches blue through the gateways
    tag = hashlib.sha256(str(d.state_dir.resolve()).encode()).hexdigest()[:8]
    assert d.tables() == [f"cumulo_{tag}"]
    d.inside("nft", "delete", "table", "inet", f"cumulo_{tag}")
    assert d.ping("c", a_ip)

    for name in ("a", "b", "c", "plain"):
        d.cli("delete", "--force", name)
    d.cli("network", "delete", "blue")
    d.cli("network", "delete", "red")
    assert d.links() == []
    assert d.tables() == []


def test_default_network_on_first_start_only(netd: NetDaemon) -> None:
    d = netd
    d.stop()
    d.extra = []  # as a user starts it: the NAT network "default" comes on the first start
    d.start()
    nets = json.loads(d.cli("network", "list", "--format", "json").stdout)
    assert [(n["name"], n["nat"]) for n in nets] == [("default", True)]
    d.cli("image", "build", "busybox")
    d.cli("launch", "busybox", "x")                        # no --network: joins "default"
    d.cli("launch", "busybox", "y", "--network", "none")   # loopback only
    assert nic(d, "x")["network"] == "default"
    assert d.cli("exec", "y", "--", "ls", "/sys/class/net").stdout.split() == ["lo"]
    r = d.cli("launch", "busybox", "z", "--ip", "10.210.0.9", check=False)
    assert r.returncode != 0 and "need a --network" in r.stderr
    for name in ("x", "y"):
        d.cli("delete", "--force", name)
    d.cli("network", "delete", "default")
    d.stop()
    d.start()  # deleted by the user: not made again
    assert json.loads(d.cli("network", "list", "--format", "json").stdout) == []
    assert d.links() == [] and d.tables() == []


def fetch(ns: str, addr: str, port: int) -> str:
    """One HTTP request from namespace ``ns``: what came back."""
    return sh("nsenter", f"--net=/run/netns/{ns}", "python3", "-c", FETCH, addr,
              str(port)).stdout


def test_two_projects_share_a_subnet(netd: NetDaemon) -> None:
    """Two NAT networks of two projects with one subnet, on one host: an instance of
    each at the same address gets its DHCP lease from its own network's dnsmasq, pings
    its gateway, goes out NATed to an outside namespace, and never reaches the other
    network's instances; the second network's gateway, dnsmasq and NAT are in a
    namespace of its own, and its delete takes that namespace away."""
    d = netd
    d.cli("image", "build", "busybox")
    d.cli("project", "create", "other")
    out_ns = f"{d.netns}-o"
    sh("ip", "netns", "add", out_ns)
    server = None
    try:   # an "outside" host: a veth from the daemon's namespace
        sh("ip", "-n", d.netns, "link", "add", "t-out", "type", "veth", "peer", "name",
           "eth0", "netns", out_ns)
        sh("ip", "-n", d.netns, "addr", "add", "10.98.0.1/24", "dev", "t-out")
        sh("ip", "-n", d.netns, "link", "set", "t-out", "up")
        sh("ip", "-n", out_ns, "addr", "add", "10.98.0.2/24", "dev", "eth0")
        sh("ip", "-n", out_ns, "link", "set", "eth0", "up")
        sh("ip", "-n", out_ns, "link", "set", "lo", "up")
        server = subprocess.Popen(["nsenter", f"--net=/run/netns/{out_ns}", "python3", "-c",
                                   ECHO_PEER])
        d.cli("network", "create", "mine", "--subnet", "10.212.0.0/24", "--nat")
        r = d.cli("--project", "other", "network", "create", "theirs", "--subnet",
                  "10.212.0.0/24", "--nat")
        assert "10.212.0.0/24" in r.stderr, r.stderr
        # the same project still may not overlap itself
        r = d.cli("--project", "other", "network", "create", "x", "--subnet",
                  "10.212.0.128/25", check=False)
        assert r.returncode == 1 and "overlaps 10.212.0.0/24 of network 'other/theirs'" \
            in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        d.cli("launch", "busybox", "a", "--network", "mine", "--", "sleep", "1000")
        d.cli("--project", "other", "launch", "busybox", "b", "--network", "theirs", "--",
              "sleep", "1000")
        d.cli("--project", "other", "launch", "busybox", "b2", "--network", "theirs",
              "--ip", "10.212.0.77", "--", "sh", "-c", "mkdir -p /www; echo hello from b2"
              " > /www/index.html; httpd -f -p 8080 -h /www")
        assert nic(d, "a")["ip"] == "10.212.0.2"
        b_nics = json.loads(d.cli("--project", "other", "info", "b", "--format",
                                  "json").stdout)["nics"]
        assert b_nics[0]["ip"] == "10.212.0.2"

        def run(project: str, name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
            return d.cli("--project", project, "exec", name, "--", *cmd, check=False)

        for project, name, mac in (("default", "a", nic(d, "a")["mac"]),
                                   ("other", "b", b_nics[0]["mac"])):
            lease = run(project, name, "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3",
                        "-s", "/bin/true")
            assert "obtained" in lease.stderr + lease.stdout and "10.212.0.2" in \
                lease.stderr + lease.stdout, (name, mac, lease.stderr)
            assert run(project, name, "ping", "-c", "1", "-W", "3", "10.212.0.1"
                       ).returncode == 0, name
            seen = run(project, name, "nc", "-w", "3", "10.98.0.2", "7000").stdout.strip()
            assert seen == "10.98.0.1", (name, seen)   # masqueraded as the daemon's host
        # b2 is in the other network: a (same subnet) never reaches it, b does
        assert run("other", "b", "ping", "-c", "1", "-W", "3", "10.212.0.77").returncode == 0
        assert run("default", "a", "ping", "-c", "1", "-W", "2", "10.212.0.77"
                   ).returncode != 0
        spaces = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith("cumulo-")
                  and n.endswith(str(json.loads(d.cli("--project", "other", "network", "info",
                                                      "theirs", "--format", "json").stdout)
                                         ["bridge"])[4:])]
        assert len(spaces) == 1, spaces
        # a forward: DNATed by the host to the namespace, and there to b2
        d.cli("--project", "other", "network", "forward", "add", "theirs", "10.98.0.1:8080",
              "b2")
        assert "hello from b2" in fetch(out_ns, "10.98.0.1", 8080)
        # (its security groups: test_firewall.py)

        # a restart of the daemon finds it all again
        d.stop()
        d.start()
        assert run("other", "b", "ping", "-c", "1", "-W", "3", "10.212.0.1").returncode == 0
        assert run("other", "b", "nc", "-w", "3", "10.98.0.2", "7000").stdout.strip() \
            == "10.98.0.1"
        assert "hello from b2" in fetch(out_ns, "10.98.0.1", 8080)
        d.cli("--project", "other", "network", "forward", "remove", "theirs",
              "10.98.0.1:8080")
        assert "hello" not in fetch(out_ns, "10.98.0.1", 8080)

        for project, name in (("default", "a"), ("other", "b"), ("other", "b2")):
            d.cli("--project", project, "delete", "--force", name)
        d.cli("--project", "other", "network", "delete", "theirs")
        d.cli("network", "delete", "mine")
        assert d.links() == []
        assert spaces[0] not in sh("ip", "netns", "list").stdout
    finally:
        if server is not None:
            server.kill()
            server.wait()
        sh("ip", "netns", "del", out_ns, check=False)
