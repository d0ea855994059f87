"""Overlay networks over three cluster members (tests/system/clusterlib.py: each member
a cumulod in its own namespace, veths to a test "underlay" bridge, one PostgreSQL):
instances on different members reach each other by name and address over VXLAN,
two overlays are isolated, a member that goes away drops out of the others' floods
and comes back, a delete leaves no device, FDB entry, bridge, rule or dnsmasq on any
member; bad input (a VNI in use, an MTU the encapsulation cannot carry, no cluster).
Traffic stays inside the namespaces the test made."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import checkpoint_skip_reason
from tests.system.clusterlib import (
    listed,
    members,
    one_line_error,
    outside,
    poll,
    three_members,
)
from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime,
              pytest.mark.postgres,
              pytest.mark.timeout(600)]   # the first test pays the cluster's set-up

UNDERLAY = "10.77.0"
Cluster = tuple[list[Daemon], list[str]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_server: object
            ) -> Iterator[Cluster]:
    with three_members(tmp_path_factory.mktemp("overlay"), pg_server, UNDERLAY,
                       offline_after="8") as (
            daemons, _, nss):
        yield daemons, nss


def out(ns: str, *args: str) -> str:
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *args], check=True,
                          capture_output=True, text=True, timeout=30).stdout


def vxlans(ns: str) -> dict[str, dict[str, object]]:
    """The VXLAN links of a member: name -> their details (ip -d -j)."""
    links = json.loads(out(ns, "ip", "-d", "-j", "link", "show", "type", "vxlan") or "[]")
    return {link["ifname"]: link for link in links}


def flood_entries(ns: str) -> list[str]:
    """The all-zero FDB entries of a member: where its floods are sent."""
    return sorted(e["dst"] for e in json.loads(out(ns, "bridge", "-j", "fdb", "show") or "[]")
                  if e.get("mac") == "00:00:00:00:00:00" and "dst" in e)


def network(d: Daemon, name: str) -> dict[str, object]:
    return dict(json.loads(d.cli("network", "info", name, "--format", "json").stdout))


def tunnels_up(d: Daemon, name: str, n: int) -> bool:
    found = network(d, name)["tunnels"]
    assert isinstance(found, list)
    return len(found) == n and all(t["state"] == "up" and len(t["peers"]) == n - 1
                                   for t in found)


def nothing_of(nss: list[str], bridge: str) -> list[str]:
    """What is left of a network on the members: its bridge, tunnel, floods, dnsmasq."""
    left = []
    for ns in nss:
        links = out(ns, "ip", "-o", "link", "show")
        left += [f"{ns}: {name}" for name in (bridge, "cu-x" + bridge[4:])
                 if f" {name}:" in links or f" {name}@" in links]
        left += [f"{ns}: flood to {dst}" for dst in flood_entries(ns)]
        procs = subprocess.run(["pgrep", "-af", f"dnsmasq.*{bridge}"], capture_output=True,
                               text=True).stdout
        left += [f"dnsmasq {line}" for line in procs.splitlines() if line]
    return left


def test_an_overlay_spans_the_members(cluster: Cluster) -> None:
    """One network on all three members: a VXLAN device each (the VNI the store gave,
    from its cluster address, port 4789, no learning) flooding to the two others; an
    instance on m1 reaches one on m2 by name and address, with the overlay's MTU; their
    addresses come from one plan; a security group changed through m3 applies on m2,
where its instance runs; delete leaves nothing on any member."""
    (m1, m2, m3), nss = cluster
    r = m1.cli("network", "create", "ov", "--type", "overlay", "--subnet", "10.231.0.0/24")
    assert "overlay VNI" in r.stderr and "MTU 1450" in r.stderr, r.stderr
    info = network(m2, "ov")
    assert info["type"] == "overlay" and info["mtu"] == 1450, info
    vni, bridge = info["vni"], str(info["bridge"])
    poll("tunnels up on every member", lambda: tunnels_up(m3, "ov", 3))
    for i, ns in enumerate(nss, start=1):
        link = vxlans(ns)["cu-x" + bridge[4:]]
        data = link["linkinfo"]["info_data"]  # type: ignore[index]
        assert data["id"] == vni and data["local"] == f"{UNDERLAY}.{i}", data
        assert data["port"] == 4789 and not data.get("learning"), data
        assert link["master"] == bridge and link["mtu"] == 1450
        assert flood_entries(ns) == [f"{UNDERLAY}.{j}" for j in (1, 2, 3) if j != i]
    text = m1.cli("network", "info", "ov").stdout
    assert "m2 up" in text and "mtu:" in text, text

    m1.cli("launch", "busybox", "a", "--target", "m1", "--network", "ov", "--", "sleep",
           "1000")
    m3.cli("launch", "busybox", "b", "--target", "m2", "--network", "ov", "--", "sh", "-c",
           "mkdir -p /www; echo hello from b > /www/index.html; httpd -f -p 8080 -h /www")
    try:
        seen = listed(m2)
        assert (seen["a"]["location"], seen["b"]["location"]) == ("m1", "m2")
        ips = {n: json.loads(m1.cli("info", n, "--format", "json").stdout)["nics"][0]["ip"]
               for n in ("a", "b")}
        assert len(set(ips.values())) == 2, ips
        assert m1.cli("exec", "a", "--", "cat", "/sys/class/net/eth0/mtu").stdout.strip() \
            == "1450"
        # by address, then by name (m1's dnsmasq learns b at its next heartbeat)
        m1.cli("exec", "a", "--", "ping", "-c", "1", "-W", "5", ips["b"])
        poll("b resolves on m1", lambda: m1.cli(
            "exec", "a", "--", "nslookup", "b", check=False).stdout.count(ips["b"]) > 0)
        got = m1.cli("exec", "a", "--", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
                     " | nc -w 5 b 8080").stdout
        assert got.endswith("hello from b\n"), got

        def fetch() -> str:
            return m1.cli("exec", "a", "--", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
                          " | nc -w 2 b 8080", check=False).stdout
        # a security group changed through m3 applies on m2, where b runs
        m3.cli("network", "acl", "create", "webs")
        try:
            m3.cli("network", "acl", "attach", "webs", "b")
            poll("b closed by its group", lambda: "hello" not in fetch())
            m3.cli("network", "acl", "rule", "add", "webs", "--protocol", "tcp", "--port",
                   "8080", "--source", "10.231.0.0/24")
            poll("b open to the overlay", lambda: "hello from b" in fetch())
            m3.cli("network", "acl", "detach", "webs", "b")
        finally:
            m3.cli("network", "acl", "delete", "webs", check=False)
        # one plan: an address b holds is refused to a launch on another member
        one_line_error(m3.cli("launch", "busybox", "c", "--target", "m3", "--network", "ov",
                              "--ip", ips["b"], check=False), ips["b"])
    finally:
        m1.cli("delete", "a", "--force")
        m1.cli("delete", "b", "--force")
    m2.cli("network", "delete", "ov")
    poll("nothing left of ov", lambda: not nothing_of(nss, bridge))
    assert "ov" not in {n["name"] for n in json.loads(
        m3.cli("network", "list", "--format", "json").stdout)}


def test_two_overlays_are_isolated(cluster: Cluster) -> None:
    """Two overlays with their own VNIs: an instance of one does not reach the other's,
    on the same member or across."""
    (m1, m2, m3), nss = cluster
    m1.cli("network", "create", "red", "--type", "overlay", "--subnet", "10.232.0.0/24")
    m2.cli("network", "create", "green", "--type", "overlay", "--subnet", "10.233.0.0/24")
    names: list[str] = []
    try:
        assert network(m3, "red")["vni"] != network(m3, "green")["vni"]
        for name, net, where in (("r1", "red", "m1"), ("r2", "red", "m2"),
                                 ("g2", "green", "m2")):
            m1.cli("launch", "busybox", name, "--target", where, "--network", net, "--",
                   "sleep", "1000")
            names.append(name)
        ip = {n: json.loads(m1.cli("info", n, "--format", "json").stdout)["nics"][0]["ip"]
              for n in names}
        m1.cli("exec", "r1", "--", "ping", "-c", "1", "-W", "5", ip["r2"])
        for src in ("r1", "r2"):
            r = m1.cli("exec", src, "--", "ping", "-c", "1", "-W", "2", ip["g2"], check=False)
            assert r.returncode != 0, r.stdout
    finally:
        for name in names:
            m1.cli("delete", name, "--force")
        m1.cli("network", "delete", "red")
        m1.cli("network", "delete", "green")


def test_two_projects_share_a_subnet(cluster: Cluster) -> None:
    """Two projects' NAT overlays with one subnet: on one member an instance of each has
    the same address; each gets its DHCP lease from its own network, pings its gateway,
    goes out NATed as its member; the second network's instances reach each other across
    members, never the first's; the second's gateway lives in a namespace of its own on
    every member, and its delete leaves nothing of it on any."""
    (m1, m2, m3), nss = cluster
    m1.cli("network", "create", "mine", "--type", "overlay", "--nat", "--subnet",
           "10.241.0.0/24")
    m2.cli("project", "create", "other")
    names: list[tuple[str, str]] = []
    server = None
    try:
        r = m2.cli("--project", "other", "network", "create", "theirs", "--type", "overlay",
                   "--nat", "--subnet", "10.241.0.0/24")
        assert "10.241.0.0/24" in r.stderr, r.stderr
        info = json.loads(m3.cli("--project", "other", "network", "info", "theirs",
                                 "--format", "json").stdout)
        bridge = str(info["bridge"])
        poll("theirs on every member", lambda: tunnels_up(m1, "mine", 3) and all(
            t["state"] == "up" for t in json.loads(m1.cli(
                "--project", "other", "network", "info", "theirs", "--format", "json"
            ).stdout)["tunnels"]) and len(spaces_of(bridge)) == 3)
        with outside(nss, f"{UNDERLAY}.9") as ext:
            server = subprocess.Popen(["nsenter", f"--net=/run/netns/{ext}", sys.executable,
                                       "-c", ECHO_PEER])
            web = ["sh", "-c", "mkdir -p /www; echo hello from b2 > /www/index.html;"
                   " httpd -f -p 8080 -h /www"]
            for project, name, where, extra, cmd in (
                    ("default", "a", "m1", [], ["sleep", "1000"]),
                    ("other", "b", "m1", [], ["sleep", "1000"]),
                    ("other", "b2", "m2", ["--ip", "10.241.0.77"], web)):
                m1.cli("--project", project, "launch", "busybox", name, "--target", where,
                       "--network", "mine" if project == "default" else "theirs", *extra,
                       "--", *cmd)
                names.append((project, name))

            def run(project: str, name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
                return m1.cli("--project", project, "exec", name, "--", *cmd, check=False)

            for project, name in (("default", "a"), ("other", "b")):
                nic = json.loads(m1.cli("--project", project, "info", name, "--format",
                                        "json").stdout)["nics"][0]
                assert nic["ip"] == "10.241.0.2", nic
                lease = run(project, name, "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3",
                            "-s", "/bin/true")
                said = lease.stdout + lease.stderr
                assert "obtained" in said and "10.241.0.2" in said, (name, said)
                assert run(project, name, "ping", "-c", "1", "-W", "3", "10.241.0.1"
                           ).returncode == 0, name
                poll(f"{name} goes out as m1", lambda p=project, n=name: run(
                    p, n, "nc", "-w", "3", f"{UNDERLAY}.9", "7000").stdout.strip()
                    == f"{UNDERLAY}.1")
            # across members in its own network; never into the other one
            assert run("other", "b", "ping", "-c", "1", "-W", "5", "10.241.0.77"
                       ).returncode == 0
            assert run("default", "a", "ping", "-c", "1", "-W", "2", "10.241.0.77"
                       ).returncode != 0
            # a security group on b2 holds on m2 (b2's tap or veth is its key there): its
            # port from b on m1, over the tunnel, and no ping
            m1.cli("--project", "other", "network", "acl", "create", "web")
            m1.cli("--project", "other", "network", "acl", "rule", "add", "web", "--protocol",
                   "tcp", "--port", "8080")
            m1.cli("--project", "other", "network", "acl", "attach", "web", "b2")
            poll("b2's group on m2", lambda: run("other", "b", "ping", "-c", "1", "-W", "2",
                                                 "10.241.0.77").returncode != 0)
            got = run("other", "b", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3"
                      " 10.241.0.77 8080")
            assert "hello from b2" in got.stdout, got
            # a forward of a member's address answers where b2 runs (m2), DNATed twice
            m1.cli("--project", "other", "network", "forward", "add", "theirs",
                   f"{UNDERLAY}.1:8080", "b2")
            poll("the forward answers on m2", lambda: "hello from b2"
                 in fetch_from(ext, f"{UNDERLAY}.2", 8080))
            assert "hello" not in fetch_from(ext, f"{UNDERLAY}.1", 8080)
            m1.cli("--project", "other", "network", "forward", "remove", "theirs",
                   f"{UNDERLAY}.1:8080")
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for project, name in names:
            m1.cli("--project", project, "delete", name, "--force", check=False)
        m2.cli("--project", "other", "network", "acl", "delete", "web", check=False)
        m2.cli("--project", "other", "network", "delete", "theirs", check=False)
        m1.cli("network", "delete", "mine")
        m2.cli("project", "delete", "other", check=False)
    poll("nothing left of theirs", lambda: not nothing_of(nss, bridge)
         and not spaces_of(bridge))


def spaces_of(bridge: str) -> list[str]:
    """The namespaces of a network with one of its own, one per member that has it."""
    return [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                      text=True).stdout.split()
            if n.startswith("cumulo-") and n.endswith(bridge[4:])]


def test_a_member_that_leaves_drops_out_of_the_floods(cluster: Cluster) -> None:
    """m3's daemon stops: once it is offline the others flood to it no more (and
    network info says so); when it comes back, its tunnels come back too."""
    (m1, m2, m3), nss = cluster
    m1.cli("network", "create", "lv", "--type", "overlay", "--subnet", "10.234.0.0/24")
    try:
        poll("tunnels up", lambda: tunnels_up(m1, "lv", 3))
        m3.stop(signal.SIGKILL)
        try:
            poll("m3 offline", lambda: members(m1)["m3"]["state"] == "offline")
            poll("no flood to m3", lambda: all(f"{UNDERLAY}.3" not in flood_entries(ns)
                                               for ns in nss[:2]))
            states = {t["member"]: t["state"]
                      for t in network(m2, "lv")["tunnels"]}  # type: ignore[attr-defined]
            assert states["m3"] == "member offline", states
        finally:
            m3.start()
        poll("m3 back in the floods", lambda: tunnels_up(m1, "lv", 3))
        assert f"{UNDERLAY}.3" in flood_entries(nss[0])
    finally:
        m1.cli("network", "delete", "lv")


def test_bad_overlays(cluster: Cluster, daemon: Daemon) -> None:
    (m1, m2, _), nss = cluster
    m1.cli("network", "create", "taken", "--type", "overlay", "--vni", "4242",
           "--subnet", "10.235.0.0/24")
    try:
        one_line_error(m2.cli("network", "create", "again", "--type", "overlay", "--vni",
                              "4242", check=False),
                       "VNI 4242 is already used by network 'taken'")
        one_line_error(m2.cli("network", "create", "big", "--type", "overlay", "--mtu",
                              "1451", check=False),
                       "MTU 1451 is too large for the encapsulation: the underlay carries"
                       " 1500, VXLAN takes 50, so at most 1450")
        one_line_error(m2.cli("network", "create", "small", "--type", "overlay", "--mtu",
                              "500", check=False), "MTU 500 is too small")
        one_line_error(m2.cli("network", "create", "v", "--type", "overlay", "--vni",
                              "16777216", check=False), "invalid VNI 16777216")
        one_line_error(m2.cli("network", "create", "plain", "--vni", "7", check=False),
                       "--vni and --mtu are for --type overlay")
        names = {n["name"] for n in json.loads(
            m1.cli("network", "list", "--format", "json").stdout)}
        assert names == {"taken"}, names
        # m2 makes its side of taken at its next heartbeat; the refused ones made nothing
        poll("taken's VXLAN alone on m2", lambda: len(vxlans(nss[1])) == 1)
    finally:
        m1.cli("network", "delete", "taken")
    one_line_error(daemon.cli("network", "create", "ov", "--type", "overlay", check=False),
                   "an overlay network spans a cluster: this host is in no cluster")
    assert json.loads(daemon.cli("network", "list", "--format", "json").stdout) == []


def segment_state(insts: list[tuple[Daemon, str]], nss: list[str]) -> str:
    """What to look at when traffic stalls: the instances' sockets, links and
    neighbours, every member's bridge FDB and link counters."""
    lines = []
    for d, name in insts:
        r = d.cli("exec", name, "--", "sh", "-c", "cat /proc/net/tcp; ip -s link; ip neigh",
                  check=False)
        lines.append(f"--- {name}:\n{r.stdout}{r.stderr}")
    for ns in nss:
        lines.append(f"--- {ns} fdb:\n{out(ns, 'bridge', 'fdb', 'show')}")
        lines.append(f"--- {ns} links:\n{out(ns, 'ip', '-s', 'link')}")
    return "\n".join(lines)


# a server outside the cluster: it answers each connection with the peer's address
ECHO_PEER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(8)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode() + b"\\n"); c.close()
"""
# a client outside the cluster: one HTTP request, what came back ("" if nothing)
FETCH = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    c.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    print(data.decode(errors="replace"))
except OSError as err:
    print("error:", err)
"""


def fetch_from(ns: str, addr: str, port: int) -> str:
    return out(ns, sys.executable, "-c", FETCH, addr, str(port))


def dnat_rules(ns: str) -> list[str]:
    """A member's DNAT rules (``dnat ip to ADDR:PORT``; not ``ct status dnat``)."""
    return [line.strip() for line in out(ns, "nft", "list", "ruleset").splitlines()
            if "dnat" in line and " to " in line]


def test_nat_egress_and_forwards_follow_the_instance(cluster: Cluster) -> None:
    """A NAT overlay: an instance's traffic out of the subnet leaves masqueraded as the
    member it runs on, and a forward of a member's cluster address answers on the
    address of the instance's member; after a move (cold here, then an evacuation,
    live if CRIU works) both follow it, the old member no longer answers and keeps no
    DNAT rule. The outside host is one more namespace on the test's underlay."""
    (m1, m2, m3), nss = cluster
    where = {"m1": f"{UNDERLAY}.1", "m2": f"{UNDERLAY}.2", "m3": f"{UNDERLAY}.3"}
    ns_of = dict(zip(where, nss, strict=True))
    m1.cli("network", "create", "egr", "--type", "overlay", "--nat", "--subnet",
           "10.237.0.0/24")
    server = None
    try:
        with outside(nss, f"{UNDERLAY}.9") as ext:
            server = subprocess.Popen(["nsenter", f"--net=/run/netns/{ext}", sys.executable,
                                       "-c", ECHO_PEER])
            m1.cli("launch", "busybox", "srv", "--target", "m1", "--network", "egr", "--",
                   "sh", "-c", "mkdir -p /www; echo hello from srv > /www/index.html;"
                   " httpd -f -p 8080 -h /www")

            def seen_as() -> str:
                return m1.cli("exec", "srv", "--", "nc", "-w", "3", f"{UNDERLAY}.9", "7000",
                              check=False).stdout.strip()

            def check_on(member: str, old: str | None) -> None:
                poll(f"NAT egress leaves through {member}", lambda: seen_as() == where[member])
                poll(f"the forward answers on {member}", lambda: "hello from srv"
                     in fetch_from(ext, where[member], 8080),
                     why=lambda: (fetch_from(ext, where[member], 8080).strip(),
                                  dnat_rules(ns_of[member]), seen_as()))
                rows = json.loads(m3.cli("network", "forward", "list", "egr", "--format",
                                         "json").stdout)
                assert [r["listen_address"] for r in rows] == [where[member]], rows
                for other in set(where) - {member}:
                    poll(f"no DNAT left on {other}", lambda o=other: not dnat_rules(ns_of[o]))
                if old is not None:
                    assert "hello" not in fetch_from(ext, where[old], 8080)

            # made through m2, for m1's address: it answers on m1, where srv runs
            one_line_error(m2.cli("network", "forward", "add", "egr", f"{UNDERLAY}.9:8080",
                                  "srv", check=False), "is not an address of this host")
            m2.cli("network", "forward", "add", "egr", f"{UNDERLAY}.1:8080", "srv")
            one_line_error(m3.cli("network", "forward", "add", "egr", f"{UNDERLAY}.3:8080",
                                  "srv", check=False),
                           "tcp port 8080 of the members' cluster addresses is already"
                           " forwarded to 'srv'")
            check_on("m1", None)
            m1.cli("migrate", "srv", "--to", "m2", "--stop-first", timeout=300)
            assert listed(m3)["srv"]["location"] == "m2"
            check_on("m2", "m1")
            if checkpoint_skip_reason() is None:   # running: an evacuation moves it live
                m1.cli("cluster", "evacuate", "m2", timeout=300)
                try:
                    now = str(listed(m3)["srv"]["location"])
                    assert now in ("m1", "m3"), now
                    check_on(now, "m2")
                finally:
                    m1.cli("cluster", "restore", "m2")
            m3.cli("network", "forward", "remove", "egr", f"{UNDERLAY}.1:8080")
            for ns in nss:
                poll("no DNAT left", lambda n=ns: not dnat_rules(n))
    finally:
        if server is not None:
            server.kill()
            server.wait()
        m1.cli("delete", "srv", "--force", check=False)
        m1.cli("network", "delete", "egr")


def last_count(d: Daemon, name: str) -> int:
    got = d.cli("exec", name, "--", "sh", "-c", "tail -n 1 /got").stdout.strip()
    return int(got) if got.isdigit() else 0


@pytest.mark.criu
@pytest.mark.skipif(checkpoint_skip_reason() is not None, reason=str(checkpoint_skip_reason()))
def test_a_live_migration_keeps_address_and_connection(cluster: Cluster) -> None:
    """A container serving an open TCP connection to a client on m3 moves live from m1
    to m2: same MAC and IP, on the same segment, m2's bridge no longer sends srv's MAC
    to its tunnel, and the connection carries on (the server's file keeps growing with
    the client's counts, though srv itself sends nothing but ACKs)."""
    (m1, m2, m3), nss = cluster
    m1.cli("network", "create", "mig", "--type", "overlay", "--subnet", "10.236.0.0/24")
    names: list[str] = []
    try:
        m1.cli("launch", "busybox", "srv", "--target", "m1", "--network", "mig", "--", "sh",
               "-c", "sleep 100000 | nc -l -p 9000 > /got")
        names.append("srv")
        before = json.loads(m1.cli("info", "srv", "--format", "json").stdout)["nics"][0]
        m3.cli("launch", "busybox", "cli", "--target", "m3", "--network", "mig", "--", "sh",
               "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done"
                     f" | nc {before['ip']} 9000")
        names.append("cli")
        poll("counts arrive", lambda: last_count(m1, "srv") > 5)
        m1.cli("migrate", "srv", "--to", "m2", timeout=300)
        assert listed(m3)["srv"]["location"] == "m2"
        after = json.loads(m1.cli("info", "srv", "--format", "json").stdout)["nics"][0]
        assert (after["mac"], after["ip"]) == (before["mac"], before["ip"])
        # m2's bridge saw srv's frames come over the tunnel while srv ran on m1; it must
        # not keep the MAC there (frames for srv coming in on that port would be dropped)
        stale = [e for e in json.loads(out(nss[1], "bridge", "-j", "fdb", "show") or "[]")
                 if e.get("mac") == before["mac"] and str(e.get("ifname")).startswith("cu-x")]
        assert not stale, stale
        moved = last_count(m2, "srv")
        try:
            poll("counts go on after the move", lambda: last_count(m2, "srv") > moved + 10)
        except AssertionError:
            print(segment_state([(m2, "srv"), (m3, "cli")], nss), file=sys.stderr)
            raise
    finally:
        for name in names:
            m1.cli("delete", name, "--force")
        m1.cli("network", "delete", "mig")


@pytest.mark.qemu
@pytest.mark.slow
def test_a_vm_live_migration_keeps_address_and_connection(cluster: Cluster) -> None:
    """A TCG VM on an overlay serving an open TCP connection to a client on m3 moves
    live from m1 to m2: same MAC and IP, m2's bridge does not keep the VM's MAC on the
    tunnel port (QEMU's announce after the move, and the MAC forgotten when the tap is
    wired), and the client's counts keep arriving through the same connection."""
    (m1, m2, m3), nss = cluster
    m1.cli("network", "create", "vmig", "--type", "overlay", "--subnet", "10.239.0.0/24")
    names: list[str] = []
    try:
        m1.cli("launch", "busybox", "vsrv", "--type", "vm", "--machine", "pc", "--memory",
               "128MiB", "--target", "m1", "--network", "vmig", "--", "sh", "-c",
               "sleep 100000 | nc -l -p 9000 > /got", timeout=300)
        names.append("vsrv")
        before = json.loads(m1.cli("info", "vsrv", "--format", "json").stdout)["nics"][0]
        poll("the VM's address is up", lambda: before["ip"] in m1.cli(
            "exec", "vsrv", "--", "ip", "-4", "addr", "show", "eth0", check=False).stdout,
            timeout=180)
        m3.cli("launch", "busybox", "vcli", "--target", "m3", "--network", "vmig", "--",
               "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done"
                           f" | nc {before['ip']} 9000")
        names.append("vcli")
        poll("counts arrive", lambda: last_count(m1, "vsrv") > 5, timeout=120)
        m1.cli("migrate", "vsrv", "--to", "m2", timeout=300)
        assert listed(m3)["vsrv"]["location"] == "m2"
        after = json.loads(m1.cli("info", "vsrv", "--format", "json").stdout)["nics"][0]
        assert (after["mac"], after["ip"]) == (before["mac"], before["ip"])
        assert m2.cli("exec", "vsrv", "--", "cat", "/sys/class/net/eth0/address"
                      ).stdout.strip() == before["mac"]
        stale = [e for e in json.loads(out(nss[1], "bridge", "-j", "fdb", "show") or "[]")
                 if e.get("mac") == before["mac"] and str(e.get("ifname")).startswith("cu-x")]
        assert not stale, stale
        moved = last_count(m2, "vsrv")
        poll("counts go on after the move", lambda: last_count(m2, "vsrv") > moved + 10,
             timeout=120)
    finally:
        for name in reversed(names):
            m1.cli("delete", name, "--force")
        m1.cli("network", "delete", "vmig")
